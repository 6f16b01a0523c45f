//! # wasmplug
//!
//! WebAssembly component plugins for Rust services: each plugin instance in
//! its own wasmtime `Store`, so repeated and versioned loads never collide;
//! unloading is dropping, so nothing leaks; and typed calls generated from the
//! service's own WIT world.
//!
//! The concepts, in lifecycle order:
//!
//! * [`Runtime`] — the engine and linker, configured once, for one
//!   [`World`].
//! * [`Plugin`] — one loaded version of a component: compiled, linked,
//!   type-checked at load, identified (name@version). Cheap to clone.
//! * [`Instance`] — one live, isolated copy of a plugin. Drop it to unload.
//! * [`Dynamic`] — a world for hosts that learn a plugin's interface at run
//!   time: calls by export name with values, or in WAVE text.
//! * [`Registry`] — plugins by name, versions side by side, an atomic
//!   current-version pointer per name, state handoff across swaps.
//! * [`Watcher`] — a directory of component files kept in sync with a
//!   registry: hot swap for operators.
//! * [`Policy`] — what a plugin may do and use (deny by default).
//! * [`Error`] — refused at load, init failed, the guest said no, the guest
//!   crashed: told apart without parsing strings.
//!
//! ```no_run
//! use wasmplug::reference::{GreeterPlugin, User};
//!
//! # fn main() -> anyhow::Result<()> {
//! let runtime = wasmplug::Runtime::<GreeterPlugin>::new()?;
//! let plugin = runtime.load("guest-plugins/dist/hello-v1.wasm")?;
//! let mut instance = plugin.instantiate()?; // a fresh Store; `init` has run
//! let who = User { name: "Gopher".into(), age: 13 };
//! println!("{}", instance.hello(&who)?);
//! drop(instance); // unloaded: store, memory and instance freed
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the path of load → instantiate → call → unload.

#![warn(missing_docs)]

mod cache;
mod deadline;
mod dynamic;
mod error;
mod handoff;
mod instance;
mod log;
mod manifest;
mod plugin;
mod policy;
pub mod reference;
mod registry;
mod runtime;
pub mod signature;
mod watcher;
mod world;

pub use cache::CacheStats;
pub use deadline::DeadlineExceeded;
pub use dynamic::Dynamic;
pub use error::{Error, PluginRef, Result};
pub use handoff::HANDOFF;
pub use instance::Instance;
pub use log::{emit as emit_guest_log, Level};
pub use manifest::{Allowance, Manifest, ManifestDir};
pub use plugin::{Identity, Plugin, Source};
pub use policy::{DirAccess, DirGrant, LimitHit, Output, Policy};
pub use registry::{
    Activation, Event, Guard, Handle, Health, Registry, VersionInfo, BACKOFF_FIRST, BACKOFF_MAX,
};
pub use runtime::{default_pooling, ContentHash, Runtime, RuntimeBuilder, DEFAULT_CACHE_BYTES};
pub use watcher::{WatchOptions, Watcher, DEFAULT_DEBOUNCE};
pub use world::{check_export, State, World};

/// Re-exported so embedders use the same wasmtime as wasmplug.
pub use wasmtime;

/// The README's code blocks, compiled as doctests so its example stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
