//! Pre-initialization ([`PreInit`]): `init` run once, the instance's state
//! written into a new component, every instance started from that.
//!
//! On a load with pre-initialization, [`compiled`] looks for the snapshot
//! under a key derived from the file's hash and the mode, in memory and in
//! the disk cache, as for any compiled code. On a miss, [`take`] makes it:
//! * wasmtime-wizer *instruments* the component (exports that read every
//!   core instance's memories and globals);
//! * that is instantiated on the runtime's engine in a store of its own,
//!   under the plugin's limits and deadline, with WASI and nothing granted,
//!   and with only the world's snapshot imports
//!   ([`World::add_to_snapshot_linker`]) beside it;
//! * `init` runs; its clocks and random numbers count their reads;
//! * what it did is judged ([`PreInit`]), and wizer writes the snapshot:
//!   the original component with the memories and globals as `init` left
//!   them, and the start functions it ran removed;
//! * its modules' data segments, which each instance walks, are made few
//!   ([`segments`]).
//!
//! The snapshot is then compiled, linked against the runtime's own linker
//! and type-checked like any component, and kept in the caches; its
//! instances skip `init` (`Compiled::initialized`). Standard streams `init`
//! left open (the preview1 adapter's, under Go) are opened again in each
//! instance, under the same handle numbers ([`handles`]).

pub(crate) mod handles;
mod segments;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use wasmtime::component::{Instance as RawInstance, Lift, Linker, Resource, WasmList};
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi::cli::{WasiCliCtxView, WasiCliView as _};
use wasmtime_wasi::p2::bindings::cli::{stderr, stdin, stdout};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use crate::identity::{ContentHash, Source};
use crate::policy::{Output, PreInit};
use crate::runtime::{block_on, compile_component, Compiled, Runtime, RuntimeInner};
use crate::{Policy, State, World};

/// The WASI interface whose one function hands out a seed with no source a
/// [`wasmtime_wasi::WasiCtxBuilder`] lets us count: it is defined again
/// here, counting. The version is the one wasmtime-wasi 48 defines; a guest
/// importing an older 0.2 finds it by semver.
/// If wasmtime-wasi moves to a newer 0.2, semver lookup picks that one
/// and this definition goes unused: `hello-v1-random-init` (which imports
/// 0.2.6) would then be accepted under `Deterministic`, and
/// `tests/tests/snapshot.rs` fails.
const INSECURE_SEED: &str = "wasi:random/insecure-seed@0.2.12";
/// The version of `wasi:cli` wasmtime-wasi 48 defines (as above).
const CLI_VERSION: &str = "0.2.12";

/// The most linear memory a snapshot is taken of: wizer's work on the host
/// (scanning and rewriting the data segments) grows with it.
const MAX_MEMORY: usize = 128 << 20;

/// How much more memory wizer's accessors may grow the instance by: a
/// page for each of up to 32 memories.
const ACCESSOR_ROOM: usize = 32 << 16;

/// Compiled code of the snapshot of `bytes` taken under `mode`: the live
/// one, the disk cache's, or a new one ([`take`]).
///
/// # Errors
/// When the policy grants anything, when wizer cannot instrument the
/// component, or when `init` fails or does what a snapshot cannot keep
/// ([`PreInit`]); each says which.
pub(crate) fn compiled<W: World>(
    runtime: &Runtime<W>,
    bytes: &[u8],
    hash: ContentHash,
    mode: PreInit,
    policy: &Policy,
    source: &Source,
) -> anyhow::Result<Arc<Compiled<W>>> {
    // Before any cache: a snapshot taken for a plugin with no grants must
    // not serve one that has them.
    let granted = policy.snapshot_blockers();
    if !granted.is_empty() {
        bail!(
            "pre-initialization is on ({}), but its policy grants {}: a snapshot's `init` \
             runs with nothing granted, so what it read would be frozen into instances \
             that have grants; pre-initialize only a plugin that is granted nothing",
            mode.name(),
            granted.join(", ")
        );
    }
    let replay = Some(handles::exports as fn(&_) -> _);
    runtime.compiled_as(key::<W>(hash, mode, policy), hash, replay, || {
        let snapshot = take(&runtime.inner, bytes, mode, policy, source)
            .with_context(|| format!("pre-initializing it ({})", mode.name()))?;
        compile_component(&runtime.inner.engine, &snapshot)
            .map_err(anyhow::Error::from)
            .context("compiling its pre-initialized snapshot")
    })
}

