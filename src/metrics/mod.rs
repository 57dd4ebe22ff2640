//! Prometheus metrics on an explicit registry, served by the admin listener.
//!
//! The gateway-wide families live in [`Metrics`]. Per-app handles are resolved once per app in
//! [`AppMetrics`] and reused, so the request path updates atomics instead of hashing label
//! values on every request; per-revision ones in [`RevisionMetrics`]. When an app (a
//! revision) is removed its series are removed too, so it disappears from `/metrics` instead
//! of reporting stale values forever.

mod app;
mod revision;

use std::sync::Arc;

pub use app::AppMetrics;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
pub use revision::{RevisionFamilies, RevisionMetrics};

/// The `app` label of requests that matched no app (unknown host, malformed request). App
/// names are DNS labels, so no app can have this name.
pub const UNROUTED: &str = "_unrouted";

pub(crate) const INSTANCE_STATES: [&str; 3] = ["starting", "ready", "draining"];

pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every metric family the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub upstream_errors: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_last_success: IntGauge,
    /// App files the last load rejected (their apps serve their previous spec, or nothing).
    pub config_rejected_files: IntGauge,
    pub connections_open: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub client_timeouts: IntCounterVec,
    pub instances: IntGaugeVec,
    pub desired_instances: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub panic: IntGaugeVec,
    pub cold_start: HistogramVec,
    pub instance_crashes: IntCounterVec,
    pub instance_oom_kills: IntCounterVec,
    pub builds: IntCounterVec,
    pub build_duration: HistogramVec,
    pub tls_handshake_errors: IntCounterVec,
    pub tls_cert_reloads: IntCounterVec,
    pub tls_certificates: IntGauge,
    pub websocket_open: IntGaugeVec,
    pub websocket_total: IntCounterVec,
    pub websocket_bytes: IntCounterVec,
    /// `tidegate_revision_*`: requests, latency and in-flight by revision.
    pub revisions: RevisionFamilies,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique constants");
    metric
}

impl Metrics {
    /// Creates and registers every family on a fresh registry.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let r = &registry;
        let metrics = Metrics {
            revisions: RevisionFamilies::register(r),
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_requests_total",
                        "Requests answered, by app and status code.",
                    ),
                    &["app", "code"],
                )
                .unwrap(),
            ),
            request_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tidegate_request_duration_seconds",
                        "Time from request arrival to the end of the response body.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["app"],
                )
                .unwrap(),
            ),
            in_flight: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "tidegate_in_flight_requests",
                        "Requests of an app between arrival and the end of the response.",
                    ),
                    &["app"],
                )
                .unwrap(),
            ),
            upstream_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_upstream_errors_total",
                        "Failures talking to an instance, by kind (connect, reset, timeout, idle_timeout, upgrade).",
                    ),
                    &["app", "kind"],
                )
                .unwrap(),
            ),
            config_reloads: register(
                r,
                IntCounterVec::new(
                    Opts::new("tidegate_config_reload_total", "Config loads, by result."),
                    &["result"],
                )
                .unwrap(),
            ),
            config_last_success: register(
                r,
                IntGauge::new(
                    "tidegate_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last config load that took effect in full.",
                )
                .unwrap(),
            ),
            config_rejected_files: register(
                r,
                IntGauge::new(
                    "tidegate_config_rejected_files",
                    "App files the last config load rejected; their apps keep their previous spec, or are not served.",
                )
                .unwrap(),
            ),
            connections_open: register(
                r,
                IntGaugeVec::new(
                    Opts::new("tidegate_connections_open", "Open client connections."),
                    &["listener"],
                )
                .unwrap(),
            ),
            connections_total: register(
                r,
                IntCounterVec::new(
                    Opts::new("tidegate_connections_total", "Client connections accepted."),
                    &["listener"],
                )
                .unwrap(),
            ),
            client_timeouts: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_client_timeouts_total",
                        "Clients cut off for stalling, by kind: send (took no response bytes for send_timeout), body (sent no request body bytes for client_body_timeout).",
                    ),
                    &["kind"],
                )
                .unwrap(),
            ),
            instances: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "tidegate_instances",
                        "Instances by state (starting, ready, draining).",
                    ),
                    &["app", "state"],
                )
                .unwrap(),
            ),
            desired_instances: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "tidegate_desired_instances",
                        "Instances the autoscaler wants.",
                    ),
                    &["app"],
                )
                .unwrap(),
            ),
            queue_depth: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "tidegate_activator_queue_depth",
                        "Requests waiting for an instance.",
                    ),
                    &["app"],
                )
                .unwrap(),
            ),
            panic: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "tidegate_autoscaler_panic",
                        "1 while the autoscaler is in panic mode.",
                    ),
                    &["app"],
                )
                .unwrap(),
            ),
            cold_start: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tidegate_cold_start_duration_seconds",
                        "From the first request waiting at zero to the first instance ready.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["app"],
                )
                .unwrap(),
            ),
            instance_crashes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_instance_crashes_total",
                        "Instances that exited without being asked, or failed to start.",
                    ),
                    &["app"],
                )
                .unwrap(),
            ),
            instance_oom_kills: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_instance_oom_kills_total",
                        "Instances the kernel killed for exceeding their memory limit (also counted as crashes).",
                    ),
                    &["app"],
                )
                .unwrap(),
            ),
            builds: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_builds_total",
                        "Revision builds ([build]) by result: ok or error.",
                    ),
                    &["app", "result"],
                )
                .unwrap(),
            ),
            build_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tidegate_build_duration_seconds",
                        "How long revision builds took, failed ones included.",
                    )
                    .buckets(vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
                    &["app"],
                )
                .unwrap(),
            ),
            tls_handshake_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_tls_handshake_errors_total",
                        "TLS connections that failed before HTTP, by reason (unrecognized_name, not_tls, handshake, closed).",
                    ),
                    &["reason"],
                )
                .unwrap(),
            ),
            tls_cert_reloads: register(
                r,
                IntCounterVec::new(
                    Opts::new("tidegate_tls_cert_reload_total", "Certificate directory loads, by result."),
                    &["result"],
                )
                .unwrap(),
            ),
            tls_certificates: register(
                r,
                IntGauge::new("tidegate_tls_certificates", "Certificates in use.").unwrap(),
            ),
            websocket_open: register(
                r,
                IntGaugeVec::new(
                    Opts::new("tidegate_websocket_sessions", "Open WebSocket sessions."),
                    &["app"],
                )
                .unwrap(),
            ),
            websocket_total: register(
                r,
                IntCounterVec::new(
                    Opts::new("tidegate_websocket_sessions_total", "WebSocket sessions opened."),
                    &["app"],
                )
                .unwrap(),
            ),
            websocket_bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tidegate_websocket_bytes_total",
                        "Bytes relayed in WebSocket sessions, by direction (from_client, to_client).",
                    ),
                    &["app", "direction"],
                )
                .unwrap(),
            ),
            registry,
        };
        for result in ["success", "error"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        Arc::new(metrics)
    }

    /// The text exposition format of every registered family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    /// Counts and times a request that matched no app.
    pub fn observe_unrouted(&self, code: u16, seconds: f64) {
        self.requests
            .with_label_values(&[UNROUTED, status_label(code).as_str()])
            .inc();
        self.request_duration
            .with_label_values(&[UNROUTED])
            .observe(seconds);
    }
}

pub(crate) fn status_label(code: u16) -> String {
    code.to_string()
}
