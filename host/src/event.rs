//! Lifecycle events: what the registry and the watcher report, to
//! [`Registry::subscribe`](crate::Registry::subscribe)rs and to `tracing`.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::reach::Widening;
use crate::{Identity, Source};

/// Something that happened to a plugin, as the registry and the watcher
/// report it (to [`Registry::subscribe`](crate::Registry::subscribe)rs and to `tracing`).
#[derive(Debug, Clone)]
pub enum Event {
    /// A version was loaded and became reachable.
    Loaded {
        /// Who.
        identity: Identity,
        /// From where.
        source: Source,
    },
    /// The current version of a name changed.
    Swapped {
        /// The version that served until now.
        from: Identity,
        /// The version that serves from now on.
        to: Identity,
        /// Whether the serving instance's state was handed over.
        state_carried: bool,
    },
    /// A file could not be loaded or swapped in; whatever served before
    /// keeps serving.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why, as the error the load or the swap returned.
        error: Arc<Error>,
    },
    /// A version was removed. Its memory is freed once its in-flight calls
    /// and held instances are gone.
    Unloaded {
        /// Who.
        identity: Identity,
        /// From where.
        source: Source,
    },
    /// The watched directory was deleted or moved away. What was loaded
    /// from it is unloaded (an [`Event::Unloaded`] each); the watcher looks
    /// for the directory to come back.
    DirectoryLost {
        /// The directory.
        path: PathBuf,
    },
    /// The watched directory is back and watched again; what is in it is
    /// loaded as new files.
    DirectoryBack {
        /// The directory.
        path: PathBuf,
    },
    /// A new version reaches further than the one serving its name (new
    /// imports, wider grants): it is held, not swapped in, until
    /// [`Registry::approve`](crate::Registry::approve) or
    /// [`refuse`](crate::Registry::refuse). The serving version goes on
    /// serving.
    Held {
        /// The name it would serve.
        name: String,
        /// The version serving it.
        serving: Identity,
        /// Where the held version came from.
        source: Source,
        /// What it would add.
        widening: Widening,
    },
    /// A held version was approved and activated (a [`Event::Swapped`]
    /// follows or came before it, as for any activation).
    Approved {
        /// Who.
        identity: Identity,
        /// What the approval granted.
        widening: Widening,
    },
    /// A held version was refused and dropped; the same content from the
    /// same source is not loaded again.
    Refused {
        /// The name it would have served.
        name: String,
        /// Where it came from.
        source: Source,
        /// What it would have added.
        widening: Widening,
    },
    /// A new version went on trial beside the serving one (a canary or a
    /// shadow rollout): the serving version stays current meanwhile.
    TrialStarted {
        /// The version serving.
        serving: Identity,
        /// The version on trial.
        candidate: Identity,
        /// How: `canary 10%`, `shadow`.
        how: String,
    },
    /// A version on trial passed it and is now current (an
    /// [`Event::Swapped`] comes with it).
    Promoted {
        /// The version it replaced.
        from: Identity,
        /// The version now current.
        to: Identity,
        /// The figures that decided it.
        figures: String,
    },
    /// A mirrored call's answer from the version on trial differed from
    /// the serving version's (which is the one the caller got). Only the
    /// first few of a trial are reported.
    Mismatch {
        /// The version that answered.
        serving: Identity,
        /// The version on trial.
        candidate: Identity,
        /// The serving version's answer.
        expected: String,
        /// The candidate's.
        got: String,
    },
    /// An artefact was pulled from an OCI registry by an
    /// [`oci::Follower`](crate::oci::Follower), its signature accepted; it
    /// is loaded next (a [`Event::Loaded`], [`Event::Swapped`] or
    /// [`Event::Held`] follows, or a [`Event::PullFailed`] if the load is
    /// refused).
    Pulled {
        /// The reference followed.
        reference: String,
        /// The artefact's manifest digest.
        digest: String,
        /// The fingerprint of the key whose signature was accepted (`None`
        /// when signatures are not checked).
        signed_by: Option<String>,
    },
    /// Following an OCI reference failed: the registry could not be
    /// reached or answered garbage, or the artefact was refused (its
    /// signature, its layout, its bytes, its load). What serves keeps
    /// serving.
    PullFailed {
        /// The reference followed.
        reference: String,
        /// The digest it pointed to, when that much was learnt.
        digest: Option<String>,
        /// Why; [`Error::Oci`] with `refused` set, or the load's error.
        error: Arc<Error>,
        /// When the follower tries again; `None` for a refused artefact,
        /// which is not pulled again until the reference points elsewhere.
        retry_in: Option<std::time::Duration>,
    },
    /// The current version was rolled back to the one it replaced, kept
    /// warm since the swap. The rolled-back version is unloaded, and the
    /// same content from the same source is not loaded again.
    RolledBack {
        /// The version that served until now.
        from: Identity,
        /// The version that serves again.
        to: Identity,
        /// Why: on demand, or the figures that decided it.
        reason: String,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Loaded { identity, source } => write!(f, "loaded {identity} from {source}"),
            Event::Swapped {
                from,
                to,
                state_carried,
            } => {
                let state = if *state_carried {
                    " (state carried over)"
                } else {
                    ""
                };
                write!(f, "swapped {from} -> {to}{state}")
            }
            Event::Failed { path, error } => write!(f, "failed {}: {error}", path.display()),
            Event::Unloaded { identity, source } => write!(f, "unloaded {identity} ({source})"),
            Event::DirectoryLost { path } => write!(
                f,
                "lost the watched directory {}: waiting for it to come back",
                path.display()
            ),
            Event::DirectoryBack { path } => {
                write!(f, "watching {} again", path.display())
            }
            Event::Held {
                name,
                serving,
                source,
                widening,
            } => write!(
                f,
                "held {source} for `{name}`: it reaches further than {serving} ({widening}); \
                 {serving} keeps serving until it is approved or refused"
            ),
            Event::Approved { identity, widening } => {
                write!(f, "approved {identity}, which adds: {widening}")
            }
            Event::Refused {
                name,
                source,
                widening,
            } => write!(
                f,
                "refused {source} for `{name}` (it would add: {widening})"
            ),
            Event::RolledBack { from, to, reason } => {
                write!(f, "rolled back {from} -> {to}: {reason}")
            }
            Event::TrialStarted {
                serving,
                candidate,
                how,
            } => write!(f, "trying {candidate} beside {serving} ({how})"),
            Event::Promoted { from, to, figures } => {
                write!(f, "promoted {to} over {from}: {figures}")
            }
            Event::Mismatch {
                serving,
                candidate,
                expected,
                got,
            } => write!(
                f,
                "mismatch: {candidate} answered {got} where {serving} answered {expected}"
            ),
            Event::Pulled {
                reference,
                digest,
                signed_by,
            } => {
                let by = match signed_by {
                    Some(key) => format!("signed by {key}"),
                    None => "signature not checked".to_string(),
                };
                write!(f, "pulled {reference} ({digest}, {by})")
            }
            Event::PullFailed {
                reference,
                digest,
                error,
                retry_in,
            } => {
                let at = digest
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                match retry_in {
                    Some(wait) => write!(
                        f,
                        "following {reference}{at} failed, retrying in {wait:.1?}: {error}"
                    ),
                    None => write!(
                        f,
                        "refused {reference}{at}, not pulled again until the reference moves: {error}"
                    ),
                }
            }
        }
    }
}

/// The subscribers of one registry. A channel holds up to
/// [`Subscribers::CAPACITY`] unread events; past that, new events are dropped
/// for that subscriber (and still logged), so a subscriber that does not read
/// never grows memory.
#[derive(Default)]
pub(crate) struct Subscribers {
    senders: Mutex<Vec<SyncSender<Event>>>,
}

impl Subscribers {
    /// How many unread events one subscriber's channel holds.
    pub(crate) const CAPACITY: usize = 1024;

    /// A new subscriber's channel.
    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = std::sync::mpsc::sync_channel(Self::CAPACITY);
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Log `event` and send it to every subscriber still listening.
    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::Failed { .. }
            | Event::PullFailed { .. }
            | Event::DirectoryLost { .. }
            | Event::Held { .. }
            | Event::Mismatch { .. }
            | Event::RolledBack { .. } => {
                tracing::warn!(target: "wasmplug::registry", "{event}")
            }
            _ => tracing::info!(target: "wasmplug::registry", "{event}"),
        }
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(target: "wasmplug::registry", "a subscriber is not reading: event dropped");
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}
