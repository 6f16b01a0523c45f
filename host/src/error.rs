//! One error type for everything a plugin can do wrong.
//!
//! A caller must be able to tell, without parsing strings:
//!
//! * [`Error::Load`]: the plugin was **refused at load** (unreadable file, not
//!   a component, compile error, imports or exports that do not match the
//!   world, an identity that does not parse). Nothing was instantiated.
//! * [`Error::Init`]: the plugin loaded but its `init` said no or crashed;
//!   the instance was discarded.
//! * [`Error::Guest`]: **the plugin said no**: a WIT `result` error returned
//!   by the guest. The instance is healthy and may be called again.
//! * [`Error::Trap`]: **the plugin crashed** (a trap, a deadline, a memory
//!   cap). The instance is discarded: later calls on it are refused.
//! * [`Error::BadCall`]: the call itself was wrong (no such export, wrong
//!   argument types on the dynamic path). Nothing ran; the instance is fine.
//!   One exception, for [`Instance::call_wave`](crate::Instance::call_wave)
//!   only: a result WAVE cannot write (a resource, say). The guest ran; its
//!   result was dropped (resources handed back to the guest), and the
//!   instance is still fine. An answer that breaks the canonical ABI (a
//!   string out of bounds, invalid UTF-8) is the guest's fault: `Trap`.
//! * [`Error::Unsupported`]: the plugin was built against an older version
//!   of the world, without the function called. Nothing ran; the instance
//!   is fine (see [`versioned`](crate::versioned)).
//! * [`Error::NotLoaded`]: a registry has no version of that name (or none
//!   matching the requirement).
//! * [`Error::Instantiate`]: the host could not create an instance (an
//!   instance pool exhausted, a resource limit at start-up).
//! * [`Error::Overloaded`]: every instance of the version stayed busy for as
//!   long as a caller may wait ([`Registry::with_max_wait`]). Nothing ran;
//!   an HTTP service answers 503.
//!
//! * [`Error::Rollout`]: a rollout command found nothing to act on (no
//!   version held under that name to approve or refuse, no previous
//!   version kept to roll back to). Nothing changed.
//!
//! [`Registry::with_max_wait`]: crate::Registry::with_max_wait
//!
//! Every variant names the plugin — `name@version` once its identity is known,
//! otherwise the file stem — and where it came from.

use std::fmt;
use std::sync::Arc;

use crate::policy::LimitHit;

pub use crate::deadline::DeadlineExceeded;

/// Which plugin an [`Error`] is about: its name, its version when known, and
/// its source (a file path, or a label for bytes loaded from memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRef {
    /// The plugin's name, or the file stem while its identity is not known.
    pub name: Arc<str>,
    /// The plugin's version, once its identity is known.
    pub version: Option<semver::Version>,
    /// Where the plugin came from.
    pub source: Arc<str>,
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "plugin `{}@{v}` ({})", self.name, self.source),
            None => write!(f, "plugin `{}` ({})", self.name, self.source),
        }
    }
}

