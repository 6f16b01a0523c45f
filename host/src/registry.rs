//! The registry: plugins by name, several versions side by side, and an
//! atomic current-version pointer per name.
//!
//! Each name has a slot. A slot holds every loaded version of that name
//! (side by side, resolvable by semver requirement) and a pointer to the
//! *current* one (`ArcSwapOption`): making a version current is one pointer
//! store. Every version in the registry serves calls through a pool of its
//! own instances, the first created (with `init`) before the version becomes
//! reachable. By default the pool holds one instance: calls on a version are
//! serialised and its state (its counter, its caches) lives across calls.
//! [`Registry::with_pool_size`] lets up to N calls run on a version at once,
//! each on its own instance, for stateless plugins under concurrent load.
//!
//! **A call runs wholly on one version.** [`Handle::call`] resolves the
//! version, checks an instance out of its pool and runs to completion on it.
//! With a pool of one, a swap waits for the call in flight on the old version
//! to finish, takes the old instance's state (if both versions export the
//! handoff interface), gives it to the new instance, stores the new pointer,
//! and only then lets the next caller in. With a larger pool the swap is the
//! pointer store alone, and calls in flight finish on the old version. A
//! caller that was queued on the old version sees the pointer has moved and
//! goes to the new one. The old version's memory is freed when
//! the last `Arc` to it (a call in flight, a held [`Instance`]) is dropped.
//!
//! **Crashes are contained.** A call that traps (a crash, a deadline, a
//! resource limit) returns [`Error::Trap`] and poisons its instance, which
//! is dropped; the next call gets a fresh one, with `init`. A version that keeps crashing
//! backs off: after the second failure in a row, restarts wait
//! [`BACKOFF_FIRST`](crate::registry::BACKOFF_FIRST), doubling up to
//! [`BACKOFF_MAX`](crate::registry::BACKOFF_MAX), and calls meanwhile get
//! [`Error::Unavailable`]. The counters are in [`Health`]. The pool is in
//! `pool.rs`, a name's versions and pointer in `slot.rs`, calls by name in
//! `handle.rs`.
//!
//! **Held instances keep their version.** An [`Instance`] an embedder got
//! from [`Handle::instantiate`] (or from a [`Plugin`]) belongs to that
//! version until it is dropped; a swap never touches it. A [`Handle`]
//! resolves afresh on every call, so it always reaches the current version
//! (or the highest version matching its requirement).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;

use crate::error::{Error, Result};
use crate::event::{Event, Subscribers};
use crate::pool::Live;
use crate::slot::{pick_live, Slot, SlotState};
use crate::telemetry;
use crate::{identity::ContentHash, Handle, Identity, Plugin, Source, World};

pub use crate::pool::{Health, BACKOFF_FIRST, BACKOFF_MAX};

/// How long a call waits for a busy version's instance, unless
/// [`Registry::with_max_wait`] says otherwise: the default call deadline, so
/// a caller never waits longer than one call may run.
pub const DEFAULT_MAX_WAIT: Duration = crate::policy::DEFAULT_DEADLINE;

/// Plugins by name. See the module docs. Cheap to clone (an `Arc`).
pub struct Registry<W: World> {
    slots: Arc<RwLock<HashMap<String, Arc<Slot<W>>>>>,
    subscribers: Arc<Subscribers>,
    pool_size: usize,
    max_wait: Option<Duration>,
}

impl<W: World> Clone for Registry<W> {
    fn clone(&self) -> Self {
        Registry {
            slots: self.slots.clone(),
            subscribers: self.subscribers.clone(),
            pool_size: self.pool_size,
            max_wait: self.max_wait,
        }
    }
}

impl<W: World> Default for Registry<W> {
    fn default() -> Self {
        Self::new()
    }
}

/// How [`Registry::activate`] placed a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// It is the first version of its name, now current.
    Installed,
    /// It replaced the current version.
    Swapped {
        /// The version it replaced.
        from: Identity,
        /// Whether the serving state was handed over.
        state_carried: bool,
    },
    /// The name is pinned to another version: added side by side only.
    Added,
}

