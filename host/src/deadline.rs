//! Deadlines that hold inside host calls.
//!
//! Epoch interruption stops a guest only while it runs wasm: a guest blocked
//! in a host call (a WASI sleep through `poll`, a `blocking-read` on a
//! socket) never reaches an epoch check, so before this module a 15 s sleep
//! under a 1 s deadline returned after 15 s.
//!
//! The invariant kept here: **a call's wall-clock deadline covers the time it
//! spends blocked in WASI**, to within one epoch tick. How:
//!
//! * The runtime's ticker advances an [`EpochClock`] beside the engine's
//!   epoch, so the store knows "now" in ticks with one atomic load.
//! * Every call arms its store with the epoch its deadline falls on
//!   ([`CallDeadline`]), the same number wasmtime's epoch check uses.
//! * The blocking WASI functions — `wasi:io/poll.poll`,
//!   `pollable.block`, and the `blocking-*` methods of
//!   `wasi:io/streams` — are re-registered in the linker (shadowing
//!   wasmtime-wasi's own) by [`add_to_linker`]. Each runs wasmtime-wasi's own
//!   implementation under a timeout of the time left; when it runs out, the
//!   host call fails with [`DeadlineExceeded`], which ends the call as a
//!   trap ([`Error::is_timeout`](crate::Error::is_timeout) is true) and
//!   discards the instance like any other deadline.
//!
//! What is *not* covered: filesystem calls on granted directories (they run
//! to completion on a blocking thread; a FIFO in a granted directory could
//! block an `open`), and the embedder's own host imports, which are the
//! embedder's code: a deadline that passes inside one stops the guest at its
//! next epoch check after the import returns.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streams::{InputStream, OutputStream};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};

/// The runtime's epoch, readable without asking the engine: the ticker
/// advances it right before it advances the engine's. It also knows when it
/// last ticked, so an epoch callback can tell a guest that was running when
/// the tick came from one whose thread was preempted meanwhile
/// ([`EpochClock::since_tick`]).
#[derive(Debug)]
pub(crate) struct EpochClock {
    epoch: AtomicU64,
    tick: Duration,
    /// When the clock was made: the origin of `ticked_at`.
    origin: Instant,
    /// When the last tick came, in nanoseconds since `origin`.
    ticked_at: AtomicU64,
}

impl EpochClock {
    pub(crate) fn new(tick: Duration) -> Self {
        EpochClock {
            epoch: AtomicU64::new(0),
            tick,
            origin: Instant::now(),
            ticked_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// A tick: note when, then advance.
    pub(crate) fn advance(&self) {
        let at = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.ticked_at.store(at, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// How long before `now` the last tick came. A guest that computes sees
    /// a tick within microseconds (wasm checks the epoch at every loop
    /// header and function entry); one whose thread was off the CPU when it
    /// came sees it only when the thread runs again.
    pub(crate) fn since_tick(&self, now: Instant) -> Duration {
        let at = Duration::from_nanos(self.ticked_at.load(Ordering::Acquire));
        now.saturating_duration_since(self.origin + at)
    }
}

/// When the call running in a store must end, in epochs of its runtime's
/// clock. Set on every call by the runtime's `arm`.
#[derive(Debug, Clone)]
pub(crate) struct CallDeadline {
    clock: Arc<EpochClock>,
    /// The epoch the deadline falls on; `u64::MAX` for none.
    at: u64,
    /// When the async call running in the store began (set by
    /// `Instance::call_async`; blocking calls do not read the clock).
    pub(crate) began: Option<Instant>,
    /// Whether an epoch tick already found the call computing: the next
    /// one moves it to the guest threads (`runtime::yield_at_ticks`).
    pub(crate) computed: bool,
}

/// How long an async call may have computed when an epoch tick comes and
/// still go on where it runs, without yielding. A tick falls at a random
/// point of a call: a call of a few microseconds that it happened to catch
/// has not computed for a tick, and moving it to the guest threads would
/// only cost a hand-off. So a call computes on the executor for one tick
/// plus this at most before it yields. (Also the budget of
/// `Handle::call_async`'s long calls.)
pub(crate) const INLINE_BUDGET: Duration = Duration::from_micros(500);

/// How soon after a tick a guest that was computing when it came sees it,
/// at the most. A guest that sees a tick later than this was off the CPU
/// when it came (its thread preempted, or in a long host call): the time
/// since it began is the scheduler's as much as its own, and the tick does
/// not count towards moving it to the guest threads.
pub(crate) const TICK_SEEN_WITHIN: Duration = Duration::from_micros(100);

impl CallDeadline {
    pub(crate) fn new(clock: Arc<EpochClock>) -> Self {
        CallDeadline {
            clock,
            at: u64::MAX,
            began: None,
            computed: false,
        }
    }

    /// Arm for a call that may run `ticks` more epochs; `None` for a call
    /// without a deadline.
    pub(crate) fn arm(&mut self, ticks: Option<u64>) {
        self.computed = false;
        self.at = match ticks {
            Some(ticks) => self.clock.now().saturating_add(ticks),
            None => u64::MAX,
        };
    }

    /// How long before `now` the runtime's last epoch tick came.
    pub(crate) fn since_tick(&self, now: Instant) -> Duration {
        self.clock.since_tick(now)
    }

    /// Whether the deadline has passed (never, without one).
    pub(crate) fn passed(&self) -> bool {
        self.at != u64::MAX && self.clock.now() >= self.at
    }

    /// The time left, `None` when the call has no deadline.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        if self.at == u64::MAX {
            return None;
        }
        let ticks = self.at.saturating_sub(self.clock.now());
        let ticks = u32::try_from(ticks).unwrap_or(u32::MAX);
        Some(self.clock.tick.saturating_mul(ticks))
    }
}

/// A call's deadline passed while the guest was blocked in a host call. The
/// call fails as a trap and the instance is discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    /// The host call it was blocked in, e.g. `wasi:io/poll.poll`.
    pub inside: &'static str,
}

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the call's deadline passed while the guest was blocked in {}",
            self.inside
        )
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Run a blocking WASI future on wasmtime-wasi's runtime, for at most
/// `remaining`.
fn bounded<F: Future>(
    remaining: Option<Duration>,
    inside: &'static str,
    future: F,
) -> Result<F::Output, DeadlineExceeded> {
    match remaining {
        None => Ok(in_tokio(future)),
        Some(left) => in_tokio(async move { tokio::time::timeout(left, future).await })
            .map_err(|_| DeadlineExceeded { inside }),
    }
}

