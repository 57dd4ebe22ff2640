//! Runs one job run to its end: prepares it once (a build, an image), then starts one
//! instance per index, at most `max_parallel` at a time (and within `max_instances`),
//! retries an index that fails until it has failed `retry_limit + 1` times, kills an
//! attempt that runs past `max_execution_time` (SIGTERM, then SIGKILL after `stop_grace`)
//! and counts it failed with reason `timeout`. A stop request (cancel, shutdown) stops every
//! running attempt the same way and ends the unfinished indices as cancelled or
//! interrupted. The record is saved as it changes, at most every 250 ms, and at the end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::capacity::Capacity;
use super::metrics::JobMetrics;
use super::record::{Attempt, JobRun, State};
use super::store::Store;
use crate::config::{AppSpec, JobSpec, ScaleSpec, Visibility};
use crate::runtime::{Exit, JobInstance, PrepareRequest, Prepared, RuntimeBackend, StartRequest};

/// A run as the rest of the gateway sees it while it runs.
pub struct Live {
    pub record: Mutex<JobRun>,
    /// Bumped at each change of the record (`--wait`, followed logs and the console watch it).
    pub changes: watch::Sender<u64>,
    /// Set to end the run early: `Cancelled` or `Interrupted`.
    pub stop: watch::Sender<Option<State>>,
}

impl Live {
    pub fn new(record: JobRun) -> Arc<Self> {
        Arc::new(Live {
            record: Mutex::new(record),
            changes: watch::channel(0).0,
            stop: watch::channel(None).0,
        })
    }

    /// A copy of the record now.
    pub fn snapshot(&self) -> JobRun {
        self.lock().clone()
    }

    /// The record now, without its indices.
    pub fn summary(&self) -> super::record::RunSummary {
        self.lock().summary()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobRun> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut JobRun)) {
        change(&mut self.lock());
        self.changes.send_modify(|version| *version += 1);
    }
}

/// Everything a run needs.
pub struct Runner {
    pub live: Arc<Live>,
    /// The job with the submit's overrides applied.
    pub spec: Arc<JobSpec>,
    pub backend: Arc<dyn RuntimeBackend>,
    pub store: Arc<Store>,
    pub metrics: JobMetrics,
    pub capacity: Arc<Capacity>,
}

/// How one attempt ended.
enum Outcome {
    Exited(Exit),
    StartFailed(String),
    TimedOut,
    Stopped,
}

/// The positions in the record's index list of what to start next, with their attempt.
type Queue = VecDeque<(usize, u32)>;

