//! Plugins from an OCI registry: a real registry (`docker-registry`,
//! distribution 2.8) on a loopback port, real components pushed and pulled
//! by digest, real signatures, and a follower that must keep serving
//! through every way a registry or an artefact can go wrong: unsigned,
//! signed by a stranger, a genuine signature copied onto other bytes, a
//! blob altered in the registry's storage, the registry down, a server that
//! answers garbage.

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use wasmplug::oci::{
    Client, ClientOptions, Credentials, FollowOptions, FollowStatus, Follower, LayerCache,
    SigningKey, Trust,
};
use wasmplug::reference::GreeterPlugin;
use wasmplug::{Error, Event, Registry, Runtime};
use wasmplug_tests::oci_registry::{key_pair, OciRegistry};
use wasmplug_tests::{guest_bytes, wait_for_event, welcome, with_custom_section, TempDir};

const WAIT: Duration = Duration::from_secs(60);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    wasmplug_tests::current_thread().block_on(f)
}

/// A client with no layer cache (unless asked), so every pull reads the
/// registry.
fn client(cache: Option<&TempDir>) -> Client {
    Client::new(ClientOptions {
        cache: cache.map(|d| LayerCache::new(d.path())),
        ..ClientOptions::default()
    })
}

fn trust(key: &SigningKey) -> Trust {
    Trust::Keys(vec![key.verifying_key()])
}

fn push(reference: &str, guest: &str, key: Option<&SigningKey>) -> String {
    block_on(client(None).push(reference, guest_bytes(guest), key))
        .unwrap_or_else(|e| panic!("pushing {guest} to {reference}: {e:#}"))
        .digest
}

/// The refusal of pulling `reference` with `trust`.
fn refusal(reference: &str, trust: &Trust) -> Error {
    match block_on(client(None).pull(reference, trust)) {
        Ok(pulled) => panic!("{reference} ({}) was accepted", pulled.digest),
        Err(e) => e,
    }
}

fn is_refused(e: &Error) -> bool {
    matches!(e, Error::Oci { refused: true, .. })
}

#[test]
fn a_pushed_component_pulls_back_by_tag_and_by_digest_and_then_from_the_cache() {
    let registry = OciRegistry::start();
    let key = SigningKey::generate().unwrap();
    let reference = registry.reference("plugins/hello", "stable");
    let pushed =
        block_on(client(None).push(&reference, guest_bytes("hello-v1"), Some(&key))).unwrap();
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    assert_eq!(
        pushed.signature_tag.as_deref(),
        Some(format!("{}.sig", pushed.digest.replace(':', "-")).as_str())
    );

    let cache = TempDir::new("oci-cache");
    let pulled = block_on(client(Some(&cache)).pull(&reference, &trust(&key))).unwrap();
    assert_eq!(pulled.bytes, guest_bytes("hello-v1"), "the same bytes");
    assert_eq!(pulled.digest, pushed.digest);
    assert_eq!(pulled.signed_by, Some(key.verifying_key().fingerprint()));
    assert!(!pulled.from_cache);

    let by_digest = format!("{}/plugins/hello@{}", registry.addr(), pushed.digest);
    let again = block_on(client(Some(&cache)).pull(&by_digest, &trust(&key))).unwrap();
    assert!(again.from_cache, "the layer is kept by digest");
    assert_eq!(again.bytes, pulled.bytes);

    // The layer cache is checked on read: a rotted file is pulled again.
    for entry in std::fs::read_dir(cache.path().join("sha256")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"rotted").unwrap();
    }
    let third = block_on(client(Some(&cache)).pull(&by_digest, &trust(&key))).unwrap();
    assert!(!third.from_cache);
    assert_eq!(third.bytes, pulled.bytes);

    // What is pushed is a component, or nothing is pushed.
    let err =
        block_on(client(None).push(&reference, b"\0asm not really".to_vec(), None)).unwrap_err();
    assert!(is_refused(&err), "{err:?}");
    assert!(
        err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );
    assert_eq!(
        block_on(client(None).resolve(&reference)).unwrap(),
        pushed.digest,
        "the tag did not move"
    );
}

