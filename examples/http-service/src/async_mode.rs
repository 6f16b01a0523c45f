//! Mode `async`: the same world and the same components, driven through
//! wasmtime's async API directly (`bindgen!` with async exports,
//! `instantiate_async`, `call_async` on the fiber path), for comparison with
//! the registry on worker threads.
//!
//! Guest code runs on the executor's own threads, on a fiber. So that a slow
//! guest cannot hold an executor thread, every epoch tick (10 ms) the call
//! yields back to the executor, and a call past its deadline traps.
//!
//! wasmplug's `Runtime` is synchronous, so this mode cannot use it: it has
//! its own engine, instance pool per version and directory watcher, in
//! miniature. What it lacks next to wasmplug: backoff for a crashing
//! version, manifests and policies beyond a memory cap and a deadline,
//! guest output in the log, the on-disk code cache, state handoff. README.md
//! says why the service does not use it by default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use wasmplug::wasmtime::component::{Component, Linker, ResourceTable};
use wasmplug::wasmtime::{
    self, Config, Engine, InstanceAllocationStrategy, ResourceLimiter, Store, UpdateDeadline,
};
use wasmplug::{identity::ContentHash, Identity};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::metrics::Metrics;
use crate::types::{ErrorKind, HttpRequest, HttpResponse, Outcome, VersionGauge};

/// `bindgen!` for `wit/handler.wit`, with async exports.
mod bindings {
    ::wasmplug::wasmtime::component::bindgen!({
        path: "wit/handler.wit",
        world: "http-handler",
        wasmtime_crate: ::wasmplug::wasmtime,
        exports: { default: async },
    });
}

use bindings::wasmplug::http_handler::types::Request as WitRequest;
use bindings::{HttpHandler, HttpHandlerPre};

/// How often the epoch advances: calls yield to the executor this often.
const TICK: Duration = Duration::from_millis(10);

/// How the async mode runs.
pub struct Options {
    /// Most instances per version at once.
    pub max_instances: usize,
    /// Per-call deadline.
    pub deadline: Duration,
    /// Linear memory cap per memory, in bytes.
    pub memory_limit: usize,
}

/// What each store holds.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    meter: Meter,
    /// When the running call (or instantiation) must be done by.
    deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps an instance's linear memory and counts it, and the instance, into
/// its version's gauges until the store is dropped.
struct Meter {
    cap: usize,
    bytes: usize,
    version_bytes: Arc<AtomicUsize>,
    version_live: Arc<AtomicUsize>,
}

impl Meter {
    fn new(cap: usize, version_bytes: Arc<AtomicUsize>, version_live: Arc<AtomicUsize>) -> Self {
        version_live.fetch_add(1, Ordering::Relaxed);
        Meter {
            cap,
            bytes: 0,
            version_bytes,
            version_live,
        }
    }
}

impl ResourceLimiter for Meter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            return Ok(false);
        }
        let grown = desired.saturating_sub(current);
        self.bytes += grown;
        self.version_bytes.fetch_add(grown, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.version_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.version_live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance, idle in its version's pool or serving a call.
struct Pooled {
    store: Store<HostState>,
    handler: HttpHandler,
}

/// One loaded version.
struct Version {
    identity: Identity,
    label: String,
    path: PathBuf,
    hash: ContentHash,
    pre: HttpHandlerPre<HostState>,
    idle: Mutex<Vec<Pooled>>,
    slots: Semaphore,
    live: Arc<AtomicUsize>,
    memory: Arc<AtomicUsize>,
}

/// The engine and linker, shared by the watcher and the request path.
struct Host {
    engine: Engine,
    linker: Linker<HostState>,
    options: Options,
}

impl Host {
    /// A new instance of `pre`, with `init` run when `init` is set.
    async fn instantiate(
        &self,
        pre: &HttpHandlerPre<HostState>,
        live: &Arc<AtomicUsize>,
        memory: &Arc<AtomicUsize>,
        init: bool,
    ) -> anyhow::Result<Pooled> {
        let state = HostState {
            wasi: WasiCtxBuilder::new().build(), // nothing granted
            table: ResourceTable::new(),
            meter: Meter::new(self.options.memory_limit, memory.clone(), live.clone()),
            deadline: Instant::now() + self.options.deadline,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.meter);
        // Every tick: past the deadline, trap; otherwise let the executor run
        // other tasks, then carry on.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let handler = pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        if init {
            run_init(&mut store, &handler, self.options.deadline).await?;
        }
        Ok(Pooled { store, handler })
    }
}

/// Run `init` on a fresh instance, within `deadline`.
async fn run_init(
    store: &mut Store<HostState>,
    handler: &HttpHandler,
    deadline: Duration,
) -> anyhow::Result<()> {
    store.data_mut().deadline = Instant::now() + deadline;
    store.set_epoch_deadline(1);
    handler
        .wasmplug_http_handler_lifecycle()
        .call_init(&mut *store)
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|refusal| anyhow!("init refused: {refusal}"))
}

