//! The environment an instance starts with: clean, and the same contract on every backend.
//!
//! An instance used to inherit the gateway's whole environment, so any secret the gateway
//! held (a cloud token, a database password) reached every app. Now it gets, in this order:
//! a base that a program needs to run (process instances only: `PATH`, `HOME`, `LANG`, `TZ`
//! from the gateway, `PATH` defaulted if unset; a container has its image's), the gateway's
//! variables the app names in `inherit_env`, the app's own `env`, and then the variables the
//! gateway injects, which validation keeps apps from setting (`config::env`):
//!
//! | name | value |
//! |---|---|
//! | `PORT` (and the app's `port_env`) | the port to listen on |
//! | `CE_APP`, `K_SERVICE`, `K_CONFIGURATION` | the app's name |
//! | `CE_PROJECT`, `CE_SUBDOMAIN` | the app's project |
//! | `CE_DOMAIN` | the gateway's `domain` |
//! | `K_REVISION` | the revision's name |
//! | `TIDEGATE_APP`, `TIDEGATE_REVISION`, `TIDEGATE_INSTANCE` | app, revision, instance |
//! | `TIDEGATE_TOKEN` | the instance's identity for `project` visibility |
//!
//! A job's instance gets no port and none of the app names; instead `JOB_INDEX`,
//! `JOB_ARRAY_SIZE`, `JOB_ATTEMPT`, `CE_JOB`, `CE_JOBRUN` and `CE_PROJECT` ([`job`]).

use crate::config::AppSpec;

/// What a process instance gets of the gateway's own environment without asking.
const PROCESS_BASE: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// `PATH` for a process instance when the gateway has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// An instance's environment as (name, value) pairs, later ones winning.
pub type Env = Vec<(String, String)>;

/// The base of a process instance's environment (see the module header).
pub fn process_base() -> Env {
    let mut env: Env = PROCESS_BASE
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// The gateway's values of the variables named in `names` (unset ones are left out).
pub fn inherited(names: &[String]) -> Env {
    names
        .iter()
        .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
        .collect()
}

/// The variables the gateway sets for every instance of `revision` of `app` (the port and
/// the instance's own are added by the backend that knows them).
pub fn injected(app: &AppSpec, revision: &str) -> Env {
    [
        ("CE_APP", app.name.as_str()),
        ("CE_PROJECT", &app.project),
        ("CE_SUBDOMAIN", &app.project),
        ("CE_DOMAIN", &app.domain),
        ("K_SERVICE", &app.name),
        ("K_CONFIGURATION", &app.name),
        ("K_REVISION", revision),
        ("TIDEGATE_APP", &app.name),
        ("TIDEGATE_REVISION", revision),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// The variables a job's instance gets (Code Engine's): which index of how many, which
/// attempt, and the job, run and project.
pub fn job(
    job: &str,
    project: &str,
    run: &str,
    (index, array_size, attempt): (u32, usize, u32),
) -> Env {
    [
        ("JOB_INDEX", index.to_string()),
        ("JOB_ARRAY_SIZE", array_size.to_string()),
        ("JOB_ATTEMPT", attempt.to_string()),
        ("CE_JOB", job.to_string()),
        ("CE_JOBRUN", run.to_string()),
        ("CE_PROJECT", project.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}
