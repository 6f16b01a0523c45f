//! Following a tag (or a pinned digest) in an OCI registry: the registry
//! source of plugins, as the [`Watcher`](crate::Watcher) is the directory
//! source.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use oci_client::Reference;

use super::{parse_reference, Client, ClientOptions, Fault, Trust};
use crate::admit::{self, Admitted};
use crate::registry::Guard;
use crate::{identity::ContentHash, Error, Event, Registry, Runtime, Source, World};

/// How a [`Follower`] follows its reference.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Whose signatures an artefact needs before anything of it is
    /// compiled.
    pub trust: Trust,
    /// How often the tag is looked at (one `HEAD` request).
    pub poll: Duration,
    /// Each wait is the poll interval (or the backoff) times a random
    /// factor in `[1 - jitter, 1]`, so replicas started together do not
    /// poll together, and `poll` stays the longest wait between looks.
    pub jitter: f64,
    /// The longest wait after failures (the backoff doubles from `poll`).
    pub max_backoff: Duration,
    /// Whether a version that widens the plugin's reach is held (the
    /// default) or swapped in.
    pub guard: Guard,
    /// How registries are reached.
    pub client: ClientOptions,
}

impl FollowOptions {
    /// Poll every 8–10 s, back off to 5 min, hold widenings, and
    /// require what `trust` requires.
    pub fn new(trust: Trust) -> FollowOptions {
        FollowOptions {
            trust,
            poll: Duration::from_secs(10),
            jitter: 0.2,
            max_backoff: Duration::from_secs(300),
            guard: Guard::default(),
            client: ClientOptions::default(),
        }
    }

    /// With `poll` as the interval.
    #[must_use]
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// Where a [`Follower`] stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowStatus {
    /// The digest whose component was last activated (or held) from the
    /// reference.
    pub serving: Option<String>,
    /// The digest last refused (bad signature, not a component, tampered
    /// with): not pulled again until the reference points elsewhere.
    pub refused: Option<String>,
    /// Failures in a row (the registry unreachable, the tag missing, the
    /// artefact not signed yet); 0 after a good poll.
    pub failures: u32,
    /// When the registry was last asked.
    pub last_poll: Option<SystemTime>,
}

/// Follows an OCI reference: whenever the digest behind the tag changes,
/// the artefact is pulled, its signature checked against the trusted keys,
/// its component loaded and swapped in as the watcher swaps a changed
/// file (escalation guard, the registry's rollout, failed loads reported).
///
/// A registry that cannot be reached, or answers garbage, never unloads
/// what serves: each failure is an [`Event::PullFailed`] and the next try
/// backs off. A refused artefact is reported once and not pulled again
/// until the tag moves. Dropping the follower stops it (what it loaded
/// stays loaded).
pub struct Follower {
    reference: String,
    status: Arc<Mutex<FollowStatus>>,
    stop: Option<mpsc::Sender<()>>,
    /// Wakes a poll waiting on the registry, so dropping the follower never
    /// waits on a slow (or hostile) registry.
    cancel: Arc<tokio::sync::Notify>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("reference", &self.reference)
            .field("status", &self.status())
            .finish()
    }
}

