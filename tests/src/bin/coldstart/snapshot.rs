//! `coldstart snapshot COMPONENT OUT`: pre-initialize COMPONENT with
//! wasmtime-wizer and write the snapshot to OUT, to measure what starting
//! from one saves (`coldstart instantiate OUT N` beside `COMPONENT`).
//!
//! A probe for issue 16's snapshots, not the feature: the component is
//! instantiated on a plain engine with WASI and nothing granted, the
//! reference world's `log` a no-op, `lifecycle.init` is called, and wizer
//! captures every core instance's memories and globals. It says what
//! `init` used that a snapshot cannot keep (clocks, random numbers, open
//! handles), so the probe shows which guests could be snapshotted as they
//! are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use wasmtime::component::{Component, Instance, Linker, ResourceTable, WasmList};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

const LIFECYCLE: &str = "wasmplug:plugin/lifecycle@1.0.0";

struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Counts its reads: what `init` took from a source a snapshot would
/// freeze.
#[derive(Clone, Default)]
struct Reads(Arc<AtomicUsize>);

struct Clock(Reads);

impl wasmtime_wasi::HostWallClock for Clock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }
    fn now(&self) -> std::time::Duration {
        self.0 .0.fetch_add(1, Ordering::Relaxed);
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

struct Monotonic(Reads, std::time::Instant);

impl wasmtime_wasi::HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0 .0.fetch_add(1, Ordering::Relaxed);
        u64::try_from(self.1.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

struct Random(Reads, u64);

impl rand_core::TryRng for Random {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 .0.fetch_add(1, Ordering::Relaxed);
        // splitmix64: deterministic, which is the point of a snapshot.
        self.1 = self.1.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.1;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// wizer's view of the instance: its accessor exports, called blocking.
/// The trait cannot fail, so a failure is kept and reported after.
struct State<'a> {
    store: &'a mut Store<Ctx>,
    instance: Instance,
    failed: Option<anyhow::Error>,
}

impl State<'_> {
    fn call<R: wasmtime::component::Lift + 'static, T>(
        &mut self,
        instance: &str,
        func: &str,
        use_ret: impl FnOnce(&mut Store<Ctx>, R) -> T,
        default: T,
    ) -> T {
        let called = (|| -> anyhow::Result<T> {
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
            let (ret,) = f.call(&mut *self.store, ())?;
            Ok(use_ret(&mut *self.store, ret))
        })();
        match called {
            Ok(value) => value,
            Err(err) => {
                self.failed.get_or_insert(err);
                default
            }
        }
    }
}

impl ComponentInstanceState for State<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        // On a failed call `contents` is never called: the failure is
        // kept, and the snapshot refused.
        self.call(
            instance,
            func,
            |store, list: WasmList<u8>| contents(list.as_le_slice(&*store)),
            (),
        );
    }
    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r| r, 0)
    }
    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r| r, 0)
    }
    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits(), 0)
    }
    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits(), 0)
    }
}

/// Pre-initialize `bytes`; the snapshot's bytes, and what `init` read.
pub fn snapshot(bytes: &[u8]) -> anyhow::Result<(Vec<u8>, String)> {
    let wizer = Wizer::new();
    let (cx, instrumented) = wizer
        .instrument_component(bytes)
        .map_err(anyhow::Error::from)
        .context("wizer could not instrument the component")?;
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config)?;
    let component = Component::new(&engine, &instrumented)?;
    let mut linker = Linker::<Ctx>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // The reference world's one import: a log line is the host's to
    // write, and leaves nothing in the guest to freeze.
    linker
        .root()
        .instance("wasmplug:plugin/host@1.0.0")?
        .func_new("log", |_, _, _, _| Ok(()))?;
    let (clock, random) = (Reads::default(), Reads::default());
    let wasi = WasiCtxBuilder::new()
        .wall_clock(Clock(clock.clone()))
        .monotonic_clock(Monotonic(clock.clone(), std::time::Instant::now()))
        .secure_random(Random(random.clone(), 1))
        .insecure_random(Random(random.clone(), 2))
        .insecure_random_seed(3)
        .build();
    let mut store = Store::new(
        &engine,
        Ctx {
            wasi,
            table: ResourceTable::new(),
        },
    );
    let instance = linker.instantiate(&mut store, &component)?;
    let (_, at) = instance
        .get_export(&mut store, None, LIFECYCLE)
        .ok_or_else(|| anyhow!("no {LIFECYCLE} export"))?;
    let (_, init_at) = instance
        .get_export(&mut store, Some(&at), "init")
        .ok_or_else(|| anyhow!("no {LIFECYCLE}#init export"))?;
    let init = instance.get_typed_func::<(), (Result<(), String>,)>(&mut store, init_at)?;
    let (outcome,) = init.call(&mut store, ())?;
    outcome.map_err(|e| anyhow!("init returned an error: {e}"))?;
    let handles = if store.data().table.is_empty() {
        "no handle"
    } else {
        "handles"
    };
    let used = format!(
        "init read the clocks {} time(s), random numbers {} time(s), left {handles} open",
        clock.0.load(Ordering::Relaxed),
        random.0.load(Ordering::Relaxed),
    );
    let mut state = State {
        store: &mut store,
        instance,
        failed: None,
    };
    let snapshot = tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(wizer.snapshot_component(&cx, &mut state))
        .map_err(anyhow::Error::from)?;
    if let Some(failed) = state.failed {
        return Err(failed.context("reading the instance's state for the snapshot"));
    }
    Ok((snapshot, used))
}
