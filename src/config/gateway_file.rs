//! Validation of the gateway file: `[gateway]`, `[tls]`, `[container_engine]` and
//! `[kubernetes]` into
//! [`GatewaySettings`]. Pure, like the rest of `validate`; relative paths are resolved against
//! the gateway file's directory.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::container;
use super::error::ConfigIssue;
use super::model::{
    AccessLogFormat, AccessLogTarget, GatewaySettings, ListenerLimits, TlsSettings,
    UpstreamSettings,
};
use super::raw::RawGatewayFile;
use super::validate::{normalize_dns_name, Checker};

impl Checker<'_> {
    pub(super) fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
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

/// The gateway file's settings; problems go to `issues`.
pub(super) fn validate_gateway(
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

    // Everything the gateway writes lives under one directory the operator chooses, so it
    // survives restarts and is cleaned up in one place.
    let state_dir = base.join(g.state_dir.as_deref().unwrap_or("state"));
    let logs_dir = match &g.logs_dir {
        Some(dir) => base.join(dir),
        None => state_dir.join("logs"),
    };
    let log_retention = c.duration(
        "gateway.log_retention",
        g.log_retention.as_ref(),
        Duration::from_secs(7 * 24 * 3600),
    );
    if log_retention.is_zero() {
        c.report("gateway.log_retention", "must be longer than 0s");
    }
    let container_engine = container::engine(&mut c, raw.container_engine.as_ref(), file);
    let kubernetes = container::kubernetes(&mut c, raw.kubernetes.as_ref(), base);
    let admin_token_file = g.admin_token_file.as_deref().map(|path| base.join(path));
    let projects_dir = base.join(g.projects_dir.as_deref().unwrap_or("projects"));
    let jobs_dir = base.join(g.jobs_dir.as_deref().unwrap_or("jobs"));
    let jobrun_retention = c.duration(
        "gateway.jobrun_retention",
        g.jobrun_retention.as_ref(),
        Duration::from_secs(7 * 24 * 3600),
    );
    if jobrun_retention.is_zero() {
        c.report("gateway.jobrun_retention", "must be longer than 0s");
    }
    if g.max_instances == Some(0) {
        c.report(
            "gateway.max_instances",
            "must be 1 or more; leave it out for no limit",
        );
    }
    let access_log = match g.access_log.as_deref() {
        None | Some("stdout") => AccessLogTarget::Stdout,
        Some("off") => AccessLogTarget::Off,
        Some("") => {
            c.report(
                "gateway.access_log",
                "is empty: use \"stdout\", \"off\" or a file path",
            );
            AccessLogTarget::Stdout
        }
        Some(path) => AccessLogTarget::File(base.join(path)),
    };
    let access_log_format = match g.access_log_format.as_deref() {
        None => None,
        Some("text") => Some(AccessLogFormat::Text),
        Some("json") => Some(AccessLogFormat::Json),
        Some("combined") => Some(AccessLogFormat::Combined),
        Some(other) => {
            c.report(
                "gateway.access_log_format",
                format!("{other:?} is not one of \"text\", \"json\", \"combined\""),
            );
            None
        }
    };
    GatewaySettings {
        access_log,
        access_log_format,
        jobs_dir,
        jobrun_retention,
        max_instances: g.max_instances,
        admin_token_file,
        projects_dir,
        container_engine,
        kubernetes,
        logs_dir,
        log_retention,
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
