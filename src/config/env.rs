//! Validation of an instance's environment: the app's `env` and `inherit_env`.
//!
//! Instances start from a clean environment (`runtime::env`): nothing of the gateway's own
//! environment reaches them unless the app lists its name in `inherit_env`, so a secret the
//! gateway holds never leaks into every app. The variables the gateway injects (the port, the
//! names Code Engine and Knative give their instances, tidegate's own) cannot be set or
//! inherited by an app: a silent override would break the contract apps rely on.

use std::collections::BTreeMap;

use super::validate::{is_env_name, Checker};

/// Names the gateway sets in every app instance (besides the app's `port_env`).
pub const INJECTED: &[&str] = &[
    "PORT",
    "CE_APP",
    "CE_PROJECT",
    "CE_SUBDOMAIN",
    "CE_DOMAIN",
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
];

/// Names the gateway sets in job instances (for the jobs to come; reserved now so no app
/// file has to change then).
const JOB_INJECTED: &[&str] = &[
    "JOB_INDEX",
    "JOB_ARRAY_SIZE",
    "JOB_ATTEMPT",
    "CE_JOB",
    "CE_JOBRUN",
];

/// Why `name` may not be set by an app, if it may not.
pub fn reserved(name: &str) -> Option<&'static str> {
    if INJECTED.contains(&name) || JOB_INJECTED.contains(&name) {
        Some("is set by the gateway in every instance")
    } else if name.starts_with("TIDEGATE_") {
        Some("is reserved for the gateway (TIDEGATE_*)")
    } else {
        None
    }
}

/// Checks `[<table>] env` and `inherit_env`; `port_env` is the app's port variable.
pub(super) fn check(
    c: &mut Checker<'_>,
    table: &str,
    env: &BTreeMap<String, String>,
    inherit: &[String],
    port_env: &str,
) {
    for name in env.keys() {
        let field = format!("{table}.env.{name}");
        if !is_env_name(name) {
            c.report(&field, "is not a valid variable name");
        } else if let Some(why) = reserved(name) {
            c.report(&field, format!("{why}; choose another name"));
        } else if name == port_env {
            c.report(
                &field,
                format!("is the port variable ({table}.port_env); the gateway sets it"),
            );
        }
    }
    for (index, name) in inherit.iter().enumerate() {
        let field = format!("{table}.inherit_env[{index}]");
        if !is_env_name(name) {
            c.report(&field, format!("{name:?} is not a valid variable name"));
        } else if let Some(why) = reserved(name) {
            c.report(&field, format!("{name:?} {why}; it cannot be inherited"));
        } else if env.contains_key(name) {
            c.report(
                &field,
                format!("{name:?} is also set in {table}.env; keep one of the two"),
            );
        }
    }
}
