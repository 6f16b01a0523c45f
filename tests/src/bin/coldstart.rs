//! Where a cold start goes: a profiling aid for `perf record`, not a bench.
//!
//! `coldstart load COMPONENT N` loads COMPONENT `N` times, each in a fresh
//! runtime reading compiled code from a filled on-disk cache (the case of a
//! process that just started). `coldstart instantiate COMPONENT N` loads
//! it once and makes `N` instances (a new Store, instance and `init`).
//! `PRE_INIT=deterministic` (or `freeze-clocks-and-entropy`) makes those
//! instances start from a pre-initialized snapshot.
//! `coldstart build COMPONENT N` times building the runtime (its engine and
//! pools, linker and ticker) `N` times.
//! `coldstart snapshot COMPONENT OUT` pre-initializes it with wizer
//! (`coldstart/snapshot.rs`). Prints the median. Run under
//! `perf record -g` to see the phases:
//!
//! ```text
//! perf record -g target/release/coldstart load guest-plugins/dist/hello-c.wasm 2000
//! ```

use std::time::{Duration, Instant};

#[path = "coldstart/snapshot.rs"]
mod snapshot;

use wasmplug::policy::{Policy, PreInit};
use wasmplug::reference::GreeterPlugin;
use wasmplug::Runtime;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, component, n] = args.as_slice() else {
        anyhow::bail!(
            "usage: coldstart load|instantiate|build COMPONENT N, or coldstart snapshot COMPONENT OUT"
        );
    };
    if mode == "snapshot" {
        let began = Instant::now();
        let (bytes, used) = snapshot::snapshot(&std::fs::read(component)?)?;
        std::fs::write(n, &bytes)?;
        println!(
            "snapshot of {component}: {} bytes in {:.2?} ({used}) -> {n}",
            bytes.len(),
            began.elapsed()
        );
        return Ok(());
    }
    let n: usize = n.parse()?;
    let cache = std::env::temp_dir().join(format!("wasmplug-coldstart-{}", std::process::id()));
    // KEEP_RESIDENT=BYTES: memory and tables of that size stay resident
    // (zeroed by memset, not decommitted) when a pool slot is reused.
    let keep_resident: Option<usize> = std::env::var("KEEP_RESIDENT")
        .ok()
        .map(|v| v.parse())
        .transpose()?;
    let runtime = || -> anyhow::Result<Runtime<GreeterPlugin>> {
        let mut builder = Runtime::builder().cache_dir(&cache);
        if let Some(bytes) = keep_resident {
            let mut pooling = wasmplug::runtime::default_pooling();
            pooling
                .linear_memory_keep_resident(bytes)
                .table_keep_resident(bytes);
            if std::env::var_os("PAGEMAP_SCAN").is_some() {
                pooling.pagemap_scan(wasmplug::wasmtime::Enabled::Auto);
            }
            builder = builder.pooling(pooling);
        }
        builder.build()
    };
    let mut samples: Vec<Duration> = Vec::with_capacity(n);
    match mode.as_str() {
        "load" => {
            runtime()?.load(component)?; // fills the cache
            for _ in 0..n {
                let rt = runtime()?;
                let began = Instant::now();
                drop(rt.load(component)?);
                samples.push(began.elapsed());
            }
        }
        "build" => {
            for _ in 0..n {
                let began = Instant::now();
                let rt = runtime()?;
                samples.push(began.elapsed());
                drop(rt);
            }
        }
        "instantiate" => {
            let plugin = match std::env::var("PRE_INIT").ok() {
                None => runtime()?.load(component)?,
                Some(name) => {
                    // The names a manifest uses (`PreInit::name`).
                    let Some(mode) = PreInit::from_name(&name).filter(|&m| m != PreInit::Off)
                    else {
                        anyhow::bail!("PRE_INIT={name}: deterministic or freeze-clocks-and-entropy")
                    };
                    runtime()?
                        .load_with_policy(component, Policy::default().pre_initialize(mode))?
                }
            };
            for _ in 0..n {
                let began = Instant::now();
                drop(plugin.instantiate()?);
                samples.push(began.elapsed());
            }
        }
        other => anyhow::bail!("unknown mode {other}: load, instantiate or build"),
    }
    let _ = std::fs::remove_dir_all(&cache);
    samples.sort();
    println!(
        "{mode} {component}: median {:.1} µs of {n}",
        samples[n / 2].as_secs_f64() * 1e6
    );
    Ok(())
}
