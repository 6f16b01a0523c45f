//! The instance pool of one version: the instances that serve calls made
//! through the registry, with their leases and the version's health.
//!
//! The pool is striped: one mutex per instance *place*. A caller tries each
//! place once, starting from one picked by its thread, and holds the place
//! it gets for its whole call (a [`Lease`]); only when every place is busy
//! does it wait, on its own place (so a waiter may wait for a busy place
//! while another has just freed: the price of sharing no lock between
//! callers on the fast path). An empty place gets a new instance, with
//! `init`. A trapped instance is dropped when its lease ends, and the next
//! instance made in its place counts as a restart. A version that keeps
//! crashing backs off ([`Health`]): from the second failure in a row,
//! restarts wait [`BACKOFF_FIRST`], doubling up to [`BACKOFF_MAX`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{Instance, Plugin, World};

/// The first restart after a crash is immediate; each further crash in a
/// row doubles the wait before the next restart, from this...
pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// ...up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a version's serving instance has fared: what [`Handle::health`] and
/// [`Registry::list`] report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Calls that trapped (crash, deadline, resource limit).
    pub traps: u64,
    /// Fresh instances created to replace a crashed one.
    pub restarts: u64,
    /// Failures (traps, failed restarts) since the last good call.
    pub consecutive_failures: u32,
    /// No restart before this instant.
    pub(crate) retry_at: Option<Instant>,
}

impl Health {
    pub(crate) fn failed(&mut self) {
        self.consecutive_failures += 1;
        self.retry_at = match self.consecutive_failures {
            0 | 1 => None,
            n => {
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << (n - 2).min(16))
                    .min(BACKOFF_MAX);
                Some(Instant::now() + wait)
            }
        };
    }

    /// How long until the next restart may be tried; zero if now.
    pub fn retry_in(&self) -> Duration {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// One version in the registry, with the pool of instances that serve its
/// calls.
///
/// The pool is striped: one mutex per instance place, so two callers on two
/// cores each lock a place of their own and share no lock. A call holds its
/// place's lock for its whole duration; a caller tries every place, starting
/// from one picked by its thread, and only waits when all are busy.
pub(crate) struct Live<W: World> {
    pub(crate) plugin: Plugin<W>,
    pub(crate) places: Box<[Mutex<Place<W>>]>,
    /// Set when the version leaves the registry: queued callers go elsewhere.
    pub(crate) retired: AtomicBool,
    /// Set just before the name's current pointer moves away from this
    /// version (and cleared before it points here again): a caller that
    /// leased an instance here checks it instead of loading the pointer a
    /// second time.
    pub(crate) superseded: AtomicBool,
    pub(crate) health: Mutex<Health>,
    /// Whether `health` shows failures in a row: a good call only takes the
    /// health lock to clear them.
    pub(crate) failing: AtomicBool,
}

/// Where one pooled instance lives.
pub(crate) struct Place<W: World> {
    pub(crate) instance: Option<Instance<W>>,
    /// The instance here crashed and was dropped: the next one created here
    /// counts as a restart.
    pub(crate) crashed: bool,
}

/// An instance checked out of a version's pool: its place stays locked
/// until the lease is dropped (also when the embedder's closure panics).
/// A poisoned instance is dropped then, not kept.
pub(crate) struct Lease<'a, W: World> {
    pub(crate) place: MutexGuard<'a, Place<W>>,
}

impl<W: World> Lease<'_, W> {
    pub(crate) fn instance(&mut self) -> &mut Instance<W> {
        self.place
            .instance
            .as_mut()
            .expect("a lease holds its instance")
    }
}

impl<W: World> Drop for Lease<'_, W> {
    fn drop(&mut self) {
        if self
            .place
            .instance
            .as_ref()
            .is_some_and(Instance::is_poisoned)
        {
            self.place.instance = None;
            self.place.crashed = true;
        }
    }
}

/// A small number per thread, to spread callers over a pool's places.
fn thread_index() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

impl<W: World> Live<W> {
    pub(crate) fn new(plugin: Plugin<W>, instance: Instance<W>, max: usize) -> Arc<Self> {
        let mut first = Some(instance);
        let places = (0..max.max(1))
            .map(|_| {
                Mutex::new(Place {
                    instance: first.take(),
                    crashed: false,
                })
            })
            .collect();
        Arc::new(Live {
            plugin,
            places,
            retired: AtomicBool::new(false),
            superseded: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            failing: AtomicBool::new(false),
        })
    }

    pub(crate) fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most instances this version serves through at once.
    pub(crate) fn size(&self) -> usize {
        self.places.len()
    }

