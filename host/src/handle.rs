//! A handle: how an embedder calls a plugin by name through a
//! [`Registry`](crate::Registry). It resolves the version on every call.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tracing::{Instrument as _, Span};
use wasmtime::Store;

use crate::canary::{KeyHash, Rollout};
use crate::deadline::INLINE_BUDGET;
use crate::error::{Error, Result};
use crate::pool::{Health, Live};
use crate::runtime::{computed_a_tick, on_guest_thread};
use crate::slot::{pick_live, Slot};
use crate::telemetry;
use crate::world::BoxFuture;
use crate::{Instance, Plugin, State, World};

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

    /// [`resolve`](Self::resolve) for a call, blocking or async (which
    /// carries its version with it, maybe to another thread): the current
    /// version as an arc-swap guard, which touches no reference count (two
    /// threads calling one version would otherwise write its count's cache
    /// line twice per call each); a requirement resolves as `resolve` does.
    fn resolve_version(&self) -> Result<Version<W>> {
        match &self.requirement {
            None => {
                let guard = self.slot.current.load();
                if guard.is_none() {
                    return Err(self.not_loaded());
                }
                Ok(Version::Current(guard))
            }
            Some(_) => Ok(Version::Owned(self.resolve()?)),
        }
    }

    /// Whether a canary or shadow trial may take this call: one relaxed
    /// load while none runs. A handle with a requirement resolves by it
    /// alone and never takes part.
    #[inline]
    fn may_try(&self) -> bool {
        self.slot.trying.load(Ordering::Relaxed) && self.requirement.is_none()
    }

    /// Whether `live` stopped being the version this handle resolves to.
    fn moved(&self, live: &Live<W>) -> bool {
        moved(live, self.requirement.is_some())
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
        if self.may_try() {
            return self.call_trial(None, f);
        }
        self.call_current(f)
    }

    /// [`call`](Self::call), and while a canary rollout runs, the version
    /// is chosen by `key` rather than per call: the same key always goes
    /// to the same version (a user sees one version, not both in turn).
    /// The key's hash is stable across processes, so a user sticks to one
    /// version on every replica running the same rollout.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_keyed<R, K: std::hash::Hash + ?Sized>(
        &self,
        key: &K,
        f: impl FnOnce(&mut Instance<W>) -> Result<R>,
    ) -> Result<R> {
        if self.may_try() {
            return self.call_trial(Some(key.key_hash()), f);
        }
        self.call_current(f)
    }

    /// [`call`](Self::call) for a call the embedder declares free of side
    /// effects (the same answer for the same input, nothing changed
    /// anywhere): while a shadow rollout runs, it is also made on the
    /// version on trial, on the caller's thread after this one, and the two
    /// results compared ([`canary`](crate::canary)). The caller always gets
    /// the serving version's result; a shadow trial adds the mirrored
    /// call's time to the call. Outside a shadow rollout it is a plain
    /// [`call`](Self::call).
    ///
    /// # Errors
    /// As [`call`](Self::call), from the serving version.
    pub fn call_pure<R: PartialEq + std::fmt::Debug>(
        &self,
        f: impl Fn(&mut Instance<W>) -> Result<R>,
    ) -> Result<R> {
        if !self.may_try() {
            return self.call_current(&f);
        }
        let Some(trial) = self.slot.trial.load_full().filter(|t| !t.concluded()) else {
            return self.call_current(&f);
        };
        if !matches!(trial.rollout, Rollout::Shadow(_)) {
            return self.call_trial(None, &f);
        }
        let began = Instant::now();
        let primary = self.call_current(&f);
        trial.record(false, &primary, began.elapsed());
        let began = Instant::now();
        let mirrored = call_on(&trial.candidate, &f);
        let took = began.elapsed();
        let same = match (&primary, &mirrored) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.kind() == b.kind(),
            _ => false,
        };
        if !same {
            let show = |r: &Result<R>| match r {
                Ok(value) => format!("{value:?}"),
                Err(err) => format!("error: {err}"),
            };
            trial.mismatch(|| show(&primary), || show(&mirrored));
        }
        trial.record(true, &mirrored, took);
        primary
    }

    /// A call while a trial may run: to the candidate or the serving
    /// version, counted on its side.
    #[cold]
    fn call_trial<R>(
        &self,
        key: Option<u64>,
        f: impl FnOnce(&mut Instance<W>) -> Result<R>,
    ) -> Result<R> {
        let Some(trial) = self.slot.trial.load_full().filter(|t| !t.concluded()) else {
            return self.call_current(f);
        };
        let candidate = trial.to_candidate(key);
        let began = Instant::now();
        let result = if candidate {
            call_on(&trial.candidate, f)
        } else {
            self.call_current(f)
        };
        trial.record(candidate, &result, began.elapsed());
        result
    }

    /// [`call`](Self::call) on the current version, trial or none.
    #[inline]
    fn call_current<R>(&self, f: impl FnOnce(&mut Instance<W>) -> Result<R>) -> Result<R> {
        let mut began = None;
        loop {
            // The current version through an arc-swap guard (as
            // `resolve_version`, without the enum the async call carries:
            // calling it here costs 30 instructions a call, `just
            // callcount`): no reference count is touched, so concurrent
            // callers share no cache line here. A requirement resolves
            // under the slot lock instead.
            let (guard, owned);
            let live: &Live<W> = match &self.requirement {
                None => {
                    guard = self.slot.current.load();
                    guard.as_deref().ok_or_else(|| self.not_loaded())?
                }
                Some(_) => {
                    owned = self.resolve()?;
                    &owned
                }
            };
            // No span at all while no subscriber is set: making, entering
            // and dropping even a disabled one costs ~30 instructions a
            // call (`just callcount`).
            let span = telemetry::traced().then(|| telemetry::call_span(live.plugin.label()));
            let _entered = span.as_ref().map(Span::enter);
            // From the first attempt: a call that follows a swap counts
            // its wait on the old version too.
            began = began.or_else(|| telemetry::call_began(live.calls.recording, span.as_ref()));
            let mut lease = match live.checkout() {
                Ok(lease) => lease,
                Err(err) => {
                    let failed = Err(err);
                    settle(live, span.as_ref(), began.map(|b| b.elapsed()), &failed);
                    return failed;
                }
            };
            // Swapped out or removed while we waited: follow the pointer.
            if self.moved(live) {
                continue;
            }
            let instance = lease.instance();
            let result = f(instance);
            account(live, instance);
            settle(live, span.as_ref(), began.map(|b| b.elapsed()), &result);
            return result;
        }
    }

    /// [`call`](Self::call) as a future, for an [`ASYNC`](World::ASYNC)
    /// world: what an axum handler awaits. `f` gets the bindings and the
    /// store, as in [`Instance::call_async`]:
    ///
    /// ```no_run
    /// # use wasmplug::reference::async_world::GreeterPlugin;
    /// # async fn f(handle: wasmplug::Handle<GreeterPlugin>, name: String) -> wasmplug::Result<String> {
    /// let greeting = handle
    ///     .call_async(move |plugin, store| {
    ///         Box::pin(async move {
    ///             plugin.wasmplug_plugin_greeter().call_welcome(store, &name).await
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(greeting) }
    /// ```
    ///
    /// * **Never blocks the executor.** Waiting for a busy instance parks the
    ///   task. The guest runs on the calling task unless epoch ticks find
    ///   it computing (most calls: no hand-off, no thread switch). It
    ///   yields at every tick; at the second that finds it computing it
    ///   moves, with its instance, to the runtime's guest threads
    ///   ([`RuntimeBuilder::guest_threads`](crate::runtime::RuntimeBuilder::guest_threads),
    ///   a lower OS priority than the embedder's threads) and the task just
    ///   awaits it. A tick does not count when it came less than 0.5 ms
    ///   after the call began (it caught a call's start), nor when the
    ///   guest sees it late because its thread was preempted meanwhile:
    ///   a call of microseconds made old by the scheduler stays where it
    ///   is, rather than wait behind a busy machine at the guest threads'
    ///   low priority with its instance held. A guest burning CPU to its
    ///   deadline therefore holds an executor thread for a tick and 0.5 ms
    ///   at a time, two ticks and 0.5 ms in all. Each call spends a
    ///   unit of tokio's cooperative budget, so a task making call after
    ///   call yields to its executor now and then. And a version whose last
    ///   two calls each took longer than 0.5 ms starts its next call on the
    ///   guest threads directly (one call under that brings it back), so a
    ///   plugin whose calls compute for milliseconds holds no executor
    ///   thread after its first two calls.
    /// * **Bounded waiting.** A call waits at most
    ///   [`Registry::with_max_wait`](crate::Registry::with_max_wait) for an
    ///   instance, then fails with [`Error::Overloaded`].
    /// * **Deadline in wall-clock time**, awaiting host calls included.
    /// * **Cancellation-safe.** Dropping the future before the call starts
    ///   gives the instance back untouched. Dropping it mid-call stops the
    ///   guest at its next yield (a tick, or an awaiting host call): its
    ///   stack is unwound, the instance is dropped, never reused, and the
    ///   next call gets a fresh one (with `init`). A cancelled call is not
    ///   counted against the version's health; a state kept in that
    ///   instance (with a pool of one) is lost with it.
    ///
    /// # Errors
    /// As [`call`](Self::call), and [`Error::Overloaded`] when no instance
    /// frees within the registry's maximum wait; [`Error::BadCall`] for a
    /// world whose bindings are blocking.
    pub async fn call_async<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(
                &'a W,
                &'a mut Store<State<W::Data>>,
            ) -> BoxFuture<'a, wasmtime::Result<R>>
            + Send
            + 'static,
    {
        self.run_async(f, |_, result| result).await
    }

    /// [`call_async`](Self::call_async) for an export that returns a WIT
    /// `result`, as [`Instance::try_call`] is for [`Instance::call`]: the
    /// guest's own error becomes [`Error::Guest`] (the plugin said no; the
    /// instance stays healthy, and the call counts as failed, of kind
    /// `guest`, in the [`telemetry`](crate::telemetry)).
    ///
    /// # Errors
    /// As [`call_async`](Self::call_async), and [`Error::Guest`] for the
    /// guest's own error.
    pub async fn try_call_async<T, E, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: for<'a> FnOnce(
                &'a W,
                &'a mut Store<State<W::Data>>,
            )
                -> BoxFuture<'a, wasmtime::Result<std::result::Result<T, E>>>
            + Send
            + 'static,
    {
        self.run_async(f, |plugin, result| {
            result?.map_err(|e| plugin.guest_error(e))
        })
        .await
    }

    /// The async call path: `answer` turns the call's result into what the
    /// embedder gets, before the call is counted.
    async fn run_async<R, T, F>(&self, f: F, answer: Answer<W, R, T>) -> Result<T>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a W,
                &'a mut Store<State<W::Data>>,
            ) -> BoxFuture<'a, wasmtime::Result<R>>
            + Send
            + 'static,
    {
        // A unit of tokio's cooperative budget, as a socket read spends:
        // a task making call after call (most finish in their first poll)
        // yields now and then, and its executor's timers and I/O go on.
        // Spent before an instance is leased, not while holding one.
        tokio::task::coop::consume_budget().await;
        let mut f = f;
        let mut began = None;
        // A canary on trial takes its share of async calls too.
        let trial = self
            .may_try()
            .then(|| self.slot.trial.load_full())
            .flatten()
            .filter(|t| !t.concluded());
        let to_candidate = trial.as_ref().is_some_and(|t| t.to_candidate(None));
        let trial_began = trial.as_ref().map(|_| Instant::now());
        loop {
            // The call owns its version (it may move to another thread);
            // the handle stays here, to resolve again after a swap.
            let live = match &trial {
                Some(trial) if to_candidate => Version::Owned(trial.candidate.clone()),
                _ => self.resolve_version()?,
            };
            // A version whose last calls took longer than the inline budget
            // starts on the guest threads: a plugin whose calls compute for
            // milliseconds then stops holding this executor.
            let guest = (live.long_calls.load(Ordering::Relaxed) >= LONG_STREAK)
                .then(|| live.plugin.inner.runtime.guest.clone());
            let span = telemetry::call_span(live.plugin.label());
            // Read the clock only for a reader of the duration: on this
            // path a clock read is a few per cent of the call.
            began = began.or_else(|| telemetry::call_began(live.calls.recording, Some(&span)));
            let call = Call {
                by_requirement: self.requirement.is_some(),
                began,
                answer,
                span: span.clone(),
            };
            let call = Box::pin(call.on(live, f).instrument(span));
            let stage = match guest {
                Some(guest) => Stage::There(guest.handle().spawn(call)),
                None => Stage::Here(call),
            };
            match OffTheExecutor(stage).await {
                Attempt::Done(result) => {
                    if let (Some(trial), Some(began)) = (&trial, trial_began) {
                        trial.record(to_candidate, &result, began.elapsed());
                    }
                    return result;
                }
                // Swapped out or removed while we waited: follow the pointer.
                Attempt::Moved(back) => f = back,
            }
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

/// Run `f` on an instance of `live`, counted and traced as any call: a
/// call to a version on trial.
fn call_on<W: World, R>(
    live: &Live<W>,
    f: impl FnOnce(&mut Instance<W>) -> Result<R>,
) -> Result<R> {
    let span = telemetry::call_span(live.plugin.label());
    let _entered = span.enter();
    let began = telemetry::call_began(live.calls.recording, Some(&span));
    let mut lease = match live.checkout() {
        Ok(lease) => lease,
        Err(err) => {
            let failed = Err(err);
            settle(live, Some(&span), began.map(|b| b.elapsed()), &failed);
            return failed;
        }
    };
    let instance = lease.instance();
    let result = f(instance);
    account(live, instance);
    settle(live, Some(&span), began.map(|b| b.elapsed()), &result);
    result
}

/// Long calls in a row that send a version's calls to the guest threads
/// from their start, so a plugin computing for milliseconds per call holds
/// no executor thread; one call that is not long brings its version back.
///
/// A call is timed by the wall clock, which is one clock read, and a
/// thread preempted mid-call (on a busy machine, many times a second)
/// makes a fast call look long. So a long call only arms the streak: the
/// calls after it are also timed by their thread's CPU clock (a system
/// call, 0.3–0.7 µs a read here, spent only while the streak is armed),
/// and count as long when they also *computed* for longer than
/// [`INLINE_BUDGET`] ([`cpu_timed`]). Before, two calls preempted in a row
/// sent a call of microseconds to the guest threads, which a busy machine
/// starves at nice +19, holding its instance there. A call awaiting an
/// import for long computes nothing and parks its task: it holds no
/// executor thread either, and is not long.
pub(crate) const LONG_STREAK: u8 = 2;

/// Whether a call that began at `began` and ended at `ended`, having
/// computed for `cpu` if it was timed so, counts towards [`LONG_STREAK`].
fn long_call(began: Option<Instant>, ended: Instant, cpu: Option<Duration>) -> bool {
    began.is_some_and(|began| ended - began > INLINE_BUDGET)
        && cpu.is_none_or(|cpu| cpu > INLINE_BUDGET)
}

/// `call` polled to its end, with the CPU time its polls took on the
/// threads that made them (`None` where the platform has no thread CPU
/// clock). Each poll is timed on its own: between polls the task may move
/// to another thread (the guest threads, or tokio's work stealing), and
/// the thread runs other tasks. A wasmtime fiber runs on the thread that
/// polls it, so a computing guest's time is its poll's.
async fn cpu_timed<T>(call: impl Future<Output = T>) -> (T, Option<Duration>) {
    let mut call = std::pin::pin!(call);
    // `None` from the first poll the clock cannot time.
    let mut spent = Some(Duration::ZERO);
    let out = std::future::poll_fn(|cx| {
        let before = thread_cpu_time();
        let poll = call.as_mut().poll(cx);
        spent = match (spent, before, thread_cpu_time()) {
            (Some(total), Some(before), Some(after)) => Some(total + after.saturating_sub(before)),
            _ => None,
        };
        poll
    })
    .await;
    (out, spent)
}

/// The CPU time the calling thread has used.
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a timespec the call may write.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    (read == 0).then(|| Duration::new(secs, nanos))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Whether `live` stopped being the version a handle resolves to.
fn moved<W: World>(live: &Live<W>, by_requirement: bool) -> bool {
    if by_requirement {
        live.retired.load(Ordering::Acquire)
    } else {
        // Marked before the pointer moves (`Slot::set_current`): one
        // atomic load instead of a second arc-swap load.
        live.superseded.load(Ordering::Acquire)
    }
}

/// What one attempt at an async call came to.
enum Attempt<R, F> {
    Done(Result<R>),
    /// The version moved while the call waited for an instance: the call
    /// was not made, and here is its closure back.
    Moved(F),
}

/// The version a call runs on: an arc-swap guard of the name's current
/// pointer (checked not empty), or an `Arc` resolved by requirement.
/// Either keeps the version alive, on whichever thread an async call ends.
enum Version<W: World> {
    Current(arc_swap::Guard<Option<Arc<Live<W>>>>),
    Owned(Arc<Live<W>>),
}

impl<W: World> std::ops::Deref for Version<W> {
    type Target = Live<W>;

    fn deref(&self) -> &Live<W> {
        match self {
            Version::Current(guard) => guard.as_ref().expect("checked when resolved"),
            Version::Owned(live) => live,
        }
    }
}

/// What the embedder gets from a call's result: the result itself, or the
/// guest's own error made an [`Error::Guest`].
type Answer<W, R, T> = fn(&Plugin<W>, Result<R>) -> Result<T>;

/// One async call, but for its version and its closure.
struct Call<W: World, R, T> {
    by_requirement: bool,
    /// When the embedder called, if anything reads the duration (which
    /// then counts the waiting too).
    began: Option<Instant>,
    answer: Answer<W, R, T>,
    /// The call's; the caller instruments the future with it.
    span: Span,
}

impl<W: World, R, T> Call<W, R, T> {
    /// The call on one version: an instance from its pool, the call, the
    /// version's health kept.
    async fn on<F>(self, version: Version<W>, f: F) -> Attempt<T, F>
    where
        F: for<'a> FnOnce(
            &'a W,
            &'a mut Store<State<W::Data>>,
        ) -> BoxFuture<'a, wasmtime::Result<R>>,
    {
        let live: &Live<W> = &version;
        let mut lease = match live.checkout_async().await {
            Ok(lease) => lease,
            Err(err) => {
                let failed = Err(err);
                settle(
                    live,
                    Some(&self.span),
                    self.began.map(|b| b.elapsed()),
                    &failed,
                );
                return Attempt::Done(failed);
            }
        };
        if moved(live, self.by_requirement) {
            return Attempt::Moved(f);
        }
        let instance = lease.instance();
        // Written only when it changes: every call reads it.
        let streak = live.long_calls.load(Ordering::Relaxed);
        let (result, cpu) = if streak == 0 {
            (instance.call_async_unbudgeted(f).await, None)
        } else {
            cpu_timed(instance.call_async_unbudgeted(f)).await
        };
        let ended = Instant::now();
        let long = long_call(instance.async_call_began(), ended, cpu);
        if on_guest_thread() {
            live.calls.ended_on_guest_threads();
        }
        account(live, instance);
        let next = if long {
            (streak + 1).min(LONG_STREAK)
        } else {
            0
        };
        if next != streak {
            live.long_calls.store(next, Ordering::Relaxed);
        }
        let result = (self.answer)(&live.plugin, result);
        settle(
            live,
            Some(&self.span),
            self.began.map(|b| ended - b),
            &result,
        );
        Attempt::Done(result)
    }
}

/// Count a call that reached `live` in its metrics and close its span;
/// `took` is `None` when nothing reads the time. (By reference: a result
/// moved in and out would be copied twice, error and all, on every call.)
#[inline]
fn settle<W: World, R>(
    live: &Live<W>,
    span: Option<&Span>,
    took: Option<Duration>,
    result: &Result<R>,
) {
    if took.is_none() {
        // Timed when anything reads the outcome (a recorder, a span's
        // subscriber): nothing does.
        return;
    }
    let kind = result.as_ref().err().map(Error::kind);
    live.calls.record(kind, took);
    if let Some(span) = span {
        telemetry::finish(span, kind.unwrap_or("ok"), took);
    }
}

/// Keep a version's health after a call: a trap counts against it, a good
/// call clears its failures in a row.
#[inline]
fn account<W: World>(live: &Live<W>, instance: &Instance<W>) {
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
}

/// An async call that starts on the calling task and moves to the guest
/// threads the first time it yields because it computed for a whole epoch
/// tick. Dropped while there, it aborts the moved call (which the guest
/// threads then drop at its next yield: the cancellation of `call_async`).
struct OffTheExecutor<T>(Stage<T>);

enum Stage<T> {
    Here(BoxFuture<'static, T>),
    There(tokio::task::JoinHandle<T>),
    Done,
}

impl<T: Send + 'static> Future for OffTheExecutor<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let stage = &mut self.0;
        loop {
            match stage {
                Stage::Here(call) => {
                    // Forget a yield some other call left on this thread.
                    let _ = computed_a_tick();
                    let poll = call.as_mut().poll(cx);
                    let computing = computed_a_tick();
                    if poll.is_ready() {
                        *stage = Stage::Done;
                        return poll;
                    }
                    let Some(guest) = computing else {
                        // Waiting for an instance or an awaiting host call:
                        // it wakes this task when it can go on.
                        return Poll::Pending;
                    };
                    let Stage::Here(call) = std::mem::replace(stage, Stage::Done) else {
                        unreachable!("matched above")
                    };
                    *stage = Stage::There(guest.handle().spawn(call));
                }
                Stage::There(moved) => {
                    let outcome = std::task::ready!(Pin::new(moved).poll(cx));
                    *stage = Stage::Done;
                    return Poll::Ready(match outcome {
                        Ok(result) => result,
                        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                        // Only this future aborts the task, and then no
                        // longer polls it; the guest threads live as long
                        // as a plugin of their runtime does.
                        Err(err) => panic!("wasmplug's guest threads dropped a call: {err}"),
                    });
                }
                Stage::Done => panic!("an async call polled after it completed"),
            }
        }
    }
}

