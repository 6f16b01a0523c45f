//! What the library reports of itself: a [`tracing`] span for every call
//! made through a [`Handle`](crate::Handle), every load and every
//! activation (a swap); and metrics through the [`metrics`] facade, which
//! records into whatever recorder the embedder installed (Prometheus,
//! StatsD, OpenTelemetry, ...).
//!
//! **Setup is one line**, the recorder's own, made before the [`Runtime`]
//! (handles registered earlier stay with the recorder of their time, the
//! facade's no-op one):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // With the `metrics-exporter-prometheus` crate:
//! let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! // ... load plugins, serve; a `/metrics` handler answers `prometheus.render()`.
//! # Ok(()) }
//! ```
//!
//! `install_recorder` leaves the recorder's upkeep to you: it keeps every
//! histogram sample until `PrometheusHandle::run_upkeep` drains it, which
//! is tens of megabytes a minute at tens of thousands of calls a second.
//! Run it every second or so (the HTTP example does), or let
//! `PrometheusBuilder::install` serve `/metrics` and keep it up itself.
//!
//! Without a recorder the metrics cost a branch each, and calls are not
//! timed: the clock is read only when something reads the time (a
//! recorder, or a subscriber of the call spans). A recorder is seen as
//! installed when it has any size: the facade's fallback is the
//! zero-sized no-op recorder (a zero-sized forwarding recorder of your own
//! would get counts but no durations).
//!
//! A call whose future is dropped mid-call (cancelled) is not counted.
//!
//! # Metrics
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | [`CALLS`] | counter | plugin, version | calls through a handle that reached a version |
//! | [`CALL_ERRORS`] | counter | plugin, version, kind | those that failed, by [`Error::kind`] |
//! | [`CALL_DURATION`] | histogram | plugin, version | seconds, waiting for an instance included |
//! | [`RESTARTS`] | counter | plugin, version | instances made to replace a crashed one |
//! | [`INSTANCES`] | gauge | plugin, version | live instances (pooled, held, probes) |
//! | [`MEMORY`] | gauge | plugin, version | linear memory of those instances, bytes |
//! | [`LOADS`] | counter | plugin | components loaded (compiled, checked, `init` run) |
//! | [`FAILED_LOADS`] | counter | kind | components refused: at load, or at activation |
//! | [`SWAPS`] | counter | plugin | current version changes |
//! | [`UNLOADS`] | counter | plugin | versions removed from a registry |
//!
//! Labels are bounded by what is loaded: `plugin` and `version` come from
//! loaded components only, so a directory of refused files with random
//! names creates no series (a failed load is counted by its kind alone).
//! A service that swaps versions for months should let its exporter forget
//! idle series (`PrometheusBuilder::idle_timeout`).
//!
//! # Spans
//!
//! * `call` (target `wasmplug::call`, level DEBUG): one per
//!   [`Handle::call`](crate::Handle::call) or
//!   [`Handle::call_async`](crate::Handle::call_async), with `plugin`
//!   (name@version), `export`, `outcome` (`ok` or an [`Error::kind`]) and
//!   `duration_us`. `export` is filled by the dynamic path, by the
//!   reference bindings, and by a typed call that names itself with
//!   [`export`]. DEBUG, because a span per call costs more than the call at
//!   INFO's volume.
//! * `load` (target `wasmplug::load`, INFO): `source`, then `plugin`,
//!   `outcome`, `duration_us`.
//! * `activate` (target `wasmplug::registry`, INFO): `plugin`, `outcome`
//!   (`installed`, `swapped`, `added` or an error kind), `duration_us`.
//!
//! [`Runtime`]: crate::Runtime
//! [`Error::kind`]: crate::Error::kind

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Label};
use tracing::field::Empty;
use tracing::Span;

/// Calls through a handle that reached a version (counter).
pub const CALLS: &str = "wasmplug_calls_total";
/// Calls that failed, labelled by `kind` (counter).
pub const CALL_ERRORS: &str = "wasmplug_call_errors_total";
/// Call duration in seconds, waiting for an instance included (histogram).
pub const CALL_DURATION: &str = "wasmplug_call_duration_seconds";
/// Async calls that ended on the runtime's guest threads (counter): they
/// computed past an epoch tick, or started there after calls that computed
/// for long ([`RuntimeBuilder::guest_threads`]). Calls of a plugin that
/// computes little count here only when something is wrong.
///
/// [`RuntimeBuilder::guest_threads`]: crate::runtime::RuntimeBuilder::guest_threads
pub const GUEST_THREAD_CALLS: &str = "wasmplug_guest_thread_calls_total";
/// Instances made to replace a crashed one (counter).
pub const RESTARTS: &str = "wasmplug_restarts_total";
/// Live instances of a version (gauge).
pub const INSTANCES: &str = "wasmplug_instances";
/// Linear memory of a version's live instances, in bytes (gauge).
pub const MEMORY: &str = "wasmplug_memory_bytes";
/// Components loaded (counter).
pub const LOADS: &str = "wasmplug_loads_total";
/// Components refused at load or at activation, labelled by `kind` (counter).
pub const FAILED_LOADS: &str = "wasmplug_failed_loads_total";
/// Changes of a name's current version (counter).
pub const SWAPS: &str = "wasmplug_swaps_total";
/// Versions removed from a registry (counter).
pub const UNLOADS: &str = "wasmplug_unloads_total";

