//! Modes `threads` and `blocking`: wasmplug's [`Registry`] and [`Watcher`],
//! with every plugin call made off the async executor.
//!
//! * `threads` (the default): a fixed pool of `workers` dedicated threads
//!   takes jobs from one queue.
//! * `blocking`: each call is a `tokio::task::spawn_blocking` task, at most
//!   `workers` at once.
//!
//! Either way the registry serves each plugin version through a pool of
//! `workers` instances ([`Registry::with_pool_size`]), so a worker never
//! waits for another's instance, and the queue in front is bounded: past
//! `queue` waiting requests, the service answers 503 rather than grow.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{oneshot, Semaphore};
use wasmplug::wasmtime::component::{Instance as RawInstance, InstancePre, Linker};
use wasmplug::wasmtime::{self, Store};
use wasmplug::{world::check_export, Error, Identity, Policy, Registry, Runtime, State, World};

use crate::{Following, Sources};

use crate::types::{ErrorKind, HttpRequest, HttpResponse, Outcome, VersionGauge};

/// `bindgen!` for `wit/handler.wit`, synchronous: what wasmplug calls.
mod bindings {
    ::wasmplug::wasmtime::component::bindgen!({
        path: "wit/handler.wit",
        world: "http-handler",
        wasmtime_crate: ::wasmplug::wasmtime,
    });
}

use bindings::wasmplug::http_handler::types::{
    Identity as WitIdentity, Request as WitRequest, Response as WitResponse,
};
pub use bindings::{HttpHandler, HttpHandlerIndices};

/// The exported interfaces of the world, by full name.
pub const LIFECYCLE: &str = "wasmplug:http-handler/lifecycle@1.0.0";
/// See [`LIFECYCLE`].
pub const HANDLER: &str = "wasmplug:http-handler/handler@1.0.0";

impl World for HttpHandler {
    type Data = ();
    type Indices = HttpHandlerIndices;

    fn add_to_linker(_: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        Ok(()) // the world imports nothing but WASI, which wasmplug adds
    }

    fn indices(pre: &InstancePre<State<()>>) -> wasmtime::Result<HttpHandlerIndices> {
        check_exports(pre)?;
        HttpHandlerIndices::new(pre)
    }

    fn load(
        indices: &HttpHandlerIndices,
        store: &mut Store<State<()>>,
        instance: &RawInstance,
    ) -> wasmtime::Result<Self> {
        indices.load(store, instance)
    }

