//! The sandbox as an attacker tries it: every test here reproduces an attack
//! from the hostile review of issue 10 (nested grants, blocking host calls,
//! network grants that widen themselves, a pinned version that outlives its
//! file, a file that claims another plugin's name) and checks it now fails.
//! The `hostile` guest implements the reference world and attacks through
//! `welcome(cmd)`.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use wasmplug::reference::GreeterPlugin;
use wasmplug::{
    policy::DirAccess, registry::Guard, Dynamic, Error, Event, Policy, Registry, Runtime,
};
use wasmplug_tests::{attack, guest, wait_for_event, TempDir};

fn runtime() -> Runtime<GreeterPlugin> {
    Runtime::new().unwrap()
}

/// `data/` granted read-write as `/data`, `data/pub/` read-only as `/pub`:
/// through `/data` the guest could replace `pub`, so the policy is refused,
/// naming both grants.
#[test]
fn a_grant_inside_a_writable_grant_is_refused_naming_both() {
    let dir = TempDir::new("nested");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("pub")).unwrap();
    let policy = Policy::default()
        .preopen_dir(&data, "/data", DirAccess::ReadWrite)
        .preopen_dir(data.join("pub"), "/pub", DirAccess::ReadOnly);
    let err = runtime()
        .load_with_policy(guest("hostile"), policy.clone())
        .unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    let message = err.to_string();
    for named in ["/data", "/pub", "data/pub", "inside the writable grant"] {
        assert!(message.contains(named), "{named} not in: {message}");
    }
    // The same pair, read-only outside: nothing can be replaced, allowed.
    let ro = Policy::default()
        .preopen_dir(&data, "/data", DirAccess::ReadOnly)
        .preopen_dir(data.join("pub"), "/pub", DirAccess::ReadOnly);
    assert!(ro.check().is_ok());
    // And the embedder may opt in knowingly.
    assert!(policy.allow_nested_grants().check().is_ok());
}

/// The escape of the review: the guest removes `data/pub` through `/data`,
/// a symlink climbing to `/` takes its place (the guest's std has no stable
/// symlink call, so the test plants it, as the guest would through
/// `symlink-at`), and the guest traps. Before the fix the restarted
/// instance's `/pub` was the host's `/`. A grant is a handle now: the
/// restarted instance sees the directory it was granted (deleted, empty),
/// never what the path names today.
#[test]
fn a_grant_replaced_by_a_symlink_reaches_nothing_new_in_later_instances() {
    let dir = TempDir::new("regrant");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("pub")).unwrap();
    std::fs::write(data.join("pub").join("page.txt"), "public").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let policy = Policy::default()
        .preopen_dir(&data, "/data", DirAccess::ReadWrite)
        .preopen_dir(data.join("pub"), "/pub", DirAccess::ReadOnly)
        .allow_nested_grants()
        .deadline(Duration::from_millis(300));
    let rt = runtime();
    let plugin = rt.load_with_policy(guest("hostile"), policy).unwrap();
    let mut first = plugin.instantiate().unwrap();
    assert_eq!(first.welcome("read:/pub/page.txt").unwrap(), "ok:public");
    assert_eq!(first.welcome("remove:/data/pub").unwrap(), "ok");
    std::os::unix::fs::symlink("../../../../../../../..", data.join("pub")).unwrap();
    assert!(first.welcome("loop").is_err(), "the guest traps");
    drop(first);

    let mut later = plugin.instantiate().unwrap();
    let listing = later.welcome("list:/pub").unwrap();
    assert!(
        !listing.contains("etc") && !listing.contains("secret.txt"),
        "the new instance's /pub reaches outside every grant: {listing}"
    );
    for escape in ["read:/pub/etc/passwd", "read:/pub/secret.txt"] {
        let answer = later.welcome(escape).unwrap();
        assert!(answer.starts_with("error:"), "{escape}: {answer}");
    }
}

