//! Instructions per call, counted by callgrind rather than timed: the
//! registry's `Handle::call` against the same call on an `Instance`, where
//! wall-clock medians on a shared machine swing by ±20 % between runs.
//!
//! `callcount MODE N` loads Rust hello v1 and makes `N` calls of `count()`
//! the way MODE says: `instance` (an `Instance` held by the caller),
//! `handle` (a `Registry` with one instance, `Handle::call`), or
//! `handle-recorded` (the same with a Prometheus recorder installed, so
//! wasmplug's telemetry counts and times every call). Under
//! `valgrind --tool=callgrind`, the difference of the totals of two runs
//! with different `N`, divided by the difference of `N`, is the cost of one
//! call with set-up and tear-down cancelled out. `callcount.sh` beside the
//! README does that for both modes and prints the ratio.

use std::hint::black_box;

use wasmplug::reference::GreeterPlugin;
use wasmplug::{Registry, Runtime};
use wasmplug_tests::guest;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, calls) = match args.as_slice() {
        [_, mode, n] => (mode.as_str(), n.parse::<u64>()?),
        _ => anyhow::bail!("usage: callcount instance|handle|handle-recorded N"),
    };
    // On-demand allocation: valgrind cannot reserve the pooling allocator's
    // address space, and the call path does not depend on the allocator.
    let runtime = Runtime::<GreeterPlugin>::builder().on_demand().build()?;
    let plugin = runtime.load(guest("hello-v1"))?;
    match mode {
        "instance" => {
            let mut instance = plugin.instantiate()?;
            for _ in 0..calls {
                black_box(instance.count()?);
            }
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
            for _ in 0..calls {
                black_box(handle.call(|i| i.count())?);
            }
        }
        other => anyhow::bail!("unknown mode {other}: instance, handle or handle-recorded"),
    }
    Ok(())
}
