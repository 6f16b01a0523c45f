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
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::canary::{Rollout, Trial, Verdict};
use crate::error::{Error, Result};
use crate::event::{Event, Subscribers};
use crate::pool::Live;
use crate::reach::{Reach, Widening};
use crate::rollout::{nothing_to, reach_of, Held, Holds};
use crate::slot::{pick_live, Previous, Slot, SlotState};
use crate::telemetry;
use crate::{identity::ContentHash, Handle, Identity, Plugin, Source, World};

pub use crate::pool::{Health, BACKOFF_FIRST, BACKOFF_MAX};
pub use crate::rollout::{Guard, HeldInfo};

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
    /// How long a replaced version is kept warm for a rollback.
    grace: Duration,
    holds: Arc<Mutex<Holds<W>>>,
    reaper: Arc<Reaper<W>>,
    rollout: Rollout,
}

impl<W: World> Clone for Registry<W> {
    fn clone(&self) -> Self {
        Registry {
            slots: self.slots.clone(),
            subscribers: self.subscribers.clone(),
            pool_size: self.pool_size,
            max_wait: self.max_wait,
            grace: self.grace,
            holds: self.holds.clone(),
            reaper: self.reaper.clone(),
            rollout: self.rollout.clone(),
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
    /// It reaches further than the version serving its name and the guard
    /// holds widenings: not activated, held until
    /// [`Registry::approve`] or [`Registry::refuse`].
    Held {
        /// The version that goes on serving.
        serving: Identity,
        /// What it would add.
        widening: Widening,
    },
    /// It went on trial beside the current version (a canary or shadow
    /// [`Rollout`]): an [`Event::Promoted`] or [`Event::RolledBack`] tells
    /// how the trial ends.
    Trial {
        /// The version that stays current during the trial.
        serving: Identity,
    },
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
    /// Whether it serves nothing and is kept warm for
    /// [`Registry::rollback`] until its grace period ends.
    pub standby: bool,
    /// Whether it is on trial (a canary or shadow) beside the current
    /// version.
    pub on_trial: bool,
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
            grace: Duration::ZERO,
            holds: Arc::default(),
            reaper: Arc::default(),
            rollout: Rollout::AllAtOnce,
        }
    }

    /// How a swap goes live from now on: all at once (the default), or as a
    /// canary or shadow trial beside the serving version, promoted or
    /// rolled back on its figures ([`canary`](crate::canary)). The first
    /// version of a name is installed at once whatever this says; so is an
    /// activation while the name is pinned.
    pub fn with_rollout(mut self, rollout: Rollout) -> Self {
        self.rollout = rollout;
        self
    }

