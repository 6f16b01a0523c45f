//! `wasmplug`: look inside a plugin component, check it against a WIT
//! world, call it, run a directory of plugins, fill the compiled-code cache.

#[macro_use]
mod out;
mod fit;
mod flags;
mod harness;
mod new;
mod oci;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use wasmplug::reference::versions::Greeter;
use wasmplug::reference::GreeterPlugin;
use wasmplug::wasmtime::component::Component;
use wasmplug::{
    identity::ContentHash, signature, watcher::WatchOptions, Dynamic, Registry, Watcher,
};

use flags::{Cache, Grants, RolloutFlags};

/// WebAssembly component plugins: inspect, call, run and cache them.
#[derive(Parser)]
#[command(name = "wasmplug", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    cache: Cache,
}

const EXAMPLES: &str = "\
Examples:
  wasmplug inspect hello.wasm
  wasmplug inspect handler.wasm --wit wit/handler.wit
  wasmplug call hello.wasm 'welcome(\"Zoë\")'
  wasmplug test hello.wasm cases.toml
  wasmplug new --lang go --wit service.wit my-plugin
  wasmplug run plugins/ --watch --env LANG --memory 64MiB --timeout 500ms
  wasmplug key generate release
  wasmplug push hello.wasm registry.example:5000/plugins/hello:stable --sign release.key
  wasmplug run --follow registry.example:5000/plugins/hello:stable --trust release.pub
  wasmplug compile plugins/*.wasm
  wasmplug completions bash > /etc/bash_completion.d/wasmplug";

#[derive(Subcommand)]
enum Command {
    /// Show a component's identity, size, imports and exports (as WIT), and
    /// which versions of the reference world, or of the world of a WIT file
    /// or directory, it fits.
    ///
    /// A --wit directory may hold several versions of its package: its own
    /// .wit files and each subdirectory with .wit files (`wit/`,
    /// `wit/v1.1/`); each version gets a line. With --wit, the exit status
    /// says whether it fits one of them (0) or none (1).
    ///
    /// Examples:
    ///   wasmplug inspect guest-plugins/dist/hello-v1.wasm
    ///   wasmplug inspect guest-plugins/dist/hello-v1.wasm --wit wit
    ///   wasmplug inspect handler.wasm --wit wit/handler.wit --world service
    #[command(verbatim_doc_comment)]
    Inspect {
        /// The component file.
        component: PathBuf,
        /// A WIT file, or a directory of them (with `deps/`, and versions
        /// in subdirectories), whose world the component should fit,
        /// instead of the reference world.
        #[arg(long, value_name = "PATH")]
        wit: Option<PathBuf>,
        /// Which world of the WIT package, when it has more than one.
        #[arg(long, value_name = "NAME", requires = "wit")]
        world: Option<String>,
    },
    /// Call one export with arguments written in WAVE; print the results in
    /// WAVE. Runs `init` first when the plugin has one.
    ///
    /// Examples:
    ///   wasmplug call hello-v1.wasm 'welcome("Zoë")'
    ///   wasmplug call hello-v1.wasm 'hello({name: "Gopher", age: 13})'
    ///   wasmplug call hello-v1.wasm 'greeter.count()'
    ///   wasmplug call reader.wasm 'read("/data/a.txt")' --dir ./data::/data
    #[command(verbatim_doc_comment)]
    Call {
        /// The component file.
        component: PathBuf,
        /// The call, e.g. `welcome("Zoë")`.
        call: String,
        #[command(flatten)]
        grants: Grants,
    },
    /// Make a buildable plugin project for a WIT world: sources with every
    /// export stubbed (each answers a default value), pinned setup and
    /// build scripts, a case file for `wasmplug test` that passes, and a
    /// README. See docs/AUTHORING.md.
    ///
    /// Examples:
    ///   wasmplug new --lang rust --wit wit/plugin.wit --world greeter-plugin my-greeter
    ///   wasmplug new --lang python --wit service/wit my-handler
    #[command(verbatim_doc_comment)]
    New {
        /// The language of the plugin.
        #[arg(long, value_enum)]
        lang: new::Lang,
        /// The WIT file, or a directory of them (with `deps/`).
        #[arg(long, value_name = "PATH")]
        wit: PathBuf,
        /// Which world of the WIT package, when it has more than one.
        #[arg(long, value_name = "NAME")]
        world: Option<String>,
        /// The project directory to create (empty or new); its name is the
        /// plugin's.
        dir: PathBuf,
    },
    /// Test a plugin without writing a host: run the calls of a case file
    /// (TOML, values in WAVE), compare each answer with the expected one,
    /// and answer the plugin's imports from the file (mocks), recording
    /// the calls it makes. Prints one line per case and, for a failure,
    /// the call, what was expected and what came; the exit status is 1 if
    /// any case failed. The case file format is in docs/AUTHORING.md.
    ///
    /// Example cases.toml:
    ///   [mocks]
    ///   "config.get" = 'some("Hej")'
    ///
    ///   [[case]]
    ///   call = 'welcome("Ann")'
    ///   expect = '"Hej, Ann!"'
    ///   imports = ['config.get("greeting")']
    #[command(verbatim_doc_comment)]
    Test {
        /// The component file.
        component: PathBuf,
        /// The case file.
        cases: PathBuf,
        #[command(flatten)]
        grants: Grants,
    },
    /// Load every component in a directory and print lifecycle events. Lines
    /// typed on stdin call the current version of a plugin: `<plugin>
    /// <call>`; `list` shows what is loaded. With --watch, files added,
    /// replaced and removed are followed live, and the command keeps
    /// running when stdin closes; without it, it ends there.
    ///
    /// A new version that imports more than the one it replaces (say
    /// `wasi:sockets`) is held, not swapped in: `held` lists what waits,
    /// `approve NAME` swaps it in, `refuse NAME` drops it. A replaced
    /// version stays warm for --grace: `rollback NAME` returns to it. With
    /// --canary 10%, a new version takes a tenth of the calls first and is
    /// rolled back if it does worse, or promoted after --promote-after
    /// calls.
    ///
    /// Example (input lines start with `$`, the rest is output):
    ///   wasmplug run plugins/ --watch
    ///   loaded hello@1.0.0 from plugins/hello.wasm
    ///   $ hello welcome("Zoë")
    ///   "Welcome, Zoë!"
    ///   (plugins/hello.wasm replaced)
    ///   swapped hello@1.0.0 -> hello@2.0.0 (state carried over)
    ///   $ hello welcome("Zoë")
    ///   "Welcome back, Zoë!"
    #[command(verbatim_doc_comment)]
    Run {
        /// The directory of component files (`x.toml` beside `x.wasm` is
        /// its manifest; it may only tighten limits here).
        #[arg(required_unless_present = "follow")]
        dir: Option<PathBuf>,
        /// Follow changes to the directory: hot swap.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        grants: Grants,
        #[command(flatten)]
        rollout: RolloutFlags,
        #[command(flatten)]
        follow: oci::FollowFlags,
    },
    /// Same as `run <dir> --watch`.
    #[command(hide = true)]
    Watch {
        dir: PathBuf,
        #[command(flatten)]
        grants: Grants,
        #[command(flatten)]
        rollout: RolloutFlags,
    },
    /// Compile components into the compiled-code cache, so the next load
    /// (by this tool or a service using the same cache directory and
    /// wasmplug version) skips compiling.
    ///
    /// Example:
    ///   wasmplug compile plugins/*.wasm --cache-dir /var/cache/wasmplug
    #[command(verbatim_doc_comment)]
    Compile {
        /// The component files.
        #[arg(required = true)]
        components: Vec<PathBuf>,
    },
    /// Push a component to an OCI registry as a Wasm artefact (config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm`
    /// layer), signed with --sign. The tag moves last, once the artefact
    /// and its signature are in place. Prints the digest.
    ///
    /// Credentials: the Docker config (--registry-config, default
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json), or
    /// WASMPLUG_REGISTRY_USER and WASMPLUG_REGISTRY_PASSWORD for the
    /// reference's registry.
    ///
    /// Example:
    ///   wasmplug push hello.wasm registry.example:5000/plugins/hello:stable --sign release.key
    #[command(verbatim_doc_comment)]
    Push {
        /// The component file.
        component: PathBuf,
        /// Where: `REGISTRY/REPOSITORY:TAG`.
        reference: String,
        /// Sign it with this private key (PEM, P-256; `wasmplug key
        /// generate`), as `cosign sign --key` would.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        #[command(flatten)]
        oci: oci::OciFlags,
    },
    /// Pull a component from an OCI registry, checking its signature
    /// (--trust) and digests before writing it.
    ///
    /// Example:
    ///   wasmplug pull registry.example:5000/plugins/hello:stable --trust release.pub -o hello.wasm
    #[command(verbatim_doc_comment)]
    Pull {
        /// `REGISTRY/REPOSITORY:TAG` or `…@sha256:DIGEST`.
        reference: String,
        /// Where to write it (default: the repository's last part, `.wasm`).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        oci: oci::OciFlags,
    },
    /// Sign what a reference points to (a signature under cosign's tag
    /// scheme, `sha256-<digest>.sig`).
    ///
    /// Example:
    ///   wasmplug sign registry.example:5000/plugins/hello:stable --key release.key
    #[command(verbatim_doc_comment)]
    Sign {
        /// `REGISTRY/REPOSITORY:TAG` or `…@sha256:DIGEST`.
        reference: String,
        /// The private key (PEM, P-256).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        #[command(flatten)]
        oci: oci::OciFlags,
    },
    /// Point a tag at what a reference points to (same repository): promote
    /// a tested digest to a release channel, or move the channel back.
    /// The manifest is copied as is, so its signatures still apply.
    ///
    /// Example:
    ///   wasmplug tag registry.example:5000/plugins/hello@sha256:… stable
    #[command(verbatim_doc_comment)]
    Tag {
        /// `REGISTRY/REPOSITORY@sha256:DIGEST` (or `:TAG`).
        reference: String,
        /// The tag to point at it.
        tag: String,
        #[command(flatten)]
        oci: oci::OciFlags,
    },
    /// Signing keys.
    #[command(subcommand)]
    Key(oci::KeyCommand),
    /// Print a shell completion script.
    ///
    /// Examples:
    ///   wasmplug completions bash > ~/.local/share/bash-completion/completions/wasmplug
    ///   wasmplug completions zsh > "${fpath[1]}/_wasmplug"
    ///   wasmplug completions fish > ~/.config/fish/completions/wasmplug.fish
    #[command(verbatim_doc_comment)]
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // Registry events are printed by `run` itself.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,wasmplug::registry=warn")
                }),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cache = &cli.cache;
    match cli.command {
        Command::Inspect {
            component,
            wit,
            world,
        } => inspect(cache, &component, wit.as_deref(), world.as_deref()),
        Command::Call {
            component,
            call,
            grants,
        } => {
            let plugin = cache
                .runtime::<Dynamic>(grants.policy())?
                .load(&component)?;
            let mut instance = plugin.instantiate()?;
            for result in instance.call_wave(&call)? {
                outln!("{result}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::New {
            lang,
            wit,
            world,
            dir,
        } => new::run(lang, &wit, world.as_deref(), &dir),
        Command::Test {
            component,
            cases,
            grants,
        } => harness::run(cache, &component, &cases, grants.policy()),
        Command::Run {
            dir,
            watch,
            grants,
            rollout,
            follow,
        } => serve(cache, dir.as_deref(), watch, &grants, &rollout, &follow),
        Command::Watch {
            dir,
            grants,
            rollout,
        } => serve(
            cache,
            Some(&dir),
            true,
            &grants,
            &rollout,
            &oci::FollowFlags::default(),
        ),
        Command::Push {
            component,
            reference,
            sign,
            oci,
        } => oci::push(&component, &reference, sign.as_deref(), &oci),
        Command::Pull {
            reference,
            output,
            oci,
        } => oci::pull(&reference, output.as_deref(), &oci),
        Command::Sign {
            reference,
            key,
            oci,
        } => oci::sign(&reference, &key, &oci),
        Command::Tag {
            reference,
            tag,
            oci,
        } => oci::tag(&reference, &tag, &oci),
        Command::Key(command) => oci::key(&command),
        Command::Compile { components } => compile(cache, &components),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics when a write fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "wasmplug", &mut script);
            out::write(&script);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn inspect(
    cache: &Cache,
    path: &Path,
    wit: Option<&Path>,
    world: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let runtime = cache.runtime::<Dynamic>(Default::default())?;
    let engine = runtime.engine();
    let loaded = runtime.load(path);
    // A component whose imports this host cannot satisfy does not load, yet
    // can still be inspected: only then is it compiled on its own.
    let component = match &loaded {
        Ok(plugin) => plugin.component().clone(),
        Err(_) => Component::new(engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a valid WebAssembly component", path.display()))?,
    };
    outln!("component  {}", path.display());
    outln!("size       {} bytes", bytes.len());
    outln!("sha256     {}", ContentHash::of(&bytes));
    match loaded {
        Ok(plugin) => outln!("identity   {}", plugin.label()),
        Err(err) => outln!("identity   unknown: {err}"),
    }
    let fits = match wit {
        Some(wit) => {
            // One line per version of the package (`wit/`, `wit/v1.1/`).
            let fits = fit::check_versions(engine, &component, wit, world)?;
            for (i, fit) in fits.iter().enumerate() {
                let head = if i == 0 { "world " } else { "      " };
                if fit.problems.is_empty() {
                    outln!("{head}     fits {} ({})", fit.world, fit.path.display());
                } else {
                    outln!(
                        "{head}     does not fit {} ({}):",
                        fit.world,
                        fit.path.display()
                    );
                    for problem in &fit.problems {
                        outln!("             - {problem}");
                    }
                }
            }
            fits.iter().any(|fit| fit.problems.is_empty())
        }
        None => {
            reference_fit(cache, path)?;
            true // not asked for: informational
        }
    };
    let ty = component.component_type();
    outln!("imports");
    for (name, _) in ty.imports(engine) {
        outln!("  {name}");
    }
    outln!("exports");
    for (name, func) in signature::funcs(engine, ty.exports(engine)) {
        outln!("  {name}: {}", signature::func(&func));
    }
    Ok(if fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Which versions of the reference world the component fits: 1.0.0 when a
/// host of exactly 1.0 loads it, 1.1.0 when the 1.x host binds it as 1.1.
fn reference_fit(cache: &Cache, path: &Path) -> anyhow::Result<()> {
    const WORLD: &str = "wasmplug:plugin/greeter-plugin";
    let v1_0 = cache
        .runtime::<GreeterPlugin>(Default::default())?
        .load(path);
    let v1_x = cache.runtime::<Greeter>(Default::default())?.load(path);
    let mut fits = Vec::new();
    if matches!(&v1_x, Ok(plugin) if plugin.world_version() == Some("1.1.0")) {
        fits.push(format!("{WORLD}@1.1.0"));
    }
    if v1_0.is_ok() {
        fits.push(format!("{WORLD}@1.0.0"));
    }
    match v1_x {
        _ if !fits.is_empty() => outln!("world      fits {}", fits.join(", ")),
        Err(err) => outln!("world      does not fit {WORLD} (1.1.0 or 1.0.0): {err}"),
        Ok(_) => outln!("world      does not fit {WORLD}"),
    }
    Ok(())
}

fn compile(cache: &Cache, components: &[PathBuf]) -> anyhow::Result<ExitCode> {
    // Filling the cache is the whole point: no running without it here.
    let (runtime, dir) = cache.runtime_with_cache::<Dynamic>(Default::default())?;
    let mut failed = 0;
    for path in components {
        let started = std::time::Instant::now();
        let before = runtime.cache_stats().unwrap_or_default();
        match runtime.load(path) {
            Ok(plugin) => {
                let after = runtime.cache_stats().unwrap_or_default();
                let how = if after.hits > before.hits {
                    "already cached"
                } else {
                    "compiled"
                };
                outln!(
                    "{how:<15} {:<28} {} ({:.0} ms)",
                    plugin.label(),
                    path.display(),
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Err(err) => {
                failed += 1;
                eprintln!("error: {err:#}");
            }
        }
    }
    outln!("cache      {}", dir.display());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn serve(
    cache: &Cache,
    dir: Option<&Path>,
    watch: bool,
    grants: &Grants,
    rollout: &RolloutFlags,
    follow: &oci::FollowFlags,
) -> anyhow::Result<ExitCode> {
    let runtime = cache.runtime::<Dynamic>(grants.policy())?;
    let registry = Registry::<Dynamic>::new()
        .with_grace(rollout.grace)
        .with_rollout(rollout.rollout());
    let events = registry.subscribe();
    let mut options = WatchOptions::default();
    options.guard.widening = rollout.allow_widening;
    let follow_options = if follow.follow.is_empty() {
        None
    } else {
        Some(follow.options(rollout.allow_widening)?)
    };
    let _watcher = match dir {
        Some(dir) if watch => Some(Watcher::start_with(
            dir,
            runtime.clone(),
            registry.clone(),
            options,
        )?),
        Some(dir) => {
            Watcher::load_dir(dir, runtime.clone(), registry.clone(), options)?;
            None
        }
        None => None,
    };
    let _followers = match follow_options {
        None => Vec::new(),
        Some(options) => follow
            .follow
            .iter()
            .map(|reference| {
                wasmplug::oci::Follower::start(
                    reference,
                    runtime.clone(),
                    registry.clone(),
                    options.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let watch = watch || !follow.follow.is_empty();
    // The first scan is done: its events first, in order, then the rest as
    // they come.
    for event in events.try_iter() {
        outln!("{event}");
    }
    std::thread::spawn(move || {
        for event in events {
            outln!("{event}");
        }
    });
    let doing = if watch { "watching" } else { "serving" };
    let what: Vec<String> = dir
        .map(|d| d.display().to_string())
        .into_iter()
        .chain(follow.follow.iter().map(|r| format!("oci://{r}")))
        .collect();
    outln!(
        "{doing} {} (type `<plugin> <call>`, `list`, `held`, `approve|refuse|rollback <plugin>`)",
        what.join(", ")
    );

    for line in std::io::stdin().lines() {
        let line = line.context("reading stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "list" {
            for v in registry.list() {
                // Current, on trial (a canary), or kept for a rollback.
                let mark = match (v.current, v.on_trial, v.standby) {
                    (true, _, _) => "*",
                    (_, true, _) => "~",
                    (_, _, true) => "-",
                    _ => " ",
                };
                outln!(
                    "{mark} {:<28} {:<12} instances {:<3} {}",
                    v.identity.to_string(),
                    v.content_hash.short(),
                    v.live_instances,
                    v.source
                );
            }
            continue;
        }
        if line == "held" {
            for held in registry.held() {
                outln!(
                    "{}: {} held, {} serving; it adds: {}",
                    held.name,
                    held.source,
                    held.serving,
                    held.widening
                );
            }
            continue;
        }
        let Some((name, call)) = line.split_once(char::is_whitespace) else {
            outln!("error: expected `<plugin> <call>`, e.g. `hello welcome(\"Zoë\")`, or `list`");
            continue;
        };
        // `approve hello` (no call has no parentheses).
        if !call.contains('(') {
            let target = call.trim();
            let done = match name {
                "approve" => registry.approve(target).map(|_| ()),
                "refuse" => registry.refuse(target).map(|_| ()),
                "rollback" => registry.rollback(target).map(|_| ()),
                _ => {
                    outln!("error: `{name}`: expected approve, refuse or rollback, or a call `<plugin> <export>(...)`");
                    continue;
                }
            };
            // What happened is told by the events.
            if let Err(err) = done {
                outln!("error: {err}");
            }
            continue;
        }
        let answer = registry
            .get(name)
            .and_then(|h| h.call(|i| i.call_wave(call.trim())));
        match answer {
            Ok(results) => results.iter().for_each(|r| outln!("{r}")),
            Err(err) => outln!("error: {err}"),
        }
    }
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    // stdin closed (e.g. not a terminal): keep watching until interrupted.
    loop {
        std::thread::park();
    }
}
