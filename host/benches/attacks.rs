//! Attack → outcome → time to recover, for each hostile behaviour, printed
//! as a table. "Recover" is what the registry does after a crash: a fresh
//! instance (with `init`) answering a normal call. Baseline, same process:
//! the same instantiate + call with no attack before it.
//!
//! Run: `just bench` (or `cargo bench -p wasmplug --bench attacks` after
//! `just guests`). Medians of 5 runs per row.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::guest;
use wasmplug::reference::GreeterPlugin;
use wasmplug::{Error, Plugin, Policy, Runtime};

const RUNS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn outcome(result: &wasmplug::Result<String>) -> String {
    match result {
        Ok(answer) if answer.len() > 1000 => format!("Ok, {} bytes", answer.len()),
        Ok(answer) => format!("Ok: {answer:?}"),
        Err(err @ Error::Trap { trap, .. }) => match (err.limit(), trap) {
            (Some(limit), _) => format!("Trap after hitting {limit}"),
            (None, Some(trap)) => format!("Trap: {trap}"),
            (None, None) => "Trap".into(),
        },
        Err(err) => format!("{err}"),
    }
}

fn recover(plugin: &Plugin<GreeterPlugin>) -> Duration {
    let start = Instant::now();
    let mut fresh = plugin.instantiate().unwrap();
    assert_eq!(fresh.welcome("again").unwrap(), "Welcome, again!");
    start.elapsed()
}

fn main() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let policy = Policy::default()
        .deadline(Duration::from_millis(200))
        .memory_limit(64 << 20)
        .output_limit(64 * 1024);
    let plugin = rt.load_with_policy(guest("hostile"), policy).unwrap();

    let baseline = median((0..RUNS).map(|_| recover(&plugin)).collect());
    println!("baseline: fresh instance + init + call = {}", ms(baseline));
    println!(
        "{:<32} {:<64} {:>10} {:>10}",
        "attack", "outcome", "call", "recover"
    );
    let attacks = [
        ("loop", "infinite loop (200 ms deadline)"),
        ("alloc", "allocate until OOM (64 MiB cap)"),
        ("recurse", "unbounded recursion"),
        ("read:/etc/passwd", "read /etc/passwd, no grant"),
        ("env", "read host environment"),
        ("flood:100000000", "print 100 MB (64 KiB cap)"),
        ("huge:100000000", "return a 100 MB string"),
    ];
    for (cmd, what) in attacks {
        let (mut calls, mut recoveries, mut last) = (Vec::new(), Vec::new(), None);
        for _ in 0..RUNS {
            let mut instance = plugin.instantiate().unwrap();
            let start = Instant::now();
            let result = instance.welcome(cmd);
            calls.push(start.elapsed());
            drop(instance);
            recoveries.push(recover(&plugin));
            last = Some(result);
        }
        let outcome = outcome(&last.unwrap());
        println!(
            "{what:<32} {outcome:<64.64} {:>10} {:>10}",
            ms(median(calls)),
            ms(median(recoveries))
        );
    }
    for (name, what) in [
        ("hostile-import", "import the host lacks"),
        ("hostile-init-loop", "init never returns"),
    ] {
        let start = Instant::now();
        let policy = Policy::default().deadline(Duration::from_millis(200));
        let err = rt.load_with_policy(guest(name), policy).unwrap_err();
        let kind = match err {
            Error::Load { .. } => "refused at load",
            Error::Init { .. } => "refused at load (init)",
            _ => "refused",
        };
        println!(
            "{what:<32} {kind:<64} {:>10} {:>10}",
            ms(start.elapsed()),
            "n/a"
        );
    }
}
