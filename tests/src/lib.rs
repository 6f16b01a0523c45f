//! Shared helpers for wasmplug's integration tests: where the guest
//! components are, and how much memory this process holds.
//!
//! The guest components are real wasm components built from
//! `guest-plugins/` by `just guests`. A test never skips when one is
//! missing: it fails and says how to build it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmplug::reference::GreeterPlugin;
use wasmplug::{Policy, Registry, Runtime};

/// The repository root.
pub mod gated;
pub mod oci_registry;
pub mod token_service;

/// A current-thread tokio runtime with timers and I/O: one executor
/// thread, as the async tests that try to starve it need.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// The directory `just guests` writes the guest components to.
pub fn dist_dir() -> PathBuf {
    repo_root().join("guest-plugins").join("dist")
}

/// The path of a built guest component, e.g. `guest("hello-v1")`.
///
/// # Panics
/// When the component has not been built, with the command that builds it.
pub fn guest(name: &str) -> PathBuf {
    let path = dist_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "guest component {} is missing: build the guests first with `just guests` \
         (the toolchains come from `just setup`)",
        path.display()
    );
    path
}

/// The bytes of a built guest component.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest(name)).expect("reading a guest component")
}

/// `target/release/wasmplug`, found beside the running test executable
/// (`target/release/deps/<test>-…`): the CLI tests run the real release
/// binary, which `cargo test --release --workspace` (and so `just test`)
/// builds.
///
/// # Panics
/// When it is not built, with the command that builds it.
pub fn wasmplug_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let found = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("wasmplug"))
        .find(|bin| bin.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "the wasmplug binary is not built next to {}: build it with \
             `cargo build --release -p wasmplug` (`just test` does)",
            exe.display()
        )
    })
}

/// This process's resident set size in KiB, from `/proc/self/status`.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// [`rss_kib`] once glibc has handed its free heap pages back to the OS:
/// what is still resident is held by something.
///
/// Tests that bound growth measure this, not the raw figure. After freeing,
/// the allocator keeps a varying amount resident: 0 to 2.3 MiB between
/// checkpoints of one process, with no trend over 2,000 loaded and dropped
/// versions (seen on 2026-12-04), which is the size of a budget. What a leak
/// holds is live, so trimming never hides it.
pub fn live_rss_kib() -> u64 {
    // SAFETY: malloc_trim only returns free heap pages to the OS; it reads
    // no memory of ours.
    unsafe { libc::malloc_trim(0) };
    rss_kib()
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create one under the system temp directory.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "wasmplug-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Append a custom section named `name` holding `payload` to a component.
///
/// A custom section changes the bytes (so the content hash, so the compiled
/// code) without changing behaviour: the way to make many distinct versions
/// of one plugin for the unload tests.
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(&mut body, name.len() as u64);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Replace `path` the way deploy tools do: write a temporary file beside it,
/// then rename it over the original (one atomic change of `path`).
pub fn replace_atomically(path: &Path, bytes: &[u8]) {
    let name = path.file_name().expect("a file path").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("writing the temporary file");
    std::fs::rename(&tmp, path).expect("renaming over the original");
}

/// Wait up to `timeout` for an event matching `pred`; panic with every event
/// seen if none comes.
pub fn wait_for_event(
    events: &std::sync::mpsc::Receiver<wasmplug::Event>,
    timeout: std::time::Duration,
    what: &str,
    mut pred: impl FnMut(&wasmplug::Event) -> bool,
) -> wasmplug::Event {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(event) if pred(&event) => return event,
            Ok(event) => seen.push(event.to_string()),
            Err(_) => panic!("no {what} event within {timeout:?}; saw: {seen:#?}"),
        }
    }
}

/// Every event that arrives within `period` (waiting the whole period).
pub fn events_within(
    events: &std::sync::mpsc::Receiver<wasmplug::Event>,
    period: std::time::Duration,
) -> Vec<wasmplug::Event> {
    let deadline = std::time::Instant::now() + period;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => seen.push(event),
            Err(_) => return seen,
        }
    }
}