#[test]
fn unsigned_wrongly_signed_and_tampered_artefacts_are_refused_naming_reference_and_digest() {
    let registry = OciRegistry::start();
    let key = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();

    // Unsigned: refused for now (a signature may follow the push, as with
    // `cosign sign`), so it is tried again rather than remembered.
    let unsigned = registry.reference("plugins/hello", "unsigned");
    let digest = push(&unsigned, "hello-v1", None);
    let err = refusal(&unsigned, &trust(&key));
    let text = err.to_string();
    assert!(text.contains("not signed"), "{text}");
    assert!(text.contains(&unsigned) && text.contains(&digest), "{text}");
    assert!(!is_refused(&err), "not signed yet is worth trying again");
    // ...and once signed, accepted.
    block_on(client(None).sign(&unsigned, &key)).unwrap();
    assert!(block_on(client(None).pull(&unsigned, &trust(&key))).is_ok());

    // Signed by a key nobody trusts.
    let foreign = registry.reference("plugins/hello", "foreign");
    push(&foreign, "hello-v2", Some(&stranger));
    let err = refusal(&foreign, &trust(&key));
    assert!(is_refused(&err), "{err:?}");
    assert!(err.to_string().contains("none of the 1 trusted"), "{err}");
    assert_eq!(err.kind(), "oci_refused");

    // A genuine signature copied onto other bytes: the signature names the
    // digest it signed.
    let genuine = registry.reference("plugins/hello", "genuine");
    let signed = push(&genuine, "hello-v1", Some(&key));
    let forged = registry.reference("plugins/hello", "forged");
    let forged_digest = block_on(client(None).push(
        &forged,
        with_custom_section(&guest_bytes("hello-v1"), "evil", b"1"),
        None,
    ))
    .unwrap()
    .digest;
    let signature = registry.manifest(
        "plugins/hello",
        &format!("{}.sig", signed.replace(':', "-")),
    );
    registry.put_manifest(
        "plugins/hello",
        &format!("{}.sig", forged_digest.replace(':', "-")),
        signature,
    );
    let err = refusal(&forged, &trust(&key));
    assert!(is_refused(&err), "{err:?}");
    assert!(err.to_string().contains("for another artefact"), "{err}");

    // The component's blob altered in the registry's own storage after it
    // was signed: its digest no longer matches.
    let victim = registry.reference("plugins/victim", "stable");
    let digest = push(&victim, "hello-v1", Some(&key));
    let layer = registry.layer_digest("plugins/victim", &digest);
    let blob = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let err = refusal(&victim, &trust(&key));
    assert!(is_refused(&err), "{err:?}");
    assert!(err.to_string().contains("tampered"), "{err}");

    // Nobody is trusted: nothing is accepted, however signed.
    let err = refusal(&genuine, &Trust::Keys(vec![]));
    assert!(
        err.to_string().contains("no public key is trusted"),
        "{err}"
    );
    // Unsigned is accepted only when asked for.
    assert!(block_on(client(None).pull(&foreign, &Trust::Unsigned)).is_ok());
}

#[test]
fn artefacts_that_are_not_one_wasm_component_are_refused() {
    let registry = OciRegistry::start();
    // An ordinary container-image-like manifest under a tag.
    let reference = registry.reference("images/app", "latest");
    registry.push_raw(
        "images/app",
        "latest",
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar", b"tar".as_slice())],
    );
    let err = refusal(&reference, &Trust::Unsigned);
    assert!(is_refused(&err), "{err:?}");
    assert!(err.to_string().contains("not a Wasm artefact"), "{err}");

    registry.push_raw(
        "images/app",
        "two",
        wasmplug::oci::WASM_CONFIG_MEDIA_TYPE,
        &[
            ("application/wasm", b"a".as_slice()),
            ("application/wasm", b"b".as_slice()),
        ],
    );
    let err = refusal(&registry.reference("images/app", "two"), &Trust::Unsigned);
    assert!(err.to_string().contains("exactly one layer"), "{err}");

    // A layer larger than the client accepts is refused from the manifest,
    // before a byte of it is read.
    let big = registry.reference("plugins/hello", "big");
    push(&big, "hello-v1", None);
    let small = Client::new(ClientOptions {
        cache: None,
        max_size: 1000,
        ..ClientOptions::default()
    });
    let err = block_on(small.pull(&big, &Trust::Unsigned)).unwrap_err();
    assert!(
        err.to_string().contains("more than the 1000 accepted"),
        "{err}"
    );

    // No such tag, no such repository, a reference that does not parse.
    let err = refusal(
        &registry.reference("plugins/nobody", "stable"),
        &Trust::Unsigned,
    );
    assert!(err.to_string().contains("no such tag"), "{err}");
    let err = refusal("not a reference!", &Trust::Unsigned);
    assert!(err.to_string().contains("not an OCI reference"), "{err}");
}

/// Serve hello through a follower of `reference`.
struct Followed {
    registry: Registry<GreeterPlugin>,
    events: mpsc::Receiver<Event>,
    follower: Follower,
}

fn follow(reference: &str, trust: Trust) -> Followed {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new();
    let events = registry.subscribe();
    let mut options = FollowOptions::new(trust).poll(Duration::from_millis(200));
    options.client.cache = None;
    options.max_backoff = Duration::from_secs(1);
    let follower = Follower::start(reference, rt, registry.clone(), options).unwrap();
    Followed {
        registry,
        events,
        follower,
    }
}

