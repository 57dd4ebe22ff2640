//! The last 15 minutes of each app, sampled in process every second, so the console can
//! draw its charts on a fresh gateway with no Prometheus: requests per second by status
//! class, p50 and p99 latency, requests in flight, desired and ready instances, and
//! cold-start durations. Each point is the difference between two readings of the app's
//! own metric handles, which the request path updates anyway: sampling costs the request
//! path nothing.

mod quantile;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::apps::AppState;
use quantile::{quantile_between, Buckets};

/// How often a point is taken.
pub const EVERY: Duration = Duration::from_secs(1);
/// Points kept per app: 15 minutes.
pub const KEPT: usize = 900;

/// One second of one app.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Unix time in milliseconds.
    pub t: i64,
    /// Requests per second answered with 1xx-2xx, 3xx, 4xx, 5xx.
    pub rps: [f64; 4],
    /// Latency percentiles of the requests answered in the interval, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: i64,
    pub desired: i64,
    pub ready: i64,
    /// The mean of the cold starts that ended in the interval, in milliseconds.
    pub cold_start_ms: Option<f64>,
}

/// What the last reading of an app's counters was, to take differences from.
#[derive(Default)]
struct Reading {
    codes: HashMap<u16, u64>,
    latency: Buckets,
    cold_starts: (u64, f64),
}

#[derive(Default)]
struct Series {
    points: VecDeque<Point>,
    last: Option<Reading>,
}

/// Every app's recent points.
#[derive(Default)]
pub struct History {
    apps: Mutex<HashMap<String, Series>>,
}

impl History {
    pub fn new() -> Arc<Self> {
        Arc::new(History::default())
    }

    /// The points of `app`, oldest first.
    pub fn points(&self, app: &str) -> Vec<Point> {
        self.lock()
            .get(app)
            .map(|series| series.points.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest point of every app.
    pub fn latest(&self) -> HashMap<String, Point> {
        self.lock()
            .iter()
            .filter_map(|(app, series)| Some((app.clone(), series.points.back()?.clone())))
            .collect()
    }

    /// Takes one point of each app in `apps` at `t` (Unix ms); apps not listed are dropped.
    pub fn sample(&self, apps: &[Arc<AppState>], t: i64) {
        let mut all = self.lock();
        all.retain(|name, _| apps.iter().any(|app| app.name == *name));
        for app in apps {
            let series = all.entry(app.name.clone()).or_default();
            let now = read(app);
            if let Some(last) = &series.last {
                let point = point_between(app, last, &now, t);
                if series.points.len() == KEPT {
                    series.points.pop_front();
                }
                series.points.push_back(point);
            }
            series.last = Some(now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Series>> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read(app: &AppState) -> Reading {
    let histogram = |h: &prometheus::Histogram| -> (Buckets, u64, f64) {
        use prometheus::core::Metric;
        let metric = h.metric();
        let proto = metric.get_histogram();
        let mut buckets: Buckets = proto
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        buckets.push((f64::INFINITY, proto.get_sample_count()));
        (buckets, proto.get_sample_count(), proto.get_sample_sum())
    };
    let (latency, _, _) = histogram(&app.metrics.duration);
    let (_, cold_count, cold_sum) = histogram(&app.metrics.cold_start);
    Reading {
        codes: app.metrics.codes().into_iter().collect(),
        latency,
        cold_starts: (cold_count, cold_sum),
    }
}

fn point_between(app: &AppState, before: &Reading, after: &Reading, t: i64) -> Point {
    let seconds = EVERY.as_secs_f64();
    let mut rps = [0.0; 4];
    for (code, count) in &after.codes {
        let earlier = before.codes.get(code).copied().unwrap_or(0);
        let class = match code {
            0..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        rps[class] += count.saturating_sub(earlier) as f64 / seconds;
    }
    let ms = |q: f64| quantile_between(&before.latency, &after.latency, q).map(|s| s * 1000.0);
    let (count, sum) = (
        after.cold_starts.0.saturating_sub(before.cold_starts.0),
        after.cold_starts.1 - before.cold_starts.1,
    );
    let status = app.status();
    Point {
        t,
        rps,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        in_flight: app.in_flight(),
        desired: i64::from(status.desired),
        ready: status.ready as i64,
        cold_start_ms: (count > 0).then(|| sum / count as f64 * 1000.0),
    }
}

/// Samples the apps `apps` returns every [`EVERY`] until `stop`.
pub async fn run(
    history: Arc<History>,
    apps: impl Fn() -> Vec<Arc<AppState>> + Send + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        history.sample(&apps(), t);
    }
}
