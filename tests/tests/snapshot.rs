//! Pre-initialization (`Policy::pre_initialize`): instances started from a
//! snapshot taken after `init` must behave exactly as fresh ones (the same
//! answers, each with its own state), must not run `init` again, and a
//! snapshot must be refused whenever `init` did what a snapshot cannot keep:
//! read clocks or random numbers (unless consented to), left a handle
//! open, could have used a grant, or may call a host import.
//!
//! The tests take a lock and run one at a time: two of them count log
//! lines, which `tracing` can miss while other threads log
//! (`capture_logs`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmplug::policy::{DirAccess, PreInit};
use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::{Dynamic, Plugin, Policy, Runtime};
use wasmplug_tests::{capture_logs, guest, TempDir};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn pre(mode: PreInit) -> Policy {
    Policy::default().pre_initialize(mode)
}

/// Two instances of `plugin` called in turn: every answer, in order. Each
/// instance's counter is its own, so the interleaving shows whether the
/// two share state.
fn answers(plugin: &Plugin<GreeterPlugin>) -> Vec<String> {
    let mut a = plugin.instantiate().unwrap();
    let mut b = plugin.instantiate().unwrap();
    let ada = User {
        name: "Ada".into(),
        age: 36,
    };
    vec![
        a.welcome("Zoë").unwrap(),
        a.count().unwrap().to_string(),
        a.count().unwrap().to_string(),
        b.count().unwrap().to_string(),
        a.hello(&ada).unwrap(),
        b.welcome("Ada").unwrap(),
        a.count().unwrap().to_string(),
        b.count().unwrap().to_string(),
        format!("{:?}", b.birthday(&ada).unwrap()),
    ]
}

/// `component` loaded with pre-initialization under `mode` answers as it
/// does loaded plainly, instance for instance.
fn answers_as_a_fresh_instance(component: &str, mode: PreInit) {
    let plain = Runtime::<GreeterPlugin>::new().unwrap();
    let expected = answers(&plain.load(guest(component)).unwrap());
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let snapshot = runtime
        .load_with_policy(guest(component), pre(mode))
        .unwrap_or_else(|e| panic!("{component} was refused a snapshot: {e:#}"));
    assert_eq!(snapshot.policy().pre_initialize_value(), mode);
    for round in 0..3 {
        assert_eq!(
            answers(&snapshot),
            expected,
            "{component}: instances of the snapshot answered otherwise (round {round})"
        );
    }
}

/// How many times `init` logged while instances of `plugin` were made
/// (the Rust hello logs `init hello@1.0.0` from its `init`).
fn inits_while_instantiating(plugin: &Plugin<GreeterPlugin>, instances: usize) -> usize {
    let logs = capture_logs(tracing::Level::INFO, || {
        for _ in 0..instances {
            plugin.instantiate().unwrap().welcome("x").unwrap();
        }
    });
    logs.matches("init hello@1.0.0").count()
}

/// `component` loaded by `runtime` pre-initialized under `mode`, and what
/// was logged at `level` while it loaded.
fn load_logged(
    runtime: &Runtime<GreeterPlugin>,
    component: &str,
    mode: PreInit,
    level: tracing::Level,
) -> (Plugin<GreeterPlugin>, String) {
    let mut loaded = None;
    let logs = capture_logs(level, || {
        loaded = Some(runtime.load_with_policy(guest(component), pre(mode)));
    });
    let plugin = loaded
        .expect("the load ran")
        .unwrap_or_else(|e| panic!("{component} was refused a snapshot: {e:#}"));
    (plugin, logs)
}

/// The number logged as `field=` in `logs`.
fn logged_number(logs: &str, field: &str) -> usize {
    logs.split(&format!(" {field}="))
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field}= logged: {logs}"))
}