impl Runner {
    pub async fn run(self) {
        let job = self.spec.name.clone();
        let run = self.live.snapshot().name;
        let pending = self
            .metrics
            .instances
            .with_label_values(&[job.as_str(), "pending"]);
        let count = self.live.snapshot().indices.len();
        pending.add(count as i64);
        self.live.update(|record| {
            record.state = State::Running;
            record.started_at = Some(super::record::now());
        });
        let prepared = match self.prepare(&run).await {
            Ok(prepared) => Arc::new(prepared),
            Err(reason) => {
                pending.sub(count as i64);
                self.live.update(|record| {
                    record.message = Some(reason.clone());
                    record.finish_unfinished(State::Failed, &reason, super::record::now());
                });
                return self.finish();
            }
        };
        let mut queue: Queue = (0..count).map(|position| (position, 1)).collect();
        let parallel = self.spec.max_parallel.map_or(count, |n| n as usize).max(1);
        let mut running: JoinSet<(usize, u32, Outcome, Duration)> = JoinSet::new();
        let mut stop = self.live.stop.subscribe();
        let mut saved = Instant::now();
        let mut dirty = false;
        let mut save_tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            while running.len() < parallel && stop.borrow().is_none() {
                let Some((position, attempt)) = queue.pop_front() else {
                    break;
                };
                self.spawn_attempt(&mut running, &prepared, position, attempt);
                dirty = true;
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                Some(done) = running.join_next() => {
                    let Ok((position, attempt, outcome, took)) = done else { continue };
                    self.metrics
                        .attempt_duration
                        .with_label_values(&[job.as_str()])
                        .observe(took.as_secs_f64());
                    if self.settle(position, attempt, outcome) {
                        queue.push_back((position, attempt + 1));
                        pending.inc();
                    }
                    dirty = true;
                }
                _ = save_tick.tick() => {}
            }
            if dirty && saved.elapsed() >= Duration::from_millis(250) {
                self.save();
                saved = Instant::now();
                dirty = false;
            }
        }
        pending.sub(queue.len() as i64);
        // What the build made is the run's alone (a built image): it goes with the run.
        let request = PrepareRequest {
            app: Arc::new(as_app(&self.spec)),
            revision: run.clone(),
        };
        let backend = Arc::clone(&self.backend);
        tokio::spawn(async move { backend.forget(request, Some(prepared)).await });
        let stopped = *stop.borrow_and_update();
        self.live.update(|record| match stopped {
            Some(state) => record.finish_unfinished(state, state.as_str(), super::record::now()),
            None => record.conclude(super::record::now()),
        });
        self.finish();
    }

    /// Prepares the run's spec once, as a revision is prepared: a build, an image pull.
    async fn prepare(&self, run: &str) -> Result<Prepared, String> {
        if !self.backend.needs_prepare(&self.spec.runtime) {
            return Ok(Prepared::default());
        }
        let request = PrepareRequest {
            app: Arc::new(as_app(&self.spec)),
            revision: run.to_string(),
        };
        let mut stop = self.live.stop.subscribe();
        tokio::select! {
            prepared = self.backend.prepare(request) => prepared.map_err(|e| e.to_string()),
            _ = stop.wait_for(Option::is_some) => Err("stopped before its build ended".into()),
        }
    }

    fn spawn_attempt(
        &self,
        running: &mut JoinSet<(usize, u32, Outcome, Duration)>,
        prepared: &Arc<Prepared>,
        position: usize,
        attempt: u32,
    ) {
        let (run, index, size) = {
            let record = self.live.lock();
            (
                record.name.clone(),
                record.indices[position].index,
                record.indices.len(),
            )
        };
        let instance = format!("{run}-{index}-{attempt}");
        let request = StartRequest {
            app: Arc::new(as_app(&self.spec)),
            revision: run.clone(),
            instance_id: instance.clone(),
            prepared: Arc::clone(prepared),
            job: Some(JobInstance {
                env: crate::runtime::env::job(
                    &self.spec.name,
                    &self.spec.project,
                    &run,
                    (index, size, attempt),
                ),
                log: self.store.log_path(&run, index, attempt),
            }),
        };
        let backend = Arc::clone(&self.backend);
        let capacity = Arc::clone(&self.capacity);
        let live = Arc::clone(&self.live);
        let metrics = self.metrics.clone();
        let job = self.spec.name.clone();
        let (limit, grace) = (self.spec.max_execution_time, self.spec.stop_grace);
        running.spawn(async move {
            let mut stop = live.stop.subscribe();
            let slot = tokio::select! {
                slot = capacity.acquire() => slot,
                _ = stop.wait_for(Option::is_some) => {
                    metrics.instances.with_label_values(&[&job, "pending"]).dec();
                    return (position, attempt, Outcome::Stopped, Duration::ZERO);
                }
            };
            metrics
                .instances
                .with_label_values(&[&job, "pending"])
                .dec();
            let running_gauge = metrics.instances.with_label_values(&[&job, "running"]);
            running_gauge.inc();
            live.update(|record| {
                let entry = &mut record.indices[position];
                entry.state = State::Running;
                entry.attempts.push(Attempt {
                    number: attempt,
                    instance: instance.clone(),
                    started_at: super::record::now(),
                    ended_at: None,
                    exit_code: None,
                    reason: None,
                });
            });
            let started = Instant::now();
            let outcome = run_attempt(&*backend, request, limit, grace, &mut stop).await;
            running_gauge.dec();
            drop(slot);
            (position, attempt, outcome, started.elapsed())
        });
    }

    /// Records how an attempt ended; true if the index is to be tried again.
    fn settle(&self, position: usize, attempt: u32, outcome: Outcome) -> bool {
        let attempts_allowed = self.spec.retry_limit + 1;
        let stopping = self.live.stop.borrow().is_some();
        let mut retry = false;
        self.live.update(|record| {
            let entry = &mut record.indices[position];
            let (code, reason) = match outcome {
                Outcome::Exited(Exit::Crashed { code: Some(0), .. }) => (Some(0), None),
                Outcome::Exited(Exit::Crashed {
                    code, description, ..
                }) => (code, Some(description)),
                Outcome::Exited(Exit::Stopped) => (None, Some("stopped".to_string())),
                Outcome::Exited(Exit::Lost { description }) => (None, Some(description)),
                Outcome::StartFailed(reason) => (None, Some(reason)),
                Outcome::TimedOut => (
                    None,
                    Some(format!(
                        "timeout: ran past max_execution_time ({})",
                        humantime::format_duration(self.spec.max_execution_time)
                    )),
                ),
                Outcome::Stopped => (None, Some("stopped".to_string())),
            };
            if let Some(open) = entry.attempts.iter_mut().find(|a| a.number == attempt) {
                open.ended_at = Some(super::record::now());
                open.exit_code = code;
                open.reason.clone_from(&reason);
            }
            if reason.is_none() {
                entry.state = State::Succeeded;
            } else if stopping {
                // finish_unfinished marks it at the end.
            } else if attempt < attempts_allowed {
                entry.state = State::Pending;
                retry = true;
            } else {
                entry.state = State::Failed;
            }
        });
        retry
    }

    fn save(&self) {
        let record = self.live.snapshot();
        if let Err(error) = self.store.save(&record) {
            tracing::warn!(run = %record.name, %error, "cannot save the job run's record");
        }
    }

    fn finish(&self) {
        self.save();
        let record = self.live.snapshot();
        self.metrics
            .runs
            .with_label_values(&[record.job.as_str(), record.state.as_str()])
            .inc();
        tracing::info!(
            run = %record.name,
            job = %record.job,
            state = record.state.as_str(),
            counts = ?record.counts(),
            "job run finished"
        );
    }
}

