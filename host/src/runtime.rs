//! The runtime: one wasmtime `Engine` and one `Linker`, configured once.
//!
//! What the engine is narrowed down to, and why:
//! * **component model on**, component-model **concurrency off**: plugins are
//!   called synchronously, and turning concurrency support off is what brings
//!   a typed call from ~300 ns down to ~90 ns.
//! * **pooling instance allocator** on by default: instantiation takes slots
//!   from pools reserved up front (a few µs instead of tens), and a dropped
//!   instance gives its slot back with its memory decommitted. The pool sizes
//!   are in [`default_pooling`], each explained there.
//! * **epoch interruption** on: a background thread ([`Ticker`]) bumps the
//!   engine's epoch every [`RuntimeBuilder::epoch_tick`]; each call sets its
//!   deadline in ticks. Cheaper than fuel, and enough for wall-clock limits.
//! * **copy-on-write** memory initialisation (wasmtime's default), so a new
//!   instance maps its data segments instead of copying them.
//!
//! For an [`ASYNC`](World::ASYNC) world the same engine serves calls as
//! futures: WASI is linked in its async form, every store yields to the
//! executor at each epoch tick (its deadline is checked there), and a call
//! that two ticks find computing moves to the runtime's own *guest threads*
//! ([`RuntimeBuilder::guest_threads`]), so guest code holds the embedder's
//! executor for a tick at a time, two in all, at most (`handle.rs`).
//!
//! With [`RuntimeBuilder::cache_dir`], compiled code also persists on disk
//! across processes (`cache.rs`).
//!
//! The runtime also remembers what it compiled, by content hash, so loading
//! the same bytes twice compiles once. It holds those entries weakly: when
//! the last [`Plugin`] using a compiled component is dropped, the compiled
//! code is freed (invariant 4, "unload is a drop").

use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::DiskCache;
use crate::deadline::{EpochClock, INLINE_BUDGET, TICK_SEEN_WITHIN};
use crate::identity::ContentHash;
use crate::{Policy, State, World};

pub use crate::cache::CacheStats;

/// Compiled, linked and type-checked code for one component, shared by every
/// plugin loaded from the same bytes.
pub(crate) struct Compiled<W: World> {
    /// The SHA-256 of the component file's bytes (for a snapshot, of the
    /// file it was taken from).
    pub(crate) hash: ContentHash,
    /// A pre-initialization snapshot: its instances start with `init`
    /// already run (`snapshot.rs`).
    pub(crate) initialized: bool,
    /// A snapshot's exports that open again the standard streams its
    /// `init` left open, called in order on each new instance
    /// (`snapshot::handles`); empty for a plain component.
    pub(crate) replay: Vec<ComponentExportIndex>,
    pub(crate) component: Component,
    pub(crate) pre: InstancePre<State<W::Data>>,
    pub(crate) indices: W::Indices,
}