/// The error of every fallible wasmplug operation. See the module docs for
/// what each variant means to a caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Refused at load; nothing was instantiated and nothing replaced.
    #[error("{plugin} was refused at load: {cause:#}")]
    Load {
        /// The plugin refused.
        plugin: PluginRef,
        /// What was wrong, with the expected and the found item where a type
        /// did not match.
        cause: anyhow::Error,
    },
    /// `init` returned an error or trapped.
    #[error("{plugin} failed to initialise: {cause:#}")]
    Init {
        /// The plugin whose instance failed.
        plugin: PluginRef,
        /// The guest's message, or the trap.
        cause: anyhow::Error,
    },
    /// The guest returned an error value: "the plugin said no".
    #[error("{plugin} returned an error: {message}")]
    Guest {
        /// The plugin that answered.
        plugin: PluginRef,
        /// The guest's own error, rendered as text.
        message: String,
    },
    /// The guest trapped, ran past its deadline or hit a resource cap.
    #[error("{plugin} trapped{}: {cause:#}", trap_note(trap.as_ref(), limit.as_ref()))]
    Trap {
        /// The plugin whose instance crashed.
        plugin: PluginRef,
        /// The trap code, when wasmtime reported one.
        trap: Option<wasmtime::Trap>,
        /// The resource limit the guest ran into just before, if any.
        limit: Option<LimitHit>,
        /// The full error, with the guest's wasm backtrace.
        cause: anyhow::Error,
    },
    /// The call was malformed: an unknown export or arguments of the wrong
    /// type. The guest never ran. (Or, from
    /// [`Instance::call_wave`](crate::Instance::call_wave), its result cannot
    /// be written as WAVE: see the module docs.) The instance is healthy.
    #[error("{plugin}: {message}")]
    BadCall {
        /// The plugin that was called.
        plugin: PluginRef,
        /// What was wrong with the call.
        message: String,
    },
    /// The plugin's world version does not have the function called: it was
    /// built against an older version of the world
    /// ([`versioned`](crate::versioned)). The guest never ran; the instance
    /// is healthy.
    #[error("{plugin} cannot answer: {call}")]
    Unsupported {
        /// The plugin that was called.
        plugin: PluginRef,
        /// The function, the plugin's world version and the version that
        /// added the function.
        call: Box<Unsupported>,
    },
    /// The version's instance keeps crashing: the registry waits before
    /// restarting it again.
    #[error(
        "{plugin} is backing off after {failures} failures in a row; next restart in {retry_in:?}"
    )]
    Unavailable {
        /// The crashing version.
        plugin: PluginRef,
        /// Failures in a row so far.
        failures: u32,
        /// How long until the next restart is tried.
        retry_in: std::time::Duration,
    },
    /// The registry has no loaded version that matches.
    #[error("no plugin `{name}`{} is loaded", requirement.as_ref().map(|r| format!(" matching `{r}`")).unwrap_or_default())]
    NotLoaded {
        /// The name asked for.
        name: String,
        /// The semver requirement asked for, if any.
        requirement: Option<String>,
    },
    /// A new version was loaded but not swapped in: the serving version's
    /// state could not be handed over. The old version keeps serving.
    #[error("{plugin} was not swapped in: {cause:#}")]
    Handoff {
        /// The version that was refused.
        plugin: PluginRef,
        /// The guest's refusal, or the trap.
        cause: anyhow::Error,
    },
    /// Every instance of the version stayed busy for as long as a caller may
    /// wait for one: the call was not made. Back off and retry, or shed load
    /// (an HTTP service answers 503).
    #[error("{plugin} is overloaded: all {instances} instance(s) stayed busy for {waited:?}")]
    Overloaded {
        /// The version that was called.
        plugin: PluginRef,
        /// How many instances serve it at once (the pool size).
        instances: usize,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// A rollout command ([`Registry::approve`](crate::Registry::approve),
    /// [`refuse`](crate::Registry::refuse),
    /// [`rollback`](crate::Registry::rollback)) found nothing to act on.
    /// Nothing changed.
    #[error("`{name}`: {message}")]
    Rollout {
        /// The name it was asked about.
        name: String,
        /// What was missing.
        message: String,
    },
    /// An OCI registry could not be reached or answered garbage, or an
    /// artefact was refused (its layout, its signature, its bytes). Nothing
    /// was loaded; what served keeps serving.
    #[error("{reference}{}: {cause:#}", digest.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Oci {
        /// The reference, as given.
        reference: String,
        /// The artefact's manifest digest, when it was learnt.
        digest: Option<String>,
        /// Whether the artefact itself was refused (not worth trying
        /// again), rather than the registry failing for now.
        refused: bool,
        /// Why.
        cause: anyhow::Error,
    },
    /// The host could not create an instance.
    #[error("{plugin} could not be instantiated: {cause:#}")]
    Instantiate {
        /// The plugin.
        plugin: PluginRef,
        /// Why (pool exhausted, a start function trapped, a limit).
        cause: anyhow::Error,
    },
}

/// A call the plugin's world version does not have, refused before the guest
/// ran. `Instance::call` turns it into
/// [`Error::Unsupported`]; the instance stays
/// healthy.
#[derive(Clone)]
pub struct Unsupported {
    /// The function, as `interface.function` in WIT names.
    pub function: String,
    /// The world version the plugin is bound to (`1.0.0`).
    pub world_version: &'static str,
    /// The version that added the function, when declared.
    pub since: Option<&'static str>,
    /// Where the bindings that refused live: an instance only accepts its
    /// own bindings' refusal as "the guest never ran" (an `Unsupported`
    /// from another plugin, propagated through this guest's host import,
    /// is a trap like any other).
    pub(crate) origin: usize,
}

