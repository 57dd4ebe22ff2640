//! The validated configuration: the only config types that leave this module.
//!
//! Every value here has been checked and every default filled in, so the data plane and the
//! control plane never re-check or re-default anything. A `Config` is immutable; a reload
//! builds a new one and swaps it in whole.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use super::app_set::RejectedFile;

/// A whole validated configuration: the gateway file plus every app file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The gateway file it was read from; reloads read the same path again.
    pub source: PathBuf,
    pub gateway: GatewaySettings,
    /// Apps sorted by name, so listings and diffs are stable.
    pub apps: Vec<Arc<AppSpec>>,
    /// Job definitions sorted by name.
    pub jobs: Vec<Arc<super::JobSpec>>,
    /// App and job files that could not be applied (an app or job there may keep its
    /// previous spec).
    pub rejected: Vec<RejectedFile>,
}

/// The access log's line format (`access_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `key=value` fields, as the tracing formatter writes them.
    Text,
    Json,
    /// nginx's `combined`, for log tools.
    Combined,
}

/// `[gateway]` and `[tls]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Plain listener (HTTP/1.1 and h2c). `None` disables it.
    pub http: Option<SocketAddr>,
    /// TLS listener; only meaningful with `tls`.
    pub https: Option<SocketAddr>,
    /// Admin listener for metrics, health and the apps listing. Never shares the public port.
    pub admin: SocketAddr,
    /// Suffix of every app's default host `<app>.<project>.<domain>`.
    pub domain: String,
    /// Directory of the per-app files, already resolved against the gateway file.
    pub apps_dir: PathBuf,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are kept and extended.
    pub trusted_proxies: Vec<IpNet>,
    /// Networks that count as internal for `private` visibility.
    pub private_networks: Vec<IpNet>,
    pub limits: ListenerLimits,
    pub upstream: UpstreamSettings,
    pub tls: Option<TlsSettings>,
    /// Where instance log files go: `<logs_dir>/<app>/<instance>.log` (default
    /// `<state_dir>/logs`).
    pub logs_dir: PathBuf,
    /// Instance and build logs not written for this long are deleted.
    pub log_retention: Duration,
    /// Where the gateway keeps what must survive a restart: each app's revision history
    /// (`<state_dir>/revisions/<app>.json`, so revision numbers are never reused), the logs
    /// by default, generated secrets. Default `state` next to the gateway file.
    pub state_dir: PathBuf,
    /// The management API's bearer token: this file (read at start), or, when `None`, a
    /// token generated once into `<state_dir>/admin-token` (mode 0600).
    pub admin_token_file: Option<PathBuf>,
    /// Projects created through the management API, one `<name>.toml` each. A project also
    /// exists while an app file names it.
    pub projects_dir: PathBuf,
    /// Job definitions, one `*.toml` each.
    pub jobs_dir: PathBuf,
    /// Finished job runs (their records and logs) are deleted after this long.
    pub jobrun_retention: Duration,
    /// App and job instances together at most; `None`: no limit.
    pub max_instances: Option<u32>,
    /// Where the access log goes.
    pub access_log: AccessLogTarget,
    /// Its line format; `None`: as the rest of the log (`--log-format`).
    pub access_log_format: Option<AccessLogFormat>,
    pub container_engine: ContainerEngineSettings,
    /// `[kubernetes]`, when the gateway file has it.
    pub kubernetes: Option<KubernetesSettings>,
}

/// `[kubernetes]` after validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesSettings {
    /// A kubeconfig file, resolved against the gateway file; `None`: the usual places
    /// (`$KUBECONFIG`, `~/.kube/config`), then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Where every app's Deployments and Services go; `None`: the kubeconfig context's
    /// namespace, or the gateway pod's own.
    pub namespace: Option<String>,
    /// Whether this gateway is one of several replicas: then only the holder of the
    /// `tidegate-leader` Lease lowers replica counts, cleans up and marks pods; any replica
    /// wakes a revision from zero.
    pub leader_election: bool,
    /// This replica's holder identity; `None`: `$POD_NAME` (else host name and process id),
    /// and `$POD_IP` when set.
    pub identity: Option<String>,
}

impl Config {
    /// The rejected file of app `name`, if its file is rejected.
    pub fn rejected_app(&self, name: &str) -> Option<&RejectedFile> {
        self.rejected.iter().find(|r| !r.job && r.app == name)
    }
}