impl<W: World> Compiled<W> {
    /// What the component imports, by name (interfaces and functions).
    pub(crate) fn imports(&self, engine: &Engine) -> Vec<String> {
        self.component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

pub(crate) struct RuntimeInner<W: World> {
    pub(crate) engine: Engine,
    linker: Linker<State<W::Data>>,
    pub(crate) policy: Policy,
    pub(crate) tick: Duration,
    pub(crate) fuel: bool,
    compiled: Mutex<HashMap<ContentHash, Weak<Compiled<W>>>>,
    disk: Option<DiskCache>,
    /// The epoch as the ticker counts it, for deadlines inside host calls.
    pub(crate) clock: Arc<EpochClock>,
    /// Where async calls that compute past their first tick go on running.
    pub(crate) guest: Arc<GuestThreads>,
    /// Each new instance's [`World::Data`].
    pub(crate) data: DataFn<W>,
    _ticker: Ticker,
}

type DataFn<W> = Arc<dyn Fn() -> <W as World>::Data + Send + Sync>;

/// Owns the engine and the linker for one world `W`; loads plugins.
///
/// Cheap to clone: clones share the engine, the linker and the table of
/// compiled code. Plugins keep their runtime alive.
pub struct Runtime<W: World> {
    pub(crate) inner: Arc<RuntimeInner<W>>,
}

impl<W: World> Clone for Runtime<W> {
    fn clone(&self) -> Self {
        Runtime {
            inner: self.inner.clone(),
        }
    }
}

impl<W: World> Runtime<W> {
    /// A runtime with the default configuration: pooling allocator, epoch
    /// interruption with a 10 ms tick, and [`Policy::default()`] for every
    /// plugin (nothing granted).
    ///
    /// # Errors
    /// When the engine cannot be built (the pooling allocator cannot reserve
    /// its address space) or the epoch ticker thread cannot start.
    pub fn new() -> anyhow::Result<Self> {
        RuntimeBuilder::new().build()
    }

    /// Configure a runtime: pool sizes, epoch tick, default policy, fuel,
    /// on-disk cache.
    pub fn builder() -> RuntimeBuilder<W> {
        RuntimeBuilder::new()
    }

    /// The policy of plugins loaded without one of their own.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The wasmtime engine, for embedders that need it directly.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compiled code for `bytes`: shared if these exact bytes are already
    /// loaded, otherwise compiled, linked and type-checked now.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        hash: ContentHash,
    ) -> anyhow::Result<Arc<Compiled<W>>> {
        self.compiled_as(hash, hash, None, || {
            compile_component(&self.inner.engine, bytes)
                .map_err(anyhow::Error::from)
                .context("not a valid WebAssembly component for this engine")
        })
    }

    /// Compiled code kept under `key` (in memory and on disk): the live
    /// one, the disk cache's, or `make`'s, then linked and type-checked.
    /// `hash` is the file's; `key` is the same for a plain component and
    /// derived from it for a snapshot. `snapshot` is `None` for a plain
    /// component; for a snapshot, it finds the exports its instances call
    /// first (`Compiled::replay`), and the result is `initialized`.
    pub(crate) fn compiled_as(
        &self,
        key: ContentHash,
        hash: ContentHash,
        snapshot: Option<fn(&Component) -> Vec<ComponentExportIndex>>,
        make: impl FnOnce() -> anyhow::Result<Component>,
    ) -> anyhow::Result<Arc<Compiled<W>>> {
        if let Some(live) = self.lookup(&key) {
            return Ok(live);
        }
        // Compile outside the lock: a big component takes seconds, and other
        // loads must not wait for it.
        let engine = &self.inner.engine;
        let cached = self
            .inner
            .disk
            .as_ref()
            .and_then(|disk| disk.load(engine, &key));
        let component = match cached {
            Some(component) => component,
            None => {
                let component = make()?;
                if let Some(disk) = &self.inner.disk {
                    disk.store(&key, &component);
                }
                component
            }
        };
        W::accepts(&component, engine).map_err(anyhow::Error::from)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("its imports do not match what the host provides")?;
        let indices = W::indices(&pre)
            .map_err(anyhow::Error::from)
            .context("its exports do not match the host's world")?;
        let compiled = Arc::new(Compiled {
            hash,
            initialized: snapshot.is_some(),
            replay: snapshot.map_or_else(Vec::new, |replay| replay(&component)),
            component,
            pre,
            indices,
        });
        let mut table = self.lock_compiled();
        // Another thread may have compiled the same bytes meanwhile: keep one.
        if let Some(live) = table.get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        table.retain(|_, weak| weak.strong_count() > 0);
        table.insert(key, Arc::downgrade(&compiled));
        Ok(compiled)
    }

    fn lookup(&self, hash: &ContentHash) -> Option<Arc<Compiled<W>>> {
        self.lock_compiled().get(hash).and_then(Weak::upgrade)
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<ContentHash, Weak<Compiled<W>>>> {
        // The table is a cache of weak pointers: a panic elsewhere cannot
        // leave it inconsistent, so a poisoned lock is safe to reuse.
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Hits, misses and rejected entries of the on-disk cache, if the
    /// runtime has one ([`RuntimeBuilder::cache_dir`]).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.disk.as_ref().map(DiskCache::stats)
    }

    /// Where the on-disk cache keeps the compiled code of `bytes`, if the
    /// runtime has a cache.
    pub fn cache_entry(&self, bytes: &[u8]) -> Option<std::path::PathBuf> {
        let disk = self.inner.disk.as_ref()?;
        Some(disk.path(&ContentHash::of(bytes)))
    }

    /// How many distinct compiled components are alive (in use by at least
    /// one plugin). Identical bytes count once; an unloaded one not at all.
    pub fn compiled_count(&self) -> usize {
        self.lock_compiled()
            .values()
            .filter(|weak| weak.strong_count() > 0)
            .count()
    }
}

/// Configures a [`Runtime`]: pooling sizes, the epoch tick, and the default
/// [`Policy`] for plugins loaded without one of their own.
pub struct RuntimeBuilder<W: World> {
    world: std::marker::PhantomData<fn() -> W>,
    pooling: Option<PoolingAllocationConfig>,
    epoch_tick: Duration,
    policy: Policy,
    fuel: bool,
    cache: Option<(std::path::PathBuf, u64)>,
    guest_threads: usize,
    guest_priority: GuestPriority,
    keep_resident: usize,
    data: Option<DataFn<W>>,
    links: Vec<LinkFn<W>>,
}

type LinkFn<W> =
    Box<dyn FnOnce(&mut Linker<State<<W as World>::Data>>) -> wasmtime::Result<()> + Send>;

/// The default bound of the on-disk cache: 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

impl<W: World> Default for RuntimeBuilder<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: World> RuntimeBuilder<W> {
    /// The defaults: pooling allocator sized by [`default_pooling`],
    /// 10 ms epoch tick, [`Policy::default()`], no fuel, no disk cache.
    pub fn new() -> Self {
        RuntimeBuilder {
            world: std::marker::PhantomData,
            pooling: Some(default_pooling()),
            epoch_tick: Duration::from_millis(10),
            policy: Policy::default(),
            fuel: false,
            cache: None,
            guest_threads: std::thread::available_parallelism().map_or(2, usize::from),
            guest_priority: GuestPriority::default(),
            keep_resident: 0,
            data: None,
            links: Vec::new(),
        }
    }

    /// Define more host items in the linker, after WASI and the world's own
    /// imports; a definition here replaces one of theirs with the same name.
    /// For imports no `bindgen!` of the world covers, and for test doubles:
    /// `wasmplug test` answers every import of a plugin this way. Several
    /// calls add up, in order.
    ///
    /// ```no_run
    /// # use wasmplug::{Dynamic, Runtime};
    /// let runtime = Runtime::<Dynamic>::builder()
    ///     .link(|linker| {
    ///         linker.instance("example:clock/now@1.0.0")?.func_wrap(
    ///             "unix-seconds",
    ///             |_store, (): ()| Ok((1_700_000_000u64,)),
    ///         )
    ///     })
    ///     .build()?;
    /// # anyhow::Ok(())
    /// ```
    pub fn link(
        mut self,
        define: impl FnOnce(&mut Linker<State<W::Data>>) -> wasmtime::Result<()> + Send + 'static,
    ) -> Self {
        self.links.push(Box::new(define));
        self
    }

    /// Make each new instance's [`World::Data`] with `data` instead of
    /// `Default`: how an embedder's settings reach the host imports of
    /// every instance, including those a registry or a watcher makes.
    /// [`Plugin::instantiate_with`](crate::Plugin::instantiate_with) still
    /// takes its own.
    ///
    /// ```no_run
    /// # use wasmplug::reference::versions::{Greeter, Settings};
    /// let settings = Settings::from_iter([("greeting", "Hej")]);
    /// let runtime = wasmplug::Runtime::<Greeter>::builder()
    ///     .instance_data(move || settings.clone())
    ///     .build()?;
    /// # anyhow::Ok(())
    /// ```
    pub fn instance_data(mut self, data: impl Fn() -> W::Data + Send + Sync + 'static) -> Self {
        self.data = Some(Arc::new(data));
        self
    }

    /// Keep compiled code in `dir` across processes (see the `cache`
    /// module docs), bounded to [`DEFAULT_CACHE_BYTES`].
    ///
    /// [`build`](Self::build) creates `dir` (mode 0700) and its secret key
    /// file, and fails, naming `dir`, if it cannot be created or written,
    /// or if another user owns it or other users may write it (its mode
    /// has group or other write permission).
    pub fn cache_dir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cache_dir_bounded(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`cache_dir`](Self::cache_dir) with a size bound of your choice.
    pub fn cache_dir_bounded(mut self, dir: impl Into<std::path::PathBuf>, max_bytes: u64) -> Self {
        self.cache = Some((dir.into(), max_bytes));
        self
    }

    /// Meter fuel: every call gets its policy's [`Policy::fuel`] budget
    /// (unlimited when the policy sets none). Off by default: metering
    /// slows guest code down, and epoch deadlines already bound time.
    pub fn fuel(mut self, enable: bool) -> Self {
        self.fuel = enable;
        self
    }

    /// Use the pooling allocator with these sizes.
    pub fn pooling(mut self, pooling: PoolingAllocationConfig) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// Keep up to `bytes` of each linear memory and table resident when an
    /// instance is dropped, and reset them in place for the next instance
    /// of the same version (with Linux's `PAGEMAP_SCAN` where the kernel
    /// has it, so only the pages the instance wrote are reset), instead of
    /// returning them to the OS and faulting them in again. Off (0) by
    /// default. A new instance starts from the component's initial memory
    /// either way; nothing of an earlier instance survives.
    ///
    /// What it buys (`coldstart instantiate`, median of 400, 2026-12-03,
    /// 8 MiB): instantiate + `init` of the Rust hello 24 → 9 µs, Go
    /// 713 → 267 µs, JavaScript 888 → 375 µs; Python unchanged (its time
    /// goes to initialising tables). The price: memory a dropped instance
    /// touched (up to `bytes` per memory) stays in the process's RSS while
    /// its pool slot waits to be reused (up to 100 warm slots), including
    /// after the plugin is unloaded. Only with the pooling allocator.
    pub fn keep_resident(mut self, bytes: usize) -> Self {
        self.keep_resident = bytes;
        self
    }

    /// Allocate each instance on demand instead of from pools: slower to
    /// instantiate, but with no address space reserved up front.
    pub fn on_demand(mut self) -> Self {
        self.pooling = None;
        self
    }

    /// How often the epoch advances: the granularity of call deadlines.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick.max(Duration::from_millis(1));
        self
    }

    /// For an [`ASYNC`](World::ASYNC) world: how many threads run guest
    /// code that computes for longer than one epoch tick, off the
    /// embedder's executor (default: one per core; made on first use, at a
    /// lower OS priority than the embedder's threads). Calls that finish
    /// within their first tick never leave the caller's task.
    pub fn guest_threads(mut self, threads: usize) -> Self {
        self.guest_threads = threads.max(1);
        self
    }

    /// For an [`ASYNC`](World::ASYNC) world: the OS priority of the guest
    /// threads ([`guest_threads`](Self::guest_threads)). Default
    /// [`GuestPriority::Lowest`] (nice +19), below every thread of the
    /// embedder's.
    pub fn guest_priority(mut self, priority: GuestPriority) -> Self {
        self.guest_priority = priority;
        self
    }

    /// The policy of plugins loaded without one of their own.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Build the engine, the linker (WASI p2 and the world's imports) and
    /// start the epoch ticker.
    ///
    /// # Errors
    /// As [`Runtime::new`], and when the cache directory cannot be created or
    /// is not private (another user owns it or may write it).
    pub fn build(self) -> anyhow::Result<Runtime<W>> {
        crate::telemetry::describe();
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(true)
            .consume_fuel(self.fuel);
        if let Some(mut pooling) = self.pooling {
            if !W::ASYNC {
                // A blocking world never runs guest code on a fiber, so its
                // pool of fiber stacks would be reserved and never used.
                // Reserving it costs an `mprotect` per stack (1,000 by
                // default): 7.4 of a runtime's 8 ms start, and a mapping
                // per stack for every later `mmap` to search.
                pooling.total_stacks(0);
            }
            if self.keep_resident > 0 {
                pooling
                    .linear_memory_keep_resident(self.keep_resident)
                    .table_keep_resident(self.keep_resident)
                    .pagemap_scan(wasmtime::Enabled::Auto);
            }
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("configuring the wasmtime engine")?;

        let mut linker = wasi_linker::<W>(&engine)?;
        W::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding the world's host imports to the linker")?;
        if !self.links.is_empty() {
            linker.allow_shadowing(true);
            for define in self.links {
                define(&mut linker)
                    .map_err(anyhow::Error::from)
                    .context("adding the embedder's host items to the linker")?;
            }
            linker.allow_shadowing(false);
        }

        let disk = match self.cache {
            Some((dir, max_bytes)) => Some(DiskCache::new(dir, max_bytes, &engine)?),
            None => None,
        };
        let clock = Arc::new(EpochClock::new(self.epoch_tick));
        let ticker = Ticker::start(engine.clone(), clock.clone(), self.epoch_tick)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                policy: self.policy,
                tick: self.epoch_tick,
                fuel: self.fuel,
                compiled: Mutex::new(HashMap::new()),
                disk,
                clock,
                guest: Arc::new(GuestThreads::new(self.guest_threads, self.guest_priority)),
                data: self.data.unwrap_or_else(|| Arc::new(W::Data::default)),
                _ticker: ticker,
            }),
        })
    }
}

