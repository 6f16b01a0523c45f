//! `http-service`: an HTTP service whose request handling is done by
//! WebAssembly component plugins of its own WIT world
//! (`wit/handler.wit`), loaded from a directory and hot-swapped when a file
//! there changes. See README.md beside this crate.
//!
//! ```text
//! http-service --dir plugins/ --listen 127.0.0.1:8080 [--mode threads|blocking|async]
//! http-service --follow registry:5000/plugins/echo:stable --trust release.pub
//! ```
//!
//! * `/NAME/...` goes to the plugin whose identity is `NAME`, which sees the
//!   path below its mount point (`/echo/a/b` reaches `echo` as `/a/b`);
//! * `/metrics`: Prometheus text format;
//! * `/healthz`: 200 and the plugins being served.
//!
//! In the default `async` mode the axum handlers await wasmplug's
//! `Handle::call_async`: a guest call runs on the request's task and moves
//! to wasmplug's guest threads if it computes past one epoch tick, so it
//! never holds an executor thread. The `threads` and `blocking` modes call
//! wasmplug's blocking API from worker threads (their own, or tokio's
//! blocking pool), for comparison. README.md has the measurements.

mod async_mode;
mod http;
mod metrics;
mod threads;
mod types;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use wasmplug::oci::{FollowOptions, Follower, Trust};
use wasmplug::{Registry, Runtime, Watcher, World};

use crate::metrics::Metrics;

/// Where guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// wasmplug's async API: handlers await `Handle::call_async`; guest code
    /// that computes past a tick runs on wasmplug's guest threads.
    Async,
    /// wasmplug's Registry and Watcher; calls run on dedicated worker threads.
    Threads,
    /// wasmplug's Registry and Watcher; calls run on tokio's blocking pool
    /// (`spawn_blocking`), bounded to `--workers` at once.
    Blocking,
}

/// The OS priority of wasmplug's guest threads (async mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuestPriority {
    /// nice +19 (wasmplug's default).
    Lowest,
    /// SCHED_IDLE.
    Idle,
    /// The service's own priority.
    Normal,
}

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "http-service", version, about)]
pub struct Args {
    /// The directory of handler plugins (`*.wasm`), watched for changes.
    #[arg(long, required_unless_present = "follow")]
    pub dir: Option<PathBuf>,
    /// Follow an OCI reference (`REGISTRY/REPOSITORY:TAG`): whenever the
    /// tag moves, pull, verify, load and swap in what it points to.
    /// Repeatable; with --dir or instead of it.
    #[arg(long, value_name = "REF")]
    pub follow: Vec<String>,
    /// A public key (PEM, P-256, as `cosign.pub`) whose signature a
    /// followed artefact needs. Repeatable: any one suffices.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Vec<PathBuf>,
    /// Load followed artefacts without checking signatures.
    #[arg(long, conflicts_with = "trust")]
    pub unsigned: bool,
    /// How often each followed tag is looked at, in milliseconds (± 20 %).
    #[arg(long, default_value_t = 10_000)]
    pub poll_ms: u64,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where guest code runs.
    #[arg(long, value_enum, default_value_t = Mode::Async)]
    pub mode: Mode,
    /// Plugin calls that run at once (worker threads, and instances per
    /// plugin version). Default: the number of CPUs.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Requests that may wait for a worker before the service sheds load
    /// with 503 (threads and blocking modes).
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    /// How long a request may wait for a plugin instance before the service
    /// sheds load with 503, in milliseconds (async mode).
    #[arg(long, default_value_t = 1000)]
    pub max_wait_ms: u64,
    /// The OS priority of the threads that run guest code computing past
    /// its first epoch tick (async mode).
    #[arg(long, value_enum, default_value_t = GuestPriority::Lowest)]
    pub guest_priority: GuestPriority,
    /// How many threads run guest code computing past its first epoch
    /// tick (async mode). Default: the number of CPUs.
    #[arg(long)]
    pub guest_threads: Option<usize>,
    /// The longest one plugin call may run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub deadline_ms: u64,
    /// The most linear memory one plugin instance may hold, in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mb: usize,
    /// The largest request body accepted, in bytes (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
}