impl Follower {
    /// Follow `reference` (`REGISTRY/REPOSITORY:TAG`, or `…@DIGEST` to pin
    /// one artefact), loading into `registry` with `runtime`. Returns once
    /// the first poll is done (its outcome is in [`status`](Self::status)
    /// and in the events): a registry that is down at start-up delays
    /// nothing but the plugin.
    ///
    /// # Errors
    /// [`Error::Oci`] when `reference` does not parse, or no thread can be
    /// started.
    pub fn start<W: World>(
        reference: &str,
        runtime: Runtime<W>,
        registry: Registry<W>,
        options: FollowOptions,
    ) -> Result<Follower, Error> {
        let parsed = parse_reference(reference)?;
        let status = Arc::new(Mutex::new(FollowStatus::default()));
        let (stop, stopped) = mpsc::channel();
        let (first, first_done) = mpsc::channel();
        let cancel = Arc::new(tokio::sync::Notify::new());
        let mut worker = Worker {
            cancel: cancel.clone(),
            reference: reference.to_string(),
            parsed,
            source: Source::Oci(reference.to_string()),
            client: Client::new(options.client.clone()),
            runtime,
            registry,
            options,
            status: status.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("wasmplug-follow".into())
            .spawn(move || worker.run(&stopped, first))
            .map_err(|e| Error::Oci {
                reference: reference.to_string(),
                digest: None,
                refused: false,
                cause: anyhow::anyhow!("no thread to follow it: {e}"),
            })?;
        let _ = first_done.recv();
        Ok(Follower {
            reference: reference.to_string(),
            status,
            stop: Some(stop),
            cancel,
            thread: Some(thread),
        })
    }

    /// The reference followed.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Where it stands now.
    pub fn status(&self) -> FollowStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // The channel first, so a poll woken by `cancel` finds it closed.
        drop(self.stop.take());
        self.cancel.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker<W: World> {
    reference: String,
    parsed: Reference,
    source: Source,
    client: Client,
    runtime: Runtime<W>,
    registry: Registry<W>,
    options: FollowOptions,
    status: Arc<Mutex<FollowStatus>>,
    cancel: Arc<tokio::sync::Notify>,
}

/// The longest one look at the registry may take, all requests together:
/// a registry that trickles its answers is a failure, not a stall.
fn poll_deadline(options: &FollowOptions) -> Duration {
    options.client.timeout.saturating_mul(4)
}

impl<W: World> Worker<W> {
    /// Run `future` (a request to the registry) until it ends, the
    /// follower is dropped (`None`), or the poll's deadline passes.
    fn request<T>(
        &self,
        rt: &tokio::runtime::Runtime,
        future: impl std::future::Future<Output = Result<T, Fault>>,
    ) -> Option<Result<T, Fault>> {
        let deadline = poll_deadline(&self.options);
        rt.block_on(async {
            tokio::select! {
                result = tokio::time::timeout(deadline, future) => Some(result.unwrap_or_else(|_| {
                    Err(Fault::transient(anyhow::anyhow!(
                        "the registry took longer than {deadline:?} to answer"
                    )))
                })),
                () = self.cancel.notified() => None,
            }
        })
    }

    fn run(&mut self, stopped: &mpsc::Receiver<()>, first: mpsc::Sender<()>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                self.registry.emit(Event::PullFailed {
                    reference: self.reference.clone(),
                    digest: None,
                    error: Arc::new(
                        Fault::transient(anyhow::anyhow!("no async runtime: {e}"))
                            .into_error(&self.reference, None),
                    ),
                    retry_in: None,
                });
                return;
            }
        };
        let mut rng = Jitter::new();
        let mut first = Some(first);
        loop {
            let wait = self.poll(&rt);
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            let wait = rng.spread(wait, self.options.jitter);
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, FollowStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One look at the reference; returns how long to wait for the next.
    fn poll(&mut self, rt: &tokio::runtime::Runtime) -> Duration {
        self.status().last_poll = Some(SystemTime::now());
        let began = Instant::now();
        let digest = match self.request(rt, self.client.resolve_parsed(&self.parsed)) {
            None => return Duration::ZERO,
            Some(Ok(digest)) => digest,
            Some(Err(fault)) => return self.failed(fault, None),
        };
        // Every look, for an operator asking why a replica has not moved
        // yet (`RUST_LOG=wasmplug::oci=debug`).
        tracing::debug!(
            target: "wasmplug::oci",
            "{} is at {digest} (asked in {:.1?})",
            self.reference,
            began.elapsed()
        );
        {
            let status = self.status();
            let known = [&status.serving, &status.refused]
                .into_iter()
                .any(|d| d.as_deref() == Some(digest.as_str()));
            if known {
                drop(status);
                return self.succeeded();
            }
        }
        let pulled = match self.request(
            rt,
            self.client
                .pull_digest(&self.parsed, &digest, &self.options.trust),
        ) {
            None => return Duration::ZERO,
            Some(Ok(pulled)) => pulled,
            Some(Err(fault)) if fault.transient => return self.failed(fault, Some(&digest)),
            Some(Err(fault)) => {
                let error = fault.into_error(&self.reference, Some(&digest));
                return self.refused(digest, error);
            }
        };
        self.registry.emit(Event::Pulled {
            reference: self.reference.clone(),
            digest: digest.clone(),
            signed_by: pulled.signed_by.clone(),
        });
        let hash = ContentHash::of(&pulled.bytes);
        if !self.registry.settled(&self.source, hash) {
            let policy = self.runtime.policy().clone();
            let guard = &self.options.guard;
            let prepared = admit::prepare(
                &self.runtime,
                &self.registry,
                guard,
                pulled.bytes,
                hash,
                &self.source,
                policy,
            );
            match admit::commit(&self.registry, guard, &self.source, prepared) {
                Ok(Admitted::Activated | Admitted::Held) => {}
                Err(error) => return self.refused(digest, error),
            }
        }
        let mut status = self.status();
        status.serving = Some(digest);
        status.refused = None;
        drop(status);
        self.succeeded()
    }

    fn succeeded(&self) -> Duration {
        self.status().failures = 0;
        self.options.poll
    }

    /// A failure that may pass: reported, and tried again after a backoff.
    fn failed(&self, fault: Fault, digest: Option<&str>) -> Duration {
        let failures = {
            let mut status = self.status();
            status.failures = status.failures.saturating_add(1);
            status.failures
        };
        let retry_in = backoff(self.options.poll, self.options.max_backoff, failures);
        self.registry.emit(Event::PullFailed {
            reference: self.reference.clone(),
            digest: digest.map(str::to_string),
            error: Arc::new(fault.into_error(&self.reference, digest)),
            retry_in: Some(retry_in),
        });
        retry_in
    }

    /// An artefact refused for what it is: reported once, and not pulled
    /// again until the reference points elsewhere.
    fn refused(&self, digest: String, error: Error) -> Duration {
        let mut status = self.status();
        status.refused = Some(digest.clone());
        status.failures = 0;
        drop(status);
        self.registry.emit(Event::PullFailed {
            reference: self.reference.clone(),
            digest: Some(digest),
            error: Arc::new(error),
            retry_in: None,
        });
        self.options.poll
    }
}

/// The wait after `failures` failures in a row: `poll` doubled per
/// failure, at most `max`.
fn backoff(poll: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    poll.saturating_mul(factor).min(max.max(poll))
}

/// A small generator for spreading waits (xorshift, seeded from the
/// operating system).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Jitter(u64::from_le_bytes(seed) | 1)
    }

    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `wait` times a random factor in `[1 - jitter, 1]`.
    fn spread(&mut self, wait: Duration, jitter: f64) -> Duration {
        let jitter = jitter.clamp(0.0, 1.0);
        wait.mul_f64(1.0 - jitter * self.next_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(2), s(60), 1), s(2));
        assert_eq!(backoff(s(2), s(60), 2), s(4));
        assert_eq!(backoff(s(2), s(60), 5), s(32));
        assert_eq!(backoff(s(2), s(60), 6), s(60));
        assert_eq!(backoff(s(2), s(60), u32::MAX), s(60));
        // A cap below the interval never makes the follower poll faster.
        assert_eq!(backoff(s(10), s(1), 3), s(10));
    }

    #[test]
    fn jitter_stays_within_its_band_and_spreads() {
        let mut rng = Jitter::new();
        let wait = Duration::from_secs(10);
        let spread: Vec<Duration> = (0..1000).map(|_| rng.spread(wait, 0.2)).collect();
        assert!(spread
            .iter()
            .all(|d| *d >= Duration::from_secs(8) && *d <= wait));
        let low = spread
            .iter()
            .filter(|d| **d < Duration::from_secs(9))
            .count();
        assert!((350..650).contains(&low), "{low} of 1000 in the lower half");
        assert_eq!(rng.spread(wait, 0.0), wait);
    }
}