/// Compile on a rayon pool of this compile's own. wasmtime compiles a
/// component's functions in parallel on the current rayon pool; on the
/// global one, which every thread shares, a small component's functions
/// queue behind all of a large component's being compiled meanwhile (a
/// 50 KB swap waited 9.9 s beside a 12 MB one, `swap_latency` bench). With
/// a pool each, concurrent compiles share the cores through the OS's
/// scheduler instead. A pool costs a few thread starts: nothing beside a
/// compile.
/// A linker with WASI p2 in the form the world calls it (async or
/// blocking, with the blocking calls bounded by the call deadline): the
/// runtime's, and a snapshot's (`snapshot.rs`).
pub(crate) fn wasi_linker<W: World>(engine: &Engine) -> anyhow::Result<Linker<State<W::Data>>> {
    let mut linker = Linker::new(engine);
    if W::ASYNC {
        // Deadlines bound these calls from outside: `bounded`.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding WASI to the linker")?;
    } else {
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding WASI to the linker")?;
        crate::deadline::add_to_linker(&mut linker, State::bounded)
            .map_err(anyhow::Error::from)
            .context("bounding WASI's blocking calls by the call deadline")?;
    }
    Ok(linker)
}

pub(crate) fn compile_component(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasmplug-compile-{i}"))
        .build();
    match pool {
        Ok(pool) => pool.install(|| Component::new(engine, bytes)),
        // No threads to be had: compile on the shared pool, as before.
        Err(_) => Component::new(engine, bytes),
    }
}