// By hand: `origin` is an address, for no log to print.
impl fmt::Debug for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsupported")
            .field("function", &self.function)
            .field("world_version", &self.world_version)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "it is served as world version {}, which has no `{}`",
            self.world_version, self.function
        )?;
        if let Some(since) = self.since {
            write!(f, " (new in {since})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unsupported {}

impl Unsupported {
    /// True when `self` came from bindings stored in `bindings`.
    pub(crate) fn came_from<W>(&self, bindings: &W) -> bool {
        let base = bindings as *const W as usize;
        (base..base + std::mem::size_of::<W>().max(1)).contains(&self.origin)
    }
}

/// What a trap means, when wasmplug knows better than the trap code.
fn trap_note(trap: Option<&wasmtime::Trap>, limit: Option<&LimitHit>) -> String {
    match (trap, limit) {
        (_, Some(limit)) => format!(" after hitting {limit}"),
        (Some(wasmtime::Trap::Interrupt), None) => " (its deadline passed)".into(),
        _ => String::new(),
    }
}

impl Error {
    /// The plugin the error is about; `None` for [`Error::NotLoaded`],
    /// [`Error::Rollout`] and [`Error::Oci`].
    pub fn plugin(&self) -> Option<&PluginRef> {
        match self {
            Error::Load { plugin, .. }
            | Error::Init { plugin, .. }
            | Error::Guest { plugin, .. }
            | Error::Trap { plugin, .. }
            | Error::BadCall { plugin, .. }
            | Error::Unsupported { plugin, .. }
            | Error::Handoff { plugin, .. }
            | Error::Unavailable { plugin, .. }
            | Error::Overloaded { plugin, .. }
            | Error::Instantiate { plugin, .. } => Some(plugin),
            Error::NotLoaded { .. } | Error::Rollout { .. } | Error::Oci { .. } => None,
        }
    }

    /// A short, stable name for what went wrong, for metrics labels and
    /// logs: `load`, `init`, `guest`, `trap`, `timeout` (a trap at the
    /// deadline), `limit` (a trap at a resource cap or out of fuel),
    /// `bad_call`, `unsupported`, `unavailable`, `not_loaded`, `handoff`, `overloaded`,
    /// `instantiate`, `rollout`, `oci` (a registry unreachable or answering
    /// garbage), `oci_refused` (an artefact refused).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Load { .. } => "load",
            Error::Init { .. } => "init",
            Error::Guest { .. } => "guest",
            _ if self.is_timeout() => "timeout",
            Error::Trap { limit: Some(_), .. } => "limit",
            _ if self.is_out_of_fuel() => "limit",
            Error::Trap { .. } => "trap",
            Error::BadCall { .. } => "bad_call",
            Error::Unsupported { .. } => "unsupported",
            Error::Unavailable { .. } => "unavailable",
            Error::NotLoaded { .. } => "not_loaded",
            Error::Handoff { .. } => "handoff",
            Error::Overloaded { .. } => "overloaded",
            Error::Instantiate { .. } => "instantiate",
            Error::Rollout { .. } => "rollout",
            Error::Oci { refused: true, .. } => "oci_refused",
            Error::Oci { .. } => "oci",
        }
    }

    /// True when the guest trapped (including deadlines and resource caps).
    pub fn is_trap(&self) -> bool {
        matches!(self, Error::Trap { .. })
    }

    /// True when the plugin's world version lacks the function called
    /// ([`Error::Unsupported`]).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    /// True when the call was refused because every instance stayed busy
    /// ([`Error::Overloaded`]).
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded { .. })
    }

    /// True when the call ran past its deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Trap {
                trap: Some(wasmtime::Trap::Interrupt),
                ..
            }
        )
    }

    /// The resource limit behind a trap, if one was hit.
    pub fn limit(&self) -> Option<&LimitHit> {
        match self {
            Error::Trap { limit, .. } => limit.as_ref(),
            _ => None,
        }
    }

    /// True when the call ran out of fuel.
    pub fn is_out_of_fuel(&self) -> bool {
        matches!(
            self,
            Error::Trap {
                trap: Some(wasmtime::Trap::OutOfFuel),
                ..
            }
        )
    }

    /// Classify an error wasmtime returned from a call into the guest.
    pub(crate) fn from_call(
        plugin: PluginRef,
        err: wasmtime::Error,
        limit: Option<LimitHit>,
    ) -> Self {
        let trap = match err.downcast_ref::<crate::error::DeadlineExceeded>() {
            // Blocked in a host call past the deadline: the same outcome as
            // an epoch interrupt in wasm code.
            Some(_) => Some(wasmtime::Trap::Interrupt),
            None => err.downcast_ref::<wasmtime::Trap>().copied(),
        };
        Error::Trap {
            plugin,
            trap,
            limit,
            cause: err.into(),
        }
    }
}

/// `Result` with wasmplug's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
