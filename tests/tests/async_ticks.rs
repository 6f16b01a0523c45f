//! An async call that an epoch tick catches in its first 0.5 ms stays on
//! the calling task. In a test binary of its own: a call counts as having
//! computed by its wall-clock age when the tick comes, and beside the other
//! async tests (guests burning CPU on both cores) this thread's preemption
//! would age calls that did not compute.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmplug::{Registry, Runtime};
use wasmplug_tests::gated::{GreeterPlugin, WHERE_CALLS, WHERE_ON_GUEST_THREADS};
use wasmplug_tests::guest;

#[test]
fn fast_calls_caught_by_an_epoch_tick_stay_on_the_calling_task() {
    // A tick falls at a random point of a call. In a loop of fast calls
    // nearly every tick catches one, which then yielded and moved to the
    // guest threads for nothing: a hand-off and back for a call of
    // microseconds, about a hundred times a second per busy task.
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new();
    registry
        .activate(runtime.load(guest("hostile")).unwrap())
        .unwrap();
    let handle = registry.get("hostile").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    rt.block_on(async {
        while began.elapsed() < Duration::from_secs(1) {
            handle
                .call_async(|plugin, store| {
                    Box::pin(
                        plugin
                            .wasmplug_plugin_greeter()
                            .call_welcome(store, "log:where"),
                    )
                })
                .await
                .unwrap();
        }
    });
    let (calls, moved) = (
        WHERE_CALLS.load(Ordering::Relaxed),
        WHERE_ON_GUEST_THREADS.load(Ordering::Relaxed),
    );
    assert!(calls > 1000, "only {calls} calls in a second");
    // A hundred ticks fell during the loop; before the fix, every one that
    // caught a call moved it. A call preempted for over 0.5 ms just before
    // a tick may still move: a few, not dozens.
    assert!(
        moved <= 3,
        "{moved} of {calls} fast calls moved to the guest threads"
    );
}