/// The pool sizes wasmplug uses unless told otherwise.
///
/// * 1,000 live component instances at once: a thousand plugin
///   instances per process is far more than a service keeps warm.
/// * 4 core instances, 4 tables and 1 memory per component instance on
///   average: a Rust `wasm32-wasip2` component instantiates its program,
///   the WASI adapter and two small shims.
/// * Linear memories are reserved at wasmtime's default size (virtual
///   address space only); the [`Policy`]'s memory cap is what bounds
///   what a plugin may actually touch.
/// * Decommitted slots keep nothing resident, so a dropped instance
///   returns its memory to the OS.
pub fn default_pooling() -> PoolingAllocationConfig {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(1000)
        .total_core_instances(4000)
        .total_memories(1000)
        .total_tables(4000)
        .linear_memory_keep_resident(0)
        .table_keep_resident(0);
    pooling
}

impl<W: World> RuntimeInner<W> {
    /// Arm a store for one call into the guest: its epoch deadline, and its
    /// fuel when the runtime meters fuel.
    pub(crate) fn arm(
        &self,
        store: &mut wasmtime::Store<State<W::Data>>,
        deadline: Option<Duration>,
        fuel: Option<u64>,
    ) {
        self.arm_ticks(store, self.deadline_ticks(deadline), fuel);
    }

