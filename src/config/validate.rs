//! Turns raw config files into a validated [`Config`]. Pure: no file system, no network.
//! (The `[defaults]`/`[scale]` overlay and its checks live in `scale`.)
//!
//! Every check reports the file and the dotted field it is about, and all problems of one load
//! are reported together. Defaults are filled in here and nowhere else: an app's `[scale]`
//! overlays `[defaults]`, which overlays Knative's and Code Engine's defaults.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::container;
use super::error::{ConfigErrors, ConfigIssue};
use super::model::{
    AppSpec, Config, GatewaySettings, HostPattern, ListenerLimits, RunSpec, RuntimeSpec, ScaleSpec,
    TlsSettings, UpstreamSettings, Visibility,
};
use super::raw::{RawApp, RawGatewayFile};
use super::revisions;
use super::scale::overlay_scale;

/// Collects problems for one file while values are converted.
pub(super) struct Checker<'a> {
    pub(super) file: &'a Path,
    issues: &'a mut Vec<ConfigIssue>,
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

    fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report(
                    field,
                    format!(
                        "{value:?} is not an address like \"127.0.0.1:8080\" or \"[::1]:8080\""
                    ),
                );
                None
            }
        }
    }

    fn networks(&mut self, field: &str, values: &[String]) -> Vec<IpNet> {
        let mut networks = Vec::with_capacity(values.len());
        for (index, value) in values.iter().enumerate() {
            if let Ok(net) = value.parse::<IpNet>() {
                networks.push(net);
            } else if let Ok(ip) = value.parse::<IpAddr>() {
                networks.push(IpNet::from(ip));
            } else {
                self.report(
                    &format!("{field}[{index}]"),
                    format!("{value:?} is not an IP address or CIDR like \"10.0.0.0/8\""),
                );
            }
        }
        networks
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

/// Validates a gateway file and its app files into one [`Config`].
///
/// `gateway_file` is the path the raw gateway config was read from; relative paths in it are
/// resolved against its directory. `apps` pairs each app file's path with its parsed content.
pub fn validate(
    gateway_file: &Path,
    raw: &RawGatewayFile,
    apps: &[(PathBuf, RawApp)],
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

    let mut specs: Vec<Arc<AppSpec>> = Vec::with_capacity(apps.len());
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    let mut hosts: HashMap<HostPattern, (String, PathBuf)> = HashMap::new();
    for (file, raw_app) in apps {
        let mut checker = Checker {
            file,
            issues: &mut issues,
        };
        let https_enabled = gateway.https.is_some() && gateway.tls.is_some();
        let Some(spec) = validate_app(
            &mut checker,
            raw_app,
            &gateway.domain,
            &defaults,
            https_enabled,
        ) else {
            continue;
        };
        if let Some(first) = names.get(&spec.name) {
            checker.report(
                "name",
                format!(
                    "app {:?} is already defined in {}",
                    spec.name,
                    first.display()
                ),
            );
            continue;
        }
        names.insert(spec.name.clone(), file.clone());
        let tag_hosts: Vec<HostPattern> = spec
            .traffic
            .iter()
            .filter_map(|target| target.tag.as_ref())
            .map(|(_, host)| HostPattern::Exact(host.clone()))
            .collect();
        for host in spec.hosts.iter().chain(&tag_hosts) {
            if let Some((owner, owner_file)) = hosts.get(host) {
                checker.report(
                    "hosts",
                    format!(
                        "host {host} is already routed to app {owner:?} ({})",
                        owner_file.display()
                    ),
                );
            } else {
                hosts.insert(host.clone(), (spec.name.clone(), file.clone()));
            }
        }
        specs.push(Arc::new(spec));
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));

    if issues.is_empty() {
        Ok(Config {
            source: gateway_file.to_path_buf(),
            gateway,
            apps: specs,
        })
    } else {
        Err(ConfigErrors(issues))
    }
}

