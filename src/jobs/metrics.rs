//! The jobs' metrics, on the gateway's registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

/// Handles on the job metrics.
#[derive(Clone)]
pub struct JobMetrics {
    /// `tidegate_jobruns_total{job,result}`: finished runs by final state.
    pub runs: IntCounterVec,
    /// `tidegate_job_instances{job,state}`: indices pending or running now.
    pub instances: IntGaugeVec,
    /// `tidegate_job_attempt_duration_seconds{job}`.
    pub attempt_duration: HistogramVec,
    /// `tidegate_job_schedule_skipped_total{job}`: ticks skipped while a run still ran.
    pub skipped_ticks: IntCounterVec,
}

impl JobMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let runs = IntCounterVec::new(
            Opts::new(
                "tidegate_jobruns_total",
                "Job runs finished, by result (succeeded, failed, cancelled, interrupted).",
            ),
            &["job", "result"],
        )
        .expect("valid metric");
        let instances = IntGaugeVec::new(
            Opts::new(
                "tidegate_job_instances",
                "Job indices now pending or running, by job and state.",
            ),
            &["job", "state"],
        )
        .expect("valid metric");
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "tidegate_job_attempt_duration_seconds",
                "How long job attempts ran, from start to exit.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 7200.0,
            ]),
            &["job"],
        )
        .expect("valid metric");
        let skipped_ticks = IntCounterVec::new(
            Opts::new(
                "tidegate_job_schedule_skipped_total",
                "Schedule ticks skipped because the previous scheduled run still ran (concurrency_policy = \"forbid\").",
            ),
            &["job"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(instances.clone()),
            Box::new(attempt_duration.clone()),
            Box::new(skipped_ticks.clone()),
        ] {
            let _ = metrics.registry.register(collector);
        }
        JobMetrics {
            runs,
            instances,
            attempt_duration,
            skipped_ticks,
        }
    }
}