    /// Keep the version a swap replaces loaded and warm (its instances,
    /// their state) for `grace`, so [`rollback`](Self::rollback) can return
    /// to it in one pointer store. Default zero: a replaced version is
    /// unloaded as soon as its calls in flight end. It serves nothing
    /// meanwhile, but holds its memory; the next swap of the name, or the
    /// end of the grace period, unloads it (an [`Event::Unloaded`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
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
        emit(&self.subscribers, event);
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
            .or_insert_with(|| Arc::new(Slot::new(name)))
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
                    Activation::Held { .. } => "held",
                    Activation::Trial { .. } => "trial",
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
        {
            let state = slot.lock();
            guard.check(&state, &plugin)?;
            let current = slot.current.load_full();
            let serving = Guard::serving(&state, current.as_ref(), plugin.source());
            let held = serving.and_then(|serving| {
                let widening = guard.holds(&serving.plugin, &plugin)?;
                Some((serving.plugin.identity().clone(), widening))
            });
            if let Some((serving, widening)) = held {
                drop(state);
                self.hold(Held {
                    info: HeldInfo {
                        name: slot.name.clone(),
                        serving: serving.clone(),
                        candidate: Some(plugin.identity().clone()),
                        source: plugin.source().clone(),
                        content_hash: plugin.content_hash(),
                        widening: widening.clone(),
                        since: SystemTime::now(),
                    },
                    guard: Guard {
                        widening: true,
                        ..guard.clone()
                    },
                    pending: Box::new(move || Ok(plugin)),
                    replaces_source: false,
                });
                return Ok(Activation::Held { serving, widening });
            }
        }
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
        let replaces = |live: &Live<W>| replaced_by(live, &plugin);
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
            Some(old) if self.rollout != Rollout::AllAtOnce => {
                let trial = Trial::new(
                    new.clone(),
                    old.clone(),
                    self.rollout.clone(),
                    self.concluder(&slot),
                    self.subscribers.clone(),
                );
                let earlier = slot.trial.load_full();
                slot.set_trial(Some(Arc::new(trial)));
                drop(state);
                self.lock_holds().activated(plugin.source());
                // A candidate still on trial is replaced by the newer one.
                if let Some(earlier) = earlier.filter(|e| e.abandon()) {
                    let candidate = earlier.candidate.clone();
                    drop(earlier);
                    self.retire(vec![candidate]);
                }
                let how = match &self.rollout {
                    Rollout::Canary(c) => format!("canary, {}% of calls", c.share * 100.0),
                    _ => "shadow of side-effect-free calls".to_string(),
                };
                self.emit(Event::Loaded {
                    identity: plugin.identity().clone(),
                    source: plugin.source().clone(),
                });
                self.emit(Event::TrialStarted {
                    serving: old.plugin.identity().clone(),
                    candidate: plugin.identity().clone(),
                    how,
                });
                return Ok(Activation::Trial {
                    serving: old.plugin.identity().clone(),
                });
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

        let mut replaced = Self::take_versions(&mut state, replaces);
        state.versions.push(new);
        if let (Activation::Swapped { .. }, Some(old)) = (&activation, &old) {
            self.keeper().keep(&slot, &mut state, old, &mut replaced);
        }
        // A trial running is over: this version replaces it.
        let abandoned = slot.trial.load_full().filter(|t| t.abandon());
        if abandoned.is_some() {
            slot.set_trial(None);
        }
        drop(state);
        replaced.extend(abandoned.map(|t| t.candidate.clone()));
        self.lock_holds().activated(plugin.source());

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

    fn keeper(&self) -> Keeper<W> {
        Keeper {
            subscribers: self.subscribers.clone(),
            holds: self.holds.clone(),
            reaper: self.reaper.clone(),
            grace: self.grace,
        }
    }

    /// How a trial on `slot` ends: through a [`Keeper`], holding the slot
    /// only weakly (the slot holds the trial).
    fn concluder(&self, slot: &Arc<Slot<W>>) -> crate::canary::Conclude<W> {
        let (keeper, slot) = (self.keeper(), Arc::downgrade(slot));
        Box::new(move |trial, verdict| {
            if let Some(slot) = slot.upgrade() {
                keeper.conclude(&slot, trial, verdict);
            }
        })
    }

    fn lock_holds(&self) -> MutexGuard<'_, Holds<W>> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold a version back until it is approved or refused.
    pub(crate) fn hold(&self, held: Held<W>) {
        let event = Event::Held {
            name: held.info.name.clone(),
            serving: held.info.serving.clone(),
            source: held.info.source.clone(),
            widening: held.info.widening.clone(),
        };
        self.lock_holds().hold(held);
        self.emit(event);
    }

    /// The versions held back, each until it is approved or refused: what
    /// they would replace and what they would add.
    pub fn held(&self) -> Vec<HeldInfo> {
        self.lock_holds().list()
    }

    /// Activate the version held for `name` (an [`Event::Held`] named it),
    /// granting what it adds. A version the watcher held is loaded now:
    /// its first instance is made and `init` runs under its own policy.
    /// The activation then goes as any other: the guard's other rules
    /// apply, and the serving version's state is handed over.
    ///
    /// # Errors
    /// [`Error::Rollout`] when nothing is held for `name`; as
    /// [`activate`](Self::activate) when it cannot be loaded or activated
    /// (then it is dropped, and its content is not loaded again from the
    /// same source: the serving version goes on serving).
    pub fn approve(&self, name: &str) -> Result<Activation> {
        let held = self
            .lock_holds()
            .take(name)
            .ok_or_else(|| nothing_to(name, "no version is held for this name"))?;
        let Held {
            info,
            guard,
            pending,
            replaces_source,
        } = held;
        let activation = pending().and_then(|plugin| {
            let activation = self.activate_guarded(plugin.clone(), &guard)?;
            if replaces_source {
                self.remove_source_except(plugin.source(), plugin.identity());
            }
            self.emit(Event::Approved {
                identity: plugin.identity().clone(),
                widening: info.widening.clone(),
            });
            Ok(activation)
        });
        if activation.is_err() {
            self.lock_holds().decline(&info.source, info.content_hash);
        }
        activation
    }

    /// Drop the version held for `name`; the serving version goes on
    /// serving, and the same content from the same source is not loaded
    /// again (a new content is a new decision).
    ///
    /// # Errors
    /// [`Error::Rollout`] when nothing is held for `name`.
    pub fn refuse(&self, name: &str) -> Result<HeldInfo> {
        let mut holds = self.lock_holds();
        let held = holds
            .take(name)
            .ok_or_else(|| nothing_to(name, "no version is held for this name"))?;
        holds.decline(&held.info.source, held.info.content_hash);
        drop(holds);
        self.emit(Event::Refused {
            name: held.info.name.clone(),
            source: held.info.source.clone(),
            widening: held.info.widening.clone(),
        });
        Ok(held.info)
    }

    /// Return `name` to the version its last swap replaced, kept warm for
    /// the grace period ([`with_grace`](Self::with_grace)): one pointer
    /// store, after which every call goes to it. Calls in flight on the
    /// rolled-back version finish there; it is then unloaded, and its
    /// content is not loaded again from the same source (the watcher leaves
    /// that file alone until it changes). The state of the version rolled
    /// back to is as it was at the swap: what the rolled-back version did
    /// meanwhile is not carried back. Returns the version serving now.
    ///
    /// # Errors
    /// [`Error::Rollout`] when no previous version is kept for `name` (no
    /// swap yet, the grace period is over, or grace is zero).
    pub fn rollback(&self, name: &str) -> Result<Identity> {
        let nothing = || {
            nothing_to(
                name,
                "no previous version is kept to roll back to (no swap since it was \
                 loaded, the grace period is over, or the registry keeps none)",
            )
        };
        let slot = self.slot(name).ok_or_else(nothing)?;
        let mut state = slot.lock();
        let previous = state
            .previous
            .take()
            .filter(|p| p.until > Instant::now())
            .ok_or_else(nothing)?;
        let current = slot
            .current
            .load_full()
            .filter(|current| !Arc::ptr_eq(current, &previous.live))
            .ok_or_else(nothing)?;
        let back = previous.live;
        back.retired.store(false, Ordering::Release);
        if !state.holds(&back) {
            state.versions.push(back.clone());
        }
        if state.pinned.as_ref() == Some(&current.plugin.identity().version) {
            state.pinned = None;
        }
        slot.set_current(Some(back.clone()));
        let rolled = Self::take_versions(&mut state, |live| std::ptr::eq(live, &*current));
        drop(state);
        self.lock_holds()
            .decline(current.plugin.source(), current.plugin.content_hash());
        let to = back.plugin.identity().clone();
        self.emit(Event::RolledBack {
            from: current.plugin.identity().clone(),
            to: to.clone(),
            reason: "on demand".to_string(),
        });
        self.retire(rolled);
        Ok(to)
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
        retire(&self.subscribers, lives);
    }

    /// Remove every version loaded from `source` (a deleted file). A removed
    /// current version is replaced by the pinned version if it remains, else
    /// the highest remaining one, else the name has no current version. Calls
    /// in flight finish first; returns who was removed.
    pub fn remove_source(&self, source: &Source) -> Vec<Identity> {
        self.lock_holds().drop_source(source);
        self.remove_where(|live| live.plugin.source() == source)
    }

    /// Remove versions loaded from `source` under another name than
    /// `keep`'s (a file whose content now has another name). Those of the
    /// same name were replaced by `keep`'s activation already, or came back
    /// since by a rollback.
    pub(crate) fn remove_source_except(&self, source: &Source, keep: &Identity) -> Vec<Identity> {
        self.remove_where(|live| {
            live.plugin.source() == source && live.plugin.identity().name != keep.name
        })
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
            let mut taken = Self::take_versions(&mut state, &matches);
            // The version kept for a rollback goes too (unloaded here unless
            // it is still side by side).
            if let Some(previous) = state.previous.take_if(|p| matches(&p.live)) {
                if !state.holds(&previous.live) {
                    taken.push(previous.live);
                }
            }
            // A trial on the name ends with anything removed from it.
            if !taken.is_empty() {
                if let Some(trial) = slot.trial.load_full().filter(|t| t.abandon()) {
                    slot.set_trial(None);
                    taken.push(trial.candidate.clone());
                }
            }
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
            let standby = state
                .previous
                .as_ref()
                .map(|p| &p.live)
                .filter(|live| !state.holds(live));
            let trial = slot.trial.load_full();
            let on_trial = trial.as_ref().map(|t| &t.candidate);
            for live in state.versions.iter().chain(standby).chain(on_trial) {
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
                    standby: standby.is_some_and(|s| Arc::ptr_eq(s, live)),
                    on_trial: on_trial.is_some_and(|t| Arc::ptr_eq(t, live)),
                    health: live.health().clone(),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.identity.name, &a.identity.version).cmp(&(&b.identity.name, &b.identity.version))
        });
        out
    }

    /// Whether the content `hash` of `source` needs nothing from the
    /// watcher: it is the version loaded from there, or it is held, or it
    /// was declined (refused, rolled back).
    pub(crate) fn settled(&self, source: &Source, hash: ContentHash) -> bool {
        let loaded = self.all_slots().iter().any(|slot| {
            slot.lock()
                .versions
                .iter()
                .any(|l| l.plugin.source() == source && l.plugin.content_hash() == hash)
        });
        loaded || self.lock_holds().settled(source, hash)
    }

    /// The name and reach of the version loaded from `source` (the current
    /// one of its name, if several are): what a new content of that source
    /// is compared with.
    pub(crate) fn reach_from(&self, source: &Source) -> Option<(String, Identity, Reach)> {
        let mut found = None;
        for slot in self.all_slots() {
            let state = slot.lock();
            let current = slot.current.load_full();
            for live in state
                .versions
                .iter()
                .filter(|l| l.plugin.source() == source)
            {
                let is_current = current.as_ref().is_some_and(|c| Arc::ptr_eq(c, live));
                if found.is_none() || is_current {
                    found = Some((slot.name.clone(), live.clone()));
                }
            }
        }
        found.map(|(name, live)| (name, live.plugin.identity().clone(), reach_of(&live.plugin)))
    }
}

