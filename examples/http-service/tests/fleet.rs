//! A fleet: five replicas of the real `http-service` binary, each following
//! the same tag in a real OCI registry (`docker-registry`, distribution 2.8,
//! on a loopback port), under load from `wrk` (one per replica). The tag is
//! moved to v2, then to an artefact signed by a key nobody trusts, then back
//! to v1: every replica must follow the signed moves within the poll
//! interval + 2 s, refuse the untrusted one and keep serving, and no request
//! may fail. The convergence times and request counts are printed.
//!
//! Needs `docker-registry` and `wrk` (`just setup` installs both) and the
//! handler components (`just guests-rust`); a missing one fails the test
//! and names what to install.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmplug::oci::{Client, ClientOptions, SigningKey};
use wasmplug_tests::oci_registry::{key_pair, OciRegistry};
use wasmplug_tests::{with_custom_section, TempDir};

const REPLICAS: usize = 5;
const POLL: Duration = Duration::from_millis(1000);
/// The promise: every replica on the new version within this.
const CONVERGE_WITHIN: Duration = Duration::from_millis(1000 + 2000);
/// How long wrk drives each replica: longer than the whole scenario.
const LOAD_SECONDS: u64 = 30;

fn guest(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../guest-plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|_| {
        panic!(
            "guest component {} is missing: build the Rust guests first with `just guests-rust`",
            path.display()
        )
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    wasmplug_tests::current_thread().block_on(f)
}

fn client() -> Client {
    Client::new(ClientOptions {
        cache: None,
        ..ClientOptions::default()
    })
}

fn push(reference: &str, bytes: Vec<u8>, key: &SigningKey) -> String {
    block_on(client().push(reference, bytes, Some(key)))
        .unwrap_or_else(|e| panic!("pushing to {reference}: {e:#}"))
        .digest
}

/// One replica: the service process, following `reference`.
struct Replica {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Replica {
    fn start(i: usize, reference: &str, trusted: &Path, dir: &Path) -> Replica {
        let log = dir.join(format!("replica-{i}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_http-service"))
            .args(["--follow", reference, "--trust"])
            .arg(trusted)
            .args(["--poll-ms", &POLL.as_millis().to_string()])
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            // Each look at the tag too (why a replica has not moved yet),
            // and each failed request's cause.
            .env("RUST_LOG", "info,wasmplug::oci=debug,http_service=debug")
            // Each replica its own layer cache, as separate machines would.
            .env("XDG_CACHE_HOME", dir.join(format!("cache-{i}")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the http-service binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut replica = Replica {
            child,
            addr: String::new(),
            log,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("replica {i} did not start: {}", replica.log()));
        replica.addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}: {}", replica.log()))
            .to_string();
        replica
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines of its log that hold any of `marks`.
    fn log_lines(&self, marks: &[&str]) -> String {
        lines_holding(self.log().lines(), marks)
    }

    /// The `/metrics` series that say how requests ended and why calls
    /// failed: which of the service's 5xx a failed request was.
    fn failures(&self) -> String {
        let metrics =
            get(&self.addr, "/metrics").unwrap_or_else(|e| format!("/metrics unreadable: {e}"));
        lines_holding(
            metrics.lines().filter(|l| !l.starts_with('#')),
            &[
                "http_service_responses_total",
                "wasmplug_call_errors_total",
                "wasmplug_guest_thread_calls_total",
                "wasmplug_restarts_total",
            ],
        )
    }

    /// The version of `echo` that `/healthz` reports.
    fn version(&self) -> Option<String> {
        let body = get(&self.addr, "/healthz").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("echo@"))
            .map(str::to_string)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// A GET over a fresh connection; the body.
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Wait until every replica reports `version`; each one's time from `since`.
fn converge(replicas: &[Replica], version: &str, since: Instant) -> Vec<Duration> {
    let mut times = vec![None; replicas.len()];
    let deadline = since + Duration::from_secs(30);
    while times.iter().any(Option::is_none) {
        for (i, r) in replicas.iter().enumerate() {
            if times[i].is_none() && r.version().as_deref() == Some(version) {
                times[i] = Some(since.elapsed());
            }
        }
        assert!(
            Instant::now() < deadline,
            "replicas not on {version} after 30 s: {:?}",
            replicas.iter().map(Replica::version).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    times.into_iter().map(Option::unwrap).collect()
}

fn median_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

/// What one wrk run reported.
#[derive(Debug, Default)]
struct Load {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    /// The slowest request, as wrk prints it ("1.00s", "23.41ms").
    latency_max: String,
}

fn parse_wrk(output: &str) -> Load {
    let mut load = Load::default();
    for line in output.lines().map(str::trim) {
        if let Some((n, _)) = line.split_once(" requests in ") {
            load.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(stats) = line.strip_prefix("Latency") {
            // "Latency   7.89ms   70.77ms   1.00s   98.60%": avg, stdev, max.
            load.latency_max = stats.split_whitespace().nth(2).unwrap_or("?").to_string();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.non_2xx = n.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            load.socket_errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    load
}

#[test]
fn five_replicas_follow_one_tag_refuse_an_untrusted_artefact_and_fail_no_request() {
    let wrk = Command::new("wrk").arg("--version").output();
    assert!(
        wrk.is_ok(),
        "wrk is not installed: `apt-get install -y wrk` (`just setup` installs it)"
    );
    let registry = OciRegistry::start();
    let dir = TempDir::new("fleet");
    let (_, public, key) = key_pair(dir.path(), "release");
    let stranger = SigningKey::generate().unwrap();
    let reference = registry.reference("plugins/echo", "stable");

    let v1 = push(&reference, guest("http-handler-v1"), &key);
    let replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica::start(i, &reference, &public, dir.path()))
        .collect();
    converge(&replicas, "1.0.0", Instant::now());

    let loads: Vec<Child> = replicas
        .iter()
        .map(|r| {
            Command::new("wrk")
                .args(["-t1", "-c2", &format!("-d{LOAD_SECONDS}s")])
                .arg(format!("http://{}/echo/fleet", r.addr))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting wrk")
        })
        .collect();
    let load_started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // v2, signed: every replica follows. The clock starts when the tag
    // moves, the last step of the push.
    let pushing = Instant::now();
    let v2 = push(&reference, guest("http-handler-v2"), &key);
    let pushed_in = pushing.elapsed();
    let moved = Instant::now();
    let to_v2 = converge(&replicas, "2.0.0", moved);

    // An artefact signed by a key nobody trusts: refused by every replica,
    // v2 serves on.
    let forged = with_custom_section(&guest("http-handler-v1"), "forged", b"1");
    let untrusted = push(&reference, forged, &stranger);
    std::thread::sleep(CONVERGE_WITHIN);
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(r.version().as_deref(), Some("2.0.0"), "replica {i}");
        let log = r.log();
        assert!(
            log.contains("refused") && log.contains(&untrusted),
            "replica {i} does not report the refusal of {untrusted}:\n{log}"
        );
    }

    // The tag moved back to v1's digest: every replica returns.
    let at_v1 = format!("{}/plugins/echo@{v1}", registry.addr());
    let tagging = Instant::now();
    block_on(client().tag(&at_v1, "stable")).expect("moving the tag back");
    let tagged_in = tagging.elapsed();
    let moved = Instant::now();
    let back = converge(&replicas, "1.0.0", moved);
    let scenario = load_started.elapsed();
    assert!(
        scenario < Duration::from_secs(LOAD_SECONDS - 2),
        "the scenario ({scenario:?}) must end while the load runs"
    );

    let mut total = Load::default();
    let mut slowest = Vec::new();
    for (i, child) in loads.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wrk ran");
        let text = String::from_utf8_lossy(&out.stdout);
        let load = parse_wrk(&text);
        assert!(
            load.requests > 0,
            "replica {i}: wrk measured nothing:\n{text}"
        );
        assert_eq!(
            (load.non_2xx, load.socket_errors),
            (0, 0),
            "replica {i}: failed requests:\n{text}\nits events, warnings, errors and failed requests:\n{}\n\
             its responses and failed calls, by kind:\n{}",
            replicas[i].log_lines(&["WARN", "ERROR", "registry:", "http_service: echo"]),
            replicas[i].failures()
        );
        slowest.push(load.latency_max);
        total.requests += load.requests;
        total.non_2xx += load.non_2xx;
        total.socket_errors += load.socket_errors;
    }

    println!(
        "to v2, each replica: {to_v2:.2?}; back to v1: {back:.2?} (the tag move itself took {tagged_in:.2?})"
    );
    let (v2_median, v2_max) = median_max(&to_v2);
    let (back_median, back_max) = median_max(&back);
    println!(
        "fleet of {REPLICAS} replicas, polling every {POLL:?} (at most; 20 % jitter), under wrk ({LOAD_SECONDS} s, 2 connections each):\n\
         \x20 v1 -> v2 ({v2}): every replica within median {v2_median:.2?}, max {v2_max:.2?}\n\
         \x20 untrusted artefact ({untrusted}): refused by {REPLICAS}/{REPLICAS}, v2 served on\n\
         \x20 back to v1 ({v1}): median {back_median:.2?}, max {back_max:.2?}\n\
         \x20 requests: {} served, {} failed; the slowest of each replica: {}",
        total.requests,
        total.non_2xx + total.socket_errors,
        slowest.join(", ")
    );
    for (what, max) in [("v2", v2_max), ("v1", back_max)] {
        assert!(
            max <= CONVERGE_WITHIN,
            "a replica took {max:?} to reach {what}: more than the poll interval + 2 s \
             (v2's push took {pushed_in:.2?}); each replica's looks at the tag and events:\n{}",
            replicas
                .iter()
                .enumerate()
                .map(|(i, r)| format!("replica {i}:\n{}", r.log_lines(&[" is at ", "registry:"])))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Those of `lines` that hold any of `marks`, one per line.
fn lines_holding<'a>(lines: impl Iterator<Item = &'a str>, marks: &[&str]) -> String {
    lines
        .filter(|l| marks.iter().any(|m| l.contains(m)))
        .collect::<Vec<_>>()
        .join("\n")
}