/// A manifest's directory is opened when the policy is built, and judged by
/// where the open handle is: a path swapped for a symlink afterwards does
/// not move the grant.
#[test]
fn a_manifest_grant_is_a_handle_too() {
    let dir = TempDir::new("manifest-grant");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("mine.txt"), "mine").unwrap();
    let manifest: wasmplug::manifest::Manifest = wasmplug::manifest::Manifest::load(&write(
        &dir,
        "m.toml",
        "[[dirs]]\nhost = \"data\"\nguest = \"/data\"\n",
    ))
    .unwrap();
    let allowance =
        wasmplug::manifest::Allowance::none().dirs_under(dir.path(), DirAccess::ReadOnly);
    let policy = manifest
        .apply(Policy::default(), &allowance, dir.path())
        .unwrap();
    std::fs::rename(&data, dir.path().join("moved")).unwrap();
    std::os::unix::fs::symlink("/", &data).unwrap();
    let answer = attack(&runtime(), policy, "list:/data").unwrap();
    assert_eq!(answer, "ok:mine.txt", "the grant followed the path");
}

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Before the fix a 15 s WASI sleep under a 300 ms deadline returned
/// `slept` after 15 s: epoch interruption never reaches a guest blocked in
/// a host call. Now the blocking call itself is bounded.
#[test]
fn a_wasi_sleep_cannot_outlive_the_call_deadline() {
    let rt = runtime();
    let policy = Policy::default().deadline(Duration::from_millis(300));
    let err = attack(&rt, policy, "sleep:15000").unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains("wasi:io/poll"), "{err}");
    // A short sleep inside the deadline still works.
    let policy = Policy::default().deadline(Duration::from_secs(5));
    assert_eq!(attack(&rt, policy, "sleep:10").unwrap(), "slept");
}

/// An `init` that sleeps a minute in WASI is stopped by its deadline: the
/// load is refused as an `init` failure, instead of holding the loader
/// (and, through the watcher, every other plugin's swap) for a minute.
#[test]
fn an_init_sleeping_in_a_host_call_is_stopped_by_its_deadline() {
    let policy = Policy::default().deadline(Duration::from_millis(300));
    let err = runtime()
        .load_with_policy(guest("hostile-init-sleep"), policy)
        .unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err:?}");
    assert!(err.to_string().contains("deadline"), "{err}");
}

/// Through a registry, a call blocked in a host call past its deadline is a
/// trap like any other: counted in health, the instance replaced, and the
/// next call served.
#[test]
fn a_call_blocked_in_a_host_call_is_a_counted_trap_and_the_version_recovers() {
    let rt = Runtime::<GreeterPlugin>::builder()
        .policy(Policy::default().deadline(Duration::from_millis(200)))
        .build()
        .unwrap();
    let registry = Registry::new();
    registry
        .activate(rt.load(guest("hostile")).unwrap())
        .unwrap();
    let handle = registry.get("hostile").unwrap();
    let err = handle.call(|i| i.welcome("sleep:60000")).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(handle.health().unwrap().traps, 1);
    assert_eq!(
        handle.call(|i| i.welcome("again")).unwrap(),
        "Welcome, again!"
    );
}

/// A connect grant was a licence for DNS (any name: a channel out through
/// the resolver) and UDP to the granted address. Each is its own grant now.
#[test]
fn a_connect_grant_opens_no_name_lookup_and_no_udp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp_peer.local_addr().unwrap();
    let rt = runtime();

    let connect_only = Policy::default()
        .allow_connect(addr)
        .allow_connect(udp_addr);
    assert_eq!(
        attack(&rt, connect_only.clone(), &format!("connect:{addr}")).unwrap(),
        "connected"
    );
    let lookup = attack(&rt, connect_only.clone(), "lookup:localhost").unwrap();
    assert!(
        lookup.starts_with("error:"),
        "DNS without a grant: {lookup}"
    );
    let sent = attack(&rt, connect_only.clone(), &format!("udp:{udp_addr}")).unwrap();
    assert!(sent.starts_with("error:"), "UDP without a grant: {sent}");
    let listen = attack(&rt, connect_only, "listen:0.0.0.0:0").unwrap();
    assert!(
        listen.starts_with("error:"),
        "listened without a grant: {listen}"
    );

    // Granted one by one, each works, and only as granted.
    let lookup = attack(
        &rt,
        Policy::default().allow_name_lookup(),
        "lookup:localhost",
    )
    .unwrap();
    assert!(lookup.starts_with("resolved:"), "{lookup}");
    let udp = Policy::default().allow_udp(udp_addr);
    assert_eq!(
        attack(&rt, udp.clone(), &format!("udp:{udp_addr}")).unwrap(),
        "sent"
    );
    let mut datagram = [0u8; 32];
    udp_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (n, _) = udp_peer.recv_from(&mut datagram).unwrap();
    assert_eq!(&datagram[..n], b"exfiltrated");
    let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let answer = attack(&rt, udp, &format!("udp:{elsewhere}")).unwrap();
    assert!(
        answer.starts_with("error:"),
        "UDP to an unlisted peer: {answer}"
    );

    let listen = Policy::default().allow_listen("127.0.0.1:0".parse().unwrap());
    let answer = attack(&rt, listen.clone(), "listen:127.0.0.1:0").unwrap();
    assert!(answer.starts_with("listening:127.0.0.1:"), "{answer}");
    let answer = attack(&rt, listen, "listen:0.0.0.0:0").unwrap();
    assert!(answer.starts_with("error:"), "all interfaces: {answer}");
}