/// Whether activating `new` replaces `live`: the same source (a file's new
/// content), or another copy of the same name@version.
fn replaced_by<W: World>(live: &Live<W>, new: &Plugin<W>) -> bool {
    live.plugin.source() == new.source() || live.plugin.identity() == new.identity()
}

/// Report `event` (counting swaps and unloads in the metrics).
fn emit(subscribers: &Subscribers, event: Event) {
    match &event {
        Event::Swapped { to, .. } => telemetry::swapped(&to.name),
        Event::Unloaded { identity, .. } => telemetry::unloaded(&identity.name),
        _ => {}
    }
    subscribers.emit(event);
}

/// What ends a trial and keeps replaced versions for a rollback: the
/// registry's parts that hold no slot (a trial's conclusion holds this, and
/// its slot only weakly).
struct Keeper<W: World> {
    subscribers: Arc<Subscribers>,
    holds: Arc<Mutex<Holds<W>>>,
    reaper: Arc<Reaper<W>>,
    grace: Duration,
}

impl<W: World> Keeper<W> {
    /// With a grace period, keep `old` (just swapped out) warm for a
    /// rollback, in place of the version kept before (which joins
    /// `replaced`, to be unloaded, unless still side by side).
    fn keep(
        &self,
        slot: &Arc<Slot<W>>,
        state: &mut SlotState<W>,
        old: &Arc<Live<W>>,
        replaced: &mut Vec<Arc<Live<W>>>,
    ) {
        if self.grace.is_zero() {
            return;
        }
        replaced.retain(|live| !Arc::ptr_eq(live, old));
        if !state.holds(old) {
            old.retired.store(true, Ordering::Release);
        }
        let until = Instant::now() + self.grace;
        let before = state.previous.replace(Previous {
            live: old.clone(),
            until,
        });
        if let Some(before) = before.map(|p| p.live) {
            if !state.holds(&before)
                && !Arc::ptr_eq(&before, old)
                && !replaced.iter().any(|r| Arc::ptr_eq(r, &before))
            {
                replaced.push(before);
            }
        }
        self.reaper.expire_at(slot, until, &self.subscribers);
    }

