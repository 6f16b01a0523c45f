//! `wasmplug`: look inside a plugin component and call it from the terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wasmplug::reference::GreeterPlugin;
use wasmplug::{Dynamic, Registry, Runtime, Watcher};

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
    /// Load every component in a directory, keep it in sync as files are
    /// added, replaced and removed, and print lifecycle events as they
    /// happen. Lines typed on stdin call the current version of a plugin:
    /// `<plugin> <call>`; `list` shows what is loaded.
    ///
    /// Example (input lines start with `$`, the rest is output):
    ///   wasmplug watch plugins/
    ///   $ hello welcome("Zoë")
    ///   "Welcome, Zoë!"
    ///   (plugins/hello.wasm replaced)
    ///   swapped hello@1.0.0 -> hello@2.0.0 (state carried over)
    ///   $ hello welcome("Zoë")
    ///   "Welcome back, Zoë!"
    #[command(verbatim_doc_comment)]
    Watch {
        /// The directory of component files.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // Registry events are printed by `watch` itself.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,wasmplug::registry=warn")
                }),
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
        Command::Watch { dir } => watch(&dir),
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

fn watch(dir: &std::path::Path) -> anyhow::Result<()> {
    let registry = Registry::<Dynamic>::new();
    let events = registry.subscribe();
    std::thread::spawn(move || {
        for event in events {
            println!("{event}");
        }
    });
    let _watcher = Watcher::start(dir, Runtime::<Dynamic>::new()?, registry.clone())?;
    println!(
        "watching {} (type `<plugin> <call>` or `list`)",
        dir.display()
    );

    for line in std::io::stdin().lines() {
        let line = line.context("reading stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "list" {
            for v in registry.list() {
                let mark = if v.current { "*" } else { " " };
                println!(
                    "{mark} {:<28} {:<12} instances {:<3} {}",
                    v.identity.to_string(),
                    v.content_hash.short(),
                    v.live_instances,
                    v.source
                );
            }
            continue;
        }
        let Some((name, call)) = line.split_once(char::is_whitespace) else {
            println!("error: expected `<plugin> <call>`, e.g. `hello welcome(\"Zoë\")`, or `list`");
            continue;
        };
        let answer = registry
            .get(name)
            .and_then(|h| h.call(|i| i.call_wave(call.trim())));
        match answer {
            Ok(results) => results.iter().for_each(|r| println!("{r}")),
            Err(err) => println!("error: {err}"),
        }
    }
    // stdin closed (e.g. not a terminal): keep watching until interrupted.
    loop {
        std::thread::park();
    }
}