    /// [`arm`](Self::arm) with the deadline already in ticks: the call path
    /// converts it once per instance, not on every call.
    pub(crate) fn arm_ticks(
        &self,
        store: &mut wasmtime::Store<State<W::Data>>,
        ticks: u64,
        fuel: Option<u64>,
    ) {
        // An async store stops at every tick, to yield and to check the
        // deadline itself (`yield_at_ticks`); a blocking one only at its
        // deadline.
        store.set_epoch_deadline(if W::ASYNC { 1 } else { ticks });
        // The same deadline, for the blocking WASI calls (`deadline.rs`).
        store
            .data_mut()
            .deadline
            .arm((ticks < NEVER_TICKS).then_some(ticks));
        if self.fuel {
            // Fuel is on for this engine, so setting it cannot fail.
            let _ = store.set_fuel(fuel.unwrap_or(u64::MAX));
        }
    }

    /// The epoch deadline, in ticks from now, for a call limited to
    /// `deadline`: rounded up, plus one tick because the first tick after
    /// setting it may come at any moment. A call therefore runs at least
    /// `deadline` and is stopped within `deadline + tick`.
    pub(crate) fn deadline_ticks(&self, deadline: Option<Duration>) -> u64 {
        const NEVER: u64 = NEVER_TICKS;
        match deadline {
            None => NEVER,
            Some(d) => {
                let tick = self.tick.as_nanos().max(1);
                let ticks = u64::try_from(d.as_nanos().div_ceil(tick)).unwrap_or(NEVER);
                ticks.saturating_add(1).min(NEVER)
            }
        }
    }
}

