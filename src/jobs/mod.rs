//! Jobs: run-to-completion workloads (docs/jobs.md). A job is a definition in `jobs_dir`;
//! a job run is one execution of it, one instance per array index, through the same
//! runtime backends as apps' instances.
//!
//! [`Jobs`] holds every run it knows (running and finished, loaded from the state directory
//! at start), starts runs (`submit`, `resubmit`, the schedules), stops them (`delete`,
//! shutdown) and prunes finished ones after `jobrun_retention`. A run that was running when
//! the gateway stopped is marked `interrupted` at the next start: process instances die
//! with the gateway, and container instances are removed as leftovers by the container
//! backend, so none can be reattached.

pub mod capacity;
mod metrics;
mod overrides;
pub mod record;
mod runner;
mod schedule;
mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;

use crate::config::{Config, JobSpec};
use crate::metrics::Metrics;
use crate::runtime::RuntimeBackend;
use capacity::{AppCount, Capacity};
use metrics::JobMetrics;
pub use overrides::{Overrides, SubmitError};
use record::{IndexRecord, JobRun, RunSettings, RunSummary, State};
pub use runner::Live;
use runner::Runner;
use store::Store;

/// The jobs' live state.
pub struct Jobs {
    config: Arc<ArcSwap<Config>>,
    backends: Vec<Arc<dyn RuntimeBackend>>,
    store: Arc<Store>,
    runs: Mutex<BTreeMap<String, Arc<Live>>>,
    tasks: Mutex<JoinSet<()>>,
    metrics: JobMetrics,
    capacity: Arc<Capacity>,
}