/// Wait for the follower's status to satisfy `done` (it records a poll's
/// outcome just after the swap or refusal it reports).
fn wait_status(follower: &Follower, done: impl Fn(&FollowStatus) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(&follower.status()) {
        assert!(Instant::now() < deadline, "{:?}", follower.status());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_serving(follower: &Follower, digest: &str) {
    wait_status(follower, |s| s.serving.as_deref() == Some(digest));
}

fn wait_pull_failed(events: &mpsc::Receiver<Event>, refused: bool) -> Event {
    wait_for_event(events, WAIT, "pull failed", |e| match e {
        Event::PullFailed { error, .. } => is_refused(error) == refused,
        _ => false,
    })
}

#[test]
fn a_follower_swaps_when_the_tag_moves_and_serves_on_through_refusals_and_outages() {
    let mut oci = OciRegistry::start();
    let key = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let reference = oci.reference("plugins/hello", "stable");
    let v1 = push(&reference, "hello-v1", Some(&key));
    let f = follow(&reference, trust(&key));
    assert_eq!(welcome(&f.registry), "Welcome, Gopher!", "loaded at start");
    assert_eq!(f.follower.status().serving.as_deref(), Some(v1.as_str()));

    // Serve calls all along; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (registry, stop, calls) = (f.registry.clone(), stop.clone(), calls.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = registry
                    .get("hello")
                    .and_then(|h| h.call(|i| i.welcome("Gopher")));
                if let Err(e) = answer {
                    return Err(format!("a call failed: {e}"));
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    let v2 = push(&reference, "hello-v2", Some(&key));
    wait_for_event(
        &f.events,
        WAIT,
        "swap to v2",
        |e| matches!(e, Event::Swapped { to, .. } if to.version.major == 2),
    );
    assert_eq!(welcome(&f.registry), "Welcome back, Gopher!");
    wait_serving(&f.follower, &v2);

    // Signed by a stranger: refused once, v2 serves on, not pulled again.
    let v3 = push(&reference, "hello-v3", Some(&stranger));
    let Event::PullFailed {
        digest, retry_in, ..
    } = wait_pull_failed(&f.events, true)
    else {
        unreachable!()
    };
    assert_eq!(digest.as_deref(), Some(v3.as_str()));
    assert_eq!(retry_in, None, "a refused artefact is not retried");
    std::thread::sleep(Duration::from_millis(800));
    let again: Vec<Event> = f.events.try_iter().collect();
    assert!(
        !again
            .iter()
            .any(|e| matches!(e, Event::PullFailed { .. } | Event::Loaded { .. })),
        "the refused digest is not looked at again: {again:?}"
    );
    assert_eq!(welcome(&f.registry), "Welcome back, Gopher!");

    // The registry goes away: failures are reported with a growing wait,
    // and v2 serves on.
    oci.stop();
    let first = wait_pull_failed(&f.events, false);
    let second = wait_pull_failed(&f.events, false);
    let wait = |e: &Event| match e {
        Event::PullFailed { retry_in, .. } => retry_in.expect("a transient failure is retried"),
        _ => unreachable!(),
    };
    assert!(
        wait(&second) > wait(&first),
        "backing off: {first} then {second}"
    );
    assert_eq!(welcome(&f.registry), "Welcome back, Gopher!");

    // Back, with the tag moved back to v1: the fleet returns.
    oci.restart();
    oci.retag("plugins/hello", &v1, "stable");
    wait_for_event(
        &f.events,
        WAIT,
        "swap back to v1",
        |e| matches!(e, Event::Swapped { to, .. } if to.version.major == 1),
    );
    assert_eq!(welcome(&f.registry), "Welcome, Gopher!");
    wait_status(&f.follower, |s| s.failures == 0);

    stop.store(true, Ordering::Relaxed);
    caller.join().unwrap().unwrap();
    assert!(
        calls.load(Ordering::Relaxed) > 100,
        "calls were made throughout"
    );
}

#[test]
fn a_server_that_answers_garbage_never_unloads_what_serves() {
    // Loaded first from a real registry, then the follower's registry
    // address is taken over by a server that answers garbage.
    let mut oci = OciRegistry::start();
    let reference = oci.reference("plugins/hello", "stable");
    push(&reference, "hello-v1", None);
    let f = follow(&reference, Trust::Unsigned);
    assert_eq!(welcome(&f.registry), "Welcome, Gopher!");

    let listener = oci.take_over();
    let served = Arc::new(AtomicUsize::new(0));
    {
        let served = served.clone();
        std::thread::spawn(move || {
            let answers: [&[u8]; 4] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nDocker-Content-Digest: sha256:zz\r\n\r\nnot json!",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDocker-Content-Digest: sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n{\"a\":",
                b"\x00\x01\x02 garbage, not HTTP at all\r\n\r\n",
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            ];
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answers[i % answers.len()]);
                served.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let mut failures = 0;
    while failures < 6 {
        wait_pull_failed(&f.events, false);
        failures += 1;
        assert_eq!(welcome(&f.registry), "Welcome, Gopher!", "still serving");
    }
    assert!(served.load(Ordering::Relaxed) >= 6);
    assert!(
        f.registry.list().len() == 1,
        "nothing loaded or unloaded: {:?}",
        f.registry.list()
    );
    eprintln!(
        "{failures} garbage answers in {:?}, still serving",
        started.elapsed()
    );
}

#[test]
fn a_version_that_widens_its_reach_is_held_when_it_comes_from_the_registry_too() {
    let oci = OciRegistry::start();
    let dir = TempDir::new("oci-keys");
    let (_, public, key) = key_pair(dir.path(), "release");
    let reference = oci.reference("plugins/hello", "stable");
    push(&reference, "hello-v1", Some(&key));
    let f = follow(&reference, Trust::keys_from_files(&[public]).unwrap());
    let sockets = push(&reference, "hello-v2-sockets", Some(&key));
    let Event::Held { widening, .. } =
        wait_for_event(&f.events, WAIT, "held", |e| matches!(e, Event::Held { .. }))
    else {
        unreachable!()
    };
    assert!(
        widening
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/")),
        "{widening}"
    );
    assert_eq!(welcome(&f.registry), "Welcome, Gopher!", "v1 serves on");
    // Held, and not pulled again: the follower is done with this digest.
    wait_serving(&f.follower, &sockets);
    f.registry.approve("hello").unwrap();
    assert_eq!(welcome(&f.registry), "Welcome back, Gopher!");
}

#[test]
fn an_artefact_claiming_a_name_another_source_serves_is_refused() {
    // `hello` is served from a file; a tag whose component also says it is
    // `hello` must not take the name over.
    let oci = OciRegistry::start();
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new();
    let events = registry.subscribe();
    registry
        .activate_guarded(
            rt.load(wasmplug_tests::guest("hello-v1")).unwrap(),
            &wasmplug::registry::Guard::default(),
        )
        .unwrap();
    let reference = oci.reference("plugins/impostor", "stable");
    let digest = push(&reference, "hello-v2", None);
    let mut options = FollowOptions::new(Trust::Unsigned).poll(Duration::from_millis(200));
    options.client.cache = None;
    let follower = Follower::start(&reference, rt, registry.clone(), options).unwrap();
    let Event::PullFailed {
        digest: refused,
        error,
        retry_in,
        ..
    } = wait_pull_failed(&events, false)
    else {
        unreachable!()
    };
    assert_eq!(refused.as_deref(), Some(digest.as_str()));
    assert_eq!(retry_in, None, "refused for what it is: not retried");
    assert!(error.to_string().contains("hello"), "{error}");
    assert_eq!(
        welcome(&registry),
        "Welcome, Gopher!",
        "the file's hello serves on"
    );
    wait_status(&follower, |s| s.refused.as_deref() == Some(digest.as_str()));
}

#[test]
fn dropping_a_follower_never_waits_on_a_registry_that_stopped_answering() {
    // A server that accepts on the registry's port and never answers: the
    // follower's request would wait out the client's 30 s read timeout.
    let mut oci = OciRegistry::start();
    let reference = oci.reference("plugins/hello", "stable");
    push(&reference, "hello-v1", None);
    let f = follow(&reference, Trust::Unsigned);
    let listener = oci.take_over();
    let (accepted, connected) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = accepted.send(());
        }
    });
    connected
        .recv_timeout(WAIT)
        .expect("the follower's next poll reaches the silent server");
    let dropping = Instant::now();
    drop(f.follower);
    let took = dropping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "dropping the follower waited {took:?} on a registry that never answers"
    );
    assert_eq!(
        welcome(&f.registry),
        "Welcome, Gopher!",
        "what it loaded stays"
    );
}

