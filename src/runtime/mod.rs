//! Runtime backends: what makes an app's instances exist, and a job's (a [`StartRequest`]
//! with a [`JobInstance`]: no port, the job variables, its own log).
//!
//! [`RuntimeBackend::placement`] says whether an app's instances are a fixed set that exists
//! anyway (the `static` backend) or are started on demand (processes, containers,
//! Kubernetes pods). For on-demand backends the controller prepares each revision once
//! ([`RuntimeBackend::prepare`]: a build, an image), then calls [`RuntimeBackend::start`] and
//! [`RuntimeBackend::stop`] per instance, and [`RuntimeBackend::forget`] when a revision leaves
//! the history; [`RuntimeBackend::health`] feeds `/readyz`. Everything else (readiness probing,
//! routing, autoscaling, draining) is the gateway's and the same for every backend.

pub mod cgroup;
pub mod container;
pub mod env;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod log_retention;
pub mod logs;
pub mod memory;
pub mod probe;
mod process;
mod static_backend;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::config::{AppSpec, RuntimeSpec};

pub use container::ContainerBackend;
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesBackend;
pub use memory::MemoryBackend;
pub use process::ProcessBackend;
pub use static_backend::StaticBackend;

/// How an app's instances come to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The instances exist independently of the gateway at these addresses; never scaled.
    Fixed(Vec<SocketAddr>),
    /// The gateway starts and stops instances through the backend as load requires.
    OnDemand,
}

/// What the reconciler asks a backend to start: one instance of one revision.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub app: Arc<AppSpec>,
    /// Revision name, e.g. `hello-00001`.
    pub revision: String,
    /// Unique instance id chosen by the gateway, e.g. `hello-00001-3`.
    pub instance_id: String,
    /// What [`RuntimeBackend::prepare`] made for the revision.
    pub prepared: Arc<Prepared>,
    /// Set when the instance is one attempt of a job index rather than an app's server.
    pub job: Option<JobInstance>,
}

/// What makes a job's instance differ from an app's: it runs to completion, so it gets no
/// port, and the job variables (`JOB_INDEX`, `CE_JOBRUN`, ...) replace the app ones; its
/// output goes to the run's own log file, kept with the run's record.
#[derive(Debug, Clone)]
pub struct JobInstance {
    /// The injected variables, after the job's own `env`.
    pub env: env::Env,
    /// Where its output goes.
    pub log: std::path::PathBuf,
}

/// What the reconciler asks a backend to prepare: one revision, before its first instance.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    /// The app with the revision's own run spec.
    pub app: Arc<AppSpec>,
    /// Revision name, e.g. `hello-00002`.
    pub revision: String,
}

/// The outcome of preparing a revision, handed to each of its instance starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The image to run (container apps): the configured one, or the one built for the
    /// revision.
    pub image: Option<String>,
}

/// Why an instance stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped because the gateway asked.
    Stopped,
    /// Ended by itself: the exit code, or the signal that killed it.
    Crashed {
        description: String,
        /// The exit code, when it exited by itself (not killed by a signal).
        code: Option<i32>,
        /// Killed by the kernel for exceeding its memory limit.
        out_of_memory: bool,
    },
    /// Went away through no fault of its own (a Kubernetes pod deleted or evicted): it is
    /// replaced at once, without counting a crash or backing off.
    Lost { description: String },
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Stopped => f.write_str("stopped by the gateway"),
            Exit::Crashed { description, .. } | Exit::Lost { description } => {
                f.write_str(description)
            }
        }
    }
}

/// An instance a backend started. Its address may take a moment to accept connections: the
/// gateway probes readiness before routing to it.
#[derive(Debug)]
pub struct StartedInstance {
    pub id: String,
    pub addr: SocketAddr,
    /// Becomes `Some` once the instance has stopped, for whatever reason, so the gateway
    /// notices a crash at once instead of at the next failed request.
    pub exited: watch::Receiver<Option<Exit>>,
    /// Where the app must listen for `addr` to reach it, in the app's terms (`$PORT`), for
    /// the message when nothing listens there.
    pub listen_hint: String,
    /// The instance's output file, whose last lines explain a failed start.
    pub log: Option<std::path::PathBuf>,
}

/// A failure of a backend operation, with the backend's own words.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the {backend} runtime does not start instances on demand")]
    NotOnDemand { backend: &'static str },
    #[error("could not start instance {instance}: {reason}")]
    StartFailed { instance: String, reason: String },
    #[error("could not stop instance {instance}: {reason}")]
    StopFailed { instance: String, reason: String },
    #[error("could not prepare revision {revision}: {reason}")]
    PrepareFailed { revision: String, reason: String },
    /// What the backend depends on is not there right now (an unreachable engine): worth
    /// trying again, unlike a failed build.
    #[error("{reason}")]
    Unavailable { reason: String },
}

impl RuntimeError {
    /// Whether the same operation may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Unavailable { .. })
    }
}

/// A way of running app instances: local processes, a static list, containers, Kubernetes.
#[async_trait]
pub trait RuntimeBackend: Send + Sync + 'static {
    /// The `runtime` value in app files that selects this backend.
    fn kind(&self) -> &'static str;

    /// Whether `app`'s instances are fixed or started on demand.
    fn placement(&self, app: &AppSpec) -> Placement;

    /// Whether a revision with this run spec needs [`RuntimeBackend::prepare`] before its
    /// first instance starts (a build, an image to check or pull).
    fn needs_prepare(&self, runtime: &RuntimeSpec) -> bool {
        runtime.has_build()
    }

    /// Prepares a revision once, when it is created: builds it, or makes sure its image is
    /// there. Its output goes to the revision's build log. A revision whose preparation
    /// fails never starts an instance, so it never takes traffic.
    async fn prepare(&self, request: PrepareRequest) -> Result<Prepared, RuntimeError> {
        let _ = request;
        Ok(Prepared::default())
    }

    /// Drops what [`RuntimeBackend::prepare`] made for a revision that has left the
    /// history (a built image), so old revisions do not pile up on disk.
    async fn forget(&self, revision: PrepareRequest, prepared: Option<Arc<Prepared>>) {
        let _ = (revision, prepared);
    }

    /// Why the backend cannot work right now (its engine is unreachable, say), for `/readyz`
    /// and the start-up log; `None` when it can.
    fn health(&self) -> Option<String> {
        None
    }

    /// Why the backend works only in part right now (its cluster's API server is away while
    /// the instances it knows keep serving): reported by `/readyz` without failing it.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// The apps that use this backend now, after every config change: a backend whose
    /// objects outlive the gateway (Kubernetes) deletes those of apps no longer there.
    fn apps_configured(&self, apps: std::collections::HashSet<String>) {
        let _ = apps;
    }

    /// Starts one instance; returns once it exists, not once it is ready.
    async fn start(&self, request: StartRequest) -> Result<StartedInstance, RuntimeError>;

    /// Stops an instance: a polite request first, then force after `grace`.
    async fn stop(&self, instance_id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// The gateway begins to shut down: hand over what others must carry on at once (a
    /// leader's Lease), before the drain.
    async fn shutting_down(&self) {}

    /// Ends every instance still running, at once: the last step of a gateway shutdown.
    async fn shutdown(&self) {}
}