fn refusal(component: &str, policy: Policy) -> String {
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    match runtime.load_with_policy(guest(component), policy) {
        Ok(_) => panic!("{component}: a snapshot that must be refused was taken"),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn rust_guest_snapshot_answers_as_a_fresh_instance_and_never_runs_init_again() {
    let _serial = serial();
    answers_as_a_fresh_instance("hello-v1", PreInit::Deterministic);

    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let plain = runtime.load(guest("hello-v1")).unwrap();
    let snapshot = runtime
        .load_with_policy(guest("hello-v1"), pre(PreInit::Deterministic))
        .unwrap();
    assert!(
        !snapshot.shares_code_with(&plain),
        "the snapshot is a component of its own"
    );
    assert_eq!(
        snapshot.content_hash(),
        plain.content_hash(),
        "the file's hash"
    );
    // The first instance is the one the load checked: its init ran then.
    assert_eq!(inits_while_instantiating(&plain, 5), 4);
    assert_eq!(
        inits_while_instantiating(&snapshot, 5),
        0,
        "an instance of the snapshot ran init again"
    );
}

#[test]
fn c_guest_snapshot_answers_as_a_fresh_instance() {
    let _serial = serial();
    answers_as_a_fresh_instance("hello-c", PreInit::Deterministic);
}

#[test]
fn javascript_reads_the_clocks_as_it_starts_so_only_a_consented_freeze_snapshots_it() {
    let _serial = serial();
    let refused = refusal("hello-js", pre(PreInit::Deterministic));
    assert!(refused.contains("hello-js"), "names the plugin: {refused}");
    assert!(
        refused.contains("read the clocks") && refused.contains("not deterministic"),
        "{refused}"
    );
    assert!(refused.contains("FreezeClocksAndEntropy"), "{refused}");
    answers_as_a_fresh_instance("hello-js", PreInit::FreezeClocksAndEntropy);
}

#[test]
fn python_reads_random_numbers_as_it_starts_so_only_a_consented_freeze_snapshots_it() {
    let _serial = serial();
    let refused = refusal("hello-py", pre(PreInit::Deterministic));
    assert!(refused.contains("random numbers"), "{refused}");
    assert!(!refused.contains("random numbers 0 time"), "{refused}");
    answers_as_a_fresh_instance("hello-py", PreInit::FreezeClocksAndEntropy);
}

#[test]
fn go_guest_snapshot_holds_the_standard_streams_its_runtime_opened() {
    let _serial = serial();
    // Go's runtime reads the clocks and random numbers as it starts...
    let refused = refusal("hello-go", pre(PreInit::Deterministic));
    assert!(refused.contains("hello-go"), "{refused}");
    assert!(refused.contains("not deterministic"), "{refused}");
    // ...and opens the standard streams (the preview1 adapter's first WASI
    // call), keeping their handles in its memory. Every instance of the
    // snapshot opens them again under the same numbers.
    answers_as_a_fresh_instance("hello-go", PreInit::FreezeClocksAndEntropy);

    // Every instance walks its modules' data segments. wizer writes Go's
    // memory as 10,000 of them and keeps its 28,078 originals, emptied;
    // the snapshot holds a few (`snapshot/segments.rs`).
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let (snapshot, logs) = load_logged(
        &runtime,
        "hello-go",
        PreInit::FreezeClocksAndEntropy,
        tracing::Level::DEBUG,
    );
    let (before, after) = (
        logged_number(&logs, "segments_before"),
        logged_number(&logs, "segments"),
    );
    assert!(before > 30_000, "{before} segments in wizer's snapshot");
    assert!(after < 100, "{after} segments left of {before}");

    let nameless = User {
        name: String::new(),
        age: 1,
    };
    // `birthday` of a user without a name writes to stderr through the
    // handle the adapter opened before the snapshot: a new instance's own
    // stderr, logged and tagged, not a trap on a handle its table lacks.
    let logs = capture_logs(tracing::Level::INFO, || {
        for _ in 0..3 {
            let mut instance = snapshot.instantiate().unwrap();
            let refused = instance.birthday(&nameless).unwrap_err().to_string();
            assert!(refused.contains("a user needs a name"), "{refused}");
            assert_eq!(instance.count().unwrap(), 1, "its own counter");
        }
    });
    assert_eq!(
        logs.matches("birthday: refused a user without a name")
            .count(),
        3,
        "{logs}"
    );
    assert!(!logs.contains("init hello-go"), "init ran again: {logs}");

    // The exports that open the streams are the host's: not listed, and
    // not callable by name on the dynamic path.
    assert!(
        snapshot
            .exports()
            .iter()
            .all(|e| !e.contains("wasmplug-replay")),
        "{:?}",
        snapshot.exports()
    );
    let dynamic = Runtime::<Dynamic>::new().unwrap();
    let go = dynamic
        .load_with_policy(guest("hello-go"), pre(PreInit::FreezeClocksAndEntropy))
        .unwrap();
    let mut instance = go.instantiate().unwrap();
    let refused = instance
        .call_wave("wasmplug-replay-h0()")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no exported function"), "{refused}");
    assert_eq!(instance.call_wave("count()").unwrap(), ["1"]);
}

#[test]
fn an_init_that_draws_hash_keys_is_refused_as_not_deterministic() {
    let _serial = serial();
    let refused = refusal("hello-v1-random-init", pre(PreInit::Deterministic));
    assert!(refused.contains("not deterministic"), "{refused}");
    // With consent it is taken, and every instance has the same keys.
    answers_as_a_fresh_instance("hello-v1-random-init", PreInit::FreezeClocksAndEntropy);
}

#[test]
fn a_plugin_with_any_grant_is_refused_a_snapshot_even_one_already_cached() {
    let _serial = serial();
    let data = TempDir::new("snapshot-grant");
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    // A snapshot of these bytes is live in the runtime: it must not serve
    // a load whose policy grants something.
    let _live = runtime
        .load_with_policy(guest("hello-v1"), pre(PreInit::Deterministic))
        .unwrap();
    let granted = [
        pre(PreInit::Deterministic).preopen_dir(data.path(), "/data", DirAccess::ReadOnly),
        pre(PreInit::Deterministic).env("GREETING", "Hej"),
        pre(PreInit::FreezeClocksAndEntropy).allow_connect("127.0.0.1:9".parse().unwrap()),
        pre(PreInit::Deterministic).arg("--verbose"),
    ];
    for policy in granted {
        let err = runtime
            .load_with_policy(guest("hello-v1"), policy)
            .expect_err("a plugin with a grant was pre-initialized");
        let err = format!("{err:#}");
        assert!(err.contains("grants"), "{err}");
        assert!(err.contains("hello-v1"), "names the file: {err}");
    }
}

#[test]
fn a_plugin_importing_what_init_may_not_call_is_refused_naming_the_import() {
    let _serial = serial();
    // hello 1.1 imports `config`, whose answers are the embedder's
    // settings: not a snapshot import of the dynamic world.
    let runtime = Runtime::<Dynamic>::new().unwrap();
    runtime.load(guest("hello-v1.1")).unwrap();
    let err = runtime
        .load_with_policy(guest("hello-v1.1"), pre(PreInit::Deterministic))
        .expect_err("a plugin importing config was pre-initialized");
    let err = format!("{err:#}");
    assert!(err.contains("wasmplug:plugin/config"), "{err}");
    assert!(err.contains("add_to_snapshot_linker"), "{err}");
}

#[test]
fn a_failing_init_refuses_the_snapshot_and_the_load() {
    let _serial = serial();
    let err = refusal("broken-init-error", pre(PreInit::Deterministic));
    assert!(err.contains("missing configuration"), "{err}");
    let err = refusal("broken-init-trap", pre(PreInit::Deterministic));
    assert!(err.contains("init trapped"), "{err}");
}

#[test]
fn a_snapshot_init_that_never_ends_is_stopped_by_the_plugins_deadline() {
    let _serial = serial();
    let deadline = pre(PreInit::FreezeClocksAndEntropy).deadline(Duration::from_millis(200));
    for component in ["hostile-init-loop", "hostile-init-sleep"] {
        let began = Instant::now();
        let err = refusal(component, deadline.clone());
        assert!(err.contains("init trapped"), "{component}: {err}");
        // Generous: the point is that a 60 s sleep or an endless loop does
        // not hold the load.
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{component}: the load took {:?}",
            began.elapsed()
        );
    }
}

#[test]
fn a_plugin_at_its_memory_cap_is_snapshotted_not_a_panic() {
    let _serial = serial();
    // wasmtime-wizer reads a memory by growing it a page: at the policy's
    // cap that failed, and wizer then panicked on what it had read.
    let plain = Runtime::<GreeterPlugin>::new().unwrap();
    let loaded = plain.load(guest("hello-v1")).unwrap();
    let at_cap = loaded.memory_bytes();
    assert!(at_cap > 0);
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let policy = pre(PreInit::Deterministic).memory_limit(at_cap);
    let snapshot = runtime
        .load_with_policy(guest("hello-v1"), policy)
        .unwrap_or_else(|e| panic!("refused at its cap of {at_cap} bytes: {e:#}"));
    assert_eq!(
        snapshot.instantiate().unwrap().welcome("Zoë").unwrap(),
        "Welcome, Zoë!"
    );
}

#[test]
fn a_snapshot_is_kept_in_the_disk_cache_and_not_taken_again_by_a_new_process() {
    let _serial = serial();
    let cache = TempDir::new("snapshot-cache");
    let runtime = |_: ()| {
        Runtime::<GreeterPlugin>::builder()
            .cache_dir(cache.path())
            .build()
            .unwrap()
    };
    let first = runtime(());
    let (_, loaded) = load_logged(
        &first,
        "hello-v1",
        PreInit::Deterministic,
        tracing::Level::INFO,
    );
    assert_eq!(loaded.matches("init hello@1.0.0").count(), 1, "{loaded}");
    assert_eq!(first.cache_stats().unwrap().hits, 0);

    // A new runtime (as a new process would) finds it on disk: no snapshot
    // is taken, and no init runs at all.
    let second = runtime(());
    let (plugin, loaded) = load_logged(
        &second,
        "hello-v1",
        PreInit::Deterministic,
        tracing::Level::INFO,
    );
    assert_eq!(loaded.matches("init hello@1.0.0").count(), 0, "{loaded}");
    assert_eq!(second.cache_stats().unwrap().hits, 1);
    let plain = Runtime::<GreeterPlugin>::new().unwrap();
    assert_eq!(
        answers(&plugin),
        answers(&plain.load(guest("hello-v1")).unwrap())
    );
    // The other mode is another snapshot, not this one.
    second
        .load_with_policy(guest("hello-v1"), pre(PreInit::FreezeClocksAndEntropy))
        .unwrap();
    assert_eq!(second.cache_stats().unwrap().hits, 1);
}

use wasmplug::reference::async_world::GreeterPlugin as AsyncGreeter;

async fn count(instance: &mut wasmplug::Instance<AsyncGreeter>) -> u32 {
    instance
        .call_async(|p, store| Box::pin(p.wasmplug_plugin_greeter().call_count(store)))
        .await
        .unwrap()
}

#[test]
fn an_async_world_starts_from_a_snapshot_too() {
    let _serial = serial();
    let runtime = Runtime::<AsyncGreeter>::new().unwrap();
    let plugin = runtime
        .load_with_policy(guest("hello-v1"), pre(PreInit::Deterministic))
        .unwrap();
    wasmplug_tests::current_thread().block_on(async {
        let mut a = plugin.instantiate_async().await.unwrap();
        let mut b = plugin.instantiate_async().await.unwrap();
        assert_eq!(count(&mut a).await, 1);
        assert_eq!(count(&mut a).await, 2);
        assert_eq!(count(&mut b).await, 1, "each instance its own");
        let welcome = a
            .call_async(|p, store| {
                Box::pin(
                    async move { p.wasmplug_plugin_greeter().call_welcome(store, "Zoë").await },
                )
            })
            .await
            .unwrap();
        assert_eq!(welcome, "Welcome, Zoë!");
    });

    // Go's snapshot opens its standard streams again on the executor too:
    // the load's instance (blocking) and every later one (async).
    let go = runtime
        .load_with_policy(guest("hello-go"), pre(PreInit::FreezeClocksAndEntropy))
        .unwrap();
    let logs = capture_logs(tracing::Level::INFO, || {
        wasmplug_tests::current_thread().block_on(async {
            for _ in 0..2 {
                let mut g = go.instantiate_async().await.unwrap();
                assert_eq!(count(&mut g).await, 1);
                let nobody = User {
                    name: String::new(),
                    age: 1,
                };
                let refused = g
                    .call_async(move |p, store| {
                        Box::pin(async move {
                            p.wasmplug_plugin_greeter()
                                .call_birthday(store, &nobody)
                                .await
                        })
                    })
                    .await
                    .unwrap();
                assert_eq!(refused, Err("a user needs a name".to_string()));
            }
        });
    });
    assert_eq!(
        logs.matches("birthday: refused a user without a name")
            .count(),
        2,
        "{logs}"
    );
}
