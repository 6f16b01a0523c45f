//! Canary and shadow rollouts: a new version tried beside the serving one
//! on real calls, judged on its figures, then promoted or rolled back.
//!
//! A [`Registry::with_rollout`](crate::Registry::with_rollout) other than
//! [`Rollout::AllAtOnce`] turns a swap into a *trial*. The new version (the
//! candidate) is loaded and initialised as for any swap, but the serving
//! version stays current:
//!
//! * **Canary**: a share of calls goes to the candidate (chosen per call,
//!   or by a key the caller gives, so one user sticks to one version). Each
//!   call is counted on its side: traps, other errors, and its duration in
//!   a histogram. Once the candidate has made
//!   [`min_calls`](Canary::min_calls), it is rolled back as soon as its
//!   trap rate, error rate or p99 latency exceeds the serving version's by
//!   the configured margins, and promoted after
//!   [`promote_after_calls`](Canary::promote_after_calls) calls (or
//!   [`promote_after`](Canary::promote_after)) if none did.
//! * **Shadow**: calls the embedder marks side-effect-free
//!   ([`Handle::call_pure`](crate::Handle::call_pure)) are answered by the
//!   serving version and mirrored to the candidate; the two results are
//!   compared and the candidate's discarded. Mismatches are counted and a
//!   sample reported as events; more than
//!   [`max_mismatches`](Shadow::max_mismatches) rolls it back, and it is
//!   promoted after [`promote_after_calls`](Shadow::promote_after_calls)
//!   mirrored calls otherwise. No caller ever gets a candidate's answer.
//!
//! A trial carries no state across: the candidate serves from its own
//! fresh instances beside the serving version's.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::event::{Event, Subscribers};
use crate::pool::Live;
use crate::World;

/// How a swap goes live. See the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Rollout {
    /// The new version takes every call at once (the default).
    #[default]
    AllAtOnce,
    /// A share of calls first; promoted or rolled back on its figures.
    Canary(Canary),
    /// Side-effect-free calls mirrored to it first; promoted unless its
    /// answers differ.
    Shadow(Shadow),
}

/// A canary rollout's share, decision window and thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// The share of calls the new version takes, from 0 to 1.
    pub share: f64,
    /// The new version's calls before any judgement: its decision window.
    pub min_calls: u64,
    /// Promote after the new version made this many calls, if healthy.
    pub promote_after_calls: u64,
    /// Or promote after this long (once it made `min_calls`), if healthy.
    pub promote_after: Option<Duration>,
    /// Roll back when its trap rate exceeds the serving version's by more
    /// than this (0.01: one percentage point).
    pub max_trap_rate_increase: f64,
    /// Roll back when its rate of other errors (the guest said no, a bad
    /// call, overload) exceeds the serving version's by more than this.
    pub max_error_rate_increase: f64,
    /// Roll back when its p99 latency exceeds the serving version's times
    /// this (judged once both made `min_calls`, and at least 100 calls)...
    pub max_p99_ratio: f64,
    /// ...and by more than this: a p99 of a few microseconds more is
    /// noise (one preempted call among fifty is a p99), not a regression.
    pub p99_slack: Duration,
}

impl Default for Canary {
    /// 10 % of calls; judged from 50 calls on; promoted after 1,000 healthy
    /// calls; rolled back on one more trap in a hundred calls, five more
    /// errors in a hundred, or a p99 twice the serving version's and a
    /// millisecond more.
    fn default() -> Self {
        Canary {
            share: 0.10,
            min_calls: 50,
            promote_after_calls: 1000,
            promote_after: None,
            max_trap_rate_increase: 0.01,
            max_error_rate_increase: 0.05,
            max_p99_ratio: 2.0,
            p99_slack: Duration::from_millis(1),
        }
    }
}

/// A shadow rollout's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    /// Promote after this many mirrored calls, if its answers held.
    pub promote_after_calls: u64,
    /// Roll back once more than this many answers differed.
    pub max_mismatches: u64,
    /// How many mismatches are reported as events (the first ones).
    pub sample: u64,
}

impl Default for Shadow {
    /// Promoted after 1,000 mirrored calls with no mismatch; the first 10
    /// mismatches reported.
    fn default() -> Self {
        Shadow {
            promote_after_calls: 1000,
            max_mismatches: 0,
            sample: 10,
        }
    }
}

/// Durations in buckets of a quarter power of two (19 % apart), from 1 ns
/// to over an hour: enough to tell a p99 twice another's.
struct Histogram([AtomicU64; Histogram::BUCKETS]);

impl Histogram {
    const BUCKETS: usize = 168;

