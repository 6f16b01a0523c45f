//! How new bytes from a source (a watched file, a followed OCI tag) become
//! the serving version: the same steps for every source, so each has every
//! safety of the others.
//!
//! 1. [`prepare`]: if the bytes would widen the reach of the version serving
//!    from the same source and the guard holds widenings, they are
//!    compiled (to read their imports) but never instantiated, and come back
//!    as a [`Held`] version; otherwise they are loaded (compiled,
//!    instantiated, `init` run) — nothing serving is touched yet.
//! 2. [`commit`]: a held version is handed to the registry to wait for
//!    approval; a loaded one is activated under the guard (a rollout may
//!    hold or trial it), and what came from the same source before is
//!    unloaded.

use crate::reach::Reach;
use crate::registry::{Activation, Guard, HeldInfo};
use crate::rollout::Held;
use crate::{identity::ContentHash, Error, Plugin, Policy, Registry, Runtime, Source, World};

/// What [`prepare`] made of new bytes.
pub(crate) enum Prepared<W: World> {
    /// Loaded (or why not).
    Loaded(Result<Plugin<W>, Error>),
    /// Reaching further than the version it would replace: compiled, not
    /// loaded, to hold until approved.
    Held(Box<Held<W>>),
}

/// What [`commit`] did.
pub(crate) enum Admitted {
    /// Held, by the guard or by the registry: nothing replaced.
    Held,
    /// Activated (serving, or on trial).
    Activated,
}

/// Load `bytes` from `source` with `policy`, unless they widen its reach
/// and `guard` holds widenings.
pub(crate) fn prepare<W: World>(
    runtime: &Runtime<W>,
    registry: &Registry<W>,
    guard: &Guard,
    bytes: Vec<u8>,
    hash: ContentHash,
    source: &Source,
    policy: Policy,
) -> Prepared<W> {
    match widening(runtime, registry, guard, bytes, hash, source, policy) {
        Ok(held) => Prepared::Held(Box::new(held)),
        Err(NotHeld {
            bytes,
            policy,
            compiled,
        }) => {
            // `compiled`, if the check compiled the bytes, is held until the
            // load has found it: the runtime's table keeps only a weak
            // reference, and dropping it first made every swap from a
            // source compile twice (8 s more for a 12 MB component).
            let loaded = runtime.load_hashed(&bytes, hash, source.clone(), policy);
            drop(compiled);
            Prepared::Loaded(loaded)
        }
    }
}

/// Act on what [`prepare`] made: hold it, or activate it and unload what
/// came from `source` before.
///
/// # Errors
/// The load's or the activation's error; what served keeps serving.
pub(crate) fn commit<W: World>(
    registry: &Registry<W>,
    guard: &Guard,
    source: &Source,
    prepared: Prepared<W>,
) -> Result<Admitted, Error> {
    let plugin = match prepared {
        Prepared::Held(held) => {
            registry.hold(*held);
            return Ok(Admitted::Held);
        }
        Prepared::Loaded(loaded) => loaded?,
    };
    match registry.activate_guarded(plugin.clone(), guard)? {
        // Held by the registry (it reaches further than the current
        // version of its name): nothing replaced, nothing to remove.
        Activation::Held { .. } => Ok(Admitted::Held),
        _ => {
            registry.remove_source_except(source, plugin.identity());
            Ok(Admitted::Activated)
        }
    }
}

/// What [`widening`] gives back when nothing is held: what to load, and
/// the code it compiled to read the imports, if it did.
struct NotHeld<W: World> {
    bytes: Vec<u8>,
    policy: Policy,
    compiled: Option<std::sync::Arc<crate::runtime::Compiled<W>>>,
}

/// Whether the new content of `source` reaches further than the version
/// loaded from it, and the guard holds widenings: then it is compiled (to
/// read its imports) but not instantiated, and comes back as a [`Held`]
/// version to load on approval. Otherwise the bytes and policy come back to
/// be loaded now.
#[allow(clippy::result_large_err)] // a `Policy`, moved once per load
fn widening<W: World>(
    runtime: &Runtime<W>,
    registry: &Registry<W>,
    guard: &Guard,
    bytes: Vec<u8>,
    hash: ContentHash,
    source: &Source,
    policy: Policy,
) -> Result<Held<W>, NotHeld<W>> {
    let not_held = |bytes, policy, compiled| NotHeld {
        bytes,
        policy,
        compiled,
    };
    if guard.widening {
        return Err(not_held(bytes, policy, None));
    }
    let Some((name, serving, reach)) = registry.reach_from(source) else {
        return Err(not_held(bytes, policy, None));
    };
    // A component that does not compile is refused by the load, which
    // reports and counts it as any refused load.
    let Ok(compiled) = runtime.compile(&bytes, hash) else {
        return Err(not_held(bytes, policy, None));
    };
    let imports = compiled.imports(runtime.engine());
    let widening = reach.widening_to(&Reach::new(imports, &policy));
    if widening.is_empty() {
        return Err(not_held(bytes, policy, Some(compiled)));
    }
    let runtime = runtime.clone();
    let from = source.clone();
    Ok(Held {
        info: HeldInfo {
            name,
            serving,
            candidate: None,
            source: source.clone(),
            content_hash: hash,
            widening,
            since: std::time::SystemTime::now(),
        },
        guard: Guard {
            widening: true,
            ..guard.clone()
        },
        // Compiled, kept so (the code cache holds it only while used), and
        // loaded when approved.
        pending: Box::new(move || {
            let _compiled = compiled;
            runtime.load_hashed(&bytes, hash, from, policy)
        }),
        replaces_source: true,
    })
}
