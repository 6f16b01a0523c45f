//! What the library reports of itself (`wasmplug::telemetry`): metrics read
//! back from a real Prometheus recorder's exposition (the spans are in
//! `telemetry_spans.rs`). Each test drives the outcome it counts (a
//! guest's error, a crash, a deadline, a memory cap, a refused file, a
//! swap) and reads the number it must have moved, and no other.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::{Handle, Policy, Registry, Runtime};
use wasmplug_tests::{current_thread, guest};

/// A recorder of our own for this thread: each test reads only its own
/// numbers, whatever the other tests in this binary do.
fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1, 1.0])
        .unwrap()
        .build_recorder()
}

/// Every sample of the exposition, `name{labels}` to value.
fn samples(recorder: &PrometheusRecorder) -> BTreeMap<String, f64> {
    let text = recorder.handle().render();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in\n{samples:#?}"))
}

fn welcome(handle: &Handle<GreeterPlugin>, cmd: &str) -> wasmplug::Result<String> {
    handle.call(|instance| instance.welcome(cmd))
}

#[test]
fn every_call_is_counted_by_outcome_timed_and_every_restart_counted() {
    let recorder = recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let policy = Policy::default()
        .deadline(Duration::from_millis(200))
        .memory_limit(32 << 20);
    let plugin = runtime.load_with_policy(guest("hostile"), policy).unwrap();
    let id = plugin.identity().clone();
    let registry = Registry::new();
    registry.activate(plugin).unwrap();
    let handle = registry.get(&id.name).unwrap();

    assert_eq!(welcome(&handle, "a").unwrap(), "Welcome, a!");
    let nobody = User {
        name: String::new(),
        age: 1,
    };
    let refused = handle.call(|i| i.birthday(&nobody)).unwrap_err();
    assert_eq!(refused.kind(), "guest");
    // Each failure is followed by a good call: its restart, and no backoff.
    for (cmd, kind) in [("recurse", "trap"), ("loop", "timeout"), ("alloc", "limit")] {
        let err = welcome(&handle, cmd).unwrap_err();
        assert_eq!(err.kind(), kind, "{cmd}: {err}");
        welcome(&handle, "again").unwrap();
    }

    let m = samples(&recorder);
    let labels = format!("plugin=\"{}\",version=\"{}\"", id.name, id.version);
    let at = |name: &str| value(&m, &format!("{name}{{{labels}}}"));
    let errors = |kind: &str| {
        value(
            &m,
            &format!("wasmplug_call_errors_total{{{labels},kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(at("wasmplug_calls_total"), 8.0);
    for kind in ["guest", "trap", "timeout", "limit"] {
        assert_eq!(errors(kind), 1.0, "{kind}");
    }
    for kind in [
        "overloaded",
        "unavailable",
        "bad_call",
        "instantiate",
        "init",
    ] {
        assert_eq!(errors(kind), 0.0, "{kind}: present, and zero");
    }
    assert_eq!(at("wasmplug_restarts_total"), 3.0);
    assert_eq!(at("wasmplug_call_duration_seconds_count"), 8.0);
    // The deadline call took its 200 ms: in the sum, and past the 0.1 bucket.
    assert!(at("wasmplug_call_duration_seconds_sum") >= 0.2);
    let under = value(
        &m,
        &format!("wasmplug_call_duration_seconds_bucket{{{labels},le=\"0.1\"}}"),
    );
    assert!(under <= 7.0, "{under}");
    assert_eq!(at("wasmplug_instances"), 1.0, "the pool's one instance");
    assert!(at("wasmplug_memory_bytes") > 0.0);
    assert_eq!(
        value(
            &m,
            &format!("wasmplug_loads_total{{plugin=\"{}\"}}", id.name)
        ),
        1.0
    );

    // Unloaded: the instance and its memory leave the gauges.
    assert!(registry.remove(&id.name, &id.version));
    drop(handle);
    let m = samples(&recorder);
    assert_eq!(value(&m, &format!("wasmplug_instances{{{labels}}}")), 0.0);
    assert_eq!(
        value(&m, &format!("wasmplug_memory_bytes{{{labels}}}")),
        0.0
    );
    assert_eq!(
        value(
            &m,
            &format!("wasmplug_unloads_total{{plugin=\"{}\"}}", id.name)
        ),
        1.0
    );
}

#[test]
fn loads_swaps_and_refused_files_are_counted_and_a_refused_name_makes_no_series() {
    let recorder = recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new();
    registry
        .activate(runtime.load(guest("hello-v1")).unwrap())
        .unwrap();
    registry
        .activate(runtime.load(guest("hello-v2")).unwrap())
        .unwrap();

    // A file of garbage under an attacker's name, and a file of the wrong
    // world: refused, counted by kind, and no series carries the name.
    let err = runtime
        .load_bytes("attacker-name-7f3a", b"\0asm garbage")
        .unwrap_err();
    assert_eq!(err.kind(), "load");
    runtime.load(guest("hello-mistyped")).unwrap_err();
    runtime
        .load("/nonexistent/attacker-name-9c1e.wasm")
        .unwrap_err();
    // Loaded, but refused by the registry: `init` cannot fail here, so a
    // guard does (a file claiming a name another file serves).
    let squatter = runtime
        .load_bytes("squatter", &wasmplug_tests::guest_bytes("hello-v3"))
        .unwrap();
    let guard = wasmplug::registry::Guard::default();
    let refused = registry.activate_guarded(squatter, &guard).unwrap_err();

    let m = samples(&recorder);
    assert_eq!(value(&m, "wasmplug_loads_total{plugin=\"hello\"}"), 3.0);
    assert_eq!(value(&m, "wasmplug_swaps_total{plugin=\"hello\"}"), 1.0);
    assert_eq!(
        value(
            &m,
            &format!("wasmplug_failed_loads_total{{kind=\"{}\"}}", refused.kind())
        ),
        4.0,
        "three refused at load, one at activation ({refused})"
    );
    let text = recorder.handle().render();
    assert!(!text.contains("attacker-name"), "{text}");
    // Both versions' gauges: v1 stays loaded beside v2 (another file).
    assert_eq!(
        value(&m, "wasmplug_instances{plugin=\"hello\",version=\"1.0.0\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "wasmplug_instances{plugin=\"hello\",version=\"2.0.0\"}"),
        1.0
    );
}

#[test]
fn async_calls_are_counted_as_blocking_ones_and_a_guest_error_is_a_guest_error() {
    use wasmplug::reference::async_world::GreeterPlugin as AsyncGreeter;
    let recorder = recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let runtime = Runtime::<AsyncGreeter>::new().unwrap();
    let registry = Registry::new();
    let plugin = runtime.load(guest("hello-v1")).unwrap();
    registry.activate(plugin).unwrap();
    let handle = registry.get("hello").unwrap();
    // A guest computing to its deadline ends on the guest threads.
    let spinning = Runtime::<AsyncGreeter>::builder()
        .policy(Policy::default().deadline(Duration::from_millis(300)))
        .build()
        .unwrap();
    registry
        .activate(spinning.load(guest("hostile")).unwrap())
        .unwrap();
    let hostile = registry.get("hostile").unwrap();
    let tokio = current_thread();
    tokio.block_on(async {
        let count = handle
            .call_async(|p, store| Box::pin(p.wasmplug_plugin_greeter().call_count(store)))
            .await
            .unwrap();
        assert_eq!(count, 1);
        let nobody = User {
            name: String::new(),
            age: 1,
        };
        let err = handle
            .try_call_async(move |p, store| {
                Box::pin(async move {
                    p.wasmplug_plugin_greeter()
                        .call_birthday(store, &nobody)
                        .await
                })
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "guest", "{err}");
        assert!(err.to_string().contains("a user needs a name"), "{err}");
        let err = hostile
            .call_async(|p, store| {
                Box::pin(p.wasmplug_plugin_greeter().call_welcome(store, "loop"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
    });
    let m = samples(&recorder);
    let v1 = "plugin=\"hello\",version=\"1.0.0\"";
    let on_guest_threads = |labels: &str| {
        value(
            &m,
            &format!("wasmplug_guest_thread_calls_total{{{labels}}}"),
        )
    };
    assert_eq!(on_guest_threads(v1), 0.0, "fast calls stay on their task");
    assert_eq!(
        on_guest_threads("plugin=\"hostile\",version=\"1.0.0\""),
        1.0
    );
    assert_eq!(value(&m, &format!("wasmplug_calls_total{{{v1}}}")), 2.0);
    assert_eq!(
        value(
            &m,
            &format!("wasmplug_call_errors_total{{{v1},kind=\"guest\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(&m, &format!("wasmplug_call_duration_seconds_count{{{v1}}}")),
        2.0
    );
}
