//! The async API's cost, and the two designs issue 11 weighed, measured in
//! one run on the same plugin (Rust hello v1, `count()`), against the
//! blocking call as the baseline:
//!
//! * **blocking**: `Handle::call` on the blocking reference world: the
//!   baseline.
//! * **wasmtime async** (what wasmplug builds): `Handle::call_async` on the
//!   async reference world, the guest on a fiber on the calling task.
//! * **worker threads** (the design not built): an async façade that sends
//!   the blocking call to library-owned threads and awaits the answer on a
//!   oneshot channel; and the same through `tokio::task::spawn_blocking`.
//!
//! Printed: the median time per call over several rounds, sequential calls
//! awaited one after the other on a current-thread runtime, and what each
//! design adds over the blocking call. Then throughput through each async
//! design with 64 concurrent tasks on a multi-thread runtime with 1 worker
//! and with 2 (a pool of 2 instances), and the ratio 2 workers / 1: windows
//! of 1 and 2 workers taken in turn, the median of the pairs' ratios.
//!
//! Run: `cargo bench --locked --workspace --bench async_call`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use support::guest;
use wasmplug::reference::async_world::GreeterPlugin as AsyncWorld;
use wasmplug::reference::GreeterPlugin as BlockingWorld;
use wasmplug::{Handle, Registry, Runtime};

const ROUNDS: usize = 15;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Median ns per call of `calls` calls made by `round`, over `ROUNDS`.
fn per_call(calls: u32, mut round: impl FnMut(u32)) -> f64 {
    round(calls / 10); // warm up
    median(
        (0..ROUNDS)
            .map(|_| {
                let began = Instant::now();
                round(calls);
                began.elapsed().as_nanos() as f64 / f64::from(calls)
            })
            .collect(),
    )
}

async fn count_async(handle: &Handle<AsyncWorld>) -> u32 {
    handle
        .call_async(|plugin, store| Box::pin(plugin.wasmplug_plugin_greeter().call_count(store)))
        .await
        .unwrap()
}

fn count_blocking(handle: &Handle<BlockingWorld>) -> u32 {
    handle.call(|i| i.count()).unwrap()
}

/// The design not built: library-owned threads run the blocking call, the
/// caller's task awaits a oneshot. One channel per thread, round robin.
struct Workers {
    queues: Vec<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    next: AtomicU64,
}

impl Workers {
    fn start(threads: usize) -> Self {
        let queues = (0..threads)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                });
                tx
            })
            .collect();
        Workers {
            queues,
            next: AtomicU64::new(0),
        }
    }

    async fn count(&self, handle: &Handle<BlockingWorld>) -> u32 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = handle.clone();
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.queues.len();
        self.queues[i]
            .send(Box::new(move || {
                let _ = tx.send(count_blocking(&handle));
            }))
            .unwrap();
        rx.await.unwrap()
    }
}

async fn count_spawn_blocking(handle: &Handle<BlockingWorld>) -> u32 {
    let handle = handle.clone();
    tokio::task::spawn_blocking(move || count_blocking(&handle))
        .await
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// A counter on a cache line of its own, so counting costs the tasks
/// nothing shared.
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

const TASKS: usize = 64;

/// What one task calls in a loop. Each task makes its own once, so the
/// harness shares nothing between tasks: a handle cloned per call would
/// write its reference count, one cache line for every thread, and the
/// blocking baseline (which borrows its handle) pays nothing of the kind.
trait Caller: Send + Sync + 'static {
    fn call(&self) -> impl std::future::Future<Output = u32> + Send + '_;
}

impl Caller for Handle<AsyncWorld> {
    fn call(&self) -> impl std::future::Future<Output = u32> + Send + '_ {
        count_async(self)
    }
}

/// The worker-thread design: its own cost includes a handle clone per call
/// (the call moves to another thread).
struct ViaWorkers(Handle<BlockingWorld>, Arc<Workers>);

impl Caller for ViaWorkers {
    fn call(&self) -> impl std::future::Future<Output = u32> + Send + '_ {
        self.1.count(&self.0)
    }
}

/// How long each throughput window counts, after a warm-up of a third of
/// it.
const WINDOW: Duration = Duration::from_millis(300);

/// Pairs of windows (1 thread, then 2) per design: the ratio is the median
/// of the pairs' ratios, each pair taken within a second, so a noisy
/// neighbour that comes and goes skews a pair or two, not the result.
const PAIRS: usize = 9;