impl<W: World> RuntimeInner<W> {
    /// Run one async call into the guest under its wall-clock deadline.
    /// The epoch stops wasm code that computes past it; this stops a call
    /// awaiting past it (a WASI sleep, a socket, the embedder's own async
    /// import), by dropping the call: wasmtime then unwinds the guest's
    /// stack, and the caller discards the instance, as after any deadline.
    pub(crate) async fn bounded<R>(
        &self,
        began: std::time::Instant,
        deadline: Option<Duration>,
        call: impl Future<Output = wasmtime::Result<R>>,
    ) -> wasmtime::Result<R> {
        let Some(deadline) = deadline else {
            return call.await;
        };
        // The epoch stops a computing guest within a tick past its deadline:
        // the same allowance here.
        let until = began + deadline.saturating_add(self.tick);
        Bounded {
            call: std::pin::pin!(call),
            until,
            timer: None,
        }
        .await
    }
}

/// A call under a wall-clock deadline whose timer is made only when the
/// call first has to wait: most calls finish in their first poll and never
/// touch the executor's timer (nor clone its handle, a cache line every
/// worker would share).
struct Bounded<'a, F> {
    call: std::pin::Pin<&'a mut F>,
    until: std::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<R, F: Future<Output = wasmtime::Result<R>>> Future for Bounded<'_, F> {
    type Output = wasmtime::Result<R>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let std::task::Poll::Ready(outcome) = self.call.as_mut().poll(cx) {
            return std::task::Poll::Ready(outcome);
        }
        let until = tokio::time::Instant::from_std(self.until);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        std::task::ready!(timer.as_mut().poll(cx));
        std::task::Poll::Ready(Err(wasmtime::Error::from(crate::error::DeadlineExceeded {
            inside: "an awaited host call",
        })))
    }
}

thread_local! {
    /// Whether this thread is one of a runtime's guest threads.
    static ON_GUEST_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };

    /// Set by an async store's epoch callback the second time a tick finds
    /// its call computing (`yield_at_ticks`): the call polled on this
    /// thread computes, and these are the guest threads of its runtime.
    /// Weak: a guest thread's own note must not keep its runtime's threads
    /// alive.
    static COMPUTED_A_TICK: std::cell::RefCell<Option<Weak<GuestThreads>>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether the calling thread is one of a runtime's guest threads: where
/// an async call that ends here ran its end.
pub(crate) fn on_guest_thread() -> bool {
    ON_GUEST_THREAD.get()
}

/// The guest threads to move to, when the call last polled on this thread
/// yielded because it computed for a tick (and forget it).
pub(crate) fn computed_a_tick() -> Option<Arc<GuestThreads>> {
    COMPUTED_A_TICK.with(|c| c.borrow_mut().take()?.upgrade())
}

/// An async store's epoch behaviour: at every tick, trap if the call's
/// deadline has passed; otherwise, unless the call began less than
/// [`INLINE_BUDGET`] ago, yield to the executor. The second time a tick
/// finds the call computing (its thread was running when the tick came:
/// [`TICK_SEEN_WITHIN`]), say so too ([`computed_a_tick`]), which moves a
/// registry call to the guest threads.
///
/// Why not move at any tick: a thread preempted mid-call comes back to a
/// call of microseconds that looks old and a tick that came meanwhile, and
/// a busy machine preempts often. Moved, such a call waited for the guest
/// threads, which the same busy machine starves at nice +19, holding its
/// instance, while requests queued behind it ran out of time. The tick's
/// time tells a preempted thread (it sees the tick late) from a computing
/// one, and a call that really computes is seen computing at the next tick
/// too; a fast one, resumed after its yield, has ended. Every tick still
/// yields: a yield costs a call nothing but a turn, and tasks sharing a
/// thread (the guest threads' burners among them) take turns by it.
pub(crate) fn yield_at_ticks<D: Send>(
    store: &mut wasmtime::Store<State<D>>,
    guest: Arc<GuestThreads>,
) {
    use wasmtime::UpdateDeadline::{Continue, Interrupt, Yield};
    let guest = Arc::downgrade(&guest);
    store.epoch_deadline_callback(move |mut cx| {
        let deadline = &mut cx.data_mut().deadline;
        if deadline.passed() {
            return Ok(Interrupt);
        }
        let now = Instant::now();
        if deadline
            .began
            .is_some_and(|began| now.saturating_duration_since(began) < INLINE_BUDGET)
        {
            // The tick caught a call that just began: not one that computes.
            return Ok(Continue(1));
        }
        // A tick that came while the thread was off the CPU does not say
        // the call computes.
        let computing = deadline.since_tick(now) <= TICK_SEEN_WITHIN;
        if computing && std::mem::replace(&mut deadline.computed, true) {
            COMPUTED_A_TICK.with(|c| *c.borrow_mut() = Some(guest.clone()));
        }
        Ok(Yield(1))
    });
}

