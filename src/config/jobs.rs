//! Job files (`jobs_dir/*.toml`): what a job runs (the same `runtime`, `[run]`,
//! `[container]` and `[build]` tables as an app, checked by the same code) and how its runs
//! go: indices, retries, time limits, parallelism, schedule.
//!
//! Each file stands or falls on its own, as app files do: a bad one is listed in
//! [`Config::rejected`](super::Config) and its job keeps its previous definition.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::app_set::RejectedFile;
use super::error::ConfigIssue;
use super::indices::ArrayIndices;
use super::model::RuntimeSpec;
use super::raw::{RawApp, RawJob};
use super::validate::{is_dns_label, name_and_project, validate_runtime, Checker};

/// One job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub project: String,
    /// The gateway's `domain`, for `CE_DOMAIN`.
    pub domain: String,
    /// The file it came from.
    pub file: PathBuf,
    pub runtime: RuntimeSpec,
    pub array_indices: ArrayIndices,
    /// Failed attempts of an index retried at most this many times.
    pub retry_limit: u32,
    /// One attempt is killed after this long and counts as failed (`timeout`).
    pub max_execution_time: Duration,
    /// Instances of one run at once; `None`: all its indices.
    pub max_parallel: Option<u32>,
    /// Between SIGTERM and SIGKILL when an attempt is stopped.
    pub stop_grace: Duration,
    pub schedule: Option<Schedule>,
}

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The cron expression as written (5 fields, or 6 with seconds first).
    pub cron: String,
    /// An IANA zone name (`Europe/Berlin`); `UTC` by default.
    pub timezone: chrono_tz::Tz,
    pub concurrency: ConcurrencyPolicy,
}

/// What a tick does while the previous scheduled run still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Skip the tick (and count it).
    Forbid,
    /// Start another run beside it.
    Allow,
}

