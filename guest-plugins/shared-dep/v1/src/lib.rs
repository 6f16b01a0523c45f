//! `shared-dep` 1.0.0: a library two plugins depend on, in two incompatible
//! versions (see `../v2`). It holds a global that looks process-wide. With Go
//! plugins such a package loads once, its globals are shared by every
//! plugin, and a plugin built against another version is refused (pitfall 4).
//! In wasmplug each component carries its own copy, in its own memory.

use std::sync::atomic::{AtomicU32, Ordering};

/// This crate's version, reported in the greetings of `uses-shared-v1`.
pub const VERSION: &str = "1.0.0";

/// A global counter: global to the component that links this crate, and
/// to each instance of that component on its own.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Add one to the global counter and return the new value.
pub fn bump() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}
