//! The config files exactly as operators write them.
//!
//! These types mirror the TOML one to one and reject unknown keys, so a typo in a key is an
//! error instead of a silently ignored setting. Nothing here is checked beyond TOML syntax and
//! types: `validate` turns them into the model the rest of the gateway uses.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `tidegate.toml`: listeners, admin, domain, TLS, defaults and where the app files live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayFile {
    #[serde(default)]
    pub gateway: RawGateway,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub defaults: RawScale,
    pub container_engine: Option<RawContainerEngine>,
    pub kubernetes: Option<RawKubernetes>,
}

/// `[kubernetes]`: the cluster `runtime = "kubernetes"` apps run on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    /// A kubeconfig file; without it, `$KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<String>,
    /// The namespace of every app's objects; without it, the kubeconfig context's (or the
    /// pod's own in a cluster).
    pub namespace: Option<String>,
    /// Several gateway replicas share the cluster: one leader (a Lease) scales.
    pub leader_election: Option<bool>,
    /// This replica's name in the election; without it `$POD_NAME` (or the host name and
    /// process id) and `$POD_IP`.
    pub identity: Option<String>,
}

/// `[container_engine]`: where the Docker Engine API (Docker or Podman) listens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContainerEngine {
    /// `unix:///run/podman/podman.sock` or a plain socket path.
    pub socket: Option<String>,
    /// Labels this gateway's containers, so a restart finds and removes its leftovers.
    pub gateway_id: Option<String>,
}

/// The `[gateway]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub http: Option<String>,
    pub https: Option<String>,
    pub admin: Option<String>,
    pub domain: Option<String>,
    pub apps_dir: Option<String>,
    pub shutdown_grace: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub private_networks: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub client_body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub upstream_connect_timeout: Option<String>,
    pub upstream_idle_timeout: Option<String>,
    pub logs_dir: Option<String>,
    pub log_retention: Option<String>,
    /// Where revision history, logs and generated secrets are kept across restarts.
    pub state_dir: Option<String>,
    pub admin_token_file: Option<String>,
    pub projects_dir: Option<String>,
    /// Where job definitions live, one `*.toml` each (default `jobs`).
    pub jobs_dir: Option<String>,
    /// How long finished job runs are kept (default 7 days).
    pub jobrun_retention: Option<String>,
    /// Instances of apps and jobs together at most (default: unlimited).
    pub max_instances: Option<u32>,
    /// Where the access log goes: "stdout" (default), "off", or a file.
    pub access_log: Option<String>,
    /// "text" or "json" (default: as the rest of the log).
    pub access_log_format: Option<String>,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certs_dir: Option<String>,
    pub default_cert: Option<String>,
}

/// Scaling and timeout keys, shared by `[defaults]` and an app's `[scale]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScale {
    pub min_scale: Option<u32>,
    pub max_scale: Option<u32>,
    pub concurrency: Option<u32>,
    pub concurrency_target: Option<f64>,
    pub target_utilization: Option<f64>,
    pub stable_window: Option<String>,
    pub panic_window: Option<String>,
    pub panic_threshold: Option<f64>,
    pub max_scale_up_rate: Option<f64>,
    pub max_scale_down_rate: Option<f64>,
    pub scale_to_zero_grace: Option<String>,
    pub scale_down_delay: Option<String>,
    pub request_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub startup_timeout: Option<String>,
    pub queue_depth: Option<usize>,
    pub cold_start_timeout: Option<String>,
    pub stop_grace: Option<String>,
}

/// One `apps/<app>.toml` file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Option<String>,
    pub project: Option<String>,
    pub visibility: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub runtime: Option<String>,
    pub https_redirect: Option<bool>,
    pub hsts_max_age: Option<String>,
    pub websocket_idle_timeout: Option<String>,
    pub run: Option<RawRun>,
    #[serde(rename = "static")]
    pub static_: Option<RawStatic>,
    pub container: Option<RawContainer>,
    pub build: Option<RawBuild>,
    #[serde(default)]
    pub scale: RawScale,
    /// `[[traffic]]`: how requests split across revisions; absent means 100% latest.
    pub traffic: Option<Vec<RawTraffic>>,
    /// How many revisions (specs, not instances) to keep for traffic entries to name.
    pub revision_history: Option<u32>,
    /// Browsers waiting for a cold start get a "starting" page after `cold_start_page_after`.
    pub cold_start_page: Option<bool>,
    pub cold_start_page_after: Option<String>,
}

/// One `[[traffic]]` entry (Knative's `spec.traffic`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraffic {
    /// `"latest"` or a revision name such as `"hello-00001"`.
    pub revision: Option<String>,
    pub percent: Option<u32>,
    /// Gives the revision its own host `<tag>-<app>.<project>.<domain>`.
    pub tag: Option<String>,
}

/// `[run]`: how the process runtime starts an instance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of the gateway's own environment variables the instances get too.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    pub workdir: Option<String>,
    pub port_env: Option<String>,
    pub readiness_path: Option<String>,
    /// CPUs per instance (`0.5`, `1`, `2`), applied as a CFS quota.
    pub cpu: Option<f64>,
    /// Memory per instance (`"512M"`, `"1G"`, `"256Mi"`), applied as a cgroup memory limit.
    pub memory: Option<String>,
}

/// `[container]`: how the container runtime starts an instance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContainer {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub port: Option<u16>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub inherit_env: Vec<String>,
    pub cpu: Option<f64>,
    pub memory: Option<String>,
    pub pull: Option<String>,
    pub readiness_path: Option<String>,
}

/// `[build]`: how a revision's image (container apps) or files (process apps) are built.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    pub command: Option<Vec<String>>,
}

/// `[static]`: fixed upstream addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    #[serde(default)]
    pub upstreams: Vec<String>,
}

/// One `jobs/<job>.toml` file: an app's runtime tables plus the job keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub name: Option<String>,
    pub project: Option<String>,
    pub runtime: Option<String>,
    pub run: Option<RawRun>,
    pub container: Option<RawContainer>,
    pub build: Option<RawBuild>,
    pub array_indices: Option<String>,
    pub retry_limit: Option<i64>,
    pub max_execution_time: Option<String>,
    pub max_parallel: Option<i64>,
    pub stop_grace: Option<String>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub concurrency_policy: Option<String>,
}
