//! The Extism side of the Extism comparison bench: the reference greeter's
//! `count` and `welcome`, as an Extism plugin (extism-pdk, a core module
//! for `wasm32-unknown-unknown`).
//!
//! - `count`: no input; adds one to this plugin's counter and returns it as
//!   4 little-endian bytes (extism's encoding of a `u32`). Extism has no
//!   call without an input/output buffer, so this is its nearest trivial
//!   call to wasmplug's `count: func() -> u32`.
//! - `welcome`: a UTF-8 name in, `"Welcome, {name}!"` out, like hello v1.

use std::sync::atomic::{AtomicU32, Ordering};

use extism_pdk::{plugin_fn, FnResult};

/// This instance's counter: every instance has its own linear memory.
static COUNTER: AtomicU32 = AtomicU32::new(0);

#[plugin_fn]
pub fn count() -> FnResult<u32> {
    Ok(COUNTER.fetch_add(1, Ordering::Relaxed) + 1)
}

#[plugin_fn]
pub fn welcome(name: String) -> FnResult<String> {
    Ok(format!("Welcome, {name}!"))
}