/// A registry in the hands of an attacker, on a loopback port: it answers
/// every manifest with a body that never ends (or says it is a terabyte),
/// and counts what it managed to send. With [`Asks::Token`], it asks for
/// tokens from a token service of its own: for the repository
/// `plugins/greedy`, one whose answer never ends; otherwise a token,
/// `t0k3n`. With [`Asks::Password`] it asks for a password. Pushes to it
/// find no blob there, are told to upload each to the address it was
/// started with ([`EndlessManifests::start_with_uploads_to`]), where the
/// upload succeeds, and have every manifest refused with a `400` whose
/// body never ends. It notes each request's path and `Authorization`
/// header.
struct EndlessManifests {
    addr: std::net::SocketAddr,
    sent: Arc<std::sync::atomic::AtomicU64>,
    seen: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// How many of the next uploads sent to it to refuse with 401, as a
    /// registry does when the token expired since the upload began.
    refusals: Arc<AtomicUsize>,
}

/// What [`EndlessManifests`] asks of a client at `/v2/`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asks {
    Nothing,
    Token,
    Password,
}

/// The secret in the pre-signed upload URLs [`EndlessManifests`] hands out.
const SIGNATURE: &str = "s3cr3tsig";

/// A digest whose manifest never ends, and one that declares a terabyte.
const ENDLESS: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DECLARED: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