/// Name the export a typed call is making, on the current `call` span
/// (nothing happens when no subscriber listens to it). Call it inside the
/// closure given to [`Handle::call`](crate::Handle::call):
///
/// ```no_run
/// # use wasmplug::reference::GreeterPlugin;
/// # fn f(handle: wasmplug::Handle<GreeterPlugin>) -> wasmplug::Result<String> {
/// handle.call(|instance| {
///     wasmplug::telemetry::export("greeter.welcome");
///     instance.call(|plugin, store| plugin.wasmplug_plugin_greeter().call_welcome(store, "Zoë"))
/// })
/// # }
/// ```
pub fn export(name: &str) {
    if tracing::enabled!(target: "wasmplug::call", tracing::Level::DEBUG) {
        Span::current().record("export", name);
    }
}

/// Say what each metric is, to the recorder installed now (the facade
/// keeps no descriptions for a recorder installed later). Runs on every
/// [`Runtime`](crate::Runtime) build.
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CALLS, "Calls through a handle that reached a version.");
    describe_counter!(CALL_ERRORS, "Calls that failed, by kind.");
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Call duration, waiting for an instance included."
    );
    describe_counter!(RESTARTS, "Instances made to replace a crashed one.");
    describe_gauge!(INSTANCES, "Live instances of the version.");
    describe_gauge!(
        MEMORY,
        Unit::Bytes,
        "Linear memory of the version's live instances."
    );
    describe_counter!(LOADS, "Components loaded.");
    describe_counter!(
        FAILED_LOADS,
        "Components refused at load or activation, by kind."
    );
    describe_counter!(SWAPS, "Changes of a plugin's current version.");
    describe_counter!(UNLOADS, "Versions removed from a registry.");
}

/// The `plugin` and `version` labels of one loaded version.
fn version_labels(name: &str, version: &str) -> [Label; 2] {
    [
        Label::new("plugin", name.to_string()),
        Label::new("version", version.to_string()),
    ]
}

/// The kinds of error a call through a handle can end with (the values of
/// [`CALL_ERRORS`]'s `kind`): each version's counters are registered at
/// once, so a kind that never happened reads 0 rather than missing.
pub const CALL_ERROR_KINDS: [&str; 9] = [
    "guest",
    "trap",
    "timeout",
    "limit",
    "bad_call",
    "unavailable",
    "overloaded",
    "instantiate",
    "init",
];

/// The metric handles of one version's calls, registered once when the
/// version enters a registry, so a call touches no map and no lock.
pub(crate) struct Calls {
    /// Whether a recorder took these handles: if not, calls are not timed
    /// for them.
    pub(crate) recording: bool,
    calls: Counter,
    duration: Histogram,
    on_guest_threads: Counter,
    restarts: Counter,
    /// One per [`CALL_ERROR_KINDS`], in order.
    errors: [Counter; CALL_ERROR_KINDS.len()],
}

impl Calls {
    pub(crate) fn new(name: &str, version: &str) -> Self {
        let labels = version_labels(name, version);
        Calls {
            recording: recorder_installed(),
            calls: metrics::counter!(CALLS, labels.iter()),
            duration: metrics::histogram!(CALL_DURATION, labels.iter()),
            on_guest_threads: metrics::counter!(GUEST_THREAD_CALLS, labels.iter()),
            restarts: metrics::counter!(RESTARTS, labels.iter()),
            errors: CALL_ERROR_KINDS.map(|kind| {
                let mut labels = labels.to_vec();
                labels.push(Label::new("kind", kind));
                metrics::counter!(CALL_ERRORS, labels)
            }),
        }
    }

    /// A call that ended with an error of `kind` (`None`: it succeeded)
    /// after `took` (when it was timed).
    pub(crate) fn record(&self, kind: Option<&'static str>, took: Option<Duration>) {
        if !self.recording {
            // No-op handles: nothing to count into.
            return;
        }
        self.calls.increment(1);
        if let Some(took) = took {
            self.duration.record(took.as_secs_f64());
        }
        if let Some(kind) = kind {
            // `not_loaded` never reaches a version; anything unforeseen
            // still counts as a call, under no kind.
            if let Some(i) = CALL_ERROR_KINDS.iter().position(|k| *k == kind) {
                self.errors[i].increment(1);
            }
        }
    }

    /// An async call that ended on the guest threads.
    pub(crate) fn ended_on_guest_threads(&self) {
        self.on_guest_threads.increment(1);
    }

    pub(crate) fn restarted(&self) {
        self.restarts.increment(1);
    }
}

/// When a call began, if anything will read its duration: a recorder
/// (`recording`), or a subscriber of its span. Otherwise no clock is read.
#[inline]
pub(crate) fn call_began(recording: bool, span: Option<&Span>) -> Option<Instant> {
    (recording || span.is_some_and(|s| !s.is_disabled())).then(Instant::now)
}