/// Everything the request path and the watcher share.
struct Shared {
    host: Host,
    metrics: Arc<Metrics>,
    /// Current version by plugin name.
    plugins: RwLock<HashMap<String, Arc<Version>>>,
    /// Which name each file provides, and the hash of what was loaded.
    files: Mutex<HashMap<PathBuf, (String, ContentHash)>>,
    /// Content that failed to load, per file: reported once.
    failed: Mutex<HashMap<PathBuf, ContentHash>>,
    runtime: Handle,
}

/// The async-mode service.
pub struct Service {
    shared: Arc<Shared>,
    _debouncer: Debouncer<RecommendedWatcher>,
    _ticker: mpsc::Sender<()>,
}

impl Service {
    /// Build the engine, load every plugin in `dir`, and watch it. Blocks
    /// while components compile: call it off the executor.
    pub fn start(
        dir: &Path,
        options: Options,
        metrics: Arc<Metrics>,
        runtime: Handle,
    ) -> anyhow::Result<super::Backend> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // The fiber path of `call_async`, not the component-model-async
            // scheduler: the guest makes plain synchronous calls.
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(
                wasmplug::runtime::default_pooling(),
            ));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;

        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("async-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    ticking.increment_epoch();
                }
            })
            .context("starting the epoch thread")?;

        let shared = Arc::new(Shared {
            host: Host {
                engine,
                linker,
                options,
            },
            metrics,
            plugins: RwLock::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            runtime,
        });

        let dir = dir
            .canonicalize()
            .with_context(|| format!("watching {}", dir.display()))?;
        // Watch, then scan: a file written between the two is seen twice,
        // which is harmless.
        let (tx, rx) = mpsc::channel::<DebounceEventResult>();
        let mut debouncer =
            new_debouncer(Duration::from_millis(50), tx).context("starting the file watcher")?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        let mut initial: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        initial.sort();
        for path in initial {
            shared.reconcile(&path);
        }
        let watching = shared.clone();
        std::thread::Builder::new()
            .name("async-watcher".into())
            .spawn(move || {
                for result in rx {
                    match result {
                        Ok(events) => {
                            let mut paths: Vec<PathBuf> =
                                events.into_iter().map(|e| e.path).collect();
                            paths.sort();
                            paths.dedup();
                            for path in paths {
                                watching.reconcile(&path);
                            }
                        }
                        Err(err) => tracing::warn!(target: "http_service", "watch error: {err}"),
                    }
                }
            })
            .context("starting the watcher thread")?;

        Ok(super::Backend::Async(Service {
            shared,
            _debouncer: debouncer,
            _ticker: stop,
        }))
    }

    /// Call plugin `name` on this task: the guest runs on a fiber here.
    pub async fn call(&self, name: &str, req: HttpRequest) -> Outcome {
        let version = self
            .shared
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let Some(version) = version else {
            return Outcome::NotLoaded;
        };
        let who = &version.label;
        let Ok(_slot) = version.slots.acquire().await else {
            return Outcome::Failed {
                kind: ErrorKind::Internal,
                message: format!("{who}: instance pool closed"),
            };
        };
        let idle = version.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut pooled = match idle {
            Some(pooled) => pooled,
            None => {
                let host = &self.shared.host;
                match host
                    .instantiate(&version.pre, &version.live, &version.memory, true)
                    .await
                {
                    Ok(pooled) => pooled,
                    Err(err) => {
                        tracing::warn!(target: "http_service", "{who}: new instance failed: {err:#}");
                        return Outcome::Failed {
                            kind: ErrorKind::Unavailable,
                            message: format!("{who} could not start an instance"),
                        };
                    }
                }
            }
        };

        let req = WitRequest {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: req.headers,
            body: req.body,
        };
        pooled.store.data_mut().deadline = Instant::now() + self.shared.host.options.deadline;
        pooled.store.set_epoch_deadline(1);
        let result = pooled
            .handler
            .wasmplug_http_handler_handler()
            .call_handle(&mut pooled.store, &req)
            .await;
        match result {
            Ok(answer) => {
                version
                    .idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(pooled);
                match answer {
                    Ok(resp) => Outcome::Answered(HttpResponse {
                        status: resp.status,
                        headers: resp.headers,
                        body: resp.body,
                    }),
                    Err(message) => Outcome::Failed {
                        kind: ErrorKind::Guest,
                        message: format!("{who} returned an error: {message}"),
                    },
                }
            }
            Err(trap) => {
                // The instance's state is undefined now: drop it.
                drop(pooled);
                tracing::warn!(target: "http_service", "{who} trapped: {trap:?}");
                let what = match trap.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => "ran past its deadline".to_string(),
                    Some(code) => format!("trapped: {code}"),
                    None => "trapped".to_string(),
                };
                Outcome::Failed {
                    kind: ErrorKind::Trap,
                    message: format!("{who} crashed ({what}); its instance was replaced"),
                }
            }
        }
    }

    /// Every loaded version (all current: this mode keeps one per name).
    pub fn versions(&self) -> Vec<VersionGauge> {
        let mut out: Vec<VersionGauge> = self
            .shared
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|v| VersionGauge {
                name: v.identity.name.clone(),
                version: v.identity.version.to_string(),
                current: true,
                live_instances: v.live.load(Ordering::Relaxed),
                memory_bytes: v.memory.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl Shared {
    /// Bring one reported path in line with the disk (as wasmplug's watcher
    /// does): a changed `*.wasm` is loaded and swapped in, a gone one
    /// unloaded, anything else ignored. Runs on the watcher's thread.
    fn reconcile(&self, path: &Path) {
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            return;
        }
        if !path.exists() {
            lock(&self.failed).remove(path);
            if let Some((name, _)) = lock(&self.files).remove(path) {
                self.unload_if_from(&name, path);
            }
            return;
        }
        if !path.is_file() {
            return;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => return self.fail(path, anyhow!(err).context("reading the file")),
        };
        let hash = ContentHash::of(&bytes);
        let unchanged = lock(&self.files).get(path).map(|(_, h)| *h) == Some(hash)
            || lock(&self.failed).get(path) == Some(&hash);
        if unchanged {
            return;
        }
        let loaded = self.runtime.block_on(self.load(path, &bytes, hash));
        match loaded {
            Ok(version) => {
                lock(&self.failed).remove(path);
                self.install(path, version);
            }
            Err(err) => {
                lock(&self.failed).insert(path.to_path_buf(), hash);
                self.fail(path, err);
            }
        }
    }

    /// Compile, link, type-check, ask the identity, run `init` once (that
    /// instance becomes the first of the version's pool).
    async fn load(
        &self,
        path: &Path,
        bytes: &[u8],
        hash: ContentHash,
    ) -> anyhow::Result<Arc<Version>> {
        let host = &self.host;
        let component = Component::new(&host.engine, bytes)
            .map_err(anyhow::Error::from)
            .context("not a valid WebAssembly component")?;
        let instance_pre = host
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("its imports do not match what the host provides")?;
        let pre = HttpHandlerPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("its exports do not match the http-handler world")?;
        let live = Arc::new(AtomicUsize::new(0));
        let memory = Arc::new(AtomicUsize::new(0));
        let mut first = host.instantiate(&pre, &live, &memory, false).await?;
        let id = first
            .handler
            .wasmplug_http_handler_lifecycle()
            .call_identity(&mut first.store)
            .await
            .map_err(anyhow::Error::from)
            .context("calling identity")?;
        let identity = Identity::parse(&id.name, &id.version)?;
        run_init(&mut first.store, &first.handler, host.options.deadline).await?;
        Ok(Arc::new(Version {
            label: identity.to_string(),
            identity,
            path: path.to_path_buf(),
            hash,
            pre,
            idle: Mutex::new(vec![first]),
            slots: Semaphore::new(host.options.max_instances.max(1)),
            live,
            memory,
        }))
    }

    /// Make `version` current for its name; log and count what happened.
    fn install(&self, path: &Path, version: Arc<Version>) {
        let name = version.identity.name.clone();
        let previous_name =
            lock(&self.files).insert(path.to_path_buf(), (name.clone(), version.hash));
        let old = self
            .plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), version.clone());
        tracing::info!(target: "http_service", "loaded {} from {}", version.label, path.display());
        self.metrics.record_event("loaded");
        if let Some(old) = old {
            tracing::info!(target: "http_service", "swapped {} -> {}", old.label, version.label);
            self.metrics.record_event("swapped");
            // Its instances go when the calls in flight on it finish.
            tracing::info!(target: "http_service", "unloaded {} ({})", old.label, old.path.display());
            self.metrics.record_event("unloaded");
        }
        // The file used to provide another name: that name is gone.
        if let Some((previous, _)) = previous_name.filter(|(n, _)| *n != name) {
            self.unload_if_from(&previous, path);
        }
    }

    /// Remove `name` if its current version came from `path`.
    fn unload_if_from(&self, name: &str, path: &Path) {
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        if plugins.get(name).is_some_and(|v| v.path == path) {
            if let Some(old) = plugins.remove(name) {
                drop(plugins);
                tracing::info!(target: "http_service", "unloaded {} ({})", old.label, path.display());
                self.metrics.record_event("unloaded");
            }
        }
    }

    fn fail(&self, path: &Path, err: anyhow::Error) {
        tracing::warn!(target: "http_service", "failed {}: {err:#}", path.display());
        self.metrics.record_event("failed");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
