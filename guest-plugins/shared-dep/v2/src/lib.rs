//! `shared-dep` 2.0.0: the second, incompatible version of the library in
//! `../v1` (`bump` now takes a step). `uses-shared-v2` depends on it while
//! `uses-shared-v1` depends on 1.0.0, and the two plugins run side by side,
//! each with its own copy of the global below (the seed's pitfall 4).

use std::sync::atomic::{AtomicU32, Ordering};

/// This crate's version, reported in the greetings of `uses-shared-v2`.
pub const VERSION: &str = "2.0.0";

/// A global counter: global to the component that links this crate, and
/// to each instance of that component on its own.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Add `step` to the global counter and return the new value. (1.0.0's
/// `bump()` took no argument: the two APIs are not compatible.)
pub fn bump(step: u32) -> u32 {
    COUNTER.fetch_add(step, Ordering::Relaxed) + step
}
