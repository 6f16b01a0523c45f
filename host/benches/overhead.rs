//! wasmplug's own cost over raw wasmtime, measured in the same run: the
//! same engine configuration (component model, concurrency off, pooling
//! allocator, epoch interruption), the same component (Rust hello v1), and
//! the code a user would write with wasmtime directly (its own `bindgen!`,
//! its own Store and WASI context) as the baseline.
//!
//! Rows: a typed call with no arguments (`count`), a record-in/string-out
//! call (`hello(user)`), and instantiation (new Store + instance + `init`).
//! Medians of 15 rounds; the ratio is wasmplug / raw.
//!
//! Run: `just bench` (or `cargo bench -p wasmplug --bench overhead`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use support::guest;
use wasmplug::reference::{GreeterPlugin as Wp, User as WpUser};
use wasmplug::wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmplug::wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod raw {
    ::wasmplug::wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmplug:plugin/greeter-plugin@1.0.0",
        wasmtime_crate: ::wasmplug::wasmtime,
    });
}

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl raw::wasmplug::plugin::types::Host for RawState {}
impl raw::wasmplug::plugin::host::Host for RawState {
    fn log(&mut self, _: raw::wasmplug::plugin::types::Level, _: String) {}
}

const ROUNDS: usize = 15;

/// Median time per iteration over ROUNDS rounds of `iters` iterations.
fn per_iter(iters: u32, mut f: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

fn row(what: &str, ours: Duration, raw: Duration) {
    println!(
        "{what:<44} wasmplug {:>10.1} ns   raw wasmtime {:>10.1} ns   ratio {:.2}x",
        ours.as_nanos() as f64,
        raw.as_nanos() as f64,
        ours.as_secs_f64() / raw.as_secs_f64()
    );
}

fn main() {
    let path = guest("hello-v1");

    // Raw wasmtime, configured like wasmplug's runtime.
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(
            wasmplug::default_pooling(),
        ));
    let engine = Engine::new(&config).unwrap();
    let mut linker = Linker::<RawState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    raw::GreeterPlugin::add_to_linker::<_, HasSelf<RawState>>(&mut linker, |s| s).unwrap();
    let component = Component::from_file(&engine, &path).unwrap();
    let pre = raw::GreeterPluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let raw_instance = || {
        let mut store = Store::new(
            &engine,
            RawState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        let bindings = pre.instantiate(&mut store).unwrap();
        bindings
            .wasmplug_plugin_lifecycle()
            .call_init(&mut store)
            .unwrap()
            .unwrap();
        (store, bindings)
    };

    // wasmplug.
    let runtime = wasmplug::Runtime::<Wp>::new().unwrap();
    let plugin = runtime.load(&path).unwrap();

    let (mut store, bindings) = raw_instance();
    let mut ours = plugin.instantiate().unwrap();
    let user = WpUser {
        name: "Gopher".into(),
        age: 13,
    };
    let raw_user = raw::wasmplug::plugin::types::User {
        name: "Gopher".into(),
        age: 13,
    };

    println!("wasmplug vs raw wasmtime, Rust hello v1, same engine configuration, medians of {ROUNDS} rounds");
    let raw_count = per_iter(20_000, || {
        black_box(
            bindings
                .wasmplug_plugin_greeter()
                .call_count(&mut store)
                .unwrap(),
        );
    });
    let our_count = per_iter(20_000, || {
        black_box(ours.count().unwrap());
    });
    row("typed call, no arguments: count()", our_count, raw_count);

    let raw_hello = per_iter(20_000, || {
        black_box(
            bindings
                .wasmplug_plugin_greeter()
                .call_hello(&mut store, &raw_user)
                .unwrap(),
        );
    });
    let our_hello = per_iter(20_000, || {
        black_box(ours.hello(&user).unwrap());
    });
    row("record in, string out: hello(user)", our_hello, raw_hello);

    let raw_inst = per_iter(2_000, || drop(black_box(raw_instance())));
    let our_inst = per_iter(2_000, || drop(black_box(plugin.instantiate().unwrap())));
    row("instantiate: Store + instance + init", our_inst, raw_inst);

    // Memory per live, idle instance: RSS before and after holding 500.
    let before = rss_kib();
    let held: Vec<_> = (0..500).map(|_| plugin.instantiate().unwrap()).collect();
    let after = rss_kib();
    println!(
        "memory per live idle instance (500 held): {:.1} KiB",
        (after.saturating_sub(before)) as f64 / held.len() as f64
    );
    drop(held);

    // Throughput on 2 cores: one thread, then two, each with its own
    // instance of the same plugin.
    let calls_per_sec = |threads: usize| {
        let window = Duration::from_millis(500);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut instance = plugin.instantiate().unwrap();
                std::thread::spawn(move || {
                    let (start, mut calls) = (Instant::now(), 0u64);
                    while start.elapsed() < window {
                        for _ in 0..100 {
                            black_box(instance.count().unwrap());
                        }
                        calls += 100;
                    }
                    calls as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<f64>()
    };
    let one = calls_per_sec(1);
    let two = calls_per_sec(2);
    println!(
        "calls/s, an instance per thread: 1 thread {:.0}, 2 threads {:.0}: {:.2}x",
        one,
        two,
        two / one
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
