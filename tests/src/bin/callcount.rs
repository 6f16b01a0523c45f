//! Instructions per call, counted by callgrind rather than timed: the
//! registry's `Handle::call` against the same call on an `Instance`, where
//! wall-clock medians on a shared machine swing by ±20 % between runs.
//!
//! `callcount MODE N` loads Rust hello v1 and makes `N` calls of `count()`
//! the way MODE says: `instance` (an `Instance` held by the caller),
//! `handle` (a `Registry` with one instance, `Handle::call`), or
//! `handle-recorded` (the same with a Prometheus recorder installed, so
//! wasmplug's telemetry counts and times every call). `direct` and
//! `versioned` compare bindings on one `Instance`: the world's own
//! `bindgen!` struct against the versioned world serving 1.1 and 1.0
//! (`reference::versions::Greeter`), on the same 1.0 component.
//!
//! The calls are made inside `measured_calls`, and `just callcount` runs
//! this under `valgrind --tool=callgrind --toggle-collect=*measured_calls*`,
//! so only the instructions executed inside that function are counted:
//! not the set-up, and not the component's compilation, whose parallel
//! (rayon) work varies by millions of instructions from run to run. The
//! total divided by `N` is the cost of one call.

use std::hint::black_box;

use wasmplug::reference::versions::Greeter;
use wasmplug::reference::GreeterPlugin;
use wasmplug::{Registry, Result, Runtime};
use wasmplug_tests::guest;

/// The only function callgrind counts in: `N` calls of `call`.
#[inline(never)]
fn measured_calls(calls: u64, mut call: impl FnMut() -> Result<u32>) -> Result<()> {
    for _ in 0..calls {
        black_box(call()?);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, calls) = match args.as_slice() {
        [_, mode, n] => (mode.as_str(), n.parse::<u64>()?),
        _ => anyhow::bail!("usage: callcount instance|handle|handle-recorded|direct|versioned N"),
    };
    // On-demand allocation: valgrind cannot reserve the pooling allocator's
    // address space, and the call path does not depend on the allocator.
    let runtime = Runtime::<GreeterPlugin>::builder().on_demand().build()?;
    let plugin = runtime.load(guest("hello-v1"))?;
    match mode {
        "instance" => {
            let mut instance = plugin.instantiate()?;
            // One call outside the count: the first call's lazy set-up is
            // not a call's cost.
            instance.count()?;
            measured_calls(calls, || instance.count())?;
        }
        "handle" | "handle-recorded" => {
            // `handle-recorded`: as an embedder with a Prometheus recorder
            // installed, so every call is counted and timed.
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let _local =
                (mode == "handle-recorded").then(|| metrics::set_default_local_recorder(&recorder));
            let registry = Registry::new();
            registry.activate(plugin)?;
            let handle = registry.get("hello")?;
            handle.call(|i| i.count())?;
            measured_calls(calls, || handle.call(|i| i.count()))?;
        }
        "direct" => {
            let mut instance = plugin.instantiate()?;
            let mut count = || instance.call(|p, s| p.wasmplug_plugin_greeter().call_count(s));
            count()?;
            measured_calls(calls, count)?;
        }
        "versioned" => {
            let runtime = Runtime::<Greeter>::builder().on_demand().build()?;
            let mut instance = runtime.load(guest("hello-v1"))?.instantiate()?;
            let mut count = || instance.call(|p, s| p.greeter().count(s));
            count()?;
            measured_calls(calls, count)?;
        }
        other => anyhow::bail!(
            "unknown mode {other}: instance, handle, handle-recorded, direct or versioned"
        ),
    }
    Ok(())
}