/// Where a snapshot is kept. Derived with BLAKE3, not SHA-256: no file's
/// content hash (its SHA-256) can equal it short of a preimage attack, so
/// a plain load of some file can never be served a snapshot, nor the
/// reverse. It covers what changes the snapshot: the file, the mode, the
/// world (its snapshot imports and instance data) and the limits `init`
/// ran under. The date in its context changes with what a snapshot holds
/// (2026-12-04: its data segments merged), so a disk cache never serves
/// one written the old way.
fn key<W: World>(hash: ContentHash, mode: PreInit, policy: &Policy) -> ContentHash {
    let mut key = blake3::Hasher::new_derive_key("wasmplug 2026-12-04 pre-initialized snapshot");
    key.update(&hash.0);
    let limits = format!(
        "{}\0{}\0{:?}\0{:?}\0{}",
        mode.name(),
        std::any::type_name::<W>(),
        policy.deadline_value(),
        policy.fuel_value(),
        policy.memory_limit_value(),
    );
    key.update(limits.as_bytes());
    ContentHash(*key.finalize().as_bytes())
}

/// Take the snapshot: see the module docs.
fn take<W: World>(
    runtime: &RuntimeInner<W>,
    bytes: &[u8],
    mode: PreInit,
    policy: &Policy,
    source: &Source,
) -> anyhow::Result<Vec<u8>> {
    if handles::claims_replay(bytes)? {
        bail!(
            "it exports a function named `wasmplug-replay-h…`, which a snapshot's instances \
             call to open their standard streams again: rename it"
        );
    }
    let wizer = Wizer::new();
    let (cx, instrumented) = wizer
        .instrument_component(bytes)
        .map_err(anyhow::Error::from)
        .context("wasmtime-wizer cannot instrument it")?;
    let engine = &runtime.engine;
    let component = compile_component(engine, &instrumented)
        .map_err(anyhow::Error::from)
        .context("compiling it for its snapshot")?;
    W::accepts(&component, engine).map_err(anyhow::Error::from)?;
    let reads = Reads::default();
    let pre = linker::<W>(engine, &reads)?
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .context(
            "it imports what a snapshot's `init` may not call: only WASI, with nothing \
             granted, and the imports the world adds with `World::add_to_snapshot_linker` \
             are linked there",
        )?;
    let indices = W::indices(&pre)
        .map_err(anyhow::Error::from)
        .context("its exports do not match the host's world")?;

    let label: Arc<str> = format!("{} (snapshot)", source.stem()).into();
    // Its output goes to the log whatever the policy says: an inherited
    // stdout would tell `init` whether the host's is a terminal.
    let policy = &policy.clone().output(Output::Log);
    let (mut wasi, outputs) = policy.wasi_builder(&label)?;
    wasi.wall_clock(WallClock(reads.clone()))
        .monotonic_clock(MonotonicClock(reads.clone(), Instant::now()))
        .secure_random(Random(reads.clone()))
        .insecure_random(Random(reads.clone()));
    let mut store = crate::runtime::store_with(
        runtime,
        policy,
        &label,
        &Arc::default(),
        (runtime.data)(),
        (wasi.build(), outputs),
    );
    let (deadline, fuel) = (policy.deadline_value(), policy.fuel_value());
    runtime.arm(&mut store, deadline, fuel);
    let instance = if W::ASYNC {
        block_on(pre.instantiate_async(&mut store))
    } else {
        pre.instantiate(&mut store)
    }
    .map_err(anyhow::Error::from)
    .context("instantiating it for its snapshot")?;
    let bindings = W::load(&indices, &mut store, &instance)
        .map_err(anyhow::Error::from)
        .context("its exports do not match the host's world")?;

    runtime.arm(&mut store, deadline, fuel);
    let outcome = if W::ASYNC {
        block_on(runtime.bounded(Instant::now(), deadline, bindings.init_async(&mut store)))
    } else {
        bindings.init(&mut store)
    };
    if let Some(failed) = crate::runtime::init_failure(&mut store, outcome) {
        return Err(failed);
    }

    // What `init` did that a snapshot cannot keep.
    let streams = open_streams(&mut store, &reads)?;
    let (clocks, random) = reads.counts();
    if mode == PreInit::Deterministic && clocks + random > 0 {
        bail!(
            "init read the clocks {clocks} time(s) and random numbers {random} time(s), \
             so it is not deterministic: a snapshot would freeze what it read into every \
             instance. If that is acceptable, pre-initialize it with \
             PreInit::FreezeClocksAndEntropy (in a manifest: pre_initialize = \
             \"freeze-clocks-and-entropy\"); otherwise turn pre-initialization off"
        );
    }

    let memory = store.data().limits.memory_bytes;
    if memory > MAX_MEMORY {
        bail!(
            "its memory after init is {} MiB; a snapshot is taken of at most {} MiB",
            memory >> 20,
            MAX_MEMORY >> 20
        );
    }
    // wizer's accessors grow each memory by a page to read it: room for
    // that beyond the policy's cap, which the guest's own code has met.
    store.data_mut().limits.allow_more_memory(ACCESSOR_ROOM);
    let rearm = |store: &mut Store<State<W::Data>>| runtime.arm(store, deadline, fuel);
    let mut access = Access {
        store: &mut store,
        instance,
        asynchronous: W::ASYNC,
        rearm: &rearm,
        failed: None,
    };
    // wizer asserts what it read adds up; after an accessor failed it may
    // panic instead of returning an error: caught, and refused below.
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if W::ASYNC {
            Ok(block_on(wizer.snapshot_component(&cx, &mut access)))
        } else {
            // A blocking world's accessors are called blocking: the future
            // never waits, and needs no executor.
            ready(wizer.snapshot_component(&cx, &mut access))
        }
    }));
    let snapshot = match written {
        Ok(Ok(Ok(snapshot))) if access.failed.is_none() => snapshot,
        Ok(Ok(Err(err))) if access.failed.is_none() => {
            return Err(anyhow::Error::from(err).context("wasmtime-wizer cannot write its snapshot"))
        }
        Ok(Err(err)) => return Err(err),
        _ => {
            let failed = access
                .failed
                .take()
                .unwrap_or_else(|| anyhow!("wasmtime-wizer failed while writing it"));
            return Err(failed.context("reading the instance's state for its snapshot"));
        }
    };
    // wizer keeps every original data segment, emptied, and writes the
    // memory as up to 10,000 more: each instance would walk them all.
    let compacted = segments::compact(&snapshot).context("merging its data segments")?;
    let snapshot = if streams.is_empty() {
        compacted.bytes
    } else {
        handles::add_replay(&compacted.bytes, &streams)
            .context("re-opening in every instance the standard streams init left open")?
    };
    tracing::debug!(
        plugin = %source.stem(),
        mode = mode.name(),
        clocks,
        random,
        streams = streams.len(),
        segments_before = compacted.before,
        segments = compacted.after,
        bytes = snapshot.len(),
        "pre-initialized"
    );
    Ok(snapshot)
}

