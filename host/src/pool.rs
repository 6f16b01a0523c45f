//! The instance pool of one version: the instances that serve calls made
//! through the registry, with their leases and the version's health.
//!
//! The pool is striped: one mutex per instance *place*. A caller tries each
//! place once, starting from the one its thread leased last, and holds the
//! place it gets for its whole call (a [`Lease`]); only when every place is
//! busy does it wait, at most [`Registry::with_max_wait`] (then the call
//! fails with [`Error::Overloaded`]). A blocking caller waits on the place
//! it leased last (so
//! it may wait for a busy place while another has just freed: the price of
//! sharing no lock between callers on the fast path); an async caller waits
//! for whichever place frees first, without holding a thread. The place
//! locks are `parking_lot`'s, whose guards may be held across an `.await`
//! (a lease lives for the whole call). An empty place gets a new instance, with
//! `init`. A trapped instance is dropped when its lease ends, and the next
//! instance made in its place counts as a restart. A version that keeps
//! crashing backs off ([`Health`]): from the second failure in a row,
//! restarts wait [`BACKOFF_FIRST`], doubling up to [`BACKOFF_MAX`].
//!
//! [`Registry::with_max_wait`]: crate::Registry::with_max_wait

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::telemetry::Calls;
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
/// from the one its thread leased last, and only waits when all are busy.
///
/// Aligned to 128 bytes so the `Arc`'s reference counts, which every async
/// call touches, sit on a cache line of their own, not on the one that
/// holds the fields every call reads.
#[repr(align(128))]
pub(crate) struct Live<W: World> {
    pub(crate) plugin: Plugin<W>,
    /// Each on cache lines of its own: two threads calling two instances
    /// of one version lock, unlock and write their own places on every
    /// call, and places side by side shared a line.
    pub(crate) places: Box<[CachePadded<Mutex<Place<W>>>]>,
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
    /// How many of its last async calls in a row were long, up to
    /// [`LONG_STREAK`]: longer than [`INLINE_BUDGET`] by the wall clock and,
    /// once the streak is armed, by the CPU time their polls took. At
    /// [`LONG_STREAK`] the next call starts on the guest threads instead of
    /// the caller's task (`handle.rs`).
    ///
    /// [`INLINE_BUDGET`]: crate::deadline::INLINE_BUDGET
    /// [`LONG_STREAK`]: crate::handle::LONG_STREAK
    pub(crate) long_calls: AtomicU8,
    /// Its calls' metric handles (`telemetry.rs`).
    pub(crate) calls: Calls,
    /// How long a caller may wait for a busy place; `None`: for ever.
    max_wait: Option<Duration>,
    /// Async callers waiting for a place: a lease that ends wakes one
    /// through `freed` (and only looks at `freed` when this is not zero).
    waiters: AtomicUsize,
    freed: Notify,
}

/// Where one pooled instance lives.
pub(crate) struct Place<W: World> {
    pub(crate) instance: Option<Instance<W>>,
    /// The instance here crashed and was dropped: the next one created here
    /// counts as a restart.
    pub(crate) crashed: bool,
}

/// An instance checked out of a version's pool: its place stays locked
/// until the lease is dropped (also when the embedder's closure panics, or
/// an async call's future is dropped). An instance that trapped, or whose
/// async call was dropped half-way, is dropped then, not kept.
pub(crate) struct Lease<'a, W: World> {
    place: Option<MutexGuard<'a, Place<W>>>,
    live: &'a Live<W>,
}

impl<W: World> Lease<'_, W> {
    pub(crate) fn instance(&mut self) -> &mut Instance<W> {
        self.place_mut()
            .instance
            .as_mut()
            .expect("a lease holds its instance")
    }

    fn place_mut(&mut self) -> &mut Place<W> {
        self.place.as_mut().expect("a lease holds its place")
    }
}

impl<W: World> Drop for Lease<'_, W> {
    #[inline]
    fn drop(&mut self) {
        let Some(mut place) = self.place.take() else {
            return;
        };
        if let Some(instance) = place.instance.as_ref() {
            if instance.is_poisoned() {
                // A call dropped half-way is not the plugin's crash.
                place.crashed = !instance.interrupted;
                place.instance = None;
            }
        }
        drop(place);
        // Pairs with the fence in `wait_async`: either that waiter sees the
        // place free, or this sees the waiter.
        fence(Ordering::SeqCst);
        if self.live.waiters.load(Ordering::Relaxed) > 0 {
            self.live.freed.notify_one();
        }
    }
}

/// Every place of a version, held by [`Live::quiesce`]; released together
/// on drop, with the async callers waiting for a place woken. (Guards
/// dropped without waking them left a caller that began waiting during a
/// swap asleep until its `max_wait`, then failed as overloaded: the fleet
/// test's replica answered one request in a million and a half with a 503.)
pub(crate) struct Quiesced<'a, W: World> {
    places: Vec<MutexGuard<'a, Place<W>>>,
    live: &'a Live<W>,
}