    /// A free place (trying each once, from this thread's own), else wait
    /// for this thread's own; then its instance, created there if missing.
    pub(crate) fn checkout(&self) -> Result<Lease<'_, W>> {
        let n = self.places.len();
        let start = thread_index() % n;
        let free = (0..n).find_map(|i| match self.places[(start + i) % n].try_lock() {
            Ok(place) => Some(place),
            // A panic in an embedder's closure poisons the lock; the lease
            // already dropped a crashed instance, so the place is whole.
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        });
        let place =
            free.unwrap_or_else(|| self.places[start].lock().unwrap_or_else(|e| e.into_inner()));
        let mut lease = Lease { place };
        if lease.place.instance.is_none() {
            let replacing = std::mem::take(&mut lease.place.crashed);
            match self.create(replacing) {
                Ok(instance) => lease.place.instance = Some(instance),
                Err(err) => {
                    lease.place.crashed = replacing;
                    return Err(err);
                }
            }
        }
        Ok(lease)
    }

    /// A new instance for the pool, unless the version is backing off after
    /// crashing again and again.
    pub(crate) fn create(&self, replacing: bool) -> Result<Instance<W>> {
        {
            let health = self.health();
            let wait = health.retry_in();
            if !wait.is_zero() {
                return Err(Error::Unavailable {
                    plugin: self.plugin.plugin_ref(),
                    failures: health.consecutive_failures,
                    retry_in: wait,
                });
            }
        }
        match self.plugin.instantiate() {
            Ok(instance) => {
                if replacing {
                    self.health().restarts += 1;
                }
                Ok(instance)
            }
            Err(err) => {
                let mut health = self.health();
                health.failed();
                self.failing.store(true, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Wait until no call runs on this version and hold every place: no
    /// call can start until the guards are dropped. Places are locked in
    /// order, and a caller never holds one place while waiting for another.
    pub(crate) fn quiesce(&self) -> Vec<MutexGuard<'_, Place<W>>> {
        self.places
            .iter()
            .map(|place| place.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::{Health, Live, BACKOFF_FIRST, BACKOFF_MAX};
    use crate::{Dynamic, Error, Runtime};

    /// A component of the dynamic world with an export that works and one
    /// that traps.
    const WAT: &str = r#"
        (component
          (core module $m
            (func (export "ok"))
            (func (export "boom") unreachable))
          (core instance $i (instantiate $m))
          (type $t (func))
          (func $ok (type $t) (canon lift (core func $i "ok")))
          (func $boom (type $t) (canon lift (core func $i "boom")))
          (export "ok" (func $ok))
          (export "boom" (func $boom)))
    "#;

    /// A version of a small dynamic-world component with `size` places.
    pub(crate) fn live(size: usize) -> std::sync::Arc<Live<Dynamic>> {
        let runtime = Runtime::<Dynamic>::new().unwrap();
        let plugin = runtime.load_bytes("pool-test", WAT.as_bytes()).unwrap();
        let first = plugin.instantiate().unwrap();
        Live::new(plugin, first, size)
    }

    #[test]
    fn backoff_starts_at_the_second_failure_and_doubles_to_its_cap() {
        let mut health = Health::default();
        health.failed();
        assert!(health.retry_in().is_zero(), "the first restart is at once");
        health.failed();
        let first = health.retry_in();
        assert!(
            first > Duration::ZERO && first <= BACKOFF_FIRST,
            "{first:?}"
        );
        health.failed();
        let second = health.retry_in();
        assert!(
            second > BACKOFF_FIRST && second <= 2 * BACKOFF_FIRST,
            "{second:?}"
        );
        for _ in 0..40 {
            health.failed();
        }
        let capped = health.retry_in();
        assert!(
            capped > BACKOFF_MAX / 2 && capped <= BACKOFF_MAX,
            "{capped:?}"
        );
    }

    #[test]
    fn each_concurrent_caller_gets_an_instance_of_its_own_and_the_next_waits() {
        let live = live(2);
        let mut a = live.checkout().unwrap();
        let mut b = live.checkout().unwrap();
        assert_eq!(live.plugin.live_instances(), 2);
        a.instance().call_dynamic("ok", &[]).unwrap();
        b.instance().call_dynamic("ok", &[]).unwrap();

        // A third caller finds both places taken and waits for one.
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let live = live.clone();
            std::thread::spawn(move || {
                let _lease = live.checkout().unwrap();
                tx.send(()).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "a third lease on a pool of two");
        // It waits on the place its thread maps to, which may be either:
        // free both.
        drop(a);
        drop(b);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the waiter gets a freed place");
        waiter.join().unwrap();
        // No more instances than places were ever made.
        assert_eq!(live.plugin.live_instances(), 2);
    }

    #[test]
    fn a_trapped_instance_is_dropped_with_its_lease_and_replaced_as_a_restart() {
        let live = live(1);
        {
            let mut lease = live.checkout().unwrap();
            let err = lease.instance().call_dynamic("boom", &[]).unwrap_err();
            assert!(matches!(err, Error::Trap { .. }), "{err:?}");
        }
        assert_eq!(live.plugin.live_instances(), 0, "dropped with the lease");
        let mut lease = live.checkout().unwrap();
        lease.instance().call_dynamic("ok", &[]).unwrap();
        assert_eq!(live.health().restarts, 1);
    }

    #[test]
    fn no_instance_is_made_while_the_version_backs_off() {
        let live = live(1);
        drop(live.quiesce().pop().unwrap().instance.take());
        {
            let mut health = live.health();
            health.failed();
            health.failed();
        }
        let err = live.checkout().err().expect("refused during backoff");
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert_eq!(live.plugin.live_instances(), 0);
    }
}