/// Starts one attempt and waits for its end, its time limit, or a stop.
async fn run_attempt(
    backend: &dyn RuntimeBackend,
    request: StartRequest,
    limit: Duration,
    grace: Duration,
    stop: &mut watch::Receiver<Option<State>>,
) -> Outcome {
    let id = request.instance_id.clone();
    let started = match backend.start(request).await {
        Ok(started) => started,
        Err(error) => return Outcome::StartFailed(error.to_string()),
    };
    let mut exited = started.exited.clone();
    let outcome = tokio::select! {
        exit = exited.wait_for(Option::is_some) => {
            return match exit {
                Ok(exit) => Outcome::Exited(exit.clone().unwrap_or(Exit::Stopped)),
                Err(_) => Outcome::Exited(Exit::Stopped),
            };
        }
        _ = tokio::time::sleep(limit) => Outcome::TimedOut,
        _ = stop.wait_for(Option::is_some) => Outcome::Stopped,
    };
    if let Err(error) = backend.stop(&id, grace).await {
        tracing::warn!(instance = %id, %error, "cannot stop a job instance");
    }
    outcome
}

/// The job as the app spec a backend starts instances of: its runtime, name and project.
pub fn as_app(job: &JobSpec) -> AppSpec {
    AppSpec {
        name: job.name.clone(),
        project: job.project.clone(),
        domain: job.domain.clone(),
        file: job.file.clone(),
        visibility: Visibility::Private,
        hosts: Vec::new(),
        runtime: job.runtime.clone(),
        scale: ScaleSpec::default(),
        https_redirect: false,
        hsts_max_age: None,
        websocket_idle_timeout: None,
        traffic: Vec::new(),
        revision_history: 1,
        cold_start_page: None,
    }
}