/// A store for one instance under `policy`, with WASI as given: the
/// policy's (`plugin.rs`), or a snapshot's (`snapshot.rs`).
pub(crate) fn store_with<W: World>(
    runtime: &RuntimeInner<W>,
    policy: &Policy,
    label: &Arc<str>,
    memory: &Arc<crate::telemetry::Tally>,
    data: W::Data,
    (wasi, outputs): (wasmtime_wasi::WasiCtx, Vec<crate::log::GuestOutput>),
) -> wasmtime::Store<State<W::Data>> {
    let state = State {
        wasi,
        outputs,
        table: wasmtime::component::ResourceTable::new(),
        limits: policy.limits(memory.clone()),
        deadline: crate::deadline::CallDeadline::new(runtime.clock.clone()),
        log: policy.guest_log(),
        label: label.clone(),
        data,
    };
    let mut store = wasmtime::Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.limits);
    if W::ASYNC {
        yield_at_ticks(&mut store, runtime.guest.clone());
    }
    store
}

/// Why `init` failed, for any outcome but `Ok(Ok(()))`: the guest's own
/// error, or a trap named by the cap it hit or by its deadline. A load's
/// `init` (`plugin.rs`) and a snapshot's (`snapshot.rs`) both report it.
pub(crate) fn init_failure<D>(
    store: &mut wasmtime::Store<State<D>>,
    outcome: wasmtime::Result<std::result::Result<(), String>>,
) -> Option<anyhow::Error> {
    let trap = match outcome {
        Ok(Ok(())) => return None,
        Ok(Err(message)) => return Some(anyhow::anyhow!("init returned an error: {message}")),
        Err(trap) => trap,
    };
    let limit = store.data_mut().limits.hit.take();
    let timeout = trap
        .downcast_ref::<crate::error::DeadlineExceeded>()
        .is_some()
        || trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt);
    let cause = anyhow::Error::from(trap);
    Some(match (limit, timeout) {
        (Some(limit), _) => cause.context(format!("init trapped after hitting {limit}")),
        (None, true) => cause.context("init trapped: its deadline passed"),
        (None, false) => cause.context("init trapped"),
    })
}

/// Drive an async world's future to completion on this thread: how the
/// blocking entry points (`load`, `instantiate`, a swap) serve async worlds.
/// Not for a task on an executor (tokio refuses to block one).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    wasmtime_wasi::runtime::in_tokio(future)
}

/// The OS priority of a runtime's guest threads, the threads that run
/// async calls which compute past their first epoch tick
/// ([`RuntimeBuilder::guest_priority`]). Only Linux applies it; elsewhere
/// guest threads run at the embedder's priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuestPriority {
    /// nice +19 (the default): the lowest normal priority, a scheduling
    /// weight of 15 against the embedder's 1024. While the embedder's
    /// threads want every core, a computing guest gets about 1.5 % of one;
    /// its deadline still holds.
    #[default]
    Lowest,
    /// `SCHED_IDLE` (weight 3), falling back to nice +19 where refused:
    /// guests get even less CPU beside a busy service. Measured beside
    /// guests burning CPU on 2 cores, it gave a health check a *worse* p99
    /// than nice +19 (3.1-3.8 ms against 0.9-3.5 ms, five runs each,
    /// `just healthz-under-burn`), so it is not the default.
    Idle,
    /// The embedder's own priority: guest threads compete with the
    /// service's threads as equals (for a host that exists to run plugins).
    Normal,
}

impl GuestPriority {
    /// Apply to the calling thread (a thread may always lower its own
    /// priority). Best effort: a refusal leaves the thread as it was.
    fn apply(self) {
        #[cfg(target_os = "linux")]
        {
            let nice = |n| {
                let tid = rustix::thread::gettid();
                let _ = rustix::process::setpriority_process(Some(tid), n);
            };
            match self {
                GuestPriority::Idle => {
                    let param = libc::sched_param { sched_priority: 0 };
                    // nice +19 as well: all that remains where SCHED_IDLE
                    // is refused (an idle thread's nice value is not used).
                    // SAFETY: a plain syscall on the calling thread (pid 0)
                    // with a valid, fully initialised parameter.
                    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                    nice(19);
                }
                GuestPriority::Lowest => nice(19),
                GuestPriority::Normal => {}
            }
        }
    }
}

