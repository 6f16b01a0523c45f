//! `/metrics`, in the Prometheus text format (version 0.0.4).
//!
//! The plugin metrics are wasmplug's own (`wasmplug::telemetry`): calls,
//! errors by kind, latency, live instances, linear memory, loads, swaps,
//! failed loads and restarts, per plugin and version. They reach the
//! exposition through the `metrics` facade and the Prometheus recorder
//! installed here, before the runtime is built: that is the whole setup.
//! The service adds only what the library cannot know: HTTP responses by
//! status, requests in flight, plugin answers that were not valid HTTP, and
//! its resident memory.

use metrics::{counter, gauge, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wasmplug::telemetry::CALL_DURATION;

/// Upper bounds of the call latency histogram's buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The service's metrics: the recorder's handle, and the gauge of
/// requests in flight.
pub struct Metrics {
    prometheus: PrometheusHandle,
    in_flight: Gauge,
}

impl Metrics {
    /// Install the Prometheus recorder, for the whole process. Call it
    /// before building the wasmplug runtime: metrics registered earlier go
    /// to the facade's no-op recorder.
    pub fn install() -> anyhow::Result<Self> {
        let prometheus = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(CALL_DURATION.into()), &BUCKETS)?
            .install_recorder()?;
        metrics::describe_counter!(
            "http_service_responses_total",
            "HTTP responses sent, by status code."
        );
        metrics::describe_gauge!(
            "http_service_in_flight_requests",
            "Requests being handled now."
        );
        metrics::describe_counter!(
            "http_service_bad_responses_total",
            "Plugin answers that were not valid HTTP (a 500 to the client)."
        );
        metrics::describe_gauge!(
            "process_resident_memory_bytes",
            "Resident memory size in bytes."
        );
        Ok(Metrics {
            prometheus,
            in_flight: gauge!("http_service_in_flight_requests"),
        })
    }

    /// Drain the recorder's histogram samples into their buckets every
    /// second. The Prometheus recorder keeps each recorded value until its
    /// upkeep runs; between scrapes, at 50,000 calls a second, that is
    /// megabytes (the load test saw 34 MiB in 40 s without this).
    pub fn spawn_upkeep(&self) {
        let prometheus = self.prometheus.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                prometheus.run_upkeep();
            }
        });
    }

    /// A response sent with `status`.
    pub fn response(&self, status: u16) {
        counter!("http_service_responses_total", "code" => status.to_string()).increment(1);
    }

    /// Plugin `name` (a loaded one) answered something that is not HTTP.
    pub fn bad_response(&self, name: &str) {
        counter!("http_service_bad_responses_total", "plugin" => name.to_string()).increment(1);
    }

    /// A request started; the guard counts it in flight until dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.increment(1.0);
        InFlight(self.in_flight.clone())
    }

    /// The exposition, now.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            gauge!("process_resident_memory_bytes").set(rss as f64);
        }
        self.prometheus.run_upkeep();
        self.prometheus.render()
    }
}

/// Counts a request in flight until dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
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
