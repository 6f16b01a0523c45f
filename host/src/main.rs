//! `wasmplug`: look inside a plugin component and call it from the terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wasmplug::reference::GreeterPlugin;
use wasmplug::{Dynamic, Runtime};

/// WebAssembly component plugins: inspect a plugin, call its exports.
#[derive(Parser)]
#[command(name = "wasmplug", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a component's identity, imports, exports (as WIT) and whether it
    /// fits the reference world.
    ///
    /// Example: wasmplug inspect guest-plugins/dist/hello-v1.wasm
    Inspect {
        /// The component file.
        component: PathBuf,
    },
    /// Call one export with arguments written in WAVE; print the results in
    /// WAVE. Runs `init` first when the plugin has one.
    ///
    /// Examples:
    ///   wasmplug call hello-v1.wasm 'welcome("Zoë")'
    ///   wasmplug call hello-v1.wasm 'hello({name: "Gopher", age: 13})'
    ///   wasmplug call hello-v1.wasm 'greeter.count()'
    #[command(verbatim_doc_comment)]
    Call {
        /// The component file.
        component: PathBuf,
        /// The call, e.g. `welcome("Zoë")`.
        call: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { component } => inspect(&component),
        Command::Call { component, call } => {
            let runtime = Runtime::<Dynamic>::new()?;
            let plugin = runtime.load(&component)?;
            let mut instance = plugin.instantiate()?;
            for result in instance.call_wave(&call)? {
                println!("{result}");
            }
            Ok(())
        }
    }
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let plugin = Runtime::<Dynamic>::new()?.load(path)?;
    println!("component  {}", path.display());
    println!("size       {size} bytes");
    println!("sha256     {}", plugin.content_hash());
    println!("identity   {}", plugin.label());
    match Runtime::<GreeterPlugin>::new()?.load(path) {
        Ok(_) => println!("world      fits wasmplug:plugin/greeter-plugin@1.0.0"),
        Err(err) => println!("world      does not fit wasmplug:plugin/greeter-plugin@1.0.0: {err}"),
    }
    println!("imports");
    for name in plugin.imports() {
        println!("  {name}");
    }
    println!("exports");
    for (name, signature) in plugin.export_signatures() {
        println!("  {name}: {signature}");
    }
    Ok(())
}
