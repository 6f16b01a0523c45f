//! Every plugin in a sandbox. The `hostile` plugin implements the reference
//! world faithfully and attacks through `welcome(cmd)`; each test asserts the
//! right kind of error, that the host is unharmed, and that a well-behaved
//! plugin in the same runtime keeps answering during and after the attack.
//! (Memory after the attacks is measured in `sandbox_memory.rs`.)

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmplug::reference::GreeterPlugin;
use wasmplug::{policy::DirAccess, policy::LimitHit, Error, Policy, Registry, Runtime};
use wasmplug_tests::{attack, guest, TempDir};

fn runtime() -> Runtime<GreeterPlugin> {
    Runtime::new().unwrap()
}

/// A well-behaved plugin, called continuously from another thread.
struct Bystander {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: JoinHandle<Vec<String>>,
}

impl Bystander {
    fn start(rt: &Runtime<GreeterPlugin>) -> Self {
        let mut instance = rt.load(guest("hello-v1")).unwrap().instantiate().unwrap();
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let thread = {
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match instance.welcome("bystander") {
                        Ok(answer) if answer == "Welcome, bystander!" => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => failures.push(answer),
                        Err(err) => failures.push(err.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                failures
            })
        };
        Bystander { stop, ok, thread }
    }

    /// Stop, and check it answered every call, including while the attack ran.
    fn finish(self, answered_before: u64) {
        std::thread::sleep(Duration::from_millis(20));
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.join().unwrap();
        assert!(failures.is_empty(), "the bystander failed: {failures:?}");
        assert!(
            self.ok.load(Ordering::Relaxed) > answered_before,
            "the bystander kept answering"
        );
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
}

#[test]
fn an_infinite_loop_times_out_within_the_deadline_plus_a_tick_while_others_keep_serving() {
    let rt = runtime();
    let bystander = Bystander::start(&rt);
    let deadline = Duration::from_millis(200);
    let start = Instant::now();
    let err = attack(&rt, Policy::default().deadline(deadline), "loop").unwrap_err();
    let took = start.elapsed();
    let during = bystander.answered();
    println!("infinite loop stopped after {took:?} (deadline {deadline:?})");
    assert!(err.is_timeout(), "{err:?}");
    assert!(took >= deadline, "stopped before its deadline: {took:?}");
    assert!(
        took < deadline + Duration::from_secs(2),
        "not stopped: {took:?}"
    );
    assert!(during > 0, "the bystander answered while the loop ran");
    bystander.finish(during);
}

#[test]
fn an_init_that_never_returns_is_refused_at_load_by_the_deadline() {
    let rt = runtime();
    let policy = Policy::default().deadline(Duration::from_millis(100));
    let err = rt
        .load_with_policy(guest("hostile-init-loop"), policy)
        .unwrap_err();
    assert!(
        matches!(err, Error::Init { .. } | Error::Load { .. }),
        "{err:?}"
    );
    assert!(format!("{err:#}").contains("interrupt"), "{err}");
    assert_eq!(rt.compiled_count(), 0);
}

#[test]
fn allocating_until_memory_runs_out_hits_the_cap_and_is_reported_as_such() {
    let rt = runtime();
    let bystander = Bystander::start(&rt);
    let err = attack(&rt, Policy::default().memory_limit(32 << 20), "alloc").unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    assert!(
        matches!(err.limit(), Some(LimitHit::Memory { limit, .. }) if *limit == 32 << 20),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("memory limit of 33554432 bytes"),
        "{err}"
    );
    bystander.finish(0);
}

#[test]
fn unbounded_recursion_traps() {
    let rt = runtime();
    let bystander = Bystander::start(&rt);
    let err = attack(&rt, Policy::default(), "recurse").unwrap_err();
    // A Rust guest keeps its frames on a shadow stack in linear memory, which
    // runs out (out of bounds) before wasm's own call stack overflows.
    use wasmplug::wasmtime::Trap;
    let trap = match &err {
        Error::Trap { trap, .. } => *trap,
        _ => None,
    };
    assert!(
        matches!(trap, Some(Trap::StackOverflow | Trap::MemoryOutOfBounds)),
        "{err:?}"
    );
    bystander.finish(0);
}

#[test]
fn returning_a_100_mb_string_is_stopped_by_the_memory_cap() {
    let rt = runtime();
    let err = attack(
        &rt,
        Policy::default().memory_limit(32 << 20),
        "huge:100000000",
    )
    .unwrap_err();
    assert!(
        matches!(err.limit(), Some(LimitHit::Memory { .. })),
        "{err:?}"
    );
    // Within the cap, a large answer is an answer.
    let big = attack(&rt, Policy::default(), "huge:1000000").unwrap();
    assert_eq!(big.len(), 1_000_000);
}

#[test]
fn printing_100_mb_is_cut_at_the_output_limit_and_the_call_completes() {
    let rt = runtime();
    let bystander = Bystander::start(&rt);
    let policy = Policy::default().output_limit(64 * 1024);
    assert_eq!(attack(&rt, policy, "flood:100000000").unwrap(), "flooded");
    bystander.finish(0);
}

#[test]
fn an_import_the_host_does_not_provide_is_refused_at_load() {
    let err = runtime().load(guest("hostile-import")).unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("wasmplug:plugin/secrets@1.0.0"),
        "{message}"
    );
    assert!(message.contains("hostile-import.wasm"), "{message}");
}

