//! A handle: how an embedder calls a plugin by name through a
//! [`Registry`](crate::Registry). It resolves the version on every call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pool::{Health, Live};
use crate::slot::{pick_live, Slot};
use crate::{Instance, Plugin, World};

/// A way to call a plugin by name through a [`Registry`]. Resolves on every
/// call: the current version, or the highest matching its requirement.
pub struct Handle<W: World> {
    pub(crate) slot: Arc<Slot<W>>,
    pub(crate) requirement: Option<semver::VersionReq>,
}

impl<W: World> Clone for Handle<W> {
    fn clone(&self) -> Self {
        Handle {
            slot: self.slot.clone(),
            requirement: self.requirement.clone(),
        }
    }
}

impl<W: World> Handle<W> {
    fn not_loaded(&self) -> Error {
        Error::NotLoaded {
            name: self.slot.name.clone(),
            requirement: self.requirement.as_ref().map(ToString::to_string),
        }
    }

    pub(crate) fn resolve(&self) -> Result<Arc<Live<W>>> {
        let live = match &self.requirement {
            None => self.slot.current.load_full(),
            Some(req) => {
                let state = self.slot.lock();
                pick_live(&state.versions, None, Some(req))
            }
        };
        live.ok_or_else(|| self.not_loaded())
    }

    /// Whether `live` stopped being the version this handle resolves to.
    fn moved(&self, live: &Arc<Live<W>>) -> bool {
        match &self.requirement {
            // Marked before the pointer moves (`Slot::set_current`): one
            // atomic load instead of a second arc-swap load.
            None => live.superseded.load(Ordering::Acquire),
            Some(_) => live.retired.load(Ordering::Acquire),
        }
    }

    /// Run `f` on an instance of the resolved version. The call runs wholly
    /// on that version. With the default pool of one instance, calls on one
    /// version are serialised and its state lives across calls; with
    /// [`Registry::with_pool_size`], up to that many run at once, each on an
    /// instance of its own. After a trap, the crashed instance is dropped
    /// and the next call gets a fresh one (with `init`).
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when no version resolves; [`Error::Unavailable`]
    /// while a crashing version backs off; [`Error::Instantiate`] or
    /// [`Error::Init`] when a replacement instance cannot be made; otherwise
    /// whatever `f` returns.
    pub fn call<R>(&self, f: impl FnOnce(&mut Instance<W>) -> Result<R>) -> Result<R> {
        loop {
            // The current version through an arc-swap guard: no reference
            // count is touched, so concurrent callers share no cache line
            // here. A requirement resolves under the slot lock instead.
            let (guard, owned);
            let live: &Arc<Live<W>> = match &self.requirement {
                None => {
                    guard = self.slot.current.load();
                    guard.as_ref().ok_or_else(|| self.not_loaded())?
                }
                Some(_) => {
                    owned = self.resolve()?;
                    &owned
                }
            };
            let mut lease = live.checkout()?;
            // Swapped out or removed while we waited: follow the pointer.
            if self.moved(live) {
                continue;
            }
            let instance = lease.instance();
            let result = f(instance);
            if instance.is_poisoned() {
                let mut health = live.health();
                health.traps += 1;
                health.failed();
                live.failing.store(true, Ordering::Relaxed);
            } else if live.failing.load(Ordering::Relaxed) {
                let mut health = live.health();
                health.consecutive_failures = 0;
                live.failing.store(false, Ordering::Relaxed);
            }
            return result;
        }
    }

    /// How the resolved version's serving instance has fared.
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when no version resolves.
    pub fn health(&self) -> Result<Health> {
        Ok(self.resolve()?.health().clone())
    }

    /// The version the next call would go to.
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when no version resolves.
    pub fn plugin(&self) -> Result<Plugin<W>> {
        Ok(self.resolve()?.plugin.clone())
    }

    /// A new instance of the resolved version, for the embedder to hold. It
    /// keeps that version until dropped, whatever swaps happen meanwhile.
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when no version resolves; [`Error::Instantiate`] or
    /// [`Error::Init`] as [`Plugin::instantiate`].
    pub fn instantiate(&self) -> Result<Instance<W>> {
        self.resolve()?.plugin.instantiate()
    }
}
