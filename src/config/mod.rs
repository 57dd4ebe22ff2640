//! Configuration: files operators edit by hand, validated into an immutable [`Config`].
//!
//! Flow: `load` reads the gateway file, the app files and the job files (`raw` types, unknown
//! keys rejected), `validate` (and `jobs` for job files) checks them without I/O and fills
//! defaults into the `model` types, and `watch`
//! notices edits and SIGHUP so the gateway can load again and swap the result in whole. Only
//! the `model` types and the errors leave this module.

mod app_set;
mod container;
pub mod env;
mod error;
mod gateway_file;
mod indices;
mod jobs;
mod load;
mod model;
mod raw;
mod revisions;
mod scale;
mod validate;
pub mod watch;

pub use error::{ConfigErrors, ConfigIssue};
pub use indices::{ArrayIndices, MAX_INDICES};
pub use jobs::{parse_cron, ConcurrencyPolicy, JobSpec, Schedule, MAX_EXECUTION_TIME};
pub use load::{app_files, check_definition_file, is_app_file, load, load_tolerant, parse_toml};
pub use model::{
    AccessLogFormat, AccessLogTarget, AppSpec, Config, ContainerEngineSettings, ContainerSpec,
    GatewaySettings, HostPattern, ImageBuild, KubernetesSettings, ListenerLimits, PullPolicy,
    RejectedFile, Resources, RevisionRef, RunSpec, RuntimeSpec, ScaleSpec, TlsSettings,
    TrafficTarget, UpstreamSettings, Visibility,
};
pub use raw::{RawApp, RawGateway, RawGatewayFile, RawJob, RawRun, RawScale, RawStatic, RawTls};
pub use revisions::parse_memory;
pub use validate::{is_dns_label, parse_duration, parse_host_pattern, validate, validate_files};