impl<'a, W: World> std::ops::Deref for Quiesced<'a, W> {
    type Target = [MutexGuard<'a, Place<W>>];

    fn deref(&self) -> &Self::Target {
        &self.places
    }
}

impl<W: World> std::ops::DerefMut for Quiesced<'_, W> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.places
    }
}

impl<W: World> Drop for Quiesced<'_, W> {
    fn drop(&mut self) {
        self.places.clear();
        // As in `Lease::drop`; every place is free, so every waiter may
        // find one.
        fence(Ordering::SeqCst);
        if self.live.waiters.load(Ordering::Relaxed) > 0 {
            self.live.freed.notify_waiters();
        }
    }
}

/// Counts an async caller as waiting for as long as it lives (also when
/// its future is dropped while it waits).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

thread_local! {
    /// The place this thread last leased, in whichever pool: where it
    /// looks first next time. Threads spread themselves over a pool's
    /// places: two that start at the same place collide once, and the one
    /// that moves on remembers where it found room. (A fixed index per
    /// thread, taken from a counter, put two of a runtime's threads on the
    /// same place of a pool of two half the time, and they then fought
    /// over its lock on every call.)
    static PLACE_HINT: Cell<usize> = Cell::new({
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    });
}

impl<W: World> Live<W> {
    /// A version serving through up to `max` instances at once, the first
    /// being `instance`; a caller waits at most `max_wait` for one.
    pub(crate) fn new(
        plugin: Plugin<W>,
        instance: Instance<W>,
        max: usize,
        max_wait: Option<Duration>,
    ) -> Arc<Self> {
        let mut first = Some(instance);
        let places = (0..max.max(1))
            .map(|_| {
                CachePadded::new(Mutex::new(Place {
                    instance: first.take(),
                    crashed: false,
                }))
            })
            .collect();
        let identity = plugin.identity();
        let calls = Calls::new(&identity.name, &identity.version.to_string());
        Arc::new(Live {
            plugin,
            calls,
            places,
            retired: AtomicBool::new(false),
            superseded: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
            failing: AtomicBool::new(false),
            long_calls: AtomicU8::new(0),
            max_wait,
            waiters: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    pub(crate) fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock()
    }

    /// The most instances this version serves through at once.
    pub(crate) fn size(&self) -> usize {
        self.places.len()
    }

    /// A free place, trying each once from the one this thread leased last.
    #[inline]
    fn free_place(&self) -> Option<MutexGuard<'_, Place<W>>> {
        if let [only] = &self.places[..] {
            // The default pool: no hint to look up.
            return only.try_lock();
        }
        self.free_place_of_many()
    }

    /// [`free_place`](Self::free_place) in a pool of more than one place.
    fn free_place_of_many(&self) -> Option<MutexGuard<'_, Place<W>>> {
        let n = self.places.len();
        let start = PLACE_HINT.get() % n;
        (0..n).find_map(|i| {
            let at = (start + i) % n;
            let place = self.places[at].try_lock()?;
            if i > 0 {
                PLACE_HINT.set(at);
            }
            Some(place)
        })
    }

    fn overloaded(&self, waited: Duration) -> Error {
        Error::Overloaded {
            plugin: self.plugin.plugin_ref(),
            instances: self.places.len(),
            waited,
        }
    }