/// The most retries an index may have.
pub const MAX_RETRY_LIMIT: i64 = 100;
/// The longest an attempt may be allowed to run.
pub const MAX_EXECUTION_TIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Validates each job file alone, then refuses a name a second file also uses (the first
/// file in name order keeps it). A rejected file keeps its job's spec in `previous`.
pub fn validate_jobs(
    files: &[(PathBuf, Result<RawJob, ConfigIssue>)],
    domain: &str,
    projects: &BTreeSet<String>,
    previous: &[Arc<JobSpec>],
) -> (Vec<Arc<JobSpec>>, Vec<RejectedFile>) {
    let mut jobs: Vec<Arc<JobSpec>> = Vec::new();
    let mut rejected = Vec::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for (file, parsed) in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let mut issues = Vec::new();
        let spec = match parsed {
            Err(issue) => {
                issues.push(issue.clone());
                None
            }
            Ok(raw) => {
                let mut checker = Checker {
                    file,
                    issues: &mut issues,
                };
                validate_job(&mut checker, raw, domain, projects)
            }
        };
        let name = spec.as_ref().map_or_else(
            || match parsed {
                Ok(raw) => raw.name.clone().unwrap_or_else(|| stem.to_string()),
                Err(_) => stem.to_string(),
            },
            |spec| spec.name.clone(),
        );
        if let Some(spec) = spec {
            if let Some(other) = names.get(&spec.name) {
                issues.push(ConfigIssue {
                    file: file.clone(),
                    field: "name".into(),
                    message: format!(
                        "job {:?} is already defined by {}; job names are unique",
                        spec.name,
                        other.display()
                    ),
                });
            } else {
                names.insert(spec.name.clone(), file.clone());
                let unchanged = previous.iter().find(|p| p.as_ref() == &spec);
                jobs.push(unchanged.cloned().unwrap_or_else(|| Arc::new(spec)));
                continue;
            }
        }
        let kept = previous
            .iter()
            .find(|p| p.file == *file && !names.contains_key(&p.name))
            .cloned();
        if let Some(kept) = &kept {
            names.insert(kept.name.clone(), file.clone());
            jobs.push(Arc::clone(kept));
        }
        rejected.push(RejectedFile {
            job: true,
            file: file.clone(),
            app: name,
            issues,
            kept_previous: kept.is_some(),
        });
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    (jobs, rejected)
}

fn validate_job(
    c: &mut Checker<'_>,
    raw: &RawJob,
    domain: &str,
    projects: &BTreeSet<String>,
) -> Option<JobSpec> {
    let before = c.issues.len();
    let (name, project) = name_and_project(c, raw.name.as_ref(), raw.project.as_ref());
    if is_dns_label(&project) && !projects.contains(&project) {
        c.report(
            "project",
            format!("unknown project {project:?}: create it first (tidegate project create {project}), or name one an app is in"),
        );
    }
    // The runtime tables are an app's: the same keys, the same checks.
    let as_app = RawApp {
        name: Some(name.clone()),
        project: Some(project.clone()),
        runtime: raw.runtime.clone(),
        run: raw.run.clone(),
        container: raw.container.clone(),
        build: raw.build.clone(),
        ..RawApp::default()
    };
    let runtime = validate_runtime(c, &as_app);
    match runtime {
        Some(RuntimeSpec::Static { .. }) => c.report(
            "runtime",
            "a job runs to completion: use \"process\" or \"container\"",
        ),
        // Job instances run to completion, which a Deployment's pods do not; jobs stay on the
        // local backends until they map onto Kubernetes Jobs.
        Some(RuntimeSpec::Kubernetes(_)) => c.report(
            "runtime",
            "jobs run on the local backends: use \"process\" or \"container\" \
             (\"kubernetes\" runs apps only)",
        ),
        _ => {}
    }
    let array_indices = match raw.array_indices.as_deref() {
        None => ArrayIndices::default(),
        Some(text) => ArrayIndices::parse(text).unwrap_or_else(|message| {
            c.report("array_indices", message);
            ArrayIndices::default()
        }),
    };
    let retry_limit = match raw.retry_limit {
        None => 3,
        Some(n) if (0..=MAX_RETRY_LIMIT).contains(&n) => n as u32,
        Some(n) => {
            c.report(
                "retry_limit",
                format!("{n} is not between 0 and {MAX_RETRY_LIMIT}"),
            );
            0
        }
    };
    let max_execution_time = c.duration(
        "max_execution_time",
        raw.max_execution_time.as_ref(),
        Duration::from_secs(7200),
    );
    if max_execution_time.is_zero() || max_execution_time > MAX_EXECUTION_TIME {
        c.report(
            "max_execution_time",
            "must be longer than 0s and at most 7 days",
        );
    }
    let max_parallel = match raw.max_parallel {
        None => None,
        Some(n) if n >= 1 && n <= u32::MAX as i64 => Some(n as u32),
        Some(n) => {
            c.report(
                "max_parallel",
                format!("{n} is not 1 or more; leave it out to run every index at once"),
            );
            None
        }
    };
    let stop_grace = c.duration(
        "stop_grace",
        raw.stop_grace.as_ref(),
        Duration::from_secs(10),
    );
    let schedule = schedule(c, raw);
    if c.issues.len() > before {
        return None;
    }
    Some(JobSpec {
        name,
        project,
        domain: domain.to_string(),
        file: c.file.to_path_buf(),
        runtime: runtime?,
        array_indices,
        retry_limit,
        max_execution_time,
        max_parallel,
        stop_grace,
        schedule,
    })
}

fn schedule(c: &mut Checker<'_>, raw: &RawJob) -> Option<Schedule> {
    let Some(cron) = &raw.schedule else {
        if raw.timezone.is_some() || raw.concurrency_policy.is_some() {
            c.report(
                "schedule",
                "timezone and concurrency_policy need a schedule",
            );
        }
        return None;
    };
    if let Err(error) = parse_cron(cron) {
        c.report(
            "schedule",
            format!("{cron:?} is not a cron expression like \"*/5 * * * *\" (minute hour day month weekday): {error}"),
        );
    }
    let timezone = match raw.timezone.as_deref() {
        None => chrono_tz::UTC,
        Some(name) => name.parse().unwrap_or_else(|_| {
            c.report(
                "timezone",
                format!("{name:?} is not a time zone name like \"UTC\" or \"Europe/Berlin\""),
            );
            chrono_tz::UTC
        }),
    };
    let concurrency = match raw.concurrency_policy.as_deref().unwrap_or("forbid") {
        "forbid" => ConcurrencyPolicy::Forbid,
        "allow" => ConcurrencyPolicy::Allow,
        other => {
            c.report(
                "concurrency_policy",
                format!("{other:?} is not one of \"forbid\", \"allow\""),
            );
            ConcurrencyPolicy::Forbid
        }
    };
    Some(Schedule {
        cron: cron.clone(),
        timezone,
        concurrency,
    })
}

/// A cron expression: 5 fields, or 6 with seconds first.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(text)
        .with_seconds_optional()
        .parse()
        .map_err(|e| e.to_string())
}
