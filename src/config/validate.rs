//! Turns raw config files into a validated [`Config`]. Pure: no file system, no network.
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

use super::error::{ConfigErrors, ConfigIssue};
use super::model::{
    AppSpec, Config, GatewaySettings, HostPattern, ListenerLimits, RunSpec, RuntimeSpec, ScaleSpec,
    TlsSettings, UpstreamSettings, Visibility,
};
use super::raw::{RawApp, RawGatewayFile, RawScale};

/// Collects problems for one file while values are converted.
struct Checker<'a> {
    file: &'a Path,
    issues: &'a mut Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn report(&mut self, field: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, field: &str, value: Option<&String>, default: Duration) -> Duration {
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
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("{text:?} is not a duration like \"250ms\", \"30s\" or \"5m\" ({error})")
    })
}

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
        for host in &spec.hosts {
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

    GatewaySettings {
        logs_dir,
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
        "project" => {
            c.report(
                "visibility",
                "\"project\" needs per-instance identities, which this build does not have yet; use \"public\" or \"private\"",
            );
            Visibility::Project
        }
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
    })
}

fn validate_runtime(c: &mut Checker<'_>, raw: &RawApp) -> Option<RuntimeSpec> {
    let base = c.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    match raw.runtime.as_deref().unwrap_or("process") {
        "static" => {
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
            }))
        }
        other => {
            c.report(
                "runtime",
                format!("{other:?} is not one of \"process\", \"static\""),
            );
            None
        }
    }
}

/// Overlays the keys present in `raw` on `base` and checks the result as a whole.
fn overlay_scale(c: &mut Checker<'_>, table: &str, base: &ScaleSpec, raw: &RawScale) -> ScaleSpec {
    let field = |key: &str| format!("{table}.{key}");
    let mut s = base.clone();
    if let Some(v) = raw.min_scale {
        s.min_scale = v;
    }
    if let Some(v) = raw.max_scale {
        s.max_scale = v;
    }
    if let Some(v) = raw.concurrency {
        s.concurrency = v;
        // The soft target follows the hard limit unless it is given explicitly.
        if raw.concurrency_target.is_none() && v > 0 {
            s.concurrency_target = f64::from(v);
        }
    }
    if let Some(v) = raw.concurrency_target {
        s.concurrency_target = v;
    }
    if let Some(v) = raw.target_utilization {
        s.target_utilization = v;
    }
    if let Some(v) = raw.panic_threshold {
        s.panic_threshold = v;
    }
    if let Some(v) = raw.max_scale_up_rate {
        s.max_scale_up_rate = v;
    }
    if let Some(v) = raw.max_scale_down_rate {
        s.max_scale_down_rate = v;
    }
    if let Some(v) = raw.queue_depth {
        s.queue_depth = v;
    }
    s.stable_window = c.duration(
        &field("stable_window"),
        raw.stable_window.as_ref(),
        s.stable_window,
    );
    s.panic_window = c.duration(
        &field("panic_window"),
        raw.panic_window.as_ref(),
        s.panic_window,
    );
    s.scale_to_zero_grace = c.duration(
        &field("scale_to_zero_grace"),
        raw.scale_to_zero_grace.as_ref(),
        s.scale_to_zero_grace,
    );
    s.scale_down_delay = c.duration(
        &field("scale_down_delay"),
        raw.scale_down_delay.as_ref(),
        s.scale_down_delay,
    );
    s.request_timeout = c.duration(
        &field("request_timeout"),
        raw.request_timeout.as_ref(),
        s.request_timeout,
    );
    s.cold_start_timeout = c.duration(
        &field("cold_start_timeout"),
        raw.cold_start_timeout.as_ref(),
        s.cold_start_timeout,
    );
    s.stop_grace = c.duration(&field("stop_grace"), raw.stop_grace.as_ref(), s.stop_grace);
    s.startup_timeout = c.duration(
        &field("startup_timeout"),
        raw.startup_timeout.as_ref(),
        s.startup_timeout,
    );
    if table == "scale" && *raw == RawScale::default() {
        // Nothing set here: the result is `[defaults]`, which was checked (and reported) there.
        return s;
    }

    if s.min_scale > s.max_scale {
        c.report(
            &field("min_scale"),
            format!("{} is greater than max_scale {}", s.min_scale, s.max_scale),
        );
    }
    if s.concurrency > 0 && s.concurrency_target > f64::from(s.concurrency) {
        // Knative caps the soft target by the hard limit; say so rather than silently capping.
        c.report(
            &field("concurrency_target"),
            format!(
                "{} is above the hard limit concurrency = {}",
                s.concurrency_target, s.concurrency
            ),
        );
    }
    if !(s.concurrency_target > 0.0 && s.concurrency_target.is_finite()) {
        c.report(&field("concurrency_target"), "must be greater than 0");
    }
    if !(s.target_utilization > 0.0 && s.target_utilization <= 1.0) {
        c.report(&field("target_utilization"), "must be in (0, 1], e.g. 0.7");
    }
    if !(s.panic_threshold > 1.0 && s.panic_threshold.is_finite()) {
        c.report(
            &field("panic_threshold"),
            "must be greater than 1.0, e.g. 2.0 for 200%",
        );
    }
    if !(s.max_scale_up_rate > 1.0 && s.max_scale_up_rate.is_finite()) {
        c.report(&field("max_scale_up_rate"), "must be greater than 1.0");
    }
    if !(s.max_scale_down_rate > 1.0 && s.max_scale_down_rate.is_finite()) {
        c.report(&field("max_scale_down_rate"), "must be greater than 1.0");
    }
    if s.stable_window.is_zero() {
        c.report(&field("stable_window"), "must be longer than 0s");
    }
    if s.panic_window.is_zero() || s.panic_window > s.stable_window {
        c.report(
            &field("panic_window"),
            "must be longer than 0s and no longer than stable_window",
        );
    }
    if s.request_timeout.is_zero() {
        c.report(&field("request_timeout"), "must be longer than 0s");
    }
    if s.startup_timeout.is_zero() {
        c.report(&field("startup_timeout"), "must be longer than 0s");
    }
    if s.cold_start_timeout.is_zero() {
        c.report(&field("cold_start_timeout"), "must be longer than 0s");
    }
    if s.queue_depth == 0 {
        c.report(&field("queue_depth"), "must be at least 1");
    }
    s
}