impl EndlessManifests {
    fn start(asks: Asks) -> EndlessManifests {
        EndlessManifests::start_with_uploads_to(asks, None)
    }

    /// Started so that blob uploads are sent to `uploads` (`None`: to
    /// itself).
    fn start_with_uploads_to(
        asks: Asks,
        uploads: Option<std::net::SocketAddr>,
    ) -> EndlessManifests {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = EndlessManifests {
            addr,
            sent: Arc::default(),
            seen: Arc::default(),
            refusals: Arc::default(),
        };
        let (sent, seen) = (server.sent.clone(), server.seen.clone());
        let refusals = server.refusals.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (sent, seen) = (sent.clone(), seen.clone());
                let refusals = refusals.clone();
                std::thread::spawn(move || {
                    let uploads = uploads.unwrap_or(addr);
                    let noted = (sent.as_ref(), seen.as_ref(), refusals.as_ref());
                    EndlessManifests::answer(stream, addr, uploads, asks, noted)
                });
            }
        });
        server
    }

    fn answer(
        mut stream: std::net::TcpStream,
        addr: std::net::SocketAddr,
        uploads: std::net::SocketAddr,
        asks: Asks,
        (sent, seen, refusals): (
            &std::sync::atomic::AtomicU64,
            &std::sync::Mutex<Vec<(String, String)>>,
            &AtomicUsize,
        ),
    ) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let authorization = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            })
            .map(|(_, value)| value.trim().to_string())
            .unwrap_or_default();
        seen.lock()
            .unwrap()
            .push((path.to_string(), authorization.clone()));
        // A request's body is read before the answer, so that closing the
        // connection does not reset it under a client still sending.
        let length = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, value)| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let _ = std::io::copy(
            &mut (&stream).take(length.min(64 << 20)),
            &mut std::io::sink(),
        );
        let manifest = path.rsplit('/').next().unwrap_or("");
        let endless = |stream: &mut std::net::TcpStream, status: &str| {
            // No length: the body ends when the connection does, after
            // 256 MiB of spaces, unless the client hangs up first. A
            // refusal says why first.
            let why = if status.starts_with("200") {
                ""
            } else {
                r#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#
            };
            let answered = stream.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{why}"
                )
                .as_bytes(),
            );
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..256 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            answered
        };
        let _ = if path == "/v2/" && asks == Asks::Password {
            stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"endless\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        } else if path == "/v2/" && asks == Asks::Token {
            stream.write_all(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"endless\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
        } else if path == "/v2/" {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        } else if path.starts_with("/token") && path.contains("greedy") {
            endless(&mut stream, "200 OK")
        } else if path.starts_with("/token") {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"token\":\"t0k3n\"}",
            )
        } else if method == "HEAD" && path.contains("/blobs/") {
            stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        } else if method == "POST" && path.contains("/blobs/uploads/") {
            stream.write_all(
                format!(
                    "HTTP/1.1 202 Accepted\r\nLocation: http://{uploads}/upload/1?X-Amz-Signature={SIGNATURE}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
        } else if method == "PUT"
            && path.starts_with("/upload/")
            && refusals
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            stream.write_all(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"endless\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
        } else if method == "PUT" && path.starts_with("/upload/") {
            stream.write_all(
                b"HTTP/1.1 201 Created\r\nLocation: /v2/uploaded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        } else if method == "PUT" && path.contains("/manifests/") {
            endless(&mut stream, "400 Bad Request")
        } else if method == "HEAD" {
            // A tag points to ENDLESS or DECLARED; `headless` sends no
            // digest, so the client must GET the manifest to hash it.
            let digest = match manifest {
                "declared" => format!("Docker-Content-Digest: {DECLARED}\r\n"),
                "headless" => String::new(),
                _ => format!("Docker-Content-Digest: {ENDLESS}\r\n"),
            };
            stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\n{digest}Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
        } else if manifest == DECLARED {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\nConnection: close\r\n\r\n{",
            )
        } else {
            endless(&mut stream, "200 OK")
        };
    }

    fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.addr)
    }

    /// What a push of the Rust hello to it, with the login `ops`/`s3cret`,
    /// fails with (it refuses every manifest).
    fn refused_push(&self) -> String {
        let pushed = block_on(client_with_login(&self.addr.to_string(), "s3cret").push(
            &self.reference("plugins/hello", "stable"),
            guest_bytes("hello-v1"),
            None,
        ));
        format!(
            "{:#}",
            pushed.expect_err("the registry refuses every manifest")
        )
    }

    /// The `Authorization` headers sent, by request path.
    fn authorizations(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// A client with the login `ops`/`password` for `registry` (sent only
/// when asked).
fn client_with_login(registry: &str, password: &str) -> Client {
    Client::new(ClientOptions {
        cache: None,
        credentials: Credentials::new().with(registry, "ops", password),
        ..ClientOptions::default()
    })
}

#[test]
fn a_registry_answering_an_endless_manifest_is_refused_after_4_mib_read() {
    let registry = EndlessManifests::start(Asks::Nothing);
    let limit = wasmplug::oci::MAX_MANIFEST_SIZE;
    let says_limit = |e: &Error| {
        e.to_string()
            .contains(&format!("more than the {limit} bytes"))
    };

    // Pulling the tag: the HEAD names ENDLESS, whose body never ends.
    let err = match block_on(
        client_with_login(&registry.addr.to_string(), "s3cret").pull(
            &registry.reference("plugins/hello", "stable"),
            &Trust::Unsigned,
        ),
    ) {
        Ok(_) => panic!("an endless manifest was accepted"),
        Err(e) => e,
    };
    assert!(says_limit(&err) && is_refused(&err), "{err}");
    assert!(err.to_string().contains(ENDLESS), "names the digest: {err}");
    let sent = registry.sent.load(Ordering::Relaxed);
    // What was read is at most the limit; the rest of what the server got
    // out sat in loopback's socket buffers when the client hung up.
    assert!(
        sent < 64 << 20,
        "the client read on: the server sent {} MiB",
        sent >> 20
    );
    // The registry asked for no password, so none was sent.
    let sent_auth: Vec<_> = registry
        .authorizations()
        .into_iter()
        .filter(|(_, a)| !a.is_empty())
        .collect();
    assert!(
        sent_auth.is_empty(),
        "credentials sent unasked: {sent_auth:?}"
    );

    // A terabyte declared is refused before a byte of it is read.
    let err = refusal(
        &registry.reference("plugins/hello", "declared"),
        &Trust::Unsigned,
    );
    assert!(
        says_limit(&err) && err.to_string().contains("1099511627776 bytes"),
        "{err}"
    );

    // No digest header: resolving the tag hashes the manifest it GETs,
    // which is bounded the same way.
    let err = block_on(client(None).resolve(&registry.reference("plugins/hello", "headless")))
        .expect_err("an endless manifest resolved");
    assert!(says_limit(&err), "{err}");
    eprintln!(
        "refused; the server got {} MiB out before the client hung up",
        registry.sent.load(Ordering::Relaxed) >> 20
    );
}

#[test]
fn a_token_service_answering_without_end_is_refused_and_a_token_is_used_as_given() {
    let registry = EndlessManifests::start(Asks::Token);
    // The token service's answer never ends: refused after 64 KiB.
    let err = block_on(
        client_with_login(&registry.addr.to_string(), "s3cret")
            .resolve(&registry.reference("plugins/greedy", "stable")),
    )
    .expect_err("an endless token answer was read to its end");
    assert!(
        err.to_string().contains("token service's answer")
            && err.to_string().contains("65536 bytes"),
        "{err}"
    );
    assert!(registry.sent.load(Ordering::Relaxed) < 64 << 20);

    // A token granted is what the manifest requests carry; the password
    // went only to the token service, which the registry named.
    let err = match block_on(
        client_with_login(&registry.addr.to_string(), "s3cret").pull(
            &registry.reference("plugins/hello", "stable"),
            &Trust::Unsigned,
        ),
    ) {
        Ok(_) => panic!("an endless manifest was accepted"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("more than the"), "{err}");
    let seen = registry.authorizations();
    let manifests: Vec<_> = seen
        .iter()
        .filter(|(p, _)| p.contains("/manifests/"))
        .collect();
    assert!(!manifests.is_empty(), "{seen:?}");
    assert!(
        manifests.iter().all(|(_, a)| a == "Bearer t0k3n"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|(_, a)| a.starts_with("Basic"))
            .all(|(p, _)| p.starts_with("/token")),
        "the password went elsewhere: {seen:?}"
    );
}

#[test]
fn a_login_is_sent_to_its_own_registry_and_never_to_another() {
    let private = OciRegistry::start_with_login("ops", "s3cret");
    let reference = private.reference("plugins/hello", "stable");
    let bytes = guest_bytes("hello-v1");
    let with_login = |password: &str| client_with_login(private.addr(), password);

    // The real registry takes its login: push, then pull the same bytes.
    let pushed = block_on(with_login("s3cret").push(&reference, bytes.clone(), None))
        .expect("a push with the registry's login");
    let pulled = block_on(with_login("s3cret").pull(&reference, &Trust::Unsigned))
        .expect("a pull with the registry's login");
    assert_eq!((pulled.digest, pulled.bytes), (pushed.digest, bytes));

    // Without it, or with a wrong one, the registry refuses, and says so.
    for client in [client(None), with_login("wrong")] {
        let err = block_on(client.pull(&reference, &Trust::Unsigned))
            .expect_err("pulled from a registry that wants a login, without it");
        let said = format!("{err:#}");
        assert!(said.contains(&reference), "names the reference: {said}");
        assert!(
            said.contains("401") || said.to_lowercase().contains("unauthorized"),
            "says it wants a login: {said}"
        );
    }

    // Another registry asks for a password too: it is never given this
    // one's, neither on `/v2/` nor with a manifest request.
    let other = EndlessManifests::start(Asks::Password);
    let err = block_on(with_login("s3cret").pull(
        &other.reference("plugins/hello", "stable"),
        &Trust::Unsigned,
    ))
    .expect_err("the other registry serves no component");
    // (Pushes there: `a_push_sends_no_login_with_an_upload_elsewhere_…`.)
    let seen = other.authorizations();
    assert!(!seen.is_empty(), "the other registry was asked: {err}");
    assert!(
        seen.iter().all(|(_, a)| a.is_empty()),
        "the login of {} went to {}: {seen:?}",
        private.addr(),
        other.addr
    );
}

#[test]
fn a_push_sends_no_login_with_an_upload_elsewhere_and_reads_a_refusal_bounded() {
    // Where the registry tells the client to upload blobs: another server.
    let elsewhere = EndlessManifests::start(Asks::Nothing);
    for asks in [Asks::Password, Asks::Token] {
        let registry = EndlessManifests::start_with_uploads_to(asks, Some(elsewhere.addr));
        let before = elsewhere.authorizations().len();
        let said = registry.refused_push();

        // The refusal is reported from the start of its endless body.
        assert!(
            said.contains("400") && said.contains("MANIFEST_INVALID"),
            "says why: {said}"
        );
        let sent = registry.sent.load(Ordering::Relaxed);
        assert!(
            sent < 64 << 20,
            "the client read on: the server sent {} MiB",
            sent >> 20
        );

        // The blobs went where the registry said, with no login and no
        // token: only the registry itself (and its token service) sees them.
        let uploads: Vec<_> = elsewhere.authorizations()[before..]
            .iter()
            .filter(|(p, _)| p.starts_with("/upload/"))
            .cloned()
            .collect();
        assert!(uploads.len() >= 2, "the layer and the config: {uploads:?}");
        assert!(
            uploads.iter().all(|(_, a)| a.is_empty()),
            "a login went with an upload to {}: {uploads:?}",
            elsewhere.addr
        );
        let seen = registry.authorizations();
        let asked: Vec<_> = seen
            .iter()
            .filter(|(p, _)| p.contains("/blobs/uploads/") || p.contains("/manifests/"))
            .collect();
        let expected = match asks {
            Asks::Token => "Bearer t0k3n",
            _ => "Basic b3BzOnMzY3JldA==",
        };
        assert!(
            !asked.is_empty() && asked.iter().all(|(_, a)| a == expected),
            "the registry's own requests carry {expected}: {seen:?}"
        );
        if asks == Asks::Token {
            // A token for pushing: the service was asked for that scope.
            assert!(
                seen.iter().any(|(p, _)| p.starts_with("/token")
                    && (p.contains("pull,push") || p.contains("pull%2Cpush"))),
                "{seen:?}"
            );
        }
    }
}

#[test]
fn a_registry_handing_out_tokens_takes_push_sign_tag_and_pull_with_its_login() {
    let registry = OciRegistry::start_with_token_service("ops", "s3cret");
    let reference = registry.reference("plugins/hello", "stable");
    let bytes = guest_bytes("hello-v1");
    let (first, second) = (
        SigningKey::generate().expect("a key"),
        SigningKey::generate().expect("a key"),
    );
    let with_login = || client_with_login(registry.addr(), "s3cret");

    // A push, signed: blobs, manifest, signature and tag, each under a
    // token of push scope that the registry itself checks.
    let pushed = block_on(with_login().push(&reference, bytes.clone(), Some(&first)))
        .expect("a push with a login, under tokens");
    // A second signature, added to the first; then the tag copied to
    // another: both with a client that has already pulled (holding tokens
    // of pull scope for the repository), so the push scope must be asked
    // for anew.
    let puller = with_login();
    let pulled = block_on(puller.pull(&reference, &trust(&first))).expect("a pull under tokens");
    assert_eq!((&pulled.digest, &pulled.bytes), (&pushed.digest, &bytes));
    assert_eq!(
        block_on(puller.sign(&reference, &second)).expect("signing under tokens"),
        pushed.digest
    );
    assert_eq!(
        block_on(puller.tag(&reference, "promoted")).expect("a tag under tokens"),
        pushed.digest
    );

    // The promoted tag pulls the same bytes, and both signatures hold.
    for key in [&first, &second] {
        let pulled = block_on(with_login().pull(
            &registry.reference("plugins/hello", "promoted"),
            &trust(key),
        ))
        .expect("the promoted tag, signed by both keys");
        assert_eq!((&pulled.digest, &pulled.bytes), (&pushed.digest, &bytes));
    }

    // Without the login, or with a wrong one, the token service grants
    // nothing, and the refusal says so.
    for stranger in [client(None), client_with_login(registry.addr(), "wrong")] {
        let err = block_on(stranger.pull(&reference, &Trust::Unsigned))
            .expect_err("pulled without the login");
        let said = format!("{err:#}");
        assert!(said.contains("401"), "{said}");
        let err = block_on(stranger.push(&reference, bytes.clone(), None))
            .expect_err("pushed without the login");
        assert!(format!("{err:#}").contains("401"), "{err:#}");
    }

    // Pushes asked for tokens that may push, and only with the login;
    // pulls for tokens that may only pull.
    let asked = registry.token_requests();
    let scoped = |actions: &str| {
        asked.iter().any(|a| {
            a.logged_in
                && a.scopes
                    .iter()
                    .any(|s| s == &format!("repository:plugins/hello:{actions}"))
        })
    };
    assert!(scoped("pull,push") && scoped("pull"), "{asked:?}");
}

/// A server on a loopback port that reads each request and answers
/// `answer`, or, when it is empty, never answers (holding the connection).
fn answering(answer: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.read(&mut buf);
                if answer.is_empty() {
                    std::thread::sleep(Duration::from_secs(30));
                } else {
                    let _ = stream.write_all(answer.as_bytes());
                }
            });
        }
    });
    addr
}

