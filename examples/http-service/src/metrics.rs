//! Per-plugin metrics, written out in the Prometheus text exposition format
//! (version 0.0.4) by hand.
//!
//! Why not a metrics crate: the set is small and fixed, half of it (live
//! instances, memory, which version is current) is read from the backend at
//! scrape time rather than kept twice, and label sets must stay bounded: a
//! series exists only for a plugin that is loaded (a request for an unknown
//! name creates none) and goes when the plugin goes. `prometheus-client`
//! would need a custom collector for the scrape-time half and writes the
//! OpenMetrics dialect; the counters and the histogram here are a few
//! atomics each, and the writer below is the whole exposition.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::types::{ErrorKind, VersionGauge};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Lifecycle events counted by `wasmplug_plugin_events_total`.
pub const EVENTS: [&str; 4] = ["loaded", "swapped", "failed", "unloaded"];

/// A latency histogram: one counter per bucket (not cumulative; summed when
/// written), one for everything above the last bound, and the sum.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The counters of one plugin name.
struct PluginMetrics {
    calls: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    latency: Histogram,
}

impl PluginMetrics {
    fn new() -> Self {
        PluginMetrics {
            calls: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(),
        }
    }
}

/// Every metric the service exports. Shared by the HTTP layer (calls,
/// errors, latency, responses) and the backend (lifecycle events).
pub struct Metrics {
    plugins: RwLock<HashMap<String, Arc<PluginMetrics>>>,
    events: [AtomicU64; EVENTS.len()],
    /// Responses by status code (100-999: bounded).
    responses: RwLock<HashMap<u16, Arc<AtomicU64>>>,
    in_flight: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            plugins: RwLock::new(HashMap::new()),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            responses: RwLock::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
        }
    }

    fn plugin(&self, name: &str) -> Arc<PluginMetrics> {
        if let Some(found) = read(&self.plugins).get(name) {
            return found.clone();
        }
        write(&self.plugins)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(PluginMetrics::new()))
            .clone()
    }

    /// A call that reached plugin `name` and took `elapsed` (queueing
    /// included), failed with `error` if it did.
    pub fn record_call(&self, name: &str, elapsed: Duration, error: Option<ErrorKind>) {
        let plugin = self.plugin(name);
        plugin.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            plugin.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        plugin.latency.observe(elapsed);
    }

    /// A response sent with `status`.
    pub fn record_response(&self, status: u16) {
        if let Some(count) = read(&self.responses).get(&status) {
            count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        write(&self.responses)
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A lifecycle event, by its name in [`EVENTS`].
    pub fn record_event(&self, event: &str) {
        if let Some(i) = EVENTS.iter().position(|e| *e == event) {
            self.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request started; the guard counts it in flight until dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The exposition: everything, given the versions loaded now. Series of
    /// plugin names no longer loaded are dropped here.
    pub fn render(&self, versions: &[VersionGauge]) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let plugins: Vec<(String, Arc<PluginMetrics>)> = {
            let mut map = write(&self.plugins);
            map.retain(|name, _| versions.iter().any(|v| v.name == *name));
            let mut all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };

        header(
            &mut out,
            "wasmplug_plugin_calls_total",
            "counter",
            "Requests that reached the plugin.",
        );
        for (name, m) in &plugins {
            let _ = writeln!(
                out,
                "wasmplug_plugin_calls_total{{plugin=\"{}\"}} {}",
                escape(name),
                m.calls.load(Ordering::Relaxed)
            );
        }

        header(
            &mut out,
            "wasmplug_plugin_errors_total",
            "counter",
            "Calls that failed, by kind: guest (the plugin returned an error), trap, unavailable, overloaded, bad_response, internal.",
        );
        for (name, m) in &plugins {
            for kind in ErrorKind::ALL {
                let _ = writeln!(
                    out,
                    "wasmplug_plugin_errors_total{{plugin=\"{}\",kind=\"{}\"}} {}",
                    escape(name),
                    kind.as_str(),
                    m.errors[kind.index()].load(Ordering::Relaxed)
                );
            }
        }

        header(
            &mut out,
            "wasmplug_plugin_call_duration_seconds",
            "histogram",
            "Time from dispatch to the plugin's answer, waiting for a worker included.",
        );
        for (name, m) in &plugins {
            let name = escape(name);
            let mut cumulative = 0u64;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += m.latency.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "wasmplug_plugin_call_duration_seconds_bucket{{plugin=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += m.latency.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let sum = m.latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "wasmplug_plugin_call_duration_seconds_bucket{{plugin=\"{name}\",le=\"+Inf\"}} {cumulative}\n\
                 wasmplug_plugin_call_duration_seconds_sum{{plugin=\"{name}\"}} {sum}\n\
                 wasmplug_plugin_call_duration_seconds_count{{plugin=\"{name}\"}} {cumulative}"
            );
        }

        type Gauge = (&'static str, &'static str, fn(&VersionGauge) -> usize);
        let gauges: [Gauge; 3] = [
            (
                "wasmplug_plugin_live_instances",
                "Live instances of the version (serving pool and probes).",
                |v| v.live_instances,
            ),
            (
                "wasmplug_plugin_memory_bytes",
                "Linear memory held by the version's live instances.",
                |v| v.memory_bytes,
            ),
            (
                "wasmplug_plugin_current",
                "1 for the version that serves the plugin's requests, 0 for one loaded beside it.",
                |v| usize::from(v.current),
            ),
        ];
        for (metric, help, value) in gauges {
            header(&mut out, metric, "gauge", help);
            for v in versions {
                let _ = writeln!(
                    out,
                    "{metric}{{plugin=\"{}\",version=\"{}\"}} {}",
                    escape(&v.name),
                    escape(&v.version),
                    value(v)
                );
            }
        }

        header(
            &mut out,
            "wasmplug_plugin_events_total",
            "counter",
            "Plugin lifecycle events: loaded, swapped, failed (a file that did not load; the old version kept serving), unloaded.",
        );
        for (i, event) in EVENTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "wasmplug_plugin_events_total{{event=\"{event}\"}} {}",
                self.events[i].load(Ordering::Relaxed)
            );
        }

        header(
            &mut out,
            "http_service_responses_total",
            "counter",
            "HTTP responses sent, by status code.",
        );
        let mut responses: Vec<(u16, u64)> = read(&self.responses)
            .iter()
            .map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
            .collect();
        responses.sort_unstable();
        for (code, n) in responses {
            let _ = writeln!(out, "http_service_responses_total{{code=\"{code}\"}} {n}");
        }

        header(
            &mut out,
            "http_service_in_flight_requests",
            "gauge",
            "Requests being handled now.",
        );
        let _ = writeln!(
            out,
            "http_service_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );

        if let Some(rss) = resident_bytes() {
            header(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        out
    }
}

/// Counts a request in flight until dropped.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// This process's resident set size, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Counters only: a panic elsewhere cannot leave them inconsistent.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_consistent() {
        let m = Metrics::new();
        m.record_call("echo", Duration::from_micros(30), None);
        m.record_call("echo", Duration::from_millis(3), Some(ErrorKind::Guest));
        m.record_call("echo", Duration::from_secs(60), Some(ErrorKind::Trap));
        m.record_call("gone", Duration::from_micros(30), None);
        let versions = [VersionGauge {
            name: "echo".into(),
            version: "1.0.0".into(),
            current: true,
            live_instances: 2,
            memory_bytes: 1 << 20,
        }];
        let text = m.render(&versions);
        assert!(text.contains("wasmplug_plugin_calls_total{plugin=\"echo\"} 3\n"));
        assert!(text.contains("wasmplug_plugin_errors_total{plugin=\"echo\",kind=\"guest\"} 1\n"));
        assert!(text.contains("wasmplug_plugin_errors_total{plugin=\"echo\",kind=\"trap\"} 1\n"));
        assert!(text.contains(
            "wasmplug_plugin_call_duration_seconds_bucket{plugin=\"echo\",le=\"0.00005\"} 1\n"
        ));
        assert!(text.contains(
            "wasmplug_plugin_call_duration_seconds_bucket{plugin=\"echo\",le=\"0.005\"} 2\n"
        ));
        assert!(text.contains(
            "wasmplug_plugin_call_duration_seconds_bucket{plugin=\"echo\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("wasmplug_plugin_call_duration_seconds_count{plugin=\"echo\"} 3\n"));
        assert!(text
            .contains("wasmplug_plugin_memory_bytes{plugin=\"echo\",version=\"1.0.0\"} 1048576\n"));
        // A plugin no longer loaded has no series left.
        assert!(!text.contains("gone"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
