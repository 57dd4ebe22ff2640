//! Per-revision request metrics: what the console's charts and a canary judgement compare
//! (the new revision's errors and latency against the old one's).
//!
//! They are families of their own beside the per-app ones (`tidegate_revision_*` with
//! `app` and `revision` labels), not a `revision` label added to `tidegate_requests_total`
//! and friends: a new label would split every existing series, and queries and dashboards
//! that select `{app="web"}` without summing would break. Their series exist only while
//! the revision does: a revision that leaves the gateway (dropped from the history, its
//! last request done) removes them, so the label stays bounded.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::{status_label, Metrics, DURATION_BUCKETS};

/// The per-revision families.
pub struct RevisionFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    /// Live handles per (app, revision): a revision brought back from the history gets a
    /// new state while the old one may still finish requests, and the series must stay
    /// until the last of them goes.
    live: std::sync::Mutex<std::collections::HashMap<(String, String), Live>>,
}

impl RevisionFamilies {
    pub(super) fn register(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "tidegate_revision_requests_total",
                "Requests answered by a revision, by app, revision and status code.",
            ),
            &["app", "revision", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tidegate_revision_request_duration_seconds",
                "Time from request arrival to the end of the response body, by revision.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["app", "revision"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "tidegate_revision_in_flight_requests",
                "Requests routed to a revision and not finished, waiting ones included.",
            ),
            &["app", "revision"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        RevisionFamilies {
            requests,
            duration,
            in_flight,
            live: Default::default(),
        }
    }
}

/// The handles of one (app, revision) alive now, and the codes any of them counted.
#[derive(Default)]
struct Live {
    handles: usize,
    codes: std::collections::BTreeSet<u16>,
}

/// One revision's handles; its series go when it does.
pub struct RevisionMetrics {
    registered: Option<(Arc<Metrics>, String, String)>,
    pub in_flight: IntGauge,
    duration: Histogram,
    by_code: DashMap<u16, IntCounter>,
}

impl RevisionMetrics {
    pub fn new(metrics: &Arc<Metrics>, app: &str, revision: &str) -> Self {
        let families = &metrics.revisions;
        families
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((app.to_string(), revision.to_string()))
            .or_default()
            .handles += 1;
        RevisionMetrics {
            in_flight: families.in_flight.with_label_values(&[app, revision]),
            duration: families.duration.with_label_values(&[app, revision]),
            by_code: DashMap::new(),
            registered: Some((Arc::clone(metrics), app.to_string(), revision.to_string())),
        }
    }

    /// Handles on no registry (tests of the data plane alone).
    pub fn detached() -> Self {
        RevisionMetrics {
            registered: None,
            in_flight: IntGauge::new("detached", "detached").expect("valid metric"),
            duration: Histogram::with_opts(HistogramOpts::new("detached", "detached"))
                .expect("valid metric"),
            by_code: DashMap::new(),
        }
    }

    /// Counts one answered request of this revision.
    pub fn observe(&self, code: u16, seconds: f64) {
        self.duration.observe(seconds);
        if let Some(counter) = self.by_code.get(&code) {
            counter.inc();
            return;
        }
        let Some((metrics, app, revision)) = &self.registered else {
            return;
        };
        let counter = metrics.revisions.requests.with_label_values(&[
            app.as_str(),
            revision.as_str(),
            status_label(code).as_str(),
        ]);
        counter.inc();
        self.by_code.insert(code, counter);
        let mut live = metrics
            .revisions
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = live.get_mut(&(app.clone(), revision.clone())) {
            entry.codes.insert(code);
        }
    }
}

impl Drop for RevisionMetrics {
    fn drop(&mut self) {
        let Some((metrics, app, revision)) = &self.registered else {
            return;
        };
        let families = &metrics.revisions;
        let codes = {
            let mut live = families.live.lock().unwrap_or_else(|p| p.into_inner());
            let key = (app.clone(), revision.clone());
            let entry = live.entry(key.clone()).or_default();
            entry.handles = entry.handles.saturating_sub(1);
            if entry.handles > 0 {
                return;
            }
            live.remove(&key)
                .map(|entry| entry.codes)
                .unwrap_or_default()
        };
        let _ = families.in_flight.remove_label_values(&[app, revision]);
        let _ = families.duration.remove_label_values(&[app, revision]);
        for code in codes {
            let _ = families.requests.remove_label_values(&[
                app,
                revision,
                status_label(code).as_str(),
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(metrics: &Metrics) -> String {
        metrics.render()
    }

    #[test]
    fn a_revisions_series_last_until_its_last_handle_goes() {
        let metrics = Metrics::new();
        let old = RevisionMetrics::new(&metrics, "web", "web-00001");
        old.observe(503, 0.1);
        // The revision comes back from the history while the old state still finishes.
        let new = RevisionMetrics::new(&metrics, "web", "web-00001");
        new.observe(200, 0.1);
        drop(old);
        let text = exported(&metrics);
        assert!(text.contains("tidegate_revision_requests_total{app=\"web\",code=\"200\",revision=\"web-00001\"} 1"), "{text}");
        assert!(text.contains("code=\"503\""), "{text}");
        new.observe(200, 0.1);
        assert!(exported(&metrics).contains("code=\"200\",revision=\"web-00001\"} 2"));
        drop(new);
        let text = exported(&metrics);
        assert!(!text.contains("revision=\"web-00001\""), "{text}");
    }
}
