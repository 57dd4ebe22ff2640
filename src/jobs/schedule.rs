//! Schedules: a job with `schedule` gets a run at each tick of its cron expression, in its
//! `timezone` (UTC by default). With `concurrency_policy = "forbid"` (the default) a tick
//! while the previous scheduled run still runs is skipped, logged and counted
//! (`tidegate_job_schedule_skipped_total`); with `"allow"` the runs overlap.
//!
//! Ticks missed while the gateway was down are not made up: the next tick after start is
//! the first. A changed schedule takes effect from its next tick after the reload.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Jobs, Overrides};
use crate::config::{parse_cron, ConcurrencyPolicy, JobSpec, Schedule};

/// The longest the loop sleeps, so a new or changed schedule is picked up soon.
const RECHECK: Duration = Duration::from_secs(1);

pub(super) async fn run(jobs: Weak<Jobs>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    // Per job: the schedule its tick was computed from, and that tick.
    let mut next: HashMap<String, (Schedule, DateTime<Utc>)> = HashMap::new();
    loop {
        let Some(strong) = jobs.upgrade() else { return };
        let config = strong.config.load_full();
        let now = Utc::now();
        let scheduled: Vec<&JobSpec> = config
            .jobs
            .iter()
            .filter(|j| j.schedule.is_some())
            .map(AsRef::as_ref)
            .collect();
        next.retain(|name, _| scheduled.iter().any(|job| job.name == *name));
        let mut sleep = RECHECK;
        for job in scheduled {
            let Some(schedule) = &job.schedule else {
                continue;
            };
            let entry = match next.get(&job.name) {
                Some((was, tick)) if was == schedule => *tick,
                _ => match tick_after(schedule, now) {
                    Some(tick) => {
                        next.insert(job.name.clone(), (schedule.clone(), tick));
                        tick
                    }
                    None => continue,
                },
            };
            if entry <= now {
                fire(&strong, job, schedule);
                match tick_after(schedule, now.max(entry)) {
                    Some(tick) => {
                        next.insert(job.name.clone(), (schedule.clone(), tick));
                        sleep = sleep.min((tick - now).to_std().unwrap_or_default());
                    }
                    None => {
                        next.remove(&job.name);
                    }
                }
            } else {
                sleep = sleep.min((entry - now).to_std().unwrap_or_default());
            }
        }
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Submits a scheduled run, unless the policy forbids overlapping the previous one.
fn fire(jobs: &Jobs, job: &JobSpec, schedule: &Schedule) {
    if schedule.concurrency == ConcurrencyPolicy::Forbid {
        let still_running = jobs
            .list(Some(&job.name))
            .into_iter()
            .find(|run| run.scheduled && !run.state.is_finished());
        if let Some(run) = still_running {
            jobs.metrics
                .skipped_ticks
                .with_label_values(&[&job.name])
                .inc();
            tracing::info!(job = %job.name, running = %run.name, "schedule tick skipped: the previous scheduled run still runs (concurrency_policy = \"forbid\")");
            return;
        }
    }
    if let Err(error) = jobs.submit(&job.name, &Overrides::default(), true) {
        tracing::warn!(job = %job.name, %error, "scheduled run could not be submitted");
    }
}

/// The first tick of `schedule` strictly after `after`, in UTC.
fn tick_after(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse_cron(&schedule.cron).ok()?;
    let local = after.with_timezone(&schedule.timezone);
    cron.find_next_occurrence(&local, false)
        .ok()
        .map(|tick| tick.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConcurrencyPolicy;

    fn schedule(cron: &str, zone: &str) -> Schedule {
        Schedule {
            cron: cron.into(),
            timezone: zone.parse().unwrap(),
            concurrency: ConcurrencyPolicy::Forbid,
        }
    }

    #[test]
    fn ticks_follow_the_expression_in_its_time_zone() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let every5 = schedule("*/5 * * * *", "UTC");
        assert_eq!(
            tick_after(&every5, at("2026-12-06T10:02:30Z")),
            Some(at("2026-12-06T10:05:00Z"))
        );
        assert_eq!(
            tick_after(&every5, at("2026-12-06T10:05:00Z")),
            Some(at("2026-12-06T10:10:00Z")),
            "strictly after"
        );
        // 09:00 in Berlin is 08:00 UTC in winter.
        let berlin = schedule("0 9 * * *", "Europe/Berlin");
        assert_eq!(
            tick_after(&berlin, at("2026-12-06T10:00:00Z")),
            Some(at("2026-12-07T08:00:00Z"))
        );
        let seconds = schedule("*/2 * * * * *", "UTC");
        assert_eq!(
            tick_after(&seconds, at("2026-12-06T10:00:01Z")),
            Some(at("2026-12-06T10:00:02Z"))
        );
    }
}