    fn new() -> Self {
        Histogram(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn bucket(took: Duration) -> usize {
        let ns = took.as_nanos().max(1) as f64;
        ((ns.log2() * 4.0) as usize).min(Self::BUCKETS - 1)
    }

    fn record(&self, took: Duration) {
        self.0[Self::bucket(took)].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bound of the bucket holding the `q` quantile.
    fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let rank = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank.max(1) {
                return Duration::from_nanos(2f64.powf((i + 1) as f64 / 4.0) as u64);
            }
        }
        Duration::ZERO
    }
}

/// One side of a trial: the serving version's calls, or the candidate's.
struct Arm {
    calls: AtomicU64,
    traps: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

impl Arm {
    fn new() -> Self {
        Arm {
            calls: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Histogram::new(),
        }
    }

    fn record<R>(&self, result: &Result<R>, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {}
            Err(err) if err.is_trap() => drop(self.traps.fetch_add(1, Ordering::Relaxed)),
            Err(_) => drop(self.errors.fetch_add(1, Ordering::Relaxed)),
        }
        self.latency.record(took);
    }

    fn figures(&self) -> Figures {
        Figures {
            calls: self.calls.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p99: self.latency.quantile(0.99),
        }
    }
}

/// One side's counts, as a decision reads them.
#[derive(Debug, Clone, Copy)]
struct Figures {
    calls: u64,
    traps: u64,
    errors: u64,
    p99: Duration,
}

impl Figures {
    fn rate(&self, n: u64) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            n as f64 / self.calls as f64
        }
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, {} traps ({:.1}%), {} errors ({:.1}%), p99 {:?}",
            self.calls,
            self.traps,
            100.0 * self.rate(self.traps),
            self.errors,
            100.0 * self.rate(self.errors),
            self.p99
        )
    }
}

/// The fewest calls on each side before latencies are compared.
const LATENCY_WINDOW: u64 = 100;

/// How a trial ended, with the figures that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Promote(String),
    RollBack(String),
}

/// Ends a trial: promotes the candidate or rolls it back (the registry's
/// part; it holds no strong reference to the slot).
pub(crate) type Conclude<W> = Box<dyn Fn(&Trial<W>, Verdict) + Send + Sync>;

/// A candidate on trial beside the version serving its name.
pub(crate) struct Trial<W: World> {
    pub(crate) candidate: Arc<Live<W>>,
    pub(crate) serving: Arc<Live<W>>,
    pub(crate) rollout: Rollout,
    started: Instant,
    next: AtomicU64,
    arms: [Arm; 2],
    mismatches: AtomicU64,
    concluded: AtomicBool,
    conclude: Conclude<W>,
    subscribers: Arc<Subscribers>,
}

impl<W: World> Trial<W> {
    pub(crate) fn new(
        candidate: Arc<Live<W>>,
        serving: Arc<Live<W>>,
        rollout: Rollout,
        conclude: Conclude<W>,
        subscribers: Arc<Subscribers>,
    ) -> Self {
        Trial {
            candidate,
            serving,
            rollout,
            started: Instant::now(),
            next: AtomicU64::new(0),
            arms: [Arm::new(), Arm::new()],
            mismatches: AtomicU64::new(0),
            concluded: AtomicBool::new(false),
            conclude,
            subscribers,
        }
    }

    /// Whether this call goes to the candidate: by `key` (a
    /// [`KeyHash::key_hash`]) when given (the same key always the same
    /// way), else by a well-mixed call count (so
    /// no pattern in the callers' inputs lines up with the choice).
    pub(crate) fn to_candidate(&self, key: Option<u64>) -> bool {
        let Rollout::Canary(canary) = &self.rollout else {
            return false;
        };
        let draw = match key {
            Some(key) => key,
            None => mix(self.next.fetch_add(1, Ordering::Relaxed)),
        };
        unit(draw) < canary.share
    }

    /// Count a call's outcome on its side; a candidate's call may end the
    /// trial.
    pub(crate) fn record<R>(&self, candidate: bool, result: &Result<R>, took: Duration) {
        self.arms[usize::from(candidate)].record(result, took);
        if candidate {
            self.judge();
        }
    }

    /// Count a mirrored call whose answer differed, and report it if it is
    /// within the sample.
    pub(crate) fn mismatch(&self, expected: impl FnOnce() -> String, got: impl FnOnce() -> String) {
        let n = self.mismatches.fetch_add(1, Ordering::Relaxed);
        let sample = match &self.rollout {
            Rollout::Shadow(shadow) => shadow.sample,
            _ => 0,
        };
        if n < sample {
            self.subscribers.emit(Event::Mismatch {
                serving: self.serving.plugin.identity().clone(),
                candidate: self.candidate.plugin.identity().clone(),
                expected: expected(),
                got: got(),
            });
        }
    }

    /// Whether it has ended (promoted or rolled back).
    pub(crate) fn concluded(&self) -> bool {
        self.concluded.load(Ordering::Acquire)
    }