/// Rules a new version must keep to be activated through
/// [`Registry::activate_guarded`], as the [`Watcher`](crate::Watcher) does.
/// The defaults ([`Guard::default`]) refuse both: a new file claiming a name
/// that another source serves, and a new version that drops exports the
/// serving version has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Let any source take over a name another source serves (and receive
    /// its handoff state). Off: a name belongs to the source that first
    /// claimed it, until that source's versions are all gone.
    pub shared_names: bool,
    /// Let a new version whose exports are a strict subset of the serving
    /// version's replace it (off: refused, as it would break callers of
    /// the missing exports; typically a truncated or wrong file).
    pub shrinking_exports: bool,
}

impl Guard {
    /// Everything allowed: what [`Registry::activate`] uses.
    pub fn trusting() -> Self {
        Guard {
            shared_names: true,
            shrinking_exports: true,
        }
    }

    fn check<W: World>(&self, state: &SlotState<W>, plugin: &Plugin<W>) -> Result<()> {
        let refuse = |cause: String| {
            Err(Error::Load {
                plugin: plugin.plugin_ref(),
                cause: anyhow::anyhow!(cause),
            })
        };
        if !self.shared_names {
            if let Some(owner) = state
                .versions
                .iter()
                .find(|l| l.plugin.source() != plugin.source())
            {
                return refuse(format!(
                    "the name `{}` belongs to {} (serving {}); {} claims it too, and was \
                     refused (allow it with shared names)",
                    plugin.identity().name,
                    owner.plugin.source(),
                    owner.plugin.identity(),
                    plugin.source(),
                ));
            }
        }
        if !self.shrinking_exports {
            let serving = state
                .versions
                .iter()
                .find(|l| l.plugin.source() == plugin.source());
            if let Some(serving) = serving {
                let old = serving.plugin.export_names();
                let new = plugin.export_names();
                let missing: Vec<&str> = old
                    .iter()
                    .filter(|name| !new.contains(name))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && new.iter().all(|name| old.contains(name)) {
                    return refuse(format!(
                        "it exports only part of what {} exports (missing: {}); refused \
                         so callers of those keep working (a truncated or wrong file?)",
                        serving.plugin.identity(),
                        missing.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One line of [`Registry::list`].
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// Name and version.
    pub identity: Identity,
    /// The file (or bytes label) it came from.
    pub source: Source,
    /// The SHA-256 of its bytes.
    pub content_hash: ContentHash,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Its live instances, counting those serving registry calls.
    pub live_instances: usize,
    /// Linear memory held by its live instances, in bytes.
    pub memory_bytes: usize,
    /// Whether it is the current version of its name.
    pub current: bool,
    /// Whether its name is pinned to it.
    pub pinned: bool,
    /// Traps, restarts and failures in a row of its serving instance.
    pub health: Health,
}

impl<W: World> Registry<W> {
    /// An empty registry whose versions each serve calls through one
    /// instance: calls on a version are serialised, its state lives across
    /// calls and is handed over on a swap.
    pub fn new() -> Self {
        Self::with_pool_size(1)
    }

    /// An empty registry whose versions each serve calls through a pool of
    /// up to `size` instances (at least 1), for concurrent callers of
    /// stateless plugins. Instances are created on demand, each with `init`,
    /// and kept for reuse until their version is unloaded; a caller waits
    /// when all `size` are busy. Each instance has its own state, so a swap
    /// between pooled versions carries no state (the handoff interface is
    /// used only with a pool of one). Keep `size` times the number of
    /// versions within the runtime's instance limits
    /// ([`default_pooling`](crate::runtime::default_pooling)).
    pub fn with_pool_size(size: usize) -> Self {
        Registry {
            slots: Arc::default(),
            subscribers: Arc::default(),
            pool_size: size.max(1),
            max_wait: Some(DEFAULT_MAX_WAIT),
        }
    }

    /// How long a call may wait for an instance of its version when all are
    /// busy (default [`DEFAULT_MAX_WAIT`]; `None`: for ever). Past it the
    /// call is not made and fails with
    /// [`Error::Overloaded`](crate::Error::Overloaded): the backpressure a
    /// service turns into 503s instead of a queue that grows without end.
    /// Applies to versions activated from now on.
    pub fn with_max_wait(mut self, wait: Option<Duration>) -> Self {
        self.max_wait = wait;
        self
    }

    /// Lifecycle events from now on. The channel holds up to 1,024 unread
    /// events; past that, new events are dropped for this subscriber (and
    /// still logged).
    pub fn subscribe(&self) -> Receiver<Event> {
        self.subscribers.subscribe()
    }

    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::Swapped { to, .. } => telemetry::swapped(&to.name),
            Event::Unloaded { identity, .. } => telemetry::unloaded(&identity.name),
            _ => {}
        }
        self.subscribers.emit(event);
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot<W>>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The slots as they are now; the registry lock is not held after.
    fn all_slots(&self) -> Vec<Arc<Slot<W>>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.values().cloned().collect()
    }

    fn slot_or_create(&self, name: &str) -> Arc<Slot<W>> {
        if let Some(slot) = self.slot(name) {
            return slot;
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    name: name.to_string(),
                    current: ArcSwapOption::empty(),
                    state: Mutex::new(SlotState {
                        versions: Vec::new(),
                        pinned: None,
                    }),
                })
            })
            .clone()
    }

    /// Add `plugin` and make it the current version of its name (unless the
    /// name is pinned to another version). An earlier version loaded from the
    /// same source is replaced. The serving instance is created and `init`
    /// run before anything can reach the new version; if the current version
    /// and the new one both export the handoff interface, the state is
    /// carried over, and a refused `restore` refuses the swap
    /// ([`Error::Handoff`]) with the old version still serving.
    ///
    /// This is the embedder's own, trusted call: a version from any source
    /// may take over a name. The [`Watcher`](crate::Watcher) activates
    /// through [`Guard`] checks instead (a name belongs to its source).
    ///
    /// # Errors
    /// [`Error::Init`] or [`Error::Instantiate`] when its first instance
    /// cannot be made, [`Error::Handoff`] when the state is refused.
    pub fn activate(&self, plugin: Plugin<W>) -> Result<Activation> {
        self.activate_guarded(plugin, &Guard::trusting())
    }

    /// [`activate`](Self::activate), refused (with the old version still
    /// serving) when it breaks one of `guard`'s rules.
    ///
    /// # Errors
    /// As [`activate`](Self::activate), and [`Error::Load`] naming the rule
    /// and both sources when `guard` refuses it.
    pub fn activate_guarded(&self, plugin: Plugin<W>, guard: &Guard) -> Result<Activation> {
        let span = telemetry::activate_span(plugin.label());
        let _entered = span.enter();
        let began = Instant::now();
        let activation = self.place(plugin, guard);
        match &activation {
            Ok(activation) => {
                let outcome = match activation {
                    Activation::Installed => "installed",
                    Activation::Swapped { .. } => "swapped",
                    Activation::Added => "added",
                };
                telemetry::finish(&span, outcome, Some(began.elapsed()));
            }
            // Loaded, but not let in: for an operator, a file that did not
            // go live, as one refused at load.
            Err(err) => telemetry::refused(&span, err.kind(), began),
        }
        activation
    }

    /// [`activate_guarded`](Self::activate_guarded), untraced.
    fn place(&self, plugin: Plugin<W>, guard: &Guard) -> Result<Activation> {
        let slot = self.slot_or_create(&plugin.identity().name);
        // Check before instantiating, and again under the slot lock.
        guard.check(&slot.lock(), &plugin)?;
        let new = Live::new(
            plugin.clone(),
            plugin.instantiate()?,
            self.pool_size,
            self.max_wait,
        );
        let mut state = slot.lock();
        guard.check(&state, &plugin)?;

        let old = slot.current.load_full();
        // The new version replaces whatever came from the same source, and
        // any other copy of the same name@version.
        let replaces = |live: &Live<W>| {
            live.plugin.source() == plugin.source() || live.plugin.identity() == plugin.identity()
        };
        // A pinned version replaced by its own file is gone: the pin goes
        // with it, and the file's new version takes over.
        if old.as_ref().is_some_and(|c| replaces(c)) && state.pinned.is_some() {
            tracing::info!(target: "wasmplug::registry", "unpinned {}: its version was replaced by its own source", slot.name);
            state.pinned = None;
        }
        let pinned_elsewhere = state
            .pinned
            .as_ref()
            .is_some_and(|pin| *pin != plugin.identity().version);
        let activation = match &old {
            _ if pinned_elsewhere => Activation::Added,
            None => {
                slot.set_current(Some(new.clone()));
                Activation::Installed
            }
            Some(old) => {
                let carry = guard.shared_names || old.plugin.source() == plugin.source();
                let state_carried = Self::swap(&slot, old, &new, carry)?;
                Activation::Swapped {
                    from: old.plugin.identity().clone(),
                    state_carried,
                }
            }
        };

        let replaced = Self::take_versions(&mut state, replaces);
        state.versions.push(new);
        drop(state);

        self.emit(Event::Loaded {
            identity: plugin.identity().clone(),
            source: plugin.source().clone(),
        });
        if let Activation::Swapped {
            from,
            state_carried,
        } = &activation
        {
            self.emit(Event::Swapped {
                from: from.clone(),
                to: plugin.identity().clone(),
                state_carried: *state_carried,
            });
        }
        self.retire(replaced);
        Ok(activation)
    }

    /// Make `new` current in place of `old`, carrying state when `carry`,
    /// both can, and each serves through one instance. Waits for the calls in flight
    /// on `old` and holds its pool throughout, so no call runs on `old`
    /// between the snapshot and the pointer store.
    fn swap(slot: &Slot<W>, old: &Arc<Live<W>>, new: &Arc<Live<W>>, carry: bool) -> Result<bool> {
        if !carry || old.size() > 1 || new.size() > 1 {
            // Each pooled instance has its own state: there is no one state
            // to carry. Calls in flight finish on `old`.
            slot.set_current(Some(new.clone()));
            return Ok(false);
        }
        let mut old_pool = old.quiesce();
        let mut new_pool = new.quiesce();
        let new_instance = new_pool[0]
            .instance
            .as_mut()
            .expect("a new version has its instance");
        let mut state_carried = false;
        if let Some(old_instance) = old_pool[0].instance.as_mut() {
            if old_instance.supports_handoff() && new_instance.supports_handoff() {
                let snapshot = old_instance.snapshot().map_err(|e| Error::Handoff {
                    plugin: new.plugin.plugin_ref(),
                    cause: anyhow::Error::new(e).context("taking the serving version's state"),
                })?;
                new_instance
                    .restore(&snapshot.unwrap_or_default())
                    .map_err(|e| Error::Handoff {
                        plugin: new.plugin.plugin_ref(),
                        cause: anyhow::Error::new(e).context("the new version refused the state"),
                    })?;
                state_carried = true;
            }
        }
        drop(new_pool);
        slot.set_current(Some(new.clone()));
        drop(old_pool);
        Ok(state_carried)
    }

    fn take_versions(
        state: &mut SlotState<W>,
        mut matches: impl FnMut(&Live<W>) -> bool,
    ) -> Vec<Arc<Live<W>>> {
        let (taken, kept) = state.versions.drain(..).partition(|live| matches(live));
        state.versions = kept;
        taken
    }

    fn retire(&self, lives: Vec<Arc<Live<W>>>) {
        for live in lives {
            live.retired.store(true, Ordering::Release);
            self.emit(Event::Unloaded {
                identity: live.plugin.identity().clone(),
                source: live.plugin.source().clone(),
            });
        }
    }

    /// Remove every version loaded from `source` (a deleted file). A removed
    /// current version is replaced by the pinned version if it remains, else
    /// the highest remaining one, else the name has no current version. Calls
    /// in flight finish first; returns who was removed.
    pub fn remove_source(&self, source: &Source) -> Vec<Identity> {
        self.remove_where(|live| live.plugin.source() == source)
    }

    /// Remove versions loaded from `source` other than `keep` (a file whose
    /// content now has another name).
    pub(crate) fn remove_source_except(&self, source: &Source, keep: &Identity) -> Vec<Identity> {
        self.remove_where(|live| live.plugin.source() == source && live.plugin.identity() != keep)
    }

    /// Remove one version by name and version.
    pub fn remove(&self, name: &str, version: &semver::Version) -> bool {
        !self
            .remove_where(|live| {
                live.plugin.identity().name == name && live.plugin.identity().version == *version
            })
            .is_empty()
    }

    fn remove_where(&self, matches: impl Fn(&Live<W>) -> bool) -> Vec<Identity> {
        let slots = self.all_slots();
        let mut removed = Vec::new();
        for slot in slots {
            let mut state = slot.lock();
            let taken = Self::take_versions(&mut state, &matches);
            if taken.is_empty() {
                continue;
            }
            if taken
                .iter()
                .any(|t| state.pinned.as_ref() == Some(&t.plugin.identity().version))
            {
                state.pinned = None;
            }
            let current = slot.current.load_full();
            if current
                .as_ref()
                .is_some_and(|c| taken.iter().any(|t| Arc::ptr_eq(t, c)))
            {
                let next = pick_live(&state.versions, state.pinned.as_ref(), None);
                // Wait for the calls in flight on the removed version.
                let _in_flight = current.as_ref().map(|c| c.quiesce());
                slot.set_current(next);
            }
            drop(state);
            removed.extend(taken.iter().map(|l| l.plugin.identity().clone()));
            self.retire(taken);
        }
        removed
    }

    /// A handle on the current version of `name`: every call resolves
    /// afresh, so it follows swaps.
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when the name has never been loaded.
    pub fn get(&self, name: &str) -> Result<Handle<W>> {
        let slot = self.slot(name).ok_or_else(|| Error::NotLoaded {
            name: name.to_string(),
            requirement: None,
        })?;
        Ok(Handle {
            slot,
            requirement: None,
        })
    }

    /// A handle on the highest loaded version of `name` matching the semver
    /// requirement (`"^1.2"`, `"=2.0.0"`, `">=1, <3"`).
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when the name is unknown, no loaded version
    /// matches, or `requirement` is not a semver requirement.
    pub fn get_matching(&self, name: &str, requirement: &str) -> Result<Handle<W>> {
        let req = semver::VersionReq::parse(requirement).map_err(|e| Error::NotLoaded {
            name: name.to_string(),
            requirement: Some(format!("{requirement} (not a semver requirement: {e})")),
        })?;
        let handle = Handle {
            slot: self.get(name)?.slot,
            requirement: Some(req),
        };
        handle.resolve()?;
        Ok(handle)
    }

    /// Pin `name` to `version`: it becomes current (with state handoff) and
    /// stays current while other versions are activated beside it.
    ///
    /// # Errors
    /// [`Error::NotLoaded`] when that version is not loaded; [`Error::Handoff`]
    /// when the state cannot be carried to it (the current version keeps
    /// serving).
    pub fn pin(&self, name: &str, version: &semver::Version) -> Result<()> {
        let not_loaded = || Error::NotLoaded {
            name: name.to_string(),
            requirement: Some(format!("={version}")),
        };
        let slot = self.slot(name).ok_or_else(not_loaded)?;
        let mut state = slot.lock();
        let target = state
            .versions
            .iter()
            .find(|l| l.plugin.identity().version == *version)
            .cloned()
            .ok_or_else(not_loaded)?;
        match slot.current.load_full() {
            Some(old) if !Arc::ptr_eq(&old, &target) => {
                let state_carried = Self::swap(&slot, &old, &target, true)?;
                self.emit(Event::Swapped {
                    from: old.plugin.identity().clone(),
                    to: target.plugin.identity().clone(),
                    state_carried,
                });
            }
            Some(_) => {}
            None => slot.set_current(Some(target)),
        }
        state.pinned = Some(version.clone());
        Ok(())
    }

    /// Remove the pin on `name`; the current version stays current until the
    /// next activation.
    pub fn unpin(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            slot.lock().pinned = None;
        }
    }