/// The review's pinned-version bug: with `hello` pinned, replacing the
/// pinned version's own file took the "added beside" path, which retired
/// the pinned version while `current` still pointed at it; it kept serving
/// even after its file was deleted. Now the file's new version takes over
/// (the pin goes with the version it named) and a deleted file is gone.
#[test]
fn a_pinned_version_replaced_by_its_own_file_does_not_keep_serving() {
    let dir = TempDir::new("pin");
    let file = dir.path().join("hello.wasm");
    let rt = runtime();
    let registry = Registry::new();
    std::fs::copy(guest("hello-v1"), &file).unwrap();
    registry.activate(rt.load(&file).unwrap()).unwrap();
    registry
        .pin("hello", &semver::Version::new(1, 0, 0))
        .unwrap();

    std::fs::copy(guest("hello-v2"), &file).unwrap();
    registry.activate(rt.load(&file).unwrap()).unwrap();
    let listing = registry.list();
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert!(
        listing[0].current,
        "the only version is not current: {listing:?}"
    );
    assert_eq!(listing[0].identity.version, semver::Version::new(2, 0, 0));
    let hello = registry.get("hello").unwrap();
    assert_eq!(hello.call(|i| i.welcome("A")).unwrap(), "Welcome back, A!");

    registry.remove_source(&wasmplug::Source::File(file.clone()));
    let err = hello.call(|i| i.welcome("A")).unwrap_err();
    assert!(matches!(err, Error::NotLoaded { .. }), "{err:?}");
}

/// `evil.wasm` claiming `hello@9.0.0` became current and received hello's
/// handoff state. Through a guard (what the watcher uses) a name belongs to
/// the source that first claimed it.
#[test]
fn a_file_claiming_another_plugins_name_is_refused_and_gets_no_state() {
    let dir = TempDir::new("claim");
    let (hello, evil) = (dir.path().join("hello.wasm"), dir.path().join("evil.wasm"));
    std::fs::copy(guest("hello-v1"), &hello).unwrap();
    std::fs::copy(guest("hello-v2"), &evil).unwrap();
    let rt = runtime();
    let registry = Registry::new();
    let events = registry.subscribe();
    let guard = Guard::default();
    registry
        .activate_guarded(rt.load(&hello).unwrap(), &guard)
        .unwrap();
    let handle = registry.get("hello").unwrap();
    assert_eq!(handle.call(|i| i.count()).unwrap(), 1);

    let err = registry
        .activate_guarded(rt.load(&evil).unwrap(), &guard)
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    assert!(
        message.contains("hello.wasm") && message.contains("evil.wasm"),
        "{message}"
    );
    assert_eq!(
        handle.plugin().unwrap().source(),
        &wasmplug::Source::File(hello.clone())
    );
    assert_eq!(
        handle.call(|i| i.count()).unwrap(),
        2,
        "hello kept its state"
    );
    assert!(
        !std::iter::from_fn(|| events.try_recv().ok()).any(|e| matches!(e, Event::Swapped { .. })),
        "no swap happened"
    );

    // The owner's own next version is welcome, with its state.
    std::fs::copy(guest("hello-v2"), &hello).unwrap();
    registry
        .activate_guarded(rt.load(&hello).unwrap(), &guard)
        .unwrap();
    wait_for_event(&events, Duration::from_secs(1), "swap", |e| {
        matches!(
            e,
            Event::Swapped {
                state_carried: true,
                ..
            }
        )
    });
    // Explicitly shared names let the other file (hello@2.0.0 too) in.
    let shared = Guard {
        shared_names: true,
        ..Guard::default()
    };
    registry
        .activate_guarded(rt.load(&evil).unwrap(), &shared)
        .unwrap();
    assert_eq!(
        handle.plugin().unwrap().source(),
        &wasmplug::Source::File(evil)
    );
}