/// `[gateway] access_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// With the rest of the log on standard output.
    Stdout,
    Off,
    /// A file of its own, resolved against the gateway file.
    File(PathBuf),
}

/// Protections of the public listeners against slow or greedy clients.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    /// Open client connections at most; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// A client must send a complete request head within this time (slowloris), and an idle
    /// keep-alive connection is closed after it.
    pub header_read_timeout: Duration,
    /// Largest request head accepted; larger heads get 431.
    pub max_header_bytes: usize,
    /// Longest a client may leave a request body it is sending without a byte (nginx's
    /// `client_body_timeout`): a client that stalls mid-upload would otherwise hold an
    /// instance's concurrency slot, and keep the app from scaling to zero, for as long as it
    /// likes. Then 408 if no response has begun, else the connection is closed.
    pub client_body_timeout: Duration,
    /// Longest a write to a client may wait for the client to take bytes (nginx's
    /// `send_timeout`): a client that stops reading a response would otherwise hold its
    /// instance connection and concurrency slot forever. Then the connection is closed.
    pub send_timeout: Duration,
}

/// How the gateway talks to instances.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Pooled keep-alive connections idle longer than this are closed.
    pub idle_timeout: Duration,
}

/// `[tls]` after validation. Used by the HTTPS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub certs_dir: PathBuf,
    pub default_cert: Option<String>,
}

/// Who may reach an app (Code Engine's three levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Any client.
    Public,
    /// Only instances of apps in the same project.
    Project,
    /// Only clients from `private_networks`.
    Private,
}

/// A host an app answers on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `api.example.com`, lower case, no trailing dot.
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`; matches any name below it.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// One app after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub name: String,
    pub project: String,
    /// The gateway's `domain`: the app's default host is `<name>.<project>.<domain>`.
    pub domain: String,
    /// The file it came from, for messages.
    pub file: PathBuf,
    pub visibility: Visibility,
    /// The default host first, then the extra hosts in file order.
    pub hosts: Vec<HostPattern>,
    pub runtime: RuntimeSpec,
    pub scale: ScaleSpec,
    /// Plain-HTTP requests get a 308 to the same URL on the HTTPS listener.
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=...` on HTTPS responses, when set.
    pub hsts_max_age: Option<Duration>,
    /// A WebSocket session with no byte either way for this long is closed; `None`: never.
    pub websocket_idle_timeout: Option<Duration>,
    /// How requests split across revisions; percentages add up to 100. Static apps have one
    /// implicit revision and an empty list here.
    pub traffic: Vec<TrafficTarget>,
    /// Revision specs kept so traffic entries can name older revisions.
    pub revision_history: usize,
    /// `cold_start_page`: a browser's page load that has waited this long for a cold start
    /// gets a page saying the app is starting; `None`: off.
    pub cold_start_page: Option<Duration>,
}

/// The revision a traffic entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevisionRef {
    /// The newest revision that has become ready (Knative's `latestRevision: true`).
    Latest,
    /// A revision by number: `hello-00002` is 2.
    Number(u32),
}

/// One validated `[[traffic]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficTarget {
    pub revision: RevisionRef,
    pub percent: u32,
    /// The tag and its host `<tag>-<app>.<project>.<domain>`.
    pub tag: Option<(String, String)>,
}

impl TrafficTarget {
    /// The default when an app has no `[[traffic]]`: everything to the latest ready revision.
    pub fn all_latest() -> Vec<TrafficTarget> {
        vec![TrafficTarget {
            revision: RevisionRef::Latest,
            percent: 100,
            tag: None,
        }]
    }
}

/// How an app's instances come to exist.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "runtime", rename_all = "lowercase")]
pub enum RuntimeSpec {
    /// A fixed list of upstream addresses, never scaled.
    Static { upstreams: Vec<SocketAddr> },
    /// Child processes started on demand.
    Process(RunSpec),
    /// Containers started on demand through a Docker Engine API.
    Container(ContainerSpec),
    /// Pods of a Deployment per revision, scaled through the Kubernetes API (the same
    /// `[container]` table; the image is referenced, never built).
    Kubernetes(ContainerSpec),
}

impl RuntimeSpec {
    /// The `runtime` key's value, for listings and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeSpec::Static { .. } => "static",
            RuntimeSpec::Process(_) => "process",
            RuntimeSpec::Container(_) => "container",
            RuntimeSpec::Kubernetes(_) => "kubernetes",
        }
    }
}