#[test]
fn no_file_is_reachable_without_a_grant() {
    let rt = runtime();
    let answer = attack(&rt, Policy::default(), "read:/etc/passwd").unwrap();
    assert!(answer.starts_with("error:"), "{answer}");
    let answer = attack(&rt, Policy::default(), "list:/").unwrap();
    assert!(answer.starts_with("error:"), "{answer}");
}

#[test]
fn the_host_environment_does_not_leak_and_only_granted_variables_are_seen() {
    let rt = runtime();
    assert!(
        std::env::var("PATH").is_ok(),
        "the test needs PATH set on the host"
    );
    assert_eq!(attack(&rt, Policy::default(), "env").unwrap(), "");

    let policy = Policy::default()
        .env("GREETING", "hi")
        .inherit_env("PATH")
        .inherit_env("NOT_SET_ANYWHERE_42");
    let env = attack(&rt, policy, "env").unwrap();
    let names: Vec<&str> = env
        .split(';')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(names, ["GREETING", "PATH"], "{env}");
    assert!(env.contains(&format!("PATH={}", std::env::var("PATH").unwrap())));

    let args = attack(&rt, Policy::default().arg("--verbose"), "args").unwrap();
    assert_eq!(args.trim(), "--verbose");
}

#[test]
fn a_granted_directory_cannot_be_escaped_through_dotdot_or_symlinks() {
    let dir = TempDir::new("escape");
    let sandbox = dir.path().join("box");
    std::fs::create_dir(&sandbox).unwrap();
    std::fs::write(sandbox.join("inside.txt"), "inside").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../secret.txt", sandbox.join("relative-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sandbox.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), sandbox.join("dir-link")).unwrap();

    let rt = runtime();
    let policy = || Policy::default().preopen_dir(&sandbox, "/data", DirAccess::ReadOnly);
    assert_eq!(
        attack(&rt, policy(), "read:/data/inside.txt").unwrap(),
        "ok:inside"
    );
    for escape in [
        "read:/data/../secret.txt",
        "read:/data/../../etc/passwd",
        "read:../secret.txt",
        "read:/data/relative-link",
        "read:/data/absolute-link",
        "read:/data/dir-link/secret.txt",
        "read:/etc/passwd",
    ] {
        let answer = attack(&rt, policy(), escape).unwrap();
        assert!(answer.starts_with("error:"), "{escape} escaped: {answer}");
    }
    // Read-only means read-only.
    let answer = attack(&rt, policy(), "write:/data/new.txt").unwrap();
    assert!(answer.starts_with("error:"), "{answer}");
    assert!(!sandbox.join("new.txt").exists());
    // Read-write lets it write, inside only.
    let rw = Policy::default().preopen_dir(&sandbox, "/data", DirAccess::ReadWrite);
    assert_eq!(
        attack(&rt, rw.clone(), "write:/data/new.txt").unwrap(),
        "ok"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("new.txt")).unwrap(),
        "pwned"
    );
    let answer = attack(&rt, rw, "write:/data/../outside.txt").unwrap();
    assert!(answer.starts_with("error:"), "{answer}");
    assert!(!dir.path().join("outside.txt").exists());
}

