//! A job run's record: what was asked (the settings it ran with), and what happened to each
//! index and each attempt. It is what `jobrun get` shows and what the state directory keeps,
//! so a run's outcome survives the gateway (`store`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The time now, to the millisecond (records and listings need no more).
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(3)
}

/// Where a run, or one of its indices, stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting: for its turn (`max_parallel`, `max_instances`) or for the build.
    Pending,
    Running,
    /// Exited 0 (a run: every index did).
    Succeeded,
    /// Failed `retry_limit + 1` times (a run: at least one index did).
    Failed,
    /// Stopped by `jobrun delete`.
    Cancelled,
    /// The gateway stopped while it ran.
    Interrupted,
}

impl State {
    /// Whether nothing will change it any more.
    pub fn is_finished(self) -> bool {
        !matches!(self, State::Pending | State::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Interrupted => "interrupted",
        }
    }
}

/// One attempt of one index: one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first try (`JOB_ATTEMPT`).
    pub number: u32,
    /// The instance id, e.g. `report-run-3-7-1`.
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// Why it ended, unless it exited 0: `exited with code 1`, `timeout`, `cancelled`, ...
    pub reason: Option<String>,
}

/// One index of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub index: u32,
    pub state: State,
    pub attempts: Vec<Attempt>,
}

/// What a run was asked to do: the job's settings with the submit's overrides applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub array_indices: String,
    pub retry_limit: u32,
    /// Seconds one attempt may take.
    pub max_execution_time: u64,
    pub max_parallel: Option<u32>,
    /// `--env` given at submit, over the job's own `env`.
    pub env: BTreeMap<String, String>,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// `<job>-run-<n>`.
    pub name: String,
    pub job: String,
    pub project: String,
    pub state: State,
    /// Submitted by the job's schedule rather than by a user.
    #[serde(default)]
    pub scheduled: bool,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the run failed as a whole (a build), or why it was interrupted.
    pub message: Option<String>,
    pub settings: RunSettings,
    pub indices: Vec<IndexRecord>,
}

/// A run without its indices: what listings, the console's stream and the scheduler read,
/// made under the run's lock without copying a record of up to 10,000 indices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub name: String,
    pub job: String,
    pub project: String,
    pub state: State,
    pub scheduled: bool,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub message: Option<String>,
    pub array_size: usize,
    /// How many indices are in each state.
    pub counts: BTreeMap<&'static str, usize>,
}

impl JobRun {
    /// The run without its indices.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            name: self.name.clone(),
            job: self.job.clone(),
            project: self.project.clone(),
            state: self.state,
            scheduled: self.scheduled,
            submitted_at: self.submitted_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            message: self.message.clone(),
            array_size: self.indices.len(),
            counts: self.counts(),
        }
    }

    /// How many indices are in each state, for listings and the API.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for index in &self.indices {
            *counts.entry(index.state.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Marks every unfinished index (and the run) `state`, ending their open attempts with
    /// `reason`: a cancel, or a gateway that stopped.
    pub fn finish_unfinished(&mut self, state: State, reason: &str, now: DateTime<Utc>) {
        for index in &mut self.indices {
            if index.state.is_finished() {
                continue;
            }
            index.state = state;
            for attempt in &mut index.attempts {
                if attempt.ended_at.is_none() {
                    attempt.ended_at = Some(now);
                    attempt.reason = Some(reason.to_string());
                }
            }
        }
        if !self.state.is_finished() {
            self.state = state;
            self.finished_at = Some(now);
        }
    }

    /// The run's state once every index has finished: failed if any index failed.
    pub fn conclude(&mut self, now: DateTime<Utc>) {
        if self.state.is_finished() {
            return;
        }
        let failed = self.indices.iter().any(|i| i.state == State::Failed);
        self.state = if failed {
            State::Failed
        } else {
            State::Succeeded
        };
        self.finished_at = Some(now);
    }
}