fn validate_gateway(
    file: &Path,
    raw: &RawGatewayFile,
    issues: &mut Vec<ConfigIssue>,
) -> GatewaySettings {
    let mut c = Checker { file, issues };
    let g = &raw.gateway;
    let base = file.parent().unwrap_or(Path::new("."));

    let http = c.socket_addr(
        "gateway.http",
        g.http.as_deref().unwrap_or("127.0.0.1:8080"),
    );
    let https = g
        .https
        .as_deref()
        .and_then(|value| c.socket_addr("gateway.https", value));
    if https.is_some() && raw.tls.is_none() {
        c.report(
            "gateway.https",
            "the HTTPS listener needs a [tls] table with certs_dir",
        );
    }
    let admin = c
        .socket_addr(
            "gateway.admin",
            g.admin.as_deref().unwrap_or("127.0.0.1:9090"),
        )
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    if admin.port() != 0 && (http == Some(admin) || https == Some(admin)) {
        c.report(
            "gateway.admin",
            format!("{admin} is also a public listener; the admin API needs its own address"),
        );
    }

    let domain = g.domain.clone().unwrap_or_else(|| "localhost".to_string());
    let domain = match normalize_dns_name(&domain) {
        Ok(name) => name,
        Err(message) => {
            c.report("gateway.domain", message);
            "localhost".to_string()
        }
    };

    let apps_dir = base.join(g.apps_dir.as_deref().unwrap_or("apps"));
    let shutdown_grace = c.duration(
        "gateway.shutdown_grace",
        g.shutdown_grace.as_ref(),
        Duration::from_secs(30),
    );
    let trusted_proxies = c.networks(
        "gateway.trusted_proxies",
        g.trusted_proxies.as_deref().unwrap_or(&[]),
    );
    let default_private = ["127.0.0.0/8".to_string(), "::1/128".to_string()];
    let private_networks = c.networks(
        "gateway.private_networks",
        g.private_networks.as_deref().unwrap_or(&default_private),
    );

    let max_connections = g.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        c.report("gateway.max_connections", "must be at least 1");
    }
    let max_header_bytes = g.max_header_bytes.unwrap_or(64 * 1024);
    if max_header_bytes < 8192 {
        c.report(
            "gateway.max_header_bytes",
            format!("{max_header_bytes} is below the minimum of 8192"),
        );
    }
    let header_read_timeout = c.duration(
        "gateway.header_read_timeout",
        g.header_read_timeout.as_ref(),
        Duration::from_secs(30),
    );
    if header_read_timeout.is_zero() {
        c.report("gateway.header_read_timeout", "must be longer than 0s");
    }
    let client_body_timeout = c.duration(
        "gateway.client_body_timeout",
        g.client_body_timeout.as_ref(),
        Duration::from_secs(60),
    );
    let send_timeout = c.duration(
        "gateway.send_timeout",
        g.send_timeout.as_ref(),
        Duration::from_secs(60),
    );
    let connect_timeout = c.duration(
        "gateway.upstream_connect_timeout",
        g.upstream_connect_timeout.as_ref(),
        Duration::from_secs(5),
    );
    let idle_timeout = c.duration(
        "gateway.upstream_idle_timeout",
        g.upstream_idle_timeout.as_ref(),
        Duration::from_secs(90),
    );
    for (field, value) in [
        ("gateway.client_body_timeout", client_body_timeout),
        ("gateway.send_timeout", send_timeout),
        ("gateway.upstream_connect_timeout", connect_timeout),
        ("gateway.upstream_idle_timeout", idle_timeout),
    ] {
        if value.is_zero() {
            c.report(field, "must be longer than 0s");
        }
    }

    let tls = raw.tls.as_ref().map(|tls| TlsSettings {
        certs_dir: base.join(tls.certs_dir.as_deref().unwrap_or("certs")),
        default_cert: tls.default_cert.clone(),
    });

    let logs_dir = match &g.logs_dir {
        Some(dir) => base.join(dir),
        None => std::env::temp_dir().join(format!("tidegate-{}", std::process::id())),
    };

    let state_dir = g.state_dir.as_ref().map(|dir| base.join(dir));
    let container_engine = container::engine(&mut c, raw.container_engine.as_ref(), file);
    GatewaySettings {
        container_engine,
        logs_dir,
        state_dir,
        http,
        https,
        admin,
        domain,
        apps_dir,
        shutdown_grace,
        trusted_proxies,
        private_networks,
        limits: ListenerLimits {
            max_connections: max_connections.max(1),
            header_read_timeout,
            max_header_bytes: max_header_bytes.max(8192),
            client_body_timeout,
            send_timeout,
        },
        upstream: UpstreamSettings {
            connect_timeout,
            idle_timeout,
        },
        tls,
    }
}

fn validate_app(
    c: &mut Checker<'_>,
    raw: &RawApp,
    domain: &str,
    defaults: &ScaleSpec,
    https_enabled: bool,
) -> Option<AppSpec> {
    let issues_before = c.issues.len();
    let file_stem = c
        .file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default()
        .to_string();
    let name = raw.name.clone().unwrap_or(file_stem);
    check_label(c, "name", &name);
    let project = raw.project.clone().unwrap_or_else(|| "default".to_string());
    check_label(c, "project", &project);

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

    if c.issues.len() > issues_before {
        return None;
    }
    Some(AppSpec {
        name,
        project,
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

fn validate_runtime(c: &mut Checker<'_>, raw: &RawApp) -> Option<RuntimeSpec> {
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
            for name in run.env.keys() {
                if !is_env_name(name) {
                    c.report(&format!("run.env.{name}"), "is not a valid variable name");
                }
            }
            let port_env = run.port_env.clone().unwrap_or_else(|| "PORT".to_string());
            if !is_env_name(&port_env) {
                c.report(
                    "run.port_env",
                    format!("{port_env:?} is not a valid variable name"),
                );
            }
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
                workdir: run.workdir.as_ref().map(|dir| base.join(dir)),
                port_env,
                readiness_path: run.readiness_path.clone(),
                resources: revisions::resources(c, "run", run),
                build: container::process_build(c, raw),
            }))
        }
        "container" => container::container_spec(c, raw).map(RuntimeSpec::Container),
        other => {
            c.report(
                "runtime",
                format!("{other:?} is not one of \"process\", \"static\", \"container\""),
            );
            None
        }
    }
}

fn check_label(c: &mut Checker<'_>, field: &str, value: &str) {
    if !is_dns_label(value) {
        c.report(
            field,
            format!("{value:?} must be 1-63 lower-case letters, digits or '-', not starting or ending with '-'"),
        );
    }
}

pub(super) fn is_dns_label(value: &str) -> bool {
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
fn normalize_dns_name(value: &str) -> Result<String, String> {
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