    /// End `trial` on `slot` with `verdict`, unless it ended already.
    fn conclude(&self, slot: &Arc<Slot<W>>, trial: &Trial<W>, verdict: Verdict) {
        let mut state = slot.lock();
        let ours = slot
            .trial
            .load()
            .as_deref()
            .is_some_and(|t| std::ptr::eq(t, trial));
        if !ours {
            return;
        }
        slot.set_trial(None);
        let (serving, candidate) = (&trial.serving, &trial.candidate);
        match verdict {
            Verdict::Promote(figures) => {
                // No state is carried: the candidate has served from its
                // own instances throughout.
                slot.set_current(Some(candidate.clone()));
                let mut replaced = Registry::take_versions(&mut state, |live| {
                    replaced_by(live, &candidate.plugin)
                });
                state.versions.push(candidate.clone());
                self.keep(slot, &mut state, serving, &mut replaced);
                drop(state);
                emit(
                    &self.subscribers,
                    Event::Swapped {
                        from: serving.plugin.identity().clone(),
                        to: candidate.plugin.identity().clone(),
                        state_carried: false,
                    },
                );
                emit(
                    &self.subscribers,
                    Event::Promoted {
                        from: serving.plugin.identity().clone(),
                        to: candidate.plugin.identity().clone(),
                        figures,
                    },
                );
                retire(&self.subscribers, replaced);
            }
            Verdict::RollBack(reason) => {
                drop(state);
                self.holds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .decline(candidate.plugin.source(), candidate.plugin.content_hash());
                emit(
                    &self.subscribers,
                    Event::RolledBack {
                        from: candidate.plugin.identity().clone(),
                        to: serving.plugin.identity().clone(),
                        reason,
                    },
                );
                retire(&self.subscribers, vec![candidate.clone()]);
            }
        }
    }
}