/// The standard streams `init` left open, in the order of the handles the
/// guest holds for them (see [`handles`]): every live entry of the store's
/// table must be one, at indices 0 to n-1.
///
/// # Errors
/// Anything else left open: a snapshot would keep its number, but no new
/// instance's store would hold what it stood for.
fn open_streams<D: Send>(
    store: &mut Store<State<D>>,
    reads: &Reads,
) -> anyhow::Result<Vec<handles::Stdio>> {
    let opened = reads
        .opened
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let table = &mut store.data_mut().table;
    let live = table.iter_mut().count();
    let mut streams = Vec::with_capacity(live);
    for rep in 0..u32::try_from(live).unwrap_or(u32::MAX) {
        // The latest stream opened under this index, if what is there now
        // is of its type: the index may have been freed and reused.
        let stream = opened
            .iter()
            .rev()
            .find(|(r, _)| *r == rep)
            .map(|(_, s)| *s);
        let still = stream.filter(|&stdio| match table.get_any_mut(rep) {
            Ok(entry) if stdio == handles::Stdio::Stdin => {
                entry.is::<wasmtime_wasi_io::streams::DynInputStream>()
            }
            Ok(entry) => entry.is::<wasmtime_wasi_io::streams::DynOutputStream>(),
            Err(_) => false,
        });
        match still {
            Some(stdio) => streams.push(stdio),
            _ => bail!(
                "init left {live} handle(s) open, not all of them standard streams (files, \
                 sockets, timers or other streams): a snapshot would keep their numbers, but \
                 no new instance's store would hold what they stood for"
            ),
        }
    }
    Ok(streams)
}