impl RuntimeSpec {
    /// HTTP path probed for readiness; `None` probes with a TCP connect.
    pub fn readiness_path(&self) -> Option<&str> {
        match self {
            RuntimeSpec::Static { .. } => None,
            RuntimeSpec::Process(run) => run.readiness_path.as_deref(),
            RuntimeSpec::Container(container) | RuntimeSpec::Kubernetes(container) => {
                container.readiness_path.as_deref()
            }
        }
    }

    /// Whether a revision has a step to run once before its first instance starts.
    pub fn has_build(&self) -> bool {
        match self {
            RuntimeSpec::Static { .. } => false,
            RuntimeSpec::Process(run) => run.build.is_some(),
            RuntimeSpec::Container(container) | RuntimeSpec::Kubernetes(container) => {
                container.build.is_some()
            }
        }
    }
}

/// `[container]` (and `[build]`): everything that defines a container revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    /// The image to run; `None` when `build` makes it (tagged `tidegate/<app>:<revision>`).
    pub image: Option<String>,
    /// Replaces the image's command when set.
    pub command: Option<Vec<String>>,
    /// The port the app listens on inside the container; also passed as `PORT`.
    pub port: u16,
    pub env: BTreeMap<String, String>,
    /// Names of the gateway's environment variables passed on (nothing else of it is).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    pub resources: Resources,
    pub pull: PullPolicy,
    pub readiness_path: Option<String>,
    pub build: Option<ImageBuild>,
}

/// When the engine pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    Never,
    Missing,
    Always,
}

/// `[build]` of a container app: an image built by the engine from a directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageBuild {
    /// The build context, resolved against the app file.
    pub context: PathBuf,
    /// The build file inside the context; `None` means `Containerfile`, else `Dockerfile`.
    pub dockerfile: Option<String>,
}

/// `[container_engine]` after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEngineSettings {
    /// The engine's unix socket, as configured or from `DOCKER_HOST`; `None`: look in the
    /// usual places at start-up.
    pub socket: Option<PathBuf>,
    /// Label value that marks this gateway's containers.
    pub gateway_id: String,
}

/// `[run]`: everything that defines a process revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Names of the gateway's environment variables passed on (nothing else of it is).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Working directory, resolved against the app file; `None` inherits the gateway's.
    pub workdir: Option<PathBuf>,
    /// Environment variable that carries the port the instance must listen on.
    pub port_env: String,
    /// HTTP path probed for readiness; `None` probes with a TCP connect.
    pub readiness_path: Option<String>,
    pub resources: Resources,
    /// `[build] command`: run once per revision in `workdir` before its first instance.
    pub build: Option<Vec<String>>,
}

/// CPU and memory of one instance; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Thousandths of a CPU: `cpu = 0.5` is 500.
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// Scaling and timeouts of one app: `[defaults]` overlaid with the app's `[scale]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSpec {
    pub min_scale: u32,
    pub max_scale: u32,
    /// Hard limit of in-flight requests per instance; 0 means unlimited.
    pub concurrency: u32,
    /// Soft target per instance that the autoscaler aims for (before utilisation).
    pub concurrency_target: f64,
    pub target_utilization: f64,
    pub stable_window: Duration,
    pub panic_window: Duration,
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub scale_to_zero_grace: Duration,
    pub scale_down_delay: Duration,
    /// Longest wait for an instance's response headers; beyond it the client gets 504.
    pub request_timeout: Duration,
    /// Longest an instance may leave a response body it is sending without a byte (Knative's
    /// `idleTimeoutSeconds`); then the response is cut off. `None`, the default as in Knative:
    /// no limit, for streams that are quiet on purpose (server-sent events, long polls).
    pub idle_timeout: Option<Duration>,
    /// Longest time an instance may take to become ready.
    pub startup_timeout: Duration,
    /// Requests that may wait for an instance; beyond it the client gets 503.
    pub queue_depth: usize,
    /// Longest a request waits for an instance (cold start, or every instance at its hard
    /// limit); beyond it the client gets 504.
    pub cold_start_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    pub stop_grace: Duration,
}

impl Default for ScaleSpec {
    /// Knative's and Code Engine's defaults.
    fn default() -> Self {
        ScaleSpec {
            min_scale: 0,
            max_scale: 10,
            concurrency: 100,
            concurrency_target: 100.0,
            target_utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_to_zero_grace: Duration::from_secs(30),
            scale_down_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(300),
            idle_timeout: None,
            startup_timeout: Duration::from_secs(60),
            queue_depth: 10_000,
            cold_start_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }
}