/// Whether a `tracing` subscriber has been set anywhere (globally or for a
/// thread): without one no span is read.
#[inline]
pub(crate) fn traced() -> bool {
    tracing::dispatcher::has_been_set()
}

/// Whether a metrics recorder is installed (for this thread, or globally).
///
/// The facade has no way to ask, and hands out no-op handles that look
/// like real ones. But its fallback, `NoopRecorder`, is zero-sized, and a
/// recorder that records keeps state. So a zero-sized recorder reads as
/// none: a stateless forwarding recorder would get counts but no call
/// durations. Asked once per version, when its handles are registered.
fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// A `call` span for a call on `plugin` (name@version); a disabled one
/// while no `tracing` subscriber has been set anywhere. A dependency
/// (oci-client) turns on `tracing`'s `log` feature, under which a span
/// nobody subscribes to still checks `log` on creation, entry, exit and
/// drop: ~280 instructions a call, `just callcount`. Spans are not sent on
/// to a `log` logger for that reason; events still are.
#[inline]
pub(crate) fn call_span(plugin: &str) -> Span {
    if !traced() {
        return Span::none();
    }
    tracing::debug_span!(
        target: "wasmplug::call",
        "call",
        plugin,
        export = Empty,
        outcome = Empty,
        duration_us = Empty
    )
}

/// Close a span (`call`, `load`, `activate`) with its outcome and duration.
#[inline]
pub(crate) fn finish(span: &Span, outcome: &str, took: Option<Duration>) {
    if span.is_disabled() {
        return;
    }
    span.record("outcome", outcome);
    if let Some(took) = took {
        span.record("duration_us", took.as_micros() as u64);
    }
}

/// A count kept for the library's own use (live instances, memory bytes)
/// and mirrored in a gauge once the version it belongs to is known.
///
/// The gauge moves by the same deltas (never `set`), so two loads of one
/// name@version, sharing a series, add up instead of overwriting each
/// other.
#[derive(Default)]
pub(crate) struct Tally {
    value: AtomicUsize,
    gauge: OnceLock<Gauge>,
}

impl Tally {
    pub(crate) fn add(&self, n: usize) {
        self.value.fetch_add(n, Ordering::Relaxed);
        if let Some(gauge) = self.gauge.get() {
            gauge.increment(n as f64);
        }
    }

    pub(crate) fn sub(&self, n: usize) {
        self.value.fetch_sub(n, Ordering::Relaxed);
        if let Some(gauge) = self.gauge.get() {
            gauge.decrement(n as f64);
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.value.load(Ordering::Relaxed)
    }

    /// Mirror the count in gauge `metric` of version `name@version` from
    /// now on (what it holds already included). Called once, while the
    /// count has no other writer (the load, before its plugin is shared).
    pub(crate) fn label(&self, metric: &'static str, name: &str, version: &str) {
        let gauge = metrics::gauge!(metric, version_labels(name, version).iter());
        gauge.increment(self.get() as f64);
        let _ = self.gauge.set(gauge);
    }
}

impl Drop for Tally {
    /// What is left when the plugin goes (nothing, normally) leaves the
    /// series with it.
    fn drop(&mut self) {
        if let Some(gauge) = self.gauge.get() {
            gauge.decrement(self.get() as f64);
        }
    }
}

/// A `load` span for a component from `source`.
pub(crate) fn load_span(source: &dyn std::fmt::Display) -> Span {
    tracing::info_span!(
        target: "wasmplug::load",
        "load",
        source = %source,
        plugin = Empty,
        outcome = Empty,
        duration_us = Empty
    )
}

/// A component loaded as `name@version` (`label`).
pub(crate) fn loaded(span: &Span, name: &str, label: &str, began: Instant) {
    metrics::counter!(LOADS, "plugin" => name.to_string()).increment(1);
    span.record("plugin", label);
    finish(span, "ok", Some(began.elapsed()));
}

/// A component refused, at load or at activation, for an error of `kind`.
pub(crate) fn refused(span: &Span, kind: &'static str, began: Instant) {
    failed_load(kind);
    finish(span, kind, Some(began.elapsed()));
}

/// A component refused before its `load` span began (its file unread).
pub(crate) fn failed_load(kind: &'static str) {
    metrics::counter!(FAILED_LOADS, "kind" => kind).increment(1);
}

/// An `activate` span for version `plugin` (name@version).
pub(crate) fn activate_span(plugin: &str) -> Span {
    tracing::info_span!(
        target: "wasmplug::registry",
        "activate",
        plugin,
        outcome = Empty,
        duration_us = Empty
    )
}

/// The current version of `name` changed.
pub(crate) fn swapped(name: &str) {
    metrics::counter!(SWAPS, "plugin" => name.to_string()).increment(1);
}

/// A version of `name` left a registry.
pub(crate) fn unloaded(name: &str) {
    metrics::counter!(UNLOADS, "plugin" => name.to_string()).increment(1);
}