    /// Every loaded version, by name then version.
    pub fn list(&self) -> Vec<VersionInfo> {
        let slots = self.all_slots();
        let mut out = Vec::new();
        for slot in slots {
            let state = slot.lock();
            let current = slot.current.load_full();
            for live in &state.versions {
                let plugin = &live.plugin;
                out.push(VersionInfo {
                    identity: plugin.identity().clone(),
                    source: plugin.source().clone(),
                    content_hash: plugin.content_hash(),
                    loaded_at: plugin.loaded_at(),
                    live_instances: plugin.live_instances(),
                    memory_bytes: plugin.memory_bytes(),
                    current: current.as_ref().is_some_and(|c| Arc::ptr_eq(c, live)),
                    pinned: state.pinned.as_ref() == Some(&plugin.identity().version),
                    health: live.health().clone(),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.identity.name, &a.identity.version).cmp(&(&b.identity.name, &b.identity.version))
        });
        out
    }

    /// The version loaded from `source`, if any: the watcher's way to skip a
    /// file whose bytes did not change.
    pub(crate) fn hash_of_source(&self, source: &Source) -> Option<ContentHash> {
        self.all_slots().iter().find_map(|slot| {
            slot.lock()
                .versions
                .iter()
                .find(|l| l.plugin.source() == source)
                .map(|l| l.plugin.content_hash())
        })
    }
}