impl<T> Drop for OffTheExecutor<T> {
    fn drop(&mut self) {
        if let Stage::There(moved) = &self.0 {
            moved.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_call_is_timed_by_what_its_polls_computed_not_by_the_time_between_them() {
        let spin = Duration::from_millis(3);
        let sleep = Duration::from_millis(20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let wall = Instant::now();
        let ((), cpu) = rt.block_on(cpu_timed(async {
            // Computes for `spin` of this thread's CPU time, then parks.
            let from = thread_cpu_time().unwrap();
            while thread_cpu_time().unwrap() - from < spin {}
            tokio::time::sleep(sleep).await;
        }));
        let (wall, cpu) = (wall.elapsed(), cpu.expect("a thread CPU clock"));
        assert!(wall >= spin + sleep, "{wall:?}");
        // The sleep between its polls computes nothing.
        assert!(cpu >= spin && cpu < spin + sleep, "{cpu:?} of {wall:?}");
        assert!(long_call(
            Some(Instant::now() - wall),
            Instant::now(),
            Some(cpu)
        ));
        assert!(!long_call(
            Some(Instant::now() - wall),
            Instant::now(),
            Some(INLINE_BUDGET)
        ));
        assert!(long_call(Some(Instant::now() - wall), Instant::now(), None));
        assert!(!long_call(Some(Instant::now()), Instant::now(), None));
        assert!(!long_call(None, Instant::now(), Some(cpu)));
    }
}
