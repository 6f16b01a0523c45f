//! The watcher's idle cost: what a watched directory of 100 components
//! costs once its first scan is done and nothing changes.
//!
//! The directory holds the built guests that load in the dynamic world
//! (Rust, C, JavaScript and Python ones, each its own identity: the
//! watcher refuses a second file claiming a name) and, up to
//! 100, small distinct components (a core module with its own data), each
//! named for its file. `Watcher::start` loads them all (the first scan);
//! then the process idles for `IDLE_SECS` (default 30) and this prints:
//! - the process's CPU time over the idle period (utime + stime from
//!   `/proc/self/stat`), as a percentage of one core: the watcher and
//!   everything else in the library (the runtime's epoch ticker among it);
//! - the watcher thread's context switches (wake-ups) over the period;
//! - the opens of files in the directory over the period, counted with an
//!   inotify instance of this program's own.
//!
//! Target: < 1 % of one core and 0 re-reads. Figures only, no assertion.
//! Run: `cargo run --release --locked -q -p wasmplug-tests --bin idle`
//! (`IDLE_SECS=5` for a quick run).

use std::time::{Duration, Instant};

use wasmplug::{Dynamic, Event, Registry, Runtime, Watcher};
use wasmplug_tests::{dist_dir, OpenCounter, TempDir};

const COMPONENTS: usize = 100;

/// The guests of `guest-plugins/dist/` that load in the dynamic world.
const GUESTS: [&str; 9] = [
    "hello-v1",
    "hostile",
    "hello-c",
    "hello-js",
    "hello-py",
    "uses-shared-v1",
    "uses-shared-v2",
    "http-handler-v1",
    "http-handler-v2",
];

fn main() -> anyhow::Result<()> {
    let idle = Duration::from_secs(
        std::env::var("IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let dir = TempDir::new("idle-bench");
    let cache = TempDir::new("idle-bench-cache");
    for name in GUESTS {
        let from = dist_dir().join(format!("{name}.wasm"));
        std::fs::copy(&from, dir.path().join(format!("{name}.wasm"))).map_err(|e| {
            anyhow::anyhow!("{}: {e} (build the guests: `just guests`)", from.display())
        })?;
    }
    for i in GUESTS.len()..COMPONENTS {
        // 4 KiB of data of its own: distinct bytes, compiled separately.
        let data = format!("component {i:03} ").repeat(256);
        let wat = format!("(component (core module (memory 1) (data (i32.const 0) \"{data}\")))");
        std::fs::write(dir.path().join(format!("c{i:03}.wasm")), wat)?;
    }

    let runtime = Runtime::<Dynamic>::builder()
        .cache_dir(cache.path())
        .build()?;
    let registry = Registry::<Dynamic>::new();
    let events = registry.subscribe();
    let started = Instant::now();
    let watcher = Watcher::start(dir.path(), runtime, registry.clone())?;
    let scan = started.elapsed();
    let scan_events: Vec<Event> = events.try_iter().collect();
    let failed: Vec<String> = scan_events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .map(|e| e.to_string())
        .collect();
    println!(
        "first scan: {} versions loaded from {COMPONENTS} files in {:.1} s ({} failed)",
        registry.list().len(),
        scan.as_secs_f64(),
        failed.len()
    );
    for f in &failed {
        println!("  {f}");
    }
    // Let the watcher see (and ignore) the opens of its own first scan.
    std::thread::sleep(Duration::from_millis(500));

    let mut opens = OpenCounter::new(watcher.dir());
    let cpu_before = process_cpu();
    let switches_before = watcher_switches();
    let threads_before = thread_cpu();
    let idle_start = Instant::now();
    std::thread::sleep(idle);
    let wall = idle_start.elapsed();
    let cpu = process_cpu() - cpu_before;
    let switches = watcher_switches().zip(switches_before).map(|(a, b)| a - b);
    let mut threads: Vec<(String, u64)> = thread_cpu()
        .into_iter()
        .map(|(tid, (name, ticks))| {
            let before = threads_before.get(&tid).map_or(0, |(_, t)| *t);
            (name, ticks - before)
        })
        .filter(|(_, ticks)| *ticks > 0)
        .collect();
    threads.sort_by_key(|(_, ticks)| std::cmp::Reverse(*ticks));
    let opened = opens.take();
    let later: Vec<Event> = events.try_iter().collect();

    println!(
        "idle {:.0} s: CPU {:.3} s = {:.2} % of one core (whole process)",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    for (name, ticks) in &threads {
        println!("  thread {name}: {:.2} s", *ticks as f64 / 100.0);
    }
    match switches {
        Some(n) => println!("idle: watcher thread context switches: {n}"),
        None => println!("idle: watcher thread not found in /proc/self/task"),
    }
    println!(
        "idle: file opens in the directory: {} (of {} files)",
        opened.values().sum::<usize>(),
        opened.len()
    );
    println!("idle: events: {}", later.len());
    for e in later.iter().take(10) {
        println!("  {e}");
    }
    drop(watcher);
    Ok(())
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`
/// (in clock ticks of 1/100 s, Linux's fixed USER_HZ).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    Duration::from_millis(ticks(&stat) * 10)
}

/// Each thread's CPU ticks so far, by thread id: (name, utime + stime).
fn thread_cpu() -> std::collections::HashMap<String, (String, u64)> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
            out.insert(
                task.file_name().to_string_lossy().into_owned(),
                (name.trim().to_string(), ticks(&stat)),
            );
        }
    }
    out
}

/// utime + stime, in ticks, of a `stat` line.
fn ticks(stat: &str) -> u64 {
    // Fields after the command name, which is in parentheses; utime and
    // stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The watcher thread's context switches (voluntary + involuntary) so far.
fn watcher_switches() -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != "wasmplug-watche" {
            continue; // (thread names are cut to 15 bytes)
        }
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        return Some(switches);
    }
    None
}