impl Jobs {
    /// Loads the records (marking runs the last gateway left unfinished `interrupted`),
    /// prunes old ones, and starts the schedules and the pruning.
    pub fn start(
        config: Arc<ArcSwap<Config>>,
        backends: Vec<Arc<dyn RuntimeBackend>>,
        metrics: &Metrics,
        app_count: AppCount,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Self> {
        let settings = config.load().gateway.clone();
        let store = Arc::new(Store::new(&settings.state_dir));
        let mut runs = BTreeMap::new();
        for mut run in store.load_all() {
            if !run.state.is_finished() {
                let reason = "interrupted: the gateway stopped while it ran";
                run.finish_unfinished(State::Interrupted, reason, record::now());
                run.message = Some(reason.into());
                if let Err(error) = store.save(&run) {
                    tracing::warn!(run = %run.name, %error, "cannot save the job run's record");
                }
                tracing::info!(run = %run.name, "job run marked interrupted: the gateway stopped while it ran");
            }
            runs.insert(run.name.clone(), Live::new(run));
        }
        let jobs = Arc::new(Jobs {
            capacity: Capacity::new(settings.max_instances, app_count),
            config,
            backends,
            store,
            runs: Mutex::new(runs),
            tasks: Mutex::new(JoinSet::new()),
            metrics: JobMetrics::new(metrics),
        });
        jobs.prune();
        tokio::spawn(schedule::run(Arc::downgrade(&jobs), shutdown.clone()));
        tokio::spawn(prune_hourly(Arc::downgrade(&jobs), shutdown));
        jobs
    }

    /// Starts a run of `job` with `overrides`; returns its record as it starts.
    pub fn submit(
        &self,
        job: &str,
        overrides: &Overrides,
        scheduled: bool,
    ) -> Result<JobRun, SubmitError> {
        let spec = self
            .job(job)
            .ok_or_else(|| SubmitError::UnknownJob(job.to_string()))?;
        let (spec, env) = overrides.apply(&spec)?;
        let backend = self
            .backends
            .iter()
            .find(|backend| backend.kind() == spec.runtime.kind())
            .cloned()
            .ok_or_else(|| {
                SubmitError::Unavailable(format!("no {} runtime", spec.runtime.kind()))
            })?;
        let number = self.store.next_number(job).map_err(|e| {
            SubmitError::Unavailable(format!("cannot write the state directory: {e}"))
        })?;
        let record = JobRun {
            name: format!("{job}-run-{number}"),
            job: job.to_string(),
            project: spec.project.clone(),
            state: State::Pending,
            scheduled,
            submitted_at: record::now(),
            started_at: None,
            finished_at: None,
            message: None,
            settings: RunSettings {
                array_indices: spec.array_indices.to_string(),
                retry_limit: spec.retry_limit,
                max_execution_time: spec.max_execution_time.as_secs(),
                max_parallel: spec.max_parallel,
                env,
            },
            indices: spec
                .array_indices
                .indices()
                .iter()
                .map(|&index| IndexRecord {
                    index,
                    state: State::Pending,
                    attempts: Vec::new(),
                })
                .collect(),
        };
        if let Err(error) = self.store.save(&record) {
            return Err(SubmitError::Unavailable(format!(
                "cannot write the state directory: {error}"
            )));
        }
        let live = Live::new(record.clone());
        self.lock_runs()
            .insert(record.name.clone(), Arc::clone(&live));
        let runner = Runner {
            live,
            spec: Arc::new(spec),
            backend,
            store: Arc::clone(&self.store),
            metrics: self.metrics.clone(),
            capacity: Arc::clone(&self.capacity),
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(runner.run());
        tracing::info!(run = %record.name, job, indices = record.indices.len(), scheduled, "job run submitted");
        Ok(record)
    }

    /// Runs `run`'s job again with the settings `run` had.
    pub fn resubmit(&self, run: &str) -> Result<JobRun, SubmitError> {
        let old = self
            .get(run)
            .ok_or_else(|| SubmitError::UnknownRun(run.to_string()))?
            .snapshot();
        self.submit(&old.job, &Overrides::from_settings(&old.settings), false)
    }

    /// The runs (of one job), oldest first.
    pub fn list(&self, job: Option<&str>) -> Vec<RunSummary> {
        let mut runs: Vec<RunSummary> = self
            .lock_runs()
            .values()
            .map(|live| live.summary())
            .filter(|run| job.is_none_or(|job| run.job == job))
            .collect();
        runs.sort_by_key(|run| run.submitted_at);
        runs
    }

    pub fn get(&self, run: &str) -> Option<Arc<Live>> {
        self.lock_runs().get(run).cloned()
    }

    /// A running run is stopped and kept as `cancelled`; a finished one is removed with
    /// its logs. `None`: no such run.
    pub async fn delete(&self, run: &str) -> Option<JobRun> {
        let live = self.get(run)?;
        if live.snapshot().state.is_finished() {
            self.lock_runs().remove(run);
            self.store.remove(run);
            return Some(live.snapshot());
        }
        live.stop.send_if_modified(|stop| {
            let first = stop.is_none();
            stop.get_or_insert(State::Cancelled);
            first
        });
        let mut changes = live.changes.subscribe();
        while !live.snapshot().state.is_finished() {
            if changes.changed().await.is_err() {
                break;
            }
        }
        Some(live.snapshot())
    }

    /// Cancels every running run of `job` (the job is being deleted).
    pub async fn cancel_runs_of(&self, job: &str) {
        let running: Vec<String> = self
            .list(Some(job))
            .into_iter()
            .filter(|run| !run.state.is_finished())
            .map(|run| run.name)
            .collect();
        for run in running {
            self.delete(&run).await;
        }
    }

    /// Where an attempt's output is.
    pub fn log_path(&self, run: &str, index: u32, attempt: u32) -> std::path::PathBuf {
        self.store.log_path(run, index, attempt)
    }

    /// The job's definition now.
    pub fn job(&self, name: &str) -> Option<Arc<JobSpec>> {
        self.config
            .load()
            .jobs
            .iter()
            .find(|job| job.name == name)
            .cloned()
    }

    /// Stops every running run (they end `interrupted`) and waits for them.
    pub async fn shutdown(&self) {
        for live in self.lock_runs().values() {
            live.stop.send_if_modified(|stop| {
                let first = stop.is_none();
                stop.get_or_insert(State::Interrupted);
                first
            });
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
    }

    /// Removes finished runs older than `jobrun_retention`, with their logs.
    pub fn prune(&self) {
        let retention = self.config.load().gateway.jobrun_retention;
        let Ok(retention) = chrono::Duration::from_std(retention) else {
            return;
        };
        let cutoff = record::now() - retention;
        let old: Vec<String> = self
            .lock_runs()
            .values()
            .map(|live| live.summary())
            .filter(|run| run.state.is_finished() && run.finished_at.is_some_and(|t| t < cutoff))
            .map(|run| run.name)
            .collect();
        for run in old {
            self.lock_runs().remove(&run);
            self.store.remove(&run);
            tracing::info!(
                run,
                "pruned a finished job run (older than jobrun_retention)"
            );
        }
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Live>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn prune_hourly(
    jobs: std::sync::Weak<Jobs>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match jobs.upgrade() {
            Some(jobs) => jobs.prune(),
            None => return,
        }
    }
}