fn check_label(c: &mut Checker<'_>, field: &str, value: &str) {
    if !is_dns_label(value) {
        c.report(
            field,
            format!("{value:?} must be 1-63 lower-case letters, digits or '-', not starting or ending with '-'"),
        );
    }
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn is_env_name(value: &str) -> bool {
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
mod tests {
    use super::*;

    fn check(gateway: &str, apps: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let raw: RawGatewayFile = toml::from_str(gateway).unwrap();
        let apps: Vec<(PathBuf, RawApp)> = apps
            .iter()
            .map(|(name, text)| {
                (
                    PathBuf::from(format!("apps/{name}.toml")),
                    toml::from_str(text).unwrap(),
                )
            })
            .collect();
        validate(Path::new("tidegate.toml"), &raw, &apps)
    }

    fn errors(gateway: &str, apps: &[(&str, &str)]) -> String {
        check(gateway, apps).unwrap_err().to_string()
    }

    const STATIC: &str = "runtime = \"static\"\n[static]\nupstreams = [\"127.0.0.1:3000\"]\n";

    #[test]
    fn defaults_fill_in_and_the_default_host_is_app_project_domain() {
        let config = check("[gateway]\ndomain = \"Example.COM.\"", &[("web", STATIC)]).unwrap();
        let app = &config.apps[0];
        assert_eq!(app.name, "web", "the name defaults to the file name");
        assert_eq!(app.project, "default");
        assert_eq!(
            app.hosts,
            vec![HostPattern::Exact("web.default.example.com".into())]
        );
        assert_eq!(app.scale, ScaleSpec::default());
        assert_eq!(config.gateway.apps_dir, PathBuf::from("apps"));
        assert_eq!(config.gateway.http, Some("127.0.0.1:8080".parse().unwrap()));
    }

    #[test]
    fn app_scale_overlays_defaults_and_concurrency_sets_the_soft_target() {
        let config = check(
            "[defaults]\nmax_scale = 7\nconcurrency = 20\nscale_to_zero_grace = \"250ms\"",
            &[(
                "web",
                &format!("{STATIC}[scale]\nmin_scale = 1\nconcurrency = 10"),
            )],
        )
        .unwrap();
        let scale = &config.apps[0].scale;
        assert_eq!((scale.min_scale, scale.max_scale), (1, 7));
        assert_eq!(scale.concurrency, 10);
        assert_eq!(scale.concurrency_target, 10.0);
        assert_eq!(scale.scale_to_zero_grace, Duration::from_millis(250));
    }

    #[test]
    fn every_problem_names_its_file_and_field() {
        let text = errors(
            "[gateway]\nhttp = \"localhost\"\n[defaults]\ntarget_utilization = 1.5\npanic_window = \"2m\"",
            &[
                ("a", "runtime = \"static\"\n[static]\nupstreams = []"),
                ("e", "runtime = \"static\"\n[static]\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:1\"]"),
                ("b", "runtime = \"docker\""),
                ("c", "runtime = \"process\"\n[run]\ncommand = [\"x\"]\nport_env = \"1X\"\nreadiness_path = \"healthz\"\nenv = { \"A-B\" = \"1\" }"),
                ("d", &format!("visibility = \"secret\"\n{STATIC}")),
            ],
        );
        for expected in [
            "tidegate.toml: gateway.http: \"localhost\" is not an address",
            "tidegate.toml: defaults.target_utilization: must be in (0, 1]",
            "tidegate.toml: defaults.panic_window: must be longer than 0s and no longer than stable_window",
            "apps/a.toml: static.upstreams: needs at least one address",
            "apps/e.toml: static.upstreams[1]: 127.0.0.1:1 is listed twice",
            "apps/b.toml: runtime: \"docker\" is not one of",
            "apps/c.toml: run.port_env: \"1X\" is not a valid variable name",
            "apps/c.toml: run.readiness_path: \"healthz\" must start with \"/\"",
            "apps/c.toml: run.env.A-B: is not a valid variable name",
            "apps/d.toml: visibility: \"secret\" is not one of",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // A bad [defaults] value is reported once, not again for every app that inherits it.
        assert!(!text.contains("apps/a.toml: scale."), "{text}");
    }

    #[test]
    fn duplicate_names_and_hosts_are_refused() {
        let text = errors(
            "",
            &[
                (
                    "a",
                    &format!("name = \"x\"\nhosts = [\"*.shop.example\"]\n{STATIC}"),
                ),
                ("b", &format!("name = \"x\"\n{STATIC}")),
                (
                    "c",
                    &format!("hosts = [\"*.shop.example\", \"x.default.localhost\"]\n{STATIC}"),
                ),
            ],
        );
        assert!(
            text.contains("apps/b.toml: name: app \"x\" is already defined in apps/a.toml"),
            "{text}"
        );
        assert!(
            text.contains("apps/c.toml: hosts: host *.shop.example is already routed to app \"x\""),
            "{text}"
        );
        assert!(
            text.contains(
                "apps/c.toml: hosts: host x.default.localhost is already routed to app \"x\""
            ),
            "{text}"
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host_pattern("*.Example.com").unwrap(),
            HostPattern::Wildcard("example.com".into())
        );
        assert_eq!(
            parse_host_pattern("API.example.com.").unwrap(),
            HostPattern::Exact("api.example.com".into())
        );
        assert!(parse_host_pattern("*").is_err());
        assert!(parse_host_pattern("a.*.com").is_err());
        assert!(parse_host_pattern("bad host").is_err());
    }
}
