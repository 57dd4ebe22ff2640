//! [`AppMetrics`]: one app's handles, resolved once so the request path only touches
//! atomics, and removed with the app.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{Histogram, IntCounter, IntGauge};

use super::{status_label, Metrics, INSTANCE_STATES};

/// Handles for one app, resolved once so the request path only touches atomics.
pub struct AppMetrics {
    app: String,
    metrics: Arc<Metrics>,
    pub in_flight: IntGauge,
    pub duration: Histogram,
    pub queue_depth: IntGauge,
    pub desired: IntGauge,
    pub panic: IntGauge,
    pub cold_start: Histogram,
    pub crashes: IntCounter,
    pub oom_kills: IntCounter,
    instances: [IntGauge; 3],
    pub websocket_open: IntGauge,
    pub websocket_total: IntCounter,
    /// Bytes from the client, bytes to the client.
    pub websocket_bytes: [IntCounter; 2],
    by_code: DashMap<u16, IntCounter>,
    /// Set once the app is deleted: late requests must not bring its series back.
    removed: std::sync::atomic::AtomicBool,
}

impl AppMetrics {
    pub fn new(metrics: &Arc<Metrics>, app: &str) -> Self {
        AppMetrics {
            app: app.to_string(),
            metrics: Arc::clone(metrics),
            in_flight: metrics.in_flight.with_label_values(&[app]),
            duration: metrics.request_duration.with_label_values(&[app]),
            queue_depth: metrics.queue_depth.with_label_values(&[app]),
            desired: metrics.desired_instances.with_label_values(&[app]),
            panic: metrics.panic.with_label_values(&[app]),
            cold_start: metrics.cold_start.with_label_values(&[app]),
            crashes: metrics.instance_crashes.with_label_values(&[app]),
            oom_kills: metrics.instance_oom_kills.with_label_values(&[app]),
            instances: INSTANCE_STATES
                .map(|state| metrics.instances.with_label_values(&[app, state])),
            websocket_open: metrics.websocket_open.with_label_values(&[app]),
            websocket_total: metrics.websocket_total.with_label_values(&[app]),
            websocket_bytes: ["from_client", "to_client"]
                .map(|direction| metrics.websocket_bytes.with_label_values(&[app, direction])),
            by_code: DashMap::new(),
            removed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Handles for the app's revision `revision`.
    pub fn revision(&self, revision: &str) -> super::RevisionMetrics {
        super::RevisionMetrics::new(&self.metrics, &self.app, revision)
    }

    /// Counts one revision build and its duration.
    pub fn build(&self, ok: bool, seconds: f64) {
        if self.is_removed() {
            return;
        }
        let result = if ok { "ok" } else { "error" };
        self.metrics
            .builds
            .with_label_values(&[&self.app, result])
            .inc();
        self.metrics
            .build_duration
            .with_label_values(&[&self.app])
            .observe(seconds);
    }

    fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes the instance counts by state.
    pub fn set_instances(&self, starting: usize, ready: usize, draining: usize) {
        for (gauge, count) in self.instances.iter().zip([starting, ready, draining]) {
            gauge.set(count as i64);
        }
    }

    /// Counts one answered request with its status code.
    pub fn observe(&self, code: u16, seconds: f64) {
        self.duration.observe(seconds);
        if let Some(counter) = self.by_code.get(&code) {
            counter.inc();
            return;
        }
        if self.is_removed() {
            return;
        }
        let counter = self
            .metrics
            .requests
            .with_label_values(&[self.app.as_str(), status_label(code).as_str()]);
        counter.inc();
        self.by_code.insert(code, counter);
    }

    /// The answered requests so far, by status code (the console's charts).
    pub fn codes(&self) -> Vec<(u16, u64)> {
        self.by_code
            .iter()
            .map(|entry| (*entry.key(), entry.value().get()))
            .collect()
    }

    /// Counts a failure to talk to an instance.
    pub fn upstream_error(&self, kind: &str) {
        if self.is_removed() {
            return;
        }
        self.metrics
            .upstream_errors
            .with_label_values(&[self.app.as_str(), kind])
            .inc();
    }

    /// Removes every series of this app, for an app that was deleted from the config.
    pub fn remove(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let app = self.app.as_str();
        let _ = self.metrics.in_flight.remove_label_values(&[app]);
        let _ = self.metrics.request_duration.remove_label_values(&[app]);
        for entry in self.by_code.iter() {
            let _ = self
                .metrics
                .requests
                .remove_label_values(&[app, status_label(*entry.key()).as_str()]);
        }
        for family in [
            &self.metrics.desired_instances,
            &self.metrics.queue_depth,
            &self.metrics.panic,
        ] {
            let _ = family.remove_label_values(&[app]);
        }
        let _ = self.metrics.cold_start.remove_label_values(&[app]);
        let _ = self.metrics.websocket_open.remove_label_values(&[app]);
        let _ = self.metrics.websocket_total.remove_label_values(&[app]);
        for direction in ["from_client", "to_client"] {
            let _ = self
                .metrics
                .websocket_bytes
                .remove_label_values(&[app, direction]);
        }
        let _ = self.metrics.instance_crashes.remove_label_values(&[app]);
        let _ = self.metrics.instance_oom_kills.remove_label_values(&[app]);
        let _ = self.metrics.build_duration.remove_label_values(&[app]);
        for result in ["ok", "error"] {
            let _ = self.metrics.builds.remove_label_values(&[app, result]);
        }
        for state in INSTANCE_STATES {
            let _ = self.metrics.instances.remove_label_values(&[app, state]);
        }
        for kind in ["connect", "reset", "timeout", "idle_timeout"] {
            let _ = self
                .metrics
                .upstream_errors
                .remove_label_values(&[app, kind]);
        }
    }
}