/// Median calls/s on 1 thread, on 2, and the median of the per-pair
/// ratios, `rate(threads)` measuring one window.
fn scaling(mut rate: impl FnMut(usize) -> f64) -> (f64, f64, f64) {
    let (mut ones, mut twos, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..PAIRS {
        let (one, two) = (rate(1), rate(2));
        ones.push(one);
        twos.push(two);
        ratios.push(two / one);
    }
    (median(ones), median(twos), median(ratios))
}

/// Calls per second with `TASKS` tasks calling for a window on `workers`
/// threads, each task through a caller `make` made for it.
fn throughput<C: Caller>(workers: usize, make: impl Fn() -> C) -> f64 {
    let rt = multi_thread(workers);
    let done = Arc::new(AtomicBool::new(false));
    let counters: Arc<Vec<Counter>> = Arc::new((0..TASKS).map(|_| Counter::default()).collect());
    let total = |c: &[Counter]| c.iter().map(|c| c.0.load(Ordering::Relaxed)).sum::<u64>();
    rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (caller, done, counters) = (make(), done.clone(), counters.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::Relaxed) {
                        std::hint::black_box(caller.call().await);
                        let mine = &counters[i].0;
                        mine.store(mine.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Warm up, then count for a window.
        tokio::time::sleep(WINDOW / 3).await;
        let before = total(&counters);
        let began = Instant::now();
        tokio::time::sleep(WINDOW).await;
        let per_sec = (total(&counters) - before) as f64 / began.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        per_sec
    })
}

/// The same for the blocking call, on `threads` plain threads.
fn throughput_blocking(threads: usize, handle: &Handle<BlockingWorld>) -> f64 {
    let done = AtomicBool::new(false);
    let counters: Vec<Counter> = (0..threads).map(|_| Counter::default()).collect();
    let total = |c: &[Counter]| c.iter().map(|c| c.0.load(Ordering::Relaxed)).sum::<u64>();
    std::thread::scope(|s| {
        for counter in &counters {
            let done = &done;
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    std::hint::black_box(count_blocking(handle));
                    counter
                        .0
                        .store(counter.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(WINDOW / 3);
        let before = total(&counters);
        let began = Instant::now();
        std::thread::sleep(WINDOW);
        let per_sec = (total(&counters) - before) as f64 / began.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        per_sec
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to configure.
    let path = guest("hello-v1");
    let blocking_rt = Runtime::<BlockingWorld>::new().unwrap();
    let async_rt = Runtime::<AsyncWorld>::new().unwrap();
    let blocking = Registry::with_pool_size(2);
    blocking.activate(blocking_rt.load(&path).unwrap()).unwrap();
    let asynch = Registry::with_pool_size(2);
    asynch.activate(async_rt.load(&path).unwrap()).unwrap();
    let (bh, ah) = (blocking.get("hello").unwrap(), asynch.get("hello").unwrap());

    // For a profiler: only the async path on ASYNC_CALL_PROFILE threads (1
    // or 2), for a while.
    if let Some(threads) = std::env::var("ASYNC_CALL_PROFILE")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
    {
        for _ in 0..12 {
            let rate = throughput(threads, || ah.clone());
            println!("{rate:.0} calls/s");
        }
        return;
    }

    println!("one call after another (median of {ROUNDS} rounds), `count()` on Rust hello v1:");
    let base = per_call(200_000, |n| {
        for _ in 0..n {
            std::hint::black_box(count_blocking(&bh));
        }
    });
    let rt = current_thread();
    let ours = per_call(200_000, |n| {
        rt.block_on(async {
            for _ in 0..n {
                std::hint::black_box(count_async(&ah).await);
            }
        })
    });
    let workers = Workers::start(2);
    let hop = per_call(20_000, |n| {
        rt.block_on(async {
            for _ in 0..n {
                std::hint::black_box(workers.count(&bh).await);
            }
        })
    });
    let sb = per_call(20_000, |n| {
        rt.block_on(async {
            for _ in 0..n {
                std::hint::black_box(count_spawn_blocking(&bh).await);
            }
        })
    });
    let row = |name: &str, ns: f64| {
        println!(
            "  {name:<34} {ns:>9.0} ns   {:>+8.0} ns over blocking   {:>6.2}x",
            ns - base,
            ns / base
        );
    };
    println!(
        "  {:<34} {base:>9.0} ns   (baseline)",
        "blocking Handle::call"
    );
    row("wasmtime async Handle::call_async", ours);
    row("worker threads + oneshot", hop);
    row("spawn_blocking", sb);

    println!();
    println!(
        "throughput, pool of 2 (calls/s), 1 -> 2 threads ({TASKS} tasks for async; \
         medians of {PAIRS} interleaved pairs of {} ms windows):",
        WINDOW.as_millis()
    );
    let scale = |name: &str, (one, two, ratio): (f64, f64, f64)| {
        println!("  {name:<34} {one:>10.0} -> {two:>10.0}   {ratio:.2}x");
    };
    scale(
        "blocking Handle::call (baseline)",
        scaling(|threads| throughput_blocking(threads, &bh)),
    );
    scale(
        "wasmtime async Handle::call_async",
        scaling(|threads| throughput(threads, || ah.clone())),
    );
    let workers = Arc::new(Workers::start(2));
    let via = || ViaWorkers(bh.clone(), workers.clone());
    scale(
        "worker threads + oneshot",
        scaling(|threads| throughput(threads, via)),
    );
}