#[test]
fn an_upload_elsewhere_that_fails_is_reported_without_its_pre_signed_secret() {
    // The storage service a registry sends uploads to, with the signature
    // in the URL: one that never answers, and one that refuses, quoting
    // the signature it was sent (as S3's `SignatureDoesNotMatch` does).
    let stalls = answering("");
    let refuses = answering(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 58\r\nConnection: close\r\n\r\n\
         <Error><Code>SignatureDoesNotMatch</Code>s3cr3tsig</Error>",
    );
    for (storage, says) in [(stalls, "PUT http://"), (refuses, "403")] {
        let registry = EndlessManifests::start_with_uploads_to(Asks::Nothing, Some(storage));
        let client = Client::new(ClientOptions {
            cache: None,
            timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        });
        let err = block_on(client.push(
            &registry.reference("plugins/hello", "stable"),
            guest_bytes("hello-v1"),
            None,
        ))
        .expect_err("the upload failed");
        let said = format!("{err:#}");
        assert!(
            said.contains(says) && said.contains(&format!("{storage}/upload/1")),
            "names the upload and what went wrong: {said}"
        );
        assert!(!said.contains(SIGNATURE), "the signature leaked: {said}");
    }
}

#[test]
fn an_upload_refused_for_an_expired_token_is_made_again_once_under_a_new_one() {
    for refused in [1, 2] {
        let registry = EndlessManifests::start(Asks::Token);
        registry.refusals.store(refused, Ordering::Relaxed);
        let said = registry.refused_push();
        let seen = registry.authorizations();
        let tokens = seen.iter().filter(|(p, _)| p.starts_with("/token")).count();
        if refused == 1 {
            // The upload's end was sent again under a new token, and the push
            // went on to the manifest.
            assert!(said.contains("MANIFEST_INVALID"), "{said}");
            assert_eq!(tokens, 2, "one token, then one new one: {seen:?}");
        } else {
            // Refused under the new token too: the push stops there,
            // saying so, after one more try and no more.
            assert!(
                said.contains("PUT http://") && said.contains("401"),
                "{said}"
            );
            assert_eq!(tokens, 2, "{seen:?}");
        }
        assert_eq!(registry.refusals.load(Ordering::Relaxed), 0);
    }
}