    /// A free place, else wait (at most `max_wait`) for the one this thread
    /// leased last; then its instance, created there if missing.
    #[inline]
    pub(crate) fn checkout(&self) -> Result<Lease<'_, W>> {
        // Inlined into `Handle::call`: the common case, a free place with
        // its instance, costs a `try_lock`; the rest is out of line.
        let place = match self.free_place() {
            Some(place) => place,
            None => self.wait_for_place()?,
        };
        if place.instance.is_none() {
            return self.fill_place(place);
        }
        Ok(Lease {
            place: Some(place),
            live: self,
        })
    }

    /// The place this thread leased last, waited for (at most `max_wait`):
    /// [`checkout`](Self::checkout) when no place is free.
    #[cold]
    #[inline(never)]
    fn wait_for_place(&self) -> Result<MutexGuard<'_, Place<W>>> {
        let own = &self.places[PLACE_HINT.get() % self.places.len()];
        match self.max_wait {
            None => Ok(own.lock()),
            Some(wait) => own.try_lock_for(wait).ok_or_else(|| self.overloaded(wait)),
        }
    }

    /// [`checkout`](Self::checkout) of a place without an instance: one is
    /// made there.
    #[cold]
    #[inline(never)]
    fn fill_place<'a>(&'a self, place: MutexGuard<'a, Place<W>>) -> Result<Lease<'a, W>> {
        let mut lease = Lease {
            place: Some(place),
            live: self,
        };
        let replacing = std::mem::take(&mut lease.place_mut().crashed);
        let made = self.may_create().and_then(|()| self.plugin.instantiate());
        self.fill(&mut lease, made, replacing)?;
        Ok(lease)
    }

    /// [`checkout`](Self::checkout) for a task: waits (at most `max_wait`)
    /// for whichever place frees first, and makes a missing instance with
    /// [`Plugin::instantiate_async`].
    pub(crate) async fn checkout_async(&self) -> Result<Lease<'_, W>> {
        let place = match self.free_place() {
            Some(place) => place,
            None => self.wait_async().await?,
        };
        let mut lease = Lease {
            place: Some(place),
            live: self,
        };
        if lease.place_mut().instance.is_none() {
            let replacing = std::mem::take(&mut lease.place_mut().crashed);
            let made = match self.may_create() {
                Ok(()) => self.plugin.instantiate_async().await,
                Err(err) => Err(err),
            };
            self.fill(&mut lease, made, replacing)?;
        }
        Ok(lease)
    }

    async fn wait_async(&self) -> Result<MutexGuard<'_, Place<W>>> {
        let began = Instant::now();
        let until = self.max_wait.map(|wait| tokio::time::Instant::now() + wait);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking again, so a place freed from here on
            // wakes this waiter.
            freed.as_mut().enable();
            let waiting = Waiting::new(&self.waiters);
            if let Some(place) = self.free_place() {
                return Ok(place);
            }
            let woken = match until {
                Some(until) => tokio::time::timeout_at(until, freed).await.is_ok(),
                None => {
                    freed.await;
                    true
                }
            };
            drop(waiting);
            if !woken {
                return Err(self.overloaded(began.elapsed()));
            }
        }
    }

    /// Put a newly made instance in the lease's place, and account for the
    /// attempt: a restart when it replaces a crashed one, a failure when it
    /// failed (the place then still counts as crashed).
    fn fill(
        &self,
        lease: &mut Lease<'_, W>,
        made: Result<Instance<W>>,
        replacing: bool,
    ) -> Result<()> {
        match made {
            Ok(instance) => {
                if replacing {
                    self.health().restarts += 1;
                    self.calls.restarted();
                }
                lease.place_mut().instance = Some(instance);
                Ok(())
            }
            Err(err) => {
                if !matches!(err, Error::Unavailable { .. }) {
                    self.health().failed();
                    self.failing.store(true, Ordering::Relaxed);
                }
                lease.place_mut().crashed = replacing;
                Err(err)
            }
        }
    }

    /// Whether a new instance may be made now: not while the version backs
    /// off after crashing again and again.
    fn may_create(&self) -> Result<()> {
        let health = self.health();
        let wait = health.retry_in();
        if wait.is_zero() {
            return Ok(());
        }
        Err(Error::Unavailable {
            plugin: self.plugin.plugin_ref(),
            failures: health.consecutive_failures,
            retry_in: wait,
        })
    }

    /// Wait until no call runs on this version and hold every place: no
    /// call can start until the guards are dropped. Places are locked in
    /// order, and a caller never holds one place while waiting for another.
    pub(crate) fn quiesce(&self) -> Quiesced<'_, W> {
        Quiesced {
            places: self.places.iter().map(|place| place.lock()).collect(),
            live: self,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::Ordering;
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
        live_waiting(size, None)
    }

    /// [`live`] whose callers wait at most `max_wait` for a place.
    fn live_waiting(size: usize, max_wait: Option<Duration>) -> std::sync::Arc<Live<Dynamic>> {
        let runtime = Runtime::<Dynamic>::new().unwrap();
        let plugin = runtime.load_bytes("pool-test", WAT.as_bytes()).unwrap();
        let first = plugin.instantiate().unwrap();
        Live::new(plugin, first, size, max_wait)
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
    fn an_async_caller_waiting_through_a_quiesce_gets_the_place_it_releases() {
        // A swap holds the serving version's places while it carries its
        // state over; a caller that began waiting then must be woken when
        // the swap lets go, not sleep out its `max_wait`.
        let max_wait = Duration::from_secs(3);
        let live = live_waiting(1, Some(max_wait));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let swap = {
            let live = live.clone();
            let (held, hold) = mpsc::channel();
            let swap = std::thread::spawn(move || {
                let places = live.quiesce();
                held.send(()).unwrap();
                while live.waiters.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
                drop(places);
            });
            hold.recv().unwrap();
            swap
        };
        let got = runtime.block_on(async { live.checkout_async().await.map(drop) });
        swap.join().unwrap();
        if let Err(err) = got {
            panic!("the waiter slept through the release: {err}");
        }
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
        drop(live.quiesce()[0].instance.take());
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