/// The snapshot's linker: WASI in the world's form, its seed counted, and
/// the world's snapshot imports. Nothing else: a component importing more
/// is refused at `instantiate_pre`, naming the import.
fn linker<W: World>(
    engine: &wasmtime::Engine,
    reads: &Reads,
) -> anyhow::Result<Linker<State<W::Data>>> {
    let mut linker = crate::runtime::wasi_linker::<W>(engine)?;
    linker.allow_shadowing(true);
    let seed = reads.clone();
    linker
        .instance(INSECURE_SEED)
        .and_then(|mut at| {
            at.func_wrap("insecure-seed", move |_, ()| {
                seed.random.fetch_add(1, Ordering::Relaxed);
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes)
                    .map_err(|e| wasmtime::format_err!("no random numbers: {e}"))?;
                let seed = u128::from_le_bytes(bytes);
                Ok(((seed as u64, (seed >> 64) as u64),))
            })
        })
        .map_err(anyhow::Error::from)
        .context("counting WASI's insecure seed")?;
    note_opens(&mut linker, reads, handles::Stdio::Stdin, |cli| {
        stdin::Host::get_stdin(cli)
    })?;
    note_opens(&mut linker, reads, handles::Stdio::Stdout, |cli| {
        stdout::Host::get_stdout(cli)
    })?;
    note_opens(&mut linker, reads, handles::Stdio::Stderr, |cli| {
        stderr::Host::get_stderr(cli)
    })?;
    W::add_to_snapshot_linker(&mut linker)
        .map_err(anyhow::Error::from)
        .context("adding the world's snapshot imports to the linker")?;
    Ok(linker)
}

/// WASI's getter of `stdio` defined again, noting the index of each
/// stream it opens.
fn note_opens<D: Send, R: Send + 'static>(
    linker: &mut Linker<State<D>>,
    reads: &Reads,
    stdio: handles::Stdio,
    open: fn(&mut WasiCliCtxView<'_>) -> wasmtime::Result<Resource<R>>,
) -> anyhow::Result<()> {
    let opened = reads.opened.clone();
    let interface = format!("{}{CLI_VERSION}", stdio.interface());
    linker
        .instance(&interface)
        .and_then(|mut at| {
            at.func_wrap(
                stdio.getter(),
                move |mut store: StoreContextMut<'_, State<D>>, (): ()| {
                    let stream = open(&mut store.data_mut().cli())?;
                    opened
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((stream.rep(), stdio));
                    Ok((stream,))
                },
            )
        })
        .map_err(anyhow::Error::from)
        .with_context(|| format!("noting the streams `{interface}` opens"))
}

