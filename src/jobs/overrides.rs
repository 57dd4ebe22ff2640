//! What a submit may change for one run (`jobrun submit --array-indices --env
//! --retry-limit --max-execution-time --max-parallel`), checked with the same rules and
//! messages as the job file's keys.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::record::RunSettings;
use crate::config::{parse_duration, ArrayIndices, JobSpec, RuntimeSpec};

/// The overrides of one submit; absent fields keep the job's values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub array_indices: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub retry_limit: Option<i64>,
    pub max_execution_time: Option<String>,
    pub max_parallel: Option<i64>,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("no job named {0:?}")]
    UnknownJob(String),
    #[error("no job run named {0:?}")]
    UnknownRun(String),
    /// Field-level problems: (field, message).
    #[error("{}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
    #[error("{0}")]
    Unavailable(String),
}

impl Overrides {
    /// The overrides that repeat a run's settings (`resubmit`).
    pub fn from_settings(settings: &RunSettings) -> Self {
        Overrides {
            array_indices: Some(settings.array_indices.clone()),
            env: settings.env.clone(),
            retry_limit: Some(i64::from(settings.retry_limit)),
            max_execution_time: Some(format!("{}s", settings.max_execution_time)),
            max_parallel: settings.max_parallel.map(i64::from),
        }
    }

    /// The job with these overrides, and the env they add; every problem at once.
    pub fn apply(&self, job: &JobSpec) -> Result<(JobSpec, BTreeMap<String, String>), SubmitError> {
        let mut spec = job.clone();
        let mut problems = Vec::new();
        let mut report = |field: &str, message: String| problems.push((field.to_string(), message));
        if let Some(text) = &self.array_indices {
            match ArrayIndices::parse(text) {
                Ok(indices) => spec.array_indices = indices,
                Err(message) => report("array_indices", message),
            }
        }
        if let Some(limit) = self.retry_limit {
            match u32::try_from(limit) {
                Ok(limit) if limit <= 100 => spec.retry_limit = limit,
                _ => report("retry_limit", format!("{limit} is not between 0 and 100")),
            }
        }
        if let Some(text) = &self.max_execution_time {
            match parse_duration(text) {
                Ok(time) if !time.is_zero() && time <= crate::config::MAX_EXECUTION_TIME => {
                    spec.max_execution_time = time
                }
                Ok(_) => report(
                    "max_execution_time",
                    "must be longer than 0s and at most 7 days".into(),
                ),
                Err(message) => report("max_execution_time", message),
            }
        }
        if let Some(parallel) = self.max_parallel {
            match u32::try_from(parallel) {
                Ok(parallel) if parallel >= 1 => spec.max_parallel = Some(parallel),
                _ => report("max_parallel", format!("{parallel} is not 1 or more")),
            }
        }
        for name in self.env.keys() {
            let field = format!("env.{name}");
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                report(&field, "is not a valid variable name".into());
            } else if let Some(why) = crate::config::env::reserved(name) {
                report(&field, format!("{why}; choose another name"));
            }
        }
        if !problems.is_empty() {
            return Err(SubmitError::Invalid(problems));
        }
        match &mut spec.runtime {
            RuntimeSpec::Process(run) => run.env.extend(self.env.clone()),
            RuntimeSpec::Container(container) | RuntimeSpec::Kubernetes(container) => {
                container.env.extend(self.env.clone())
            }
            RuntimeSpec::Static { .. } => {}
        }
        Ok((spec, self.env.clone()))
    }
}