fn trap(exceeded: DeadlineExceeded) -> wasmtime::Error {
    wasmtime::Error::new(exceeded)
}

fn stream_trap(exceeded: DeadlineExceeded) -> StreamError {
    StreamError::Trap(trap(exceeded))
}

/// The store's resource table and the time left for the current call: what
/// the re-registered blocking functions see.
pub(crate) struct Bounded<'a> {
    table: &'a mut ResourceTable,
    remaining: Option<Duration>,
}

struct BoundedIo;

impl HasData for BoundedIo {
    type Data<'a> = Bounded<'a>;
}

impl<'a> Bounded<'a> {
    /// A store's view for the bounded functions: its resource table, and
    /// the time its current call has left.
    pub(crate) fn new(table: &'a mut ResourceTable, deadline: &CallDeadline) -> Self {
        Bounded {
            remaining: deadline.remaining(),
            table,
        }
    }
}

/// Replace wasmtime-wasi's blocking `wasi:io` functions in `linker` with
/// ones bounded by the call's deadline. Call after
/// `wasmtime_wasi::p2::add_to_linker_sync`.
/// `view` gives the store's [`Bounded`] view.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Bounded<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<T, BoundedIo>(linker, view)?;
    streams::add_to_linker::<T, BoundedIo>(linker, view)?;
    linker.allow_shadowing(false);
    Ok(())
}

impl poll::Host for Bounded<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let future = async_poll::Host::poll(&mut *self.table, pollables);
        bounded(self.remaining, "wasi:io/poll.poll", future).map_err(trap)?
    }
}

impl poll::HostPollable for Bounded<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll::HostPollable::ready(&mut *self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let future = async_poll::HostPollable::block(&mut *self.table, pollable);
        bounded(self.remaining, "wasi:io/poll.pollable.block", future).map_err(trap)?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

impl streams::Host for Bounded<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(&mut *self.table, err)
    }
}

impl streams::HostOutputStream for Bounded<'_> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        streams::HostOutputStream::drop(&mut *self.table, stream)
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let future = AsyncOutput::blocking_write_and_flush(&mut *self.table, stream, bytes);
        bounded(
            self.remaining,
            "wasi:io/streams.output-stream.blocking-write-and-flush",
            future,
        )
        .map_err(stream_trap)?
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let future = AsyncOutput::blocking_write_zeroes_and_flush(&mut *self.table, stream, len);
        bounded(
            self.remaining,
            "wasi:io/streams.output-stream.blocking-write-zeroes-and-flush",
            future,
        )
        .map_err(stream_trap)?
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        let stream = Resource::new_borrow(stream.rep());
        let future = AsyncOutput::blocking_flush(&mut *self.table, stream);
        bounded(
            self.remaining,
            "wasi:io/streams.output-stream.blocking-flush",
            future,
        )
        .map_err(stream_trap)?
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let future = AsyncOutput::blocking_splice(&mut *self.table, dst, src, len);
        bounded(
            self.remaining,
            "wasi:io/streams.output-stream.blocking-splice",
            future,
        )
        .map_err(stream_trap)?
    }
}

impl streams::HostInputStream for Bounded<'_> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        streams::HostInputStream::drop(&mut *self.table, stream)
    }

    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        let future = AsyncInput::blocking_read(&mut *self.table, stream, len);
        bounded(
            self.remaining,
            "wasi:io/streams.input-stream.blocking-read",
            future,
        )
        .map_err(stream_trap)?
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        let future = AsyncInput::blocking_skip(&mut *self.table, stream, len);
        bounded(
            self.remaining,
            "wasi:io/streams.input-stream.blocking-skip",
            future,
        )
        .map_err(stream_trap)?
    }

    fn subscribe(
        &mut self,
        stream: Resource<InputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_counts_down_with_the_clock_and_never_underflows() {
        let clock = Arc::new(EpochClock::new(Duration::from_millis(10)));
        let mut deadline = CallDeadline::new(clock.clone());
        assert_eq!(deadline.remaining(), None, "no deadline until armed");
        deadline.arm(Some(5));
        assert_eq!(deadline.remaining(), Some(Duration::from_millis(50)));
        clock.advance();
        clock.advance();
        assert_eq!(deadline.remaining(), Some(Duration::from_millis(30)));
        for _ in 0..10 {
            clock.advance();
        }
        assert_eq!(deadline.remaining(), Some(Duration::ZERO));
        deadline.arm(None);
        assert_eq!(deadline.remaining(), None);
        deadline.arm(Some(1 << 62));
        assert!(deadline.remaining().unwrap() > Duration::from_secs(365 * 24 * 3600));
    }
}