impl Args {
    fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1)
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.max(1))
    }

    /// Where plugins come from.
    fn sources(&self) -> anyhow::Result<Sources> {
        let trust = if self.follow.is_empty() || self.unsigned {
            Trust::Unsigned
        } else if self.trust.is_empty() {
            anyhow::bail!(
                "--follow needs the signers' public keys (--trust KEY.pub), or --unsigned"
            );
        } else {
            Trust::keys_from_files(&self.trust)?
        };
        Ok(Sources {
            dir: self.dir.clone(),
            follow: self.follow.clone(),
            options: FollowOptions::new(trust).poll(Duration::from_millis(self.poll_ms.max(1))),
        })
    }
}

/// Where plugins come from: a watched directory, followed OCI tags, or both.
pub struct Sources {
    dir: Option<PathBuf>,
    follow: Vec<String>,
    options: FollowOptions,
}

/// The watcher and followers, kept alive while the service runs.
pub struct Following {
    _watcher: Option<Watcher>,
    _followers: Vec<Follower>,
}

impl Sources {
    /// Start them: the directory is loaded and each tag pulled once before
    /// this returns (a registry that is down delays nothing: the follower
    /// reports it and tries again). Blocks: call it off the executor.
    pub fn start<W: World>(
        &self,
        runtime: Runtime<W>,
        registry: Registry<W>,
    ) -> anyhow::Result<Following> {
        let watcher = match &self.dir {
            Some(dir) => Some(
                Watcher::start(dir, runtime.clone(), registry.clone())
                    .with_context(|| format!("watching {}", dir.display()))?,
            ),
            None => None,
        };
        let followers = self
            .follow
            .iter()
            .map(|reference| {
                Follower::start(
                    reference,
                    runtime.clone(),
                    registry.clone(),
                    self.options.clone(),
                )
                .with_context(|| format!("following {reference}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Following {
            _watcher: watcher,
            _followers: followers,
        })
    }
}

/// How plugin calls are made: one of the modes.
pub enum Backend {
    /// `threads` and `blocking`.
    Registry(threads::Service),
    /// `async`.
    Async(async_mode::Service),
}

impl Backend {
    /// Call plugin `name` with `req`.
    pub async fn call(&self, name: &str, req: types::HttpRequest) -> types::Outcome {
        match self {
            Backend::Registry(service) => service.call(name, req).await,
            Backend::Async(service) => service.call(name, req).await,
        }
    }

    /// Every loaded version, for `/metrics` and `/healthz`.
    pub fn versions(&self) -> Vec<types::VersionGauge> {
        match self {
            Backend::Registry(service) => service.versions(),
            Backend::Async(service) => service.versions(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http-io")
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(serve(args));
    // Blocking-pool threads (mode `blocking`) may still be parked: don't wait
    // for their keep-alive.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // Before any runtime is built: wasmplug registers its metrics then.
    let metrics = Arc::new(Metrics::install().context("installing the metrics recorder")?);
    metrics.spawn_upkeep();
    let workers = args.workers();
    let sources = args.sources()?;
    let backend = match args.mode {
        Mode::Threads | Mode::Blocking => {
            let options = threads::Options {
                workers,
                queue: args.queue,
                deadline: args.deadline(),
                memory_limit: args.memory_mb << 20,
                dedicated: args.mode == Mode::Threads,
            };
            // Loading the directory compiles components: not on the executor.
            tokio::task::spawn_blocking(move || threads::Service::start(&sources, options))
                .await
                .context("starting the plugin registry")??
        }
        Mode::Async => {
            let options = async_mode::Options {
                workers,
                max_wait: Duration::from_millis(args.max_wait_ms),
                deadline: args.deadline(),
                memory_limit: args.memory_mb << 20,
                guest_threads: args.guest_threads,
                guest_priority: match args.guest_priority {
                    GuestPriority::Idle => wasmplug::runtime::GuestPriority::Idle,
                    GuestPriority::Lowest => wasmplug::runtime::GuestPriority::Lowest,
                    GuestPriority::Normal => wasmplug::runtime::GuestPriority::Normal,
                },
            };
            // Loading the directory compiles components: not on the executor.
            tokio::task::spawn_blocking(move || async_mode::Service::start(&sources, options))
                .await
                .context("starting the plugin registry")??
        }
    };
    let backend = Arc::new(backend);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        mode = ?args.mode,
        workers,
        dir = ?args.dir,
        follow = ?args.follow,
        "http-service listening on http://{addr}"
    );
    // The one line on stdout: how scripts and tests find the port.
    println!("listening on http://{addr}");

    let app = http::router(http::AppState {
        backend,
        metrics,
        max_body: args.max_body,
    });
    // Small answers: don't let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {err}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("http-service stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM: in-flight requests then finish.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {err}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