/// Mark `lives` retired (a requirement handle waiting on one moves on) and
/// report each unloaded. The registry's reference is let go of before the
/// report, so a subscriber that sees `Unloaded` for a version nothing else
/// holds (no call in flight, no leased instance) sees its instances freed.
fn retire<W: World>(subscribers: &Subscribers, lives: Vec<Arc<Live<W>>>) {
    for live in lives {
        live.retired.store(true, Ordering::Release);
        let identity = live.plugin.identity().clone();
        let source = live.plugin.source().clone();
        drop(live);
        telemetry::unloaded(&identity.name);
        subscribers.emit(Event::Unloaded { identity, source });
    }
}

/// Unloads the versions kept for a rollback when their grace periods end:
/// one thread per registry, started with the first such version, sleeping
/// until the next end; it stops when the registry is dropped.
pub(crate) struct Reaper<W: World> {
    tx: Mutex<Option<mpsc::Sender<Due<W>>>>,
}

/// A slot whose kept version's grace ends at the instant.
type Due<W> = (Weak<Slot<W>>, Instant);

impl<W: World> Default for Reaper<W> {
    fn default() -> Self {
        Reaper {
            tx: Mutex::new(None),
        }
    }
}

impl<W: World> Reaper<W> {
    fn expire_at(&self, slot: &Arc<Slot<W>>, until: Instant, subscribers: &Arc<Subscribers>) {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sender = tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            let subscribers = subscribers.clone();
            let spawned = std::thread::Builder::new()
                .name("wasmplug-grace".into())
                .spawn(move || reap(&rx, &subscribers));
            if let Err(err) = spawned {
                // Nothing unloads the kept versions on time then; the next
                // swap or rollback of each name still lets go of it.
                tracing::warn!(target: "wasmplug::registry", "no thread to end grace periods: {err}");
            }
            tx
        });
        let _ = sender.send((Arc::downgrade(slot), until));
    }
}

fn reap<W: World>(rx: &Receiver<Due<W>>, subscribers: &Subscribers) {
    let mut due: Vec<Due<W>> = Vec::new();
    loop {
        let next = due.iter().map(|(_, at)| *at).min();
        let received = match next {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(entry) => due.push(entry),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        due.retain(|(slot, at)| {
            if *at > now {
                return true;
            }
            if let Some(slot) = slot.upgrade() {
                let mut state = slot.lock();
                let ended = state.previous.take_if(|p| p.until <= now);
                let gone = ended.map(|p| p.live).filter(|live| !state.holds(live));
                drop(state);
                retire(subscribers, gone.into_iter().collect());
            }
            false
        });
    }
}
