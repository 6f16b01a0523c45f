//! Load arbitrary bytes as a plugin: every input must give `Ok` or `Err`,
//! never a panic or a crash. Seed the corpus with the real guest components
//! (ARCHITECTURE.md, "Fuzzing").

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wasmplug::{Dynamic, Policy, Runtime};

fn runtime() -> &'static Runtime<Dynamic> {
    static RUNTIME: OnceLock<Runtime<Dynamic>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let policy = Policy::default()
            .deadline(Duration::from_millis(500))
            .memory_limit(64 << 20)
            .output_limit(4096);
        Runtime::builder().policy(policy).build().expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = runtime().load_bytes("fuzz-input", data);
});
