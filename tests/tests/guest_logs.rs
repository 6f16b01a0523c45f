//! Guest output reaches the host's log, tagged with the plugin.
//!
//! One test in its own binary: `tracing` caches per-callsite interest
//! globally, so capturing with a thread-local subscriber is only reliable
//! when no other test thread hits the same callsites at the same time.

use wasmplug::reference::GreeterPlugin;
use wasmplug::{Error, Runtime};
use wasmplug_tests::{capture_logs, guest};

// Go's `init()` runs once per process. Here `init` runs once per instance,
// and what a guest logs or prints is tagged with its name@version.
#[test]
fn init_runs_in_every_instance_and_guest_output_is_tagged_with_the_plugin() {
    let logs = capture_logs(tracing::Level::INFO, || {
        let rt = Runtime::<GreeterPlugin>::new().unwrap();
        // A load instantiates once and runs init once; that instance is
        // the first one handed out, so `_a` runs no init of its own.
        let plugin = rt.load(guest("hello-v2")).unwrap();
        let _a = plugin.instantiate().unwrap();
        let _b = plugin.instantiate().unwrap();
        // A guest panic prints its message on stderr before it traps.
        let err = rt.load(guest("broken-init-trap")).unwrap_err();
        assert!(matches!(err, Error::Init { .. }), "{err:?}");
    });

    let inits: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("init hello@2.0.0"))
        .collect();
    assert_eq!(
        inits.len(),
        2,
        "one init at load (whose instance is `_a`) and one for `_b`:\n{logs}"
    );
    for line in inits {
        assert!(
            line.contains("plugin=\"hello@2.0.0\""),
            "untagged log line: {line}"
        );
    }

    let panic_line = logs
        .lines()
        .find(|l| l.contains("init exploded"))
        .unwrap_or_else(|| panic!("the guest's stderr is not in the log:\n{logs}"));
    assert!(
        panic_line.contains("plugin=\"broken-init@1.0.0\""),
        "{panic_line}"
    );
    assert!(panic_line.contains("stream=\"stderr\""), "{panic_line}");
}