/// A version that exports only part of what the serving one does (the
/// review's truncated hello-v2 was one) is refused through a guard, on the
/// dynamic world too.
#[test]
fn a_version_with_fewer_exports_is_refused_by_the_guard() {
    let rt = Runtime::<Dynamic>::new().unwrap();
    let both = r#"(component
        (core module $m (func (export "f") (result i32) i32.const 1)
                        (func (export "g") (result i32) i32.const 2))
        (core instance $i (instantiate $m))
        (func (export "f") (result u32) (canon lift (core func $i "f")))
        (func (export "g") (result u32) (canon lift (core func $i "g"))))"#;
    let only_f = r#"(component
        (core module $m (func (export "f") (result i32) i32.const 1))
        (core instance $i (instantiate $m))
        (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;
    let registry = Registry::new();
    let guard = Guard::default();
    registry
        .activate_guarded(rt.load_bytes("calc", both.as_bytes()).unwrap(), &guard)
        .unwrap();
    let err = registry
        .activate_guarded(rt.load_bytes("calc", only_f.as_bytes()).unwrap(), &guard)
        .unwrap_err();
    assert!(err.to_string().contains("missing: g"), "{err}");
    let handle = registry.get("calc").unwrap();
    assert_eq!(
        handle.plugin().unwrap().exports().len(),
        2,
        "the old one serves"
    );
}

/// A load is one instantiation and one `init`, and that instance serves.
#[test]
fn a_load_runs_init_once_and_its_instance_is_the_first_to_serve() {
    let rt = runtime();
    let plugin = rt.load(guest("hello-v1")).unwrap();
    let loaded = plugin.memory_bytes();
    assert!(loaded > 0, "the loaded plugin holds its first instance");
    let mut first = plugin.instantiate().unwrap();
    assert_eq!(
        plugin.memory_bytes(),
        loaded,
        "the first instance was not made anew"
    );
    assert_eq!(first.count().unwrap(), 1, "and it is fresh");
    let mut second = plugin.instantiate().unwrap();
    assert_eq!(second.count().unwrap(), 1);
    assert_eq!(plugin.live_instances(), 2);
}

/// A guest whose `cabi_realloc` never returns: the host calls it to place a
/// string argument, inside the call, so the call's deadline stops it like
/// any other guest code.
#[test]
fn a_guest_spinning_in_cabi_realloc_is_stopped_by_the_deadline() {
    let wat = r#"(component
        (core module $m
            (memory (export "mem") 1)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32)
                (loop $spin (br $spin))
                unreachable)
            (func (export "f") (param i32 i32) (result i32) i32.const 7))
        (core instance $i (instantiate $m))
        (func (export "f") (param "s" string) (result u32)
            (canon lift (core func $i "f") (memory (core memory $i "mem"))
                (realloc (core func $i "realloc")))))"#;
    let rt = Runtime::<Dynamic>::builder()
        .policy(Policy::default().deadline(Duration::from_millis(200)))
        .build()
        .unwrap();
    let mut instance = rt
        .load_bytes("spin-realloc", wat.as_bytes())
        .unwrap()
        .instantiate()
        .unwrap();
    let err = instance.call_wave(r#"f("hello")"#).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(instance.is_poisoned());
}

/// A component type nested thousands deep (`list<list<…<u8>…>>`) must be
/// refused or served; it must never overflow the host's stack while it is
/// validated, type-checked, printed or called.
#[test]
fn a_deeply_nested_type_never_overflows_the_host_stack() {
    let depth = 5000;
    let mut wat = String::from("(component\n (type $t0 (list u8))\n");
    for n in 1..depth {
        wat.push_str(&format!(" (type $t{n} (list $t{}))\n", n - 1));
    }
    wat.push_str(&format!(
        r#" (core module $m (memory (export "mem") 1)
            (func (export "f") (param i32 i32) (result i32) i32.const 0)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))
          (core instance $i (instantiate $m))
          (func (export "f") (param "x" $t{}) (result u32)
            (canon lift (core func $i "f") (memory (core memory $i "mem"))
              (realloc (core func $i "realloc")))))"#,
        depth - 1
    ));
    let rt = Runtime::<Dynamic>::new().unwrap();
    match rt.load_bytes("deep", wat.as_bytes()) {
        Err(err) => {
            assert!(matches!(err, Error::Load { .. }), "{err:?}");
            // Refused for its depth, not for a typo in this test.
            let why = format!("{err:#}");
            assert!(
                why.contains("nest") || why.contains("deep") || why.contains("depth"),
                "{why}"
            );
        }
        Ok(plugin) => {
            let _ = plugin.export_signatures();
            let mut instance = plugin.instantiate().unwrap();
            let _ = instance.call_wave("f([])");
        }
    }
}