    /// Mark it ended without a verdict (a newer candidate replaced it, or
    /// the name was removed); true for the one caller that did.
    pub(crate) fn abandon(&self) -> bool {
        !self.concluded.swap(true, Ordering::AcqRel)
    }

    fn judge(&self) {
        if self.concluded() {
            return;
        }
        let Some(verdict) = self.verdict() else {
            return;
        };
        if self.abandon() {
            (self.conclude)(self, verdict);
        }
    }

    fn verdict(&self) -> Option<Verdict> {
        let serving = self.arms[0].figures();
        let candidate = self.arms[1].figures();
        let both = || format!("new: {candidate}; serving: {serving}");
        match &self.rollout {
            Rollout::AllAtOnce => None,
            Rollout::Canary(c) => {
                if candidate.calls < c.min_calls {
                    return None;
                }
                let traps = candidate.rate(candidate.traps) - serving.rate(serving.traps);
                if traps > c.max_trap_rate_increase {
                    return Some(Verdict::RollBack(format!(
                        "trap rate too high ({})",
                        both()
                    )));
                }
                let errors = candidate.rate(candidate.errors) - serving.rate(serving.errors);
                if errors > c.max_error_rate_increase {
                    return Some(Verdict::RollBack(format!(
                        "error rate too high ({})",
                        both()
                    )));
                }
                // A p99 over fewer than 100 calls is their slowest: one
                // preempted call. From 100 on, it leaves the slowest out.
                let latency_window = c.min_calls.max(LATENCY_WINDOW);
                if candidate.calls >= latency_window
                    && serving.calls >= latency_window
                    && candidate.p99.as_secs_f64() > serving.p99.as_secs_f64() * c.max_p99_ratio
                    && candidate.p99 > serving.p99 + c.p99_slack
                {
                    return Some(Verdict::RollBack(format!(
                        "p99 latency too high ({})",
                        both()
                    )));
                }
                let aged = c
                    .promote_after
                    .is_some_and(|after| self.started.elapsed() >= after);
                (candidate.calls >= c.promote_after_calls || aged).then(|| Verdict::Promote(both()))
            }
            Rollout::Shadow(s) => {
                let mismatches = self.mismatches.load(Ordering::Relaxed);
                let figures = || {
                    format!(
                        "{mismatches} of {} mirrored calls differed; new: {candidate}",
                        candidate.calls
                    )
                };
                if mismatches > s.max_mismatches {
                    Some(Verdict::RollBack(figures()))
                } else if candidate.calls >= s.promote_after_calls {
                    Some(Verdict::Promote(figures()))
                } else {
                    None
                }
            }
        }
    }
}

/// A caller's key for a sticky canary choice
/// ([`Handle::call_keyed`](crate::Handle::call_keyed)): any `Hash`.
pub trait KeyHash {
    /// A well-mixed 64-bit hash of the key.
    fn key_hash(&self) -> u64;
}

impl<T: Hash + ?Sized> KeyHash for T {
    fn key_hash(&self) -> u64 {
        // FNV-1a then a final mix: stable across processes and builds, so
        // a user sticks to one version on every replica.
        struct Fnv(u64);
        impl Hasher for Fnv {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, bytes: &[u8]) {
                for b in bytes {
                    self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        self.hash(&mut h);
        mix(h.finish())
    }
}

/// The top 53 bits of `draw` as a fraction in [0, 1).
fn unit(draw: u64) -> f64 {
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_holds_per_call_and_a_key_always_goes_the_same_way() {
        let share = |n: u64| (0..n).filter(|i| unit(mix(*i)) < 0.1).count();
        let taken = share(100_000);
        assert!((9_000..11_000).contains(&taken), "{taken}");
        // Every 20th call index is not every 10th choice: no aliasing.
        let aligned = (0..100_000u64)
            .filter(|i| i % 20 == 0)
            .filter(|i| unit(mix(*i)) < 0.1)
            .count();
        assert!((400..600).contains(&aligned), "{aligned}");
        assert_eq!("user-42".key_hash(), "user-42".key_hash());
        assert_ne!("user-42".key_hash(), "user-43".key_hash());
    }

    #[test]
    fn the_p99_bucket_bounds_the_quantile_within_a_fifth() {
        let h = Histogram::new();
        for _ in 0..990 {
            h.record(Duration::from_micros(10));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(1));
        }
        let p99 = h.quantile(0.99);
        assert!(
            p99 >= Duration::from_micros(10) && p99 <= Duration::from_micros(13),
            "{p99:?}"
        );
        let p999 = h.quantile(0.999);
        assert!(
            p999 >= Duration::from_millis(1) && p999 <= Duration::from_micros(1200),
            "{p999:?}"
        );
        assert_eq!(Histogram::new().quantile(0.99), Duration::ZERO);
    }
}
