//! Unloading an async world's runtime ends its guest threads: a runtime
//! dropped after its calls moved off the executor leaves no thread behind.
//! (Its own test binary: it counts the threads of the whole process.)

use std::time::{Duration, Instant};

use wasmplug::reference::async_world::GreeterPlugin;
use wasmplug::{Policy, Registry, Runtime};
use wasmplug_tests::{current_thread, guest};

fn guest_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "wasmplug-guest")
        .count()
}

#[test]
fn dropping_the_runtime_ends_its_guest_threads() {
    {
        let runtime = Runtime::<GreeterPlugin>::builder()
            .guest_threads(2)
            .policy(Policy::default().deadline(Duration::from_millis(300)))
            .build()
            .unwrap();
        let registry = Registry::new();
        registry
            .activate(runtime.load(guest("hostile")).unwrap())
            .unwrap();
        let handle = registry.get("hostile").unwrap();
        let rt = current_thread();
        // A guest that computes to its deadline moves to the guest threads.
        let err = rt
            .block_on(handle.call_async(|plugin, store| {
                Box::pin(plugin.wasmplug_plugin_greeter().call_welcome(store, "loop"))
            }))
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(guest_threads(), 2, "the guest threads were started");
    }
    let began = Instant::now();
    while guest_threads() > 0 && began.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(guest_threads(), 0, "guest threads outlived their runtime");
}