#[test]
fn the_network_is_denied_unless_granted_and_then_only_to_listed_addresses() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (addr, other_addr) = (listener.local_addr().unwrap(), other.local_addr().unwrap());
    let rt = runtime();

    let answer = attack(&rt, Policy::default(), &format!("connect:{addr}")).unwrap();
    assert!(
        answer.starts_with("error:"),
        "connected without a grant: {answer}"
    );

    let granted = Policy::default().allow_connect(addr);
    assert_eq!(
        attack(&rt, granted.clone(), &format!("connect:{addr}")).unwrap(),
        "connected"
    );
    let answer = attack(&rt, granted, &format!("connect:{other_addr}")).unwrap();
    assert!(
        answer.starts_with("error:"),
        "reached an unlisted address: {answer}"
    );
}

#[test]
fn clocks_and_random_work_without_a_grant() {
    let rt = runtime();
    let now: u64 = attack(&rt, Policy::default(), "time")
        .unwrap()
        .parse()
        .unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(host_now) < 60,
        "guest clock {now}, host {host_now}"
    );
    let a = attack(&rt, Policy::default(), "random").unwrap();
    let b = attack(&rt, Policy::default(), "random").unwrap();
    assert_ne!(a, b);
}

#[test]
fn fuel_limits_a_call_by_instructions() {
    let rt = Runtime::<GreeterPlugin>::builder()
        .fuel(true)
        .build()
        .unwrap();
    let policy = Policy::default().fuel(5_000_000).deadline(None);
    let err = attack(&rt, policy.clone(), "loop").unwrap_err();
    assert!(err.is_out_of_fuel(), "{err:?}");
    // A normal call fits its budget.
    assert_eq!(attack(&rt, policy, "friend").unwrap(), "Welcome, friend!");
}

#[test]
fn every_call_gets_a_fresh_fuel_budget_and_an_instance_deadline_overrides_the_policy() {
    let rt = Runtime::<GreeterPlugin>::builder()
        .fuel(true)
        .build()
        .unwrap();
    let plugin = rt
        .load_with_policy(
            guest("hostile"),
            Policy::default().fuel(5_000_000).deadline(None),
        )
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    // A budget per call, not per instance: 10,000 small calls fit, although
    // together they burn more than one budget.
    let left = instance
        .call(|g, store| {
            g.wasmplug_plugin_greeter()
                .call_welcome(&mut *store, "friend")?;
            store.get_fuel()
        })
        .unwrap();
    let burnt_by_one = 5_000_000 - left;
    assert!(
        burnt_by_one * 10_000 > 5_000_000,
        "one call burns {burnt_by_one}"
    );
    for _ in 0..10_000 {
        instance.welcome("friend").unwrap();
    }

    // A 10 s deadline in the policy; the instance sets a shorter one.
    let rt = runtime();
    let plugin = rt
        .load_with_policy(
            guest("hostile"),
            Policy::default().deadline(Duration::from_secs(10)),
        )
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    instance.set_deadline(Some(Duration::from_millis(50)));
    let started = std::time::Instant::now();
    let err = instance.welcome("loop").unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped by the instance's deadline"
    );
}

#[test]
fn a_crashing_version_is_restarted_then_backs_off_and_its_counters_are_visible() {
    let rt = runtime();
    let registry = Registry::new();
    let policy = Policy::default().deadline(Duration::from_millis(50));
    registry
        .activate(rt.load_with_policy(guest("hostile"), policy).unwrap())
        .unwrap();
    let hostile = registry.get("hostile").unwrap();

    let first = hostile.call(|i| i.welcome("loop")).unwrap_err();
    assert!(first.is_timeout(), "{first:?}");
    // The first restart is immediate: a fresh instance (with init) answers.
    assert_eq!(
        hostile.call(|i| i.welcome("again")).unwrap(),
        "Welcome, again!"
    );
    assert_eq!(hostile.health().unwrap().consecutive_failures, 0);

    // Crash twice in a row: the next restart waits.
    hostile.call(|i| i.welcome("loop")).unwrap_err();
    hostile.call(|i| i.welcome("loop")).unwrap_err();
    let backing_off = hostile.call(|i| i.welcome("now?")).unwrap_err();
    assert!(
        matches!(backing_off, Error::Unavailable { failures: 2, .. }),
        "{backing_off:?}"
    );
    let health = hostile.health().unwrap();
    assert_eq!(
        (health.traps, health.restarts, health.consecutive_failures),
        (3, 2, 2)
    );
    assert_eq!(registry.list()[0].health, health);

    std::thread::sleep(wasmplug::registry::BACKOFF_FIRST * 2);
    assert_eq!(
        hostile.call(|i| i.welcome("later")).unwrap(),
        "Welcome, later!"
    );
    assert_eq!(hostile.health().unwrap().consecutive_failures, 0);
}