/// The output of a future that needs no waiting, or an error if it waits.
fn ready<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(output) => Ok(output),
        std::task::Poll::Pending => Err(anyhow!("taking the snapshot waited on nothing")),
    }
}

/// How many times the snapshot's `init` read a clock and random numbers,
/// and the standard streams it opened.
#[derive(Clone, Default)]
struct Reads {
    clocks: Arc<AtomicUsize>,
    random: Arc<AtomicUsize>,
    /// Each standard stream opened: its index in the store's table.
    opened: Arc<Mutex<Vec<(u32, handles::Stdio)>>>,
}

impl Reads {
    fn counts(&self) -> (usize, usize) {
        (
            self.clocks.load(Ordering::Relaxed),
            self.random.load(Ordering::Relaxed),
        )
    }
}

/// The real wall clock, counted.
struct WallClock(Reads);

impl wasmtime_wasi::HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        self.0.clocks.fetch_add(1, Ordering::Relaxed);
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A monotonic clock counted from the snapshot's start.
struct MonotonicClock(Reads, Instant);

impl wasmtime_wasi::HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.clocks.fetch_add(1, Ordering::Relaxed);
        u64::try_from(self.1.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The OS's random numbers, counted (a call counts once, however many
/// bytes it takes).
struct Random(Reads);

impl rand_core::TryRng for Random {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        self.0.random.fetch_add(1, Ordering::Relaxed);
        // getrandom fails only where the OS has no source at all; the
        // snapshot is then counted as having read random numbers anyway.
        let _ = getrandom::fill(dest);
        Ok(())
    }
}

/// wizer's view of the instance: its accessor exports, called as the world
/// calls (blocking or async). wizer's trait cannot fail, so the first
/// failure is kept and refuses the snapshot after.
struct Access<'a, D: 'static> {
    store: &'a mut Store<State<D>>,
    instance: RawInstance,
    asynchronous: bool,
    /// A full deadline (and fuel) for each accessor call.
    rearm: &'a (dyn Fn(&mut Store<State<D>>) + Sync),
    failed: Option<anyhow::Error>,
}

impl<D: Send + 'static> Access<'_, D> {
    async fn call<R: Lift + Send + Sync + 'static, T>(
        &mut self,
        instance: &str,
        func: &str,
        use_ret: impl FnOnce(&mut Store<State<D>>, R) -> T,
        default: T,
    ) -> T {
        if self.failed.is_some() {
            return default;
        }
        (self.rearm)(&mut *self.store);
        let called = async {
            let (_, at) = self
                .instance
                .get_export(&mut *self.store, None, instance)
                .ok_or_else(|| anyhow!("no export {instance}"))?;
            let (_, func_at) = self
                .instance
                .get_export(&mut *self.store, Some(&at), func)
                .ok_or_else(|| anyhow!("no export {instance}#{func}"))?;
            let f = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, func_at)?;
            let (ret,) = if self.asynchronous {
                f.call_async(&mut *self.store, ()).await?
            } else {
                f.call(&mut *self.store, ())?
            };
            anyhow::Ok(ret)
        }
        .await;
        match called {
            Ok(ret) => use_ret(&mut *self.store, ret),
            Err(err) => {
                self.failed.get_or_insert(err);
                default
            }
        }
    }
}

impl<D: Send + 'static> ComponentInstanceState for Access<'_, D> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        // A list is read in the guest's memory, before the next call.
        self.call(
            instance,
            func,
            |store, list: WasmList<u8>| contents(list.as_le_slice(&*store)),
            (),
        )
        .await;
    }
    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r| r, 0).await
    }
    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r| r, 0).await
    }
    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits(), 0).await
    }
    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits(), 0).await
    }
}
