//! Turns raw config files into a validated [`Config`]. Pure: no file system, no network.
//! (The `[defaults]`/`[scale]` overlay and its checks live in `scale`.)
//!
//! Every check reports the file and the dotted field it is about, and all problems of one load
//! are reported together. Defaults are filled in here and nowhere else: an app's `[scale]`
//! overlays `[defaults]`, which overlays Knative's and Code Engine's defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::app_set::{assemble, FileOutcome};
use super::container;
use super::env;
use super::error::{ConfigErrors, ConfigIssue};
use super::gateway_file::validate_gateway;
use super::model::{AppSpec, Config, HostPattern, RunSpec, RuntimeSpec, ScaleSpec, Visibility};
use super::raw::{RawApp, RawGatewayFile};
use super::revisions;
use super::scale::overlay_scale;

/// Collects problems for one file while values are converted.
pub(super) struct Checker<'a> {
    pub(super) file: &'a Path,
    pub(super) issues: &'a mut Vec<ConfigIssue>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, field: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        field: &str,
        value: Option<&String>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match parse_duration(text) {
                Ok(duration) => duration,
                Err(message) => {
                    self.report(field, message);
                    default
                }
            },
        }
    }
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`; a bare number is refused because its unit
/// would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| {
        format!("{text:?} is not a duration like \"250ms\", \"30s\" or \"5m\" ({error})")
    })?;
    // Timers add durations to the clock; one that far out would overflow it (humantime
    // accepts "1000000y"). Nothing a gateway waits for is meant to take a century.
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than the longest allowed, 100 years"
        ));
    }
    Ok(duration)
}

/// The longest duration a config may give.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Validates a gateway file and its app files into one [`Config`], strictly: any problem in
/// any file is an error (`tidegate check`, tests).
///
/// `gateway_file` is the path the raw gateway config was read from; relative paths in it are
/// resolved against its directory. `apps` pairs each app file's path with its parsed content.
pub fn validate(
    gateway_file: &Path,
    raw: &RawGatewayFile,
    apps: &[(PathBuf, RawApp)],
) -> Result<Config, ConfigErrors> {
    let apps: Vec<_> = apps
        .iter()
        .map(|(file, app)| (file.clone(), Ok(app.clone())))
        .collect();
    let config = validate_files(gateway_file, raw, &apps, None)?;
    if config.rejected.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(
            config.rejected.into_iter().flat_map(|r| r.issues).collect(),
        ))
    }
}

/// Validates a gateway file and each app file on its own (see `app_set`): only problems of
/// the gateway file are an error; a bad app file is listed in [`Config::rejected`], and its
/// app keeps its spec from `previous` if it had one. `apps` holds each file's parse result.
pub fn validate_files(
    gateway_file: &Path,
    raw: &RawGatewayFile,
    apps: &[(PathBuf, Result<RawApp, ConfigIssue>)],
    previous: Option<&Config>,
) -> Result<Config, ConfigErrors> {
    let mut issues = Vec::new();
    let gateway = validate_gateway(gateway_file, raw, &mut issues);
    let defaults = {
        let mut checker = Checker {
            file: gateway_file,
            issues: &mut issues,
        };
        overlay_scale(
            &mut checker,
            "defaults",
            &ScaleSpec::default(),
            &raw.defaults,
        )
    };
    let https_enabled = gateway.https.is_some() && gateway.tls.is_some();
    let outcomes = apps
        .iter()
        .map(|(file, parsed)| {
            let stem = file.file_stem().and_then(|stem| stem.to_str());
            let app = parsed
                .as_ref()
                .ok()
                .and_then(|raw| raw.name.clone())
                .unwrap_or_else(|| stem.unwrap_or_default().to_string());
            let result = match parsed {
                Err(issue) => Err(vec![issue.clone()]),
                Ok(raw_app) => {
                    let mut issues = Vec::new();
                    let mut checker = Checker {
                        file,
                        issues: &mut issues,
                    };
                    let domain = &gateway.domain;
                    validate_app(&mut checker, raw_app, domain, &defaults, https_enabled)
                        .ok_or(issues)
                }
            };
            FileOutcome {
                file: file.clone(),
                app,
                result,
            }
        })
        .collect();
    let (apps, rejected) = assemble(outcomes, previous);
    if !issues.is_empty() {
        // Everything is reported at once, the app files' problems too.
        issues.extend(rejected.into_iter().flat_map(|file| file.issues));
        return Err(ConfigErrors(issues));
    }
    Ok(Config {
        source: gateway_file.to_path_buf(),
        gateway,
        apps,
        jobs: Vec::new(),
        rejected,
    })
}

fn validate_app(
    c: &mut Checker<'_>,
    raw: &RawApp,
    domain: &str,
    defaults: &ScaleSpec,
    https_enabled: bool,
) -> Option<AppSpec> {
    let issues_before = c.issues.len();
    let (name, project) = name_and_project(c, raw.name.as_ref(), raw.project.as_ref());

    let visibility = match raw.visibility.as_deref().unwrap_or("public") {
        "public" => Visibility::Public,
        "private" => Visibility::Private,
        "project" => Visibility::Project,
        other => {
            c.report(
                "visibility",
                format!("{other:?} is not one of \"public\", \"project\", \"private\""),
            );
            Visibility::Public
        }
    };

    let mut hosts = vec![HostPattern::Exact(format!("{name}.{project}.{domain}"))];
    for (index, host) in raw.hosts.iter().enumerate() {
        match parse_host_pattern(host) {
            Ok(pattern) if hosts.contains(&pattern) => c.report(
                &format!("hosts[{index}]"),
                format!("{host:?} is listed twice"),
            ),
            Ok(pattern) => hosts.push(pattern),
            Err(message) => c.report(&format!("hosts[{index}]"), message),
        }
    }

    let runtime = validate_runtime(c, raw);
    let traffic = match (&runtime, &raw.traffic) {
        (Some(RuntimeSpec::Static { .. }), Some(_)) => {
            c.report(
                "traffic",
                "a static app has one fixed set of upstreams and no revisions to split across",
            );
            Vec::new()
        }
        (Some(RuntimeSpec::Static { .. }), None) => Vec::new(),
        _ => revisions::traffic(c, &name, &project, domain, raw.traffic.as_deref()),
    };
    let revision_history = revisions::history(c, raw.revision_history);
    let scale = overlay_scale(c, "scale", defaults, &raw.scale);
    let https_redirect = raw.https_redirect.unwrap_or(false);
    if https_redirect && !https_enabled {
        c.report(
            "https_redirect",
            "needs an HTTPS listener ([gateway] https and [tls])",
        );
    }
    let hsts_max_age = raw
        .hsts_max_age
        .as_ref()
        .map(|text| c.duration("hsts_max_age", Some(text), Duration::ZERO));
    let websocket_idle_timeout = raw
        .websocket_idle_timeout
        .as_ref()
        .map(|text| c.duration("websocket_idle_timeout", Some(text), Duration::ZERO));
    if websocket_idle_timeout.is_some_and(|t| t.is_zero()) {
        c.report(
            "websocket_idle_timeout",
            "must be longer than 0s; leave it out for no timeout",
        );
    }

    let cold_start_page = match (raw.cold_start_page, &raw.cold_start_page_after) {
        (Some(true), after) => Some(c.duration(
            "cold_start_page_after",
            after.as_ref(),
            Duration::from_secs(1),
        )),
        (_, Some(_)) => {
            c.report(
                "cold_start_page_after",
                "is used only with cold_start_page = true; set that too, or leave this out",
            );
            None
        }
        _ => None,
    };

    if c.issues.len() > issues_before {
        return None;
    }
    Some(AppSpec {
        cold_start_page,
        name,
        project,
        domain: domain.to_string(),
        file: c.file.to_path_buf(),
        visibility,
        hosts,
        runtime: runtime?,
        scale,
        https_redirect,
        hsts_max_age,
        websocket_idle_timeout,
        traffic,
        revision_history,
    })
}

pub(super) fn validate_runtime(c: &mut Checker<'_>, raw: &RawApp) -> Option<RuntimeSpec> {
    let base = c.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    match raw.runtime.as_deref().unwrap_or("process") {
        "static" => {
            if raw.container.is_some() || raw.build.is_some() {
                c.report(
                    "runtime",
                    "a static app has no [container] or [build] table",
                );
            }
            if raw.run.is_some() {
                c.report(
                    "run",
                    "a static app has no [run] table; use [static] upstreams",
                );
            }
            let Some(table) = &raw.static_ else {
                c.report(
                    "static",
                    "runtime \"static\" needs a [static] table with upstreams",
                );
                return None;
            };
            if table.upstreams.is_empty() {
                c.report("static.upstreams", "needs at least one address");
            }
            let mut upstreams: Vec<SocketAddr> = Vec::with_capacity(table.upstreams.len());
            for (index, value) in table.upstreams.iter().enumerate() {
                let field = format!("static.upstreams[{index}]");
                if let Some(addr) = c.socket_addr(&field, value) {
                    if upstreams.contains(&addr) {
                        c.report(&field, format!("{addr} is listed twice"));
                    } else {
                        upstreams.push(addr);
                    }
                }
            }
            Some(RuntimeSpec::Static { upstreams })
        }
        "process" => {
            if raw.container.is_some() {
                c.report(
                    "container",
                    "a process app has no [container] table; set runtime = \"container\"",
                );
            }
            if raw.static_.is_some() {
                c.report(
                    "static",
                    "a process app has no [static] table; set runtime = \"static\"",
                );
            }
            let Some(run) = &raw.run else {
                c.report(
                    "run",
                    "runtime \"process\" needs a [run] table with a command",
                );
                return None;
            };
            let command = run.command.clone().unwrap_or_default();
            if command.is_empty() || command[0].trim().is_empty() {
                c.report("run.command", "needs at least the program to run");
            }
            let port_env = run.port_env.clone().unwrap_or_else(|| "PORT".to_string());
            if !is_env_name(&port_env) {
                c.report(
                    "run.port_env",
                    format!("{port_env:?} is not a valid variable name"),
                );
            } else if port_env != "PORT" && env::reserved(&port_env).is_some() {
                c.report(
                    "run.port_env",
                    format!("{port_env:?} is set by the gateway for another purpose"),
                );
            }
            env::check(c, "run", &run.env, &run.inherit_env, &port_env);
            if let Some(path) = &run.readiness_path {
                if !path.starts_with('/') {
                    c.report(
                        "run.readiness_path",
                        format!("{path:?} must start with \"/\""),
                    );
                }
            }
            Some(RuntimeSpec::Process(RunSpec {
                command,
                env: run.env.clone(),
                inherit_env: run.inherit_env.clone(),
                workdir: run.workdir.as_ref().map(|dir| base.join(dir)),
                port_env,
                readiness_path: run.readiness_path.clone(),
                resources: revisions::resources(c, "run", run),
                build: container::process_build(c, raw),
            }))
        }
        "container" => container::container_spec(c, raw).map(RuntimeSpec::Container),
        "kubernetes" => container::kubernetes_spec(c, raw).map(RuntimeSpec::Kubernetes),
        other => {
            c.report(
                "runtime",
                format!(
                    "{other:?} is not one of \"process\", \"static\", \"container\", \"kubernetes\""
                ),
            );
            None
        }
    }
}

/// An app's or job's `name` (the file's stem when unset) and `project` (`default`), each
/// checked to be a DNS label.
pub(super) fn name_and_project(
    c: &mut Checker<'_>,
    name: Option<&String>,
    project: Option<&String>,
) -> (String, String) {
    let stem = c
        .file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default()
        .to_string();
    let name = name.cloned().unwrap_or(stem);
    check_label(c, "name", &name);
    let project = project.cloned().unwrap_or_else(|| "default".to_string());
    check_label(c, "project", &project);
    (name, project)
}

fn check_label(c: &mut Checker<'_>, field: &str, value: &str) {
    if !is_dns_label(value) {
        c.report(
            field,
            format!("{value:?} must be 1-63 lower-case letters, digits or '-', not starting or ending with '-'"),
        );
    }
}

pub fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

pub(super) fn is_env_name(value: &str) -> bool {
    let mut bytes = value.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Lower-cases a DNS name, drops a trailing dot and checks every label.
pub(super) fn normalize_dns_name(value: &str) -> Result<String, String> {
    let name = value.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(name)
    } else {
        Err(format!("{value:?} is not a valid host name"))
    }
}

/// Parses an exact host or a `*.suffix` wildcard.
pub fn parse_host_pattern(value: &str) -> Result<HostPattern, String> {
    if let Some(suffix) = value.strip_prefix("*.") {
        let suffix = normalize_dns_name(suffix)
            .map_err(|_| format!("{value:?} is not a host or a wildcard like \"*.example.com\""))?;
        Ok(HostPattern::Wildcard(suffix))
    } else if value.contains('*') {
        Err(format!(
            "{value:?}: a wildcard may only be the whole first label, as in \"*.example.com\""
        ))
    } else {
        normalize_dns_name(value).map(HostPattern::Exact)
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
