//! One name's slot in the registry: its versions side by side, the pin,
//! and the current-version pointer (an `ArcSwapOption`, so a swap is one
//! pointer store and a call reads it without a lock).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwapOption;

use crate::canary::Trial;
use crate::pool::Live;
use crate::World;

pub(crate) struct Slot<W: World> {
    pub(crate) name: String,
    pub(crate) current: ArcSwapOption<Live<W>>,
    /// The versions side by side, and the pin. Also serialises swaps.
    pub(crate) state: Mutex<SlotState<W>>,
    /// A candidate on trial (canary or shadow) beside `current`.
    pub(crate) trial: ArcSwapOption<Trial<W>>,
    /// Whether `trial` is set: what a call reads (one relaxed load) before
    /// anything else of the trial.
    pub(crate) trying: AtomicBool,
}

pub(crate) struct SlotState<W: World> {
    pub(crate) versions: Vec<Arc<Live<W>>>,
    pub(crate) pinned: Option<semver::Version>,
    /// The version the last swap replaced, kept warm (its instances and
    /// state) until `until` for a rollback.
    pub(crate) previous: Option<Previous<W>>,
}

impl<W: World> SlotState<W> {
    pub(crate) fn new() -> Self {
        SlotState {
            versions: Vec::new(),
            pinned: None,
            previous: None,
        }
    }

    /// Whether `live` is among the versions side by side.
    pub(crate) fn holds(&self, live: &Arc<Live<W>>) -> bool {
        self.versions.iter().any(|v| Arc::ptr_eq(v, live))
    }
}

/// A replaced version kept for [`Registry::rollback`](crate::Registry::rollback).
pub(crate) struct Previous<W: World> {
    pub(crate) live: Arc<Live<W>>,
    pub(crate) until: Instant,
}

impl<W: World> Slot<W> {
    /// An empty slot for `name`.
    pub(crate) fn new(name: &str) -> Self {
        Slot {
            name: name.to_string(),
            current: ArcSwapOption::empty(),
            state: Mutex::new(SlotState::new()),
            trial: ArcSwapOption::empty(),
            trying: AtomicBool::new(false),
        }
    }

    /// Start or end a trial. Call with the state lock held.
    pub(crate) fn set_trial(&self, trial: Option<Arc<Trial<W>>>) {
        self.trying.store(trial.is_some(), Ordering::Release);
        self.trial.store(trial);
    }

    /// Point the name at `next`. Call with the state lock held (every
    /// caller does), so two moves never interleave. The version left behind
    /// is marked superseded *before* the store: a caller leasing it after
    /// the store sees the mark and follows the pointer.
    pub(crate) fn set_current(&self, next: Option<Arc<Live<W>>>) {
        let old = self.current.load_full();
        if let Some(next) = &next {
            next.superseded.store(false, Ordering::Release);
        }
        if let Some(old) = old.filter(|old| next.as_ref().is_none_or(|n| !Arc::ptr_eq(old, n))) {
            old.superseded.store(true, Ordering::Release);
        }
        self.current.store(next);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState<W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pinned version if there is one (and no requirement), else the
/// highest version matching `req` (any version when `None`).
pub(crate) fn pick<'a, T>(
    items: &'a [T],
    version: impl Fn(&T) -> &semver::Version,
    pinned: Option<&semver::Version>,
    req: Option<&semver::VersionReq>,
) -> Option<&'a T> {
    if let Some(pin) = pinned.filter(|_| req.is_none()) {
        if let Some(item) = items.iter().find(|i| version(i) == pin) {
            return Some(item);
        }
    }
    items
        .iter()
        .filter(|i| req.is_none_or(|r| r.matches(version(i))))
        .max_by(|a, b| version(a).cmp(version(b)))
}

/// [`pick`] among a slot's versions.
pub(crate) fn pick_live<W: World>(
    versions: &[Arc<Live<W>>],
    pinned: Option<&semver::Version>,
    req: Option<&semver::VersionReq>,
) -> Option<Arc<Live<W>>> {
    pick(versions, |l| &l.plugin.identity().version, pinned, req).cloned()
}

#[cfg(test)]
mod tests {
    use super::pick;
    use semver::{Version, VersionReq};

    fn versions(list: &[&str]) -> Vec<Version> {
        list.iter().map(|v| Version::parse(v).unwrap()).collect()
    }

    fn picked(list: &[&str], pinned: Option<&str>, req: Option<&str>) -> Option<String> {
        let all = versions(list);
        let pinned = pinned.map(|p| Version::parse(p).unwrap());
        let req = req.map(|r| VersionReq::parse(r).unwrap());
        pick(&all, |v| v, pinned.as_ref(), req.as_ref()).map(ToString::to_string)
    }

    #[test]
    fn the_highest_version_is_current_whatever_the_load_order() {
        let list = ["1.2.0", "2.0.0-rc.1", "1.10.0", "0.9.9"];
        assert_eq!(picked(&list, None, None).as_deref(), Some("2.0.0-rc.1"));
        assert_eq!(picked(&[], None, None), None);
    }

    #[test]
    fn a_pin_wins_over_higher_versions_but_not_over_a_requirement() {
        let list = ["1.0.0", "1.5.0", "2.0.0"];
        assert_eq!(picked(&list, Some("1.0.0"), None).as_deref(), Some("1.0.0"));
        // A handle with a requirement resolves by it alone.
        assert_eq!(
            picked(&list, Some("1.0.0"), Some("^1.2")).as_deref(),
            Some("1.5.0")
        );
        // A pin on a version that is gone falls back to the highest.
        assert_eq!(picked(&list, Some("3.0.0"), None).as_deref(), Some("2.0.0"));
    }

    #[test]
    fn a_requirement_picks_the_highest_match_or_nothing() {
        let list = ["1.0.0", "1.5.0", "2.0.0", "2.1.0-beta.1"];
        assert_eq!(picked(&list, None, Some("^1")).as_deref(), Some("1.5.0"));
        assert_eq!(
            picked(&list, None, Some("=2.0.0")).as_deref(),
            Some("2.0.0")
        );
        // Pre-releases match only a requirement that names one.
        assert_eq!(picked(&list, None, Some(">=2")).as_deref(), Some("2.0.0"));
        assert_eq!(picked(&list, None, Some("^3")), None);
    }

    #[test]
    fn the_version_left_behind_is_marked_before_the_pointer_moves_and_cleared_when_back() {
        use std::sync::Arc;

        use super::{Ordering, Slot};
        use crate::pool::tests::live;

        let slot = Slot::new("pool-test");
        let (a, b) = (live(1), live(1));
        let superseded =
            |l: &Arc<crate::pool::Live<crate::Dynamic>>| l.superseded.load(Ordering::Acquire);
        slot.set_current(Some(a.clone()));
        assert!(!superseded(&a));
        slot.set_current(Some(b.clone()));
        assert!(superseded(&a) && !superseded(&b));
        // Back to `a` (a re-pin): `a` serves again, `b` is left behind.
        slot.set_current(Some(a.clone()));
        assert!(!superseded(&a) && superseded(&b));
        // Storing the same version again leaves it unmarked.
        slot.set_current(Some(a.clone()));
        assert!(!superseded(&a));
        // Removed: nothing is current, and the last version is left behind.
        slot.set_current(None);
        assert!(superseded(&a));
        assert!(slot.current.load().is_none());
    }
}