    fn identity(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Option<Identity>> {
        let id = self
            .wasmplug_http_handler_lifecycle()
            .call_identity(&mut *store)?;
        Identity::parse(&id.name, &id.version)
            .map(Some)
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn init(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Result<(), String>> {
        self.wasmplug_http_handler_lifecycle().call_init(store)
    }
}

/// Check every export of the world by name, so a mistyped plugin is
/// refused at load with the function named (both modes' worlds).
pub fn check_exports(pre: &InstancePre<State<()>>) -> wasmtime::Result<()> {
    check_export::<_, (), (WitIdentity,)>(pre, Some(LIFECYCLE), "identity")?;
    check_export::<_, (), (Result<(), String>,)>(pre, Some(LIFECYCLE), "init")?;
    check_export::<_, (&WitRequest,), (Result<WitResponse, String>,)>(pre, Some(HANDLER), "handle")
}

/// How the service runs plugin calls.
pub struct Options {
    /// Calls at once: worker threads, and instances per version.
    pub workers: usize,
    /// Requests that may wait for a worker; more get 503.
    pub queue: usize,
    /// Per-call deadline.
    pub deadline: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory_limit: usize,
    /// Dedicated threads (`threads`) or tokio's blocking pool (`blocking`).
    pub dedicated: bool,
}

type Job = Box<dyn FnOnce() + Send>;

enum Executor {
    /// A job queue drained by `workers` threads of our own.
    Dedicated { jobs: mpsc::Sender<Job> },
    /// `spawn_blocking`, at most `running` permits at once.
    Blocking { running: Arc<Semaphore> },
}

/// The registry-backed service.
pub struct Service {
    registry: Registry<HttpHandler>,
    executor: Executor,
    /// Requests waiting or running; `try_acquire` failing is a 503.
    queue: Arc<Semaphore>,
    _sources: Following,
}

impl Service {
    /// Load every plugin from `sources`, keep following them, and start the
    /// workers. Blocks while the first components compile.
    pub fn start(sources: &Sources, options: Options) -> anyhow::Result<super::Backend> {
        let policy = Policy::default()
            .deadline(options.deadline)
            .memory_limit(options.memory_limit);
        let runtime = Runtime::<HttpHandler>::builder()
            .policy(policy)
            .build()
            .context("building the wasmplug runtime")?;
        let registry = Registry::<HttpHandler>::with_pool_size(options.workers);

        // Subscribe before the watcher's first scan, so its loads count.

        let following = sources.start(runtime, registry.clone())?;

        let executor = if options.dedicated {
            let (jobs, queue) = mpsc::channel::<Job>();
            let queue = Arc::new(Mutex::new(queue));
            for i in 0..options.workers {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("plugin-worker-{i}"))
                    .spawn(move || loop {
                        // Hold the lock only while taking a job.
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the service is gone
                        }
                    })
                    .context("starting a worker thread")?;
            }
            Executor::Dedicated { jobs }
        } else {
            Executor::Blocking {
                running: Arc::new(Semaphore::new(options.workers)),
            }
        };

        Ok(super::Backend::Registry(Service {
            registry,
            executor,
            queue: Arc::new(Semaphore::new(options.queue.max(1) + options.workers)),
            _sources: following,
        }))
    }

    /// Call plugin `name`: on a worker, never on the calling (executor)
    /// thread.
    pub async fn call(&self, name: &str, req: HttpRequest) -> Outcome {
        let Ok(queued) = self.queue.clone().try_acquire_owned() else {
            return Outcome::Failed {
                kind: ErrorKind::Overloaded,
                message: "every worker is busy and the queue is full".into(),
            };
        };
        let registry = self.registry.clone();
        let name = name.to_string();
        let work = move || call_blocking(&registry, &name, req);

        let joined = match &self.executor {
            Executor::Dedicated { jobs } => {
                let (tx, rx) = oneshot::channel();
                let job: Job = Box::new(move || {
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
                    drop(queued);
                    // The client may have gone; nobody to tell then.
                    let _ = tx.send(outcome.map_err(|_| ()));
                });
                if jobs.send(job).is_err() {
                    return internal("the worker threads are gone");
                }
                rx.await.map_err(|_| ()).and_then(|r| r)
            }
            Executor::Blocking { running } => {
                let Ok(permit) = running.clone().acquire_owned().await else {
                    return internal("the worker pool is closed");
                };
                tokio::task::spawn_blocking(move || {
                    let outcome = work();
                    drop((permit, queued));
                    outcome
                })
                .await
                .map_err(|_| ())
            }
        };
        joined.unwrap_or_else(|()| internal("the plugin call panicked in the host"))
    }

    /// Every loaded version.
    pub fn versions(&self) -> Vec<VersionGauge> {
        versions_of(&self.registry)
    }
}

/// Every loaded version of a registry, from [`Registry::list`].
pub fn versions_of<W: World>(registry: &Registry<W>) -> Vec<VersionGauge> {
    registry
        .list()
        .into_iter()
        .map(|v| VersionGauge {
            name: v.identity.name,
            version: v.identity.version.to_string(),
            current: v.current,
        })
        .collect()
}

fn internal(message: &str) -> Outcome {
    Outcome::Failed {
        kind: ErrorKind::Internal,
        message: message.to_string(),
    }
}

/// On a worker thread: resolve `name` and call its current version.
fn call_blocking(registry: &Registry<HttpHandler>, name: &str, req: HttpRequest) -> Outcome {
    let Ok(handle) = registry.get(name) else {
        return Outcome::NotLoaded;
    };
    let req = WitRequest {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body,
    };
    let result = handle.call(|instance| {
        instance.try_call(|plugin, store| {
            plugin
                .wasmplug_http_handler_handler()
                .call_handle(store, &req)
        })
    });
    match result {
        Ok(resp) => Outcome::Answered(HttpResponse {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        }),
        Err(err) => classify(err),
    }
}

/// The outcome of a failed call. The client gets a short message naming
/// the plugin and what happened; the log gets the whole error (with the
/// guest's backtrace for a trap).
pub fn classify(err: Error) -> Outcome {
    let who = err
        .plugin()
        .map(|p| match &p.version {
            Some(v) => format!("{}@{v}", p.name),
            None => p.name.to_string(),
        })
        .unwrap_or_default();
    let (kind, message) = match &err {
        Error::NotLoaded { .. } => return Outcome::NotLoaded,
        Error::Guest { message, .. } => {
            tracing::debug!(target: "http_service", "{err}");
            (
                ErrorKind::Guest,
                format!("{who} returned an error: {message}"),
            )
        }
        Error::Trap { trap, limit, .. } => {
            tracing::warn!(target: "http_service", "{err}");
            let what = if err.is_timeout() {
                "ran past its deadline".to_string()
            } else if let Some(limit) = limit {
                format!("hit {limit}")
            } else if let Some(trap) = trap {
                format!("trapped: {trap}")
            } else {
                "trapped".to_string()
            };
            (
                ErrorKind::Trap,
                format!("{who} crashed ({what}); its instance was replaced"),
            )
        }
        Error::Unavailable { retry_in, .. } => {
            tracing::warn!(target: "http_service", "{err}");
            (
                ErrorKind::Unavailable,
                format!(
                    "{who} keeps crashing; next restart in {} ms",
                    retry_in.as_millis()
                ),
            )
        }
        Error::Overloaded { waited, .. } => {
            tracing::debug!(target: "http_service", "{err}");
            (
                ErrorKind::Overloaded,
                format!(
                    "{who} is overloaded: no instance freed in {} ms",
                    waited.as_millis()
                ),
            )
        }
        Error::Instantiate { .. } | Error::Init { .. } => {
            tracing::warn!(target: "http_service", "{err}");
            (
                ErrorKind::Unavailable,
                format!("{who} could not start an instance"),
            )
        }
        _ => {
            tracing::error!(target: "http_service", "{err}");
            (ErrorKind::Internal, format!("{who}: internal error"))
        }
    };
    Outcome::Failed { kind, message }
}