/// The runtime's own executor for guest code that computes: a few threads
/// at a lower priority than the embedder's ([`GuestPriority`]), so a guest
/// burning its whole deadline never delays the service's other tasks.
/// Started on first use.
pub(crate) struct GuestThreads {
    threads: usize,
    priority: GuestPriority,
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl GuestThreads {
    fn new(threads: usize, priority: GuestPriority) -> Self {
        GuestThreads {
            threads: threads.max(1),
            priority,
            runtime: OnceLock::new(),
        }
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        let priority = self.priority;
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name("wasmplug-guest")
                    .enable_time()
                    .on_thread_start(move || {
                        ON_GUEST_THREAD.set(true);
                        priority.apply();
                    })
                    .build()
                    // Fails only when the OS refuses threads: nothing runs then.
                    .expect("starting wasmplug's guest threads")
            })
            .handle()
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // May be dropped from a task: never block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// "No deadline", in ticks. wasmtime adds the deadline delta to the current
/// epoch without saturating, so it must leave room for the epoch to grow:
/// 2^62 ticks outlast any process.
const NEVER_TICKS: u64 = 1 << 62;

/// The background thread that advances the engine's epoch. It stops, and
/// drops its engine handle, when the runtime (holding the sender) is dropped.
struct Ticker {
    _stop: mpsc::Sender<()>,
}

impl Ticker {
    fn start(engine: Engine, clock: Arc<EpochClock>, tick: Duration) -> anyhow::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("wasmplug-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    // The clock first: a guest that sees the engine's new
                    // epoch finds the clock's, and the tick's time, there.
                    clock.advance();
                    engine.increment_epoch();
                }
            })
            .context("starting the epoch ticker thread")?;
        Ok(Ticker { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::NEVER_TICKS;
    use crate::{Dynamic, Runtime};

    #[test]
    fn a_deadline_in_ticks_is_rounded_up_plus_one_tick() {
        let runtime = Runtime::<Dynamic>::builder()
            .epoch_tick(Duration::from_millis(10))
            .build()
            .unwrap();
        let ticks = |d| runtime.inner.deadline_ticks(d);
        // A call runs at least its deadline and stops within one tick more.
        assert_eq!(ticks(Some(Duration::from_millis(10))), 2);
        assert_eq!(ticks(Some(Duration::from_millis(25))), 4);
        assert_eq!(ticks(Some(Duration::from_nanos(1))), 2);
        assert_eq!(ticks(Some(Duration::ZERO)), 1);
        // No deadline, or one too long to count, never overflows the epoch.
        assert_eq!(ticks(None), NEVER_TICKS);
        assert_eq!(ticks(Some(Duration::MAX)), NEVER_TICKS);
    }

    /// The scheduling policy and nice value the guest threads run at.
    #[cfg(target_os = "linux")]
    fn guest_thread_priority(priority: super::GuestPriority) -> (i32, i32) {
        let threads = super::GuestThreads::new(1, priority);
        let (tx, rx) = std::sync::mpsc::channel();
        threads.handle().spawn(async move {
            // SAFETY: plain syscalls about the calling thread.
            let policy = unsafe { libc::sched_getscheduler(0) };
            let tid = rustix::thread::gettid();
            let nice = rustix::process::getpriority_process(Some(tid)).unwrap();
            tx.send((policy, nice)).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn guest_threads_run_at_the_priority_asked_for() {
        use super::GuestPriority;
        // The test thread's own nice value: Normal leaves it as it is.
        let ours = rustix::process::getpriority_process(None).unwrap();
        assert_eq!(
            guest_thread_priority(GuestPriority::Idle),
            (libc::SCHED_IDLE, 19)
        );
        assert_eq!(GuestPriority::default(), GuestPriority::Lowest);
        assert_eq!(
            guest_thread_priority(GuestPriority::Lowest),
            (libc::SCHED_OTHER, 19)
        );
        assert_eq!(
            guest_thread_priority(GuestPriority::Normal),
            (libc::SCHED_OTHER, ours)
        );
    }
}