/// The offsets at which the top-level sections of a component (or core
/// module) end: every prefix of this length is a whole number of sections.
pub fn section_ends(wasm: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 8; // magic and version
    while at < wasm.len() {
        let mut size = 0u64;
        let mut shift = 0;
        let mut p = at + 1; // the section id
        loop {
            let byte = wasm[p];
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            p += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        at = p + size as usize;
        ends.push(at);
    }
    ends
}

/// Counts the opens of the files in one directory, from an inotify
/// instance of its own (so it sees the watcher's reads, and its own
/// watches change nothing for the watcher).
#[cfg(target_os = "linux")]
pub struct OpenCounter {
    inotify: inotify::Inotify,
}

#[cfg(target_os = "linux")]
impl OpenCounter {
    /// Start counting opens in `dir`.
    pub fn new(dir: &Path) -> Self {
        let inotify = inotify::Inotify::init().expect("inotify_init");
        inotify
            .watches()
            .add(dir, inotify::WatchMask::OPEN)
            .expect("watching the directory for opens");
        OpenCounter { inotify }
    }

    /// The opens since the last call, per file name.
    pub fn take(&mut self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        let mut buffer = [0u8; 4096];
        loop {
            match self.inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let mut any = false;
                    for event in events {
                        any = true;
                        let name = event
                            .name
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| ".".into());
                        *counts.entry(name).or_insert(0) += 1;
                    }
                    if !any {
                        return counts;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return counts,
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
    }
}

/// A watched directory with `hello.wasm` = hello v1 in it, loaded and
/// serving through a registry, and the registry's event stream.
pub struct Deployment {
    /// The runtime the watcher loads with.
    pub runtime: wasmplug::Runtime<wasmplug::reference::GreeterPlugin>,
    /// The registry the watcher keeps in sync.
    pub registry: wasmplug::Registry<wasmplug::reference::GreeterPlugin>,
    /// Lifecycle events, subscribed before the watcher started.
    pub events: std::sync::mpsc::Receiver<wasmplug::Event>,
    /// The watched `hello.wasm` (canonical path).
    pub file: PathBuf,
    /// The watched directory (canonical path).
    pub dir: PathBuf,
    /// How long the tests wait for an event.
    pub wait: std::time::Duration,
    _watcher: wasmplug::Watcher,
    _dir: TempDir,
}

impl Deployment {
    /// Deploy hello v1 into a fresh watched directory and wait until it is
    /// loaded.
    pub fn hello_v1(tag: &str) -> Self {
        Self::hello_v1_with(tag, wasmplug::watcher::WatchOptions::default())
    }

    /// [`hello_v1`](Self::hello_v1) under a watcher with `options`.
    pub fn hello_v1_with(tag: &str, options: wasmplug::watcher::WatchOptions) -> Self {
        Self::hello_v1_on(Runtime::new().unwrap(), tag, options)
    }

    /// [`hello_v1_with`](Self::hello_v1_with), loading with `runtime` (its
    /// policy, its cache).
    pub fn hello_v1_on(
        runtime: Runtime<GreeterPlugin>,
        tag: &str,
        options: wasmplug::watcher::WatchOptions,
    ) -> Self {
        let hello = guest_bytes("hello-v1");
        let d = Self::start_on(runtime, tag, &[("hello.wasm", &hello)], options);
        wait_for_event(&d.events, d.wait, "initial load", |e| {
            matches!(e, wasmplug::Event::Loaded { .. })
        });
        d
    }

    /// Write `files` (name, bytes) into a fresh directory and start a
    /// watcher on it with `options`; the first scan's events are in
    /// `events`. `file` is the directory's `hello.wasm`, whether or not it
    /// was among `files`.
    pub fn start(
        tag: &str,
        files: &[(&str, &[u8])],
        options: wasmplug::watcher::WatchOptions,
    ) -> Self {
        Self::start_on(Runtime::new().unwrap(), tag, files, options)
    }

    /// [`start`](Self::start), loading with `runtime` (its policy, its
    /// deadline).
    pub fn start_on(
        runtime: Runtime<GreeterPlugin>,
        tag: &str,
        files: &[(&str, &[u8])],
        options: wasmplug::watcher::WatchOptions,
    ) -> Self {
        let dir = TempDir::new(tag);
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let registry = wasmplug::Registry::new();
        let events = registry.subscribe();
        let watcher =
            wasmplug::Watcher::start_with(dir.path(), runtime.clone(), registry.clone(), options)
                .unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        Deployment {
            runtime,
            registry,
            events,
            file: canonical.join("hello.wasm"),
            dir: canonical,
            wait: std::time::Duration::from_secs(60),
            _watcher: watcher,
            _dir: dir,
        }
    }

    /// Wait until the current version of `hello` is `version`.
    pub fn wait_swapped_to(&self, version: &str) {
        wait_for_event(
            &self.events,
            self.wait,
            &format!("swap to {version}"),
            |e| matches!(e, wasmplug::Event::Swapped { to, .. } if to.version.to_string() == version),
        );
    }
}

/// hello's `welcome("Gopher")` through the registry's current version.
pub fn welcome(registry: &Registry<GreeterPlugin>) -> String {
    registry
        .get("hello")
        .unwrap()
        .call(|i| i.welcome("Gopher"))
        .unwrap()
}

/// Run the attack `cmd` (see `guest-plugins/hostile`) in a fresh `hostile`
/// instance loaded under `policy`.
pub fn attack(rt: &Runtime<GreeterPlugin>, policy: Policy, cmd: &str) -> wasmplug::Result<String> {
    let plugin = rt.load_with_policy(guest("hostile"), policy).unwrap();
    let mut instance = plugin.instantiate().unwrap();
    instance.welcome(cmd)
}

/// Run `f` with `tracing` captured by a subscriber of this thread's own, up
/// to `level`; return what was written. `tracing` caches per-callsite
/// interest globally, so a test binary whose tests capture logs must run
/// them one at a time (or alone in the binary) to see every line.
pub fn capture_logs(level: tracing::Level, f: impl FnOnce()) -> String {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = logs.clone();
        move || CaptureWriter(logs.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8(bytes).expect("the log is UTF-8")
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
