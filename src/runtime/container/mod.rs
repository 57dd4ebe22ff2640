//! The `container` runtime: each instance is a container run by a Docker Engine API (Docker,
//! or Podman's compatible service), driven through bollard over a unix socket.
//!
//! One container per instance, named `tidegate-<gateway id>-<instance>` and labelled with the
//! gateway id, app, revision and instance. Its port is published on 127.0.0.1 at a port the
//! engine picks, read back after start; `PORT` carries the port inside the container. `cpu`
//! and `memory` become the engine's NanoCpus and Memory limits. The engine's `Init` is on, so
//! an app that ignores SIGTERM as PID 1 still stops promptly. Logs stream into the instance
//! log that `/apps/<app>/logs` serves.
//!
//! Exits are noticed through the engine's event stream (see `exits`): a container that dies
//! or is removed behind the gateway's back is reported at once (and the controller replaces
//! it). Stops use the engine's stop timeout (SIGTERM, then SIGKILL), then remove.
//! Containers are not children of the gateway, so nothing kills them if it dies: at the first
//! use the backend removes every container labelled with its gateway id, which can only be
//! left from an earlier run; at shutdown it removes its own.
//!
//! Preparing a revision: with `[build]`, the engine builds the context directory into
//! `tidegate/<app>:<revision>` (the controller prepares a revision once per gateway run);
//! otherwise the image is checked and pulled per `pull`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bollard::query_parameters::{InspectContainerOptions, StopContainerOptionsBuilder};
use bollard::{ClientVersion, Docker};
use tokio::sync::{watch, OnceCell};

use super::logs::{BuildLog, LogTarget};
use super::{
    Exit, Placement, PrepareRequest, Prepared, RuntimeBackend, RuntimeError, StartRequest,
    StartedInstance,
};
use crate::config::{AppSpec, ContainerEngineSettings, RuntimeSpec};
use crate::identity::Identities;

/// The API version spoken: Docker 20.10 and Podman 4 both serve it.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};
/// Seconds a plain API call may take (streams are not cut by it).
const CALL_TIMEOUT_SECS: u64 = 120;
const HEALTH_EVERY: Duration = Duration::from_secs(5);
const LABEL_GATEWAY: &str = "tidegate.gateway";

mod calls;
mod engine;
mod exits;
mod health;
mod image;
mod output;

use calls::{
    connect, create, create_body, default_socket, engine_message, is_not_found, published_port,
    remove, remove_leftovers,
};
use engine::LABEL_RUN;
pub use engine::{list_labelled, Listed};

/// One container this backend started.
struct Entry {
    name: String,
    stopping: AtomicBool,
    exited: watch::Receiver<Option<Exit>>,
    /// Woken by an engine event about the container (see `exits`).
    ended: tokio::sync::Notify,
    /// The stop timeout asked for, in seconds, once a stop was asked for.
    grace_secs: std::sync::atomic::AtomicU64,
}

/// Runs instances as containers through a Docker Engine API.
pub struct ContainerBackend {
    socket: PathBuf,
    gateway_id: String,
    logs_dir: PathBuf,
    identities: Arc<Identities>,
    containers: Arc<Mutex<HashMap<String, Arc<Entry>>>>,
    /// Why the engine cannot be used, from the last check; `None` when it answers.
    problem: Arc<ArcSwapOption<String>>,
    /// Set once a container app exists: only then is the engine checked and reported.
    in_use: AtomicBool,
    /// Leftovers of an earlier run are removed once: as soon as the engine answers, and in
    /// any case before the first container starts.
    cleaned: Arc<OnceCell<()>>,
    /// Set once the engine event stream that reports exits is followed.
    following_events: AtomicBool,
    serial: std::sync::atomic::AtomicU64,
    /// Labels this run's containers (`tidegate.run`): sweeps for leftovers skip them.
    run: String,
}

impl ContainerBackend {
    /// A backend for the engine at `settings.socket` (else `DOCKER_HOST`, else the usual
    /// socket paths). No I/O happens until a container app is configured.
    pub fn new(
        settings: &ContainerEngineSettings,
        logs_dir: PathBuf,
        identities: Arc<Identities>,
    ) -> Self {
        ContainerBackend {
            socket: settings.socket.clone().unwrap_or_else(default_socket),
            gateway_id: settings.gateway_id.clone(),
            logs_dir,
            identities,
            containers: Arc::new(Mutex::new(HashMap::new())),
            problem: Arc::new(ArcSwapOption::empty()),
            in_use: AtomicBool::new(false),
            cleaned: Arc::new(OnceCell::new()),
            following_events: AtomicBool::new(false),
            serial: std::sync::atomic::AtomicU64::new(1),
            run: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        }
    }

    fn docker(&self) -> Result<Docker, String> {
        connect(&self.socket)
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `tidegate-<gateway id>-<instance>-<n>`: unique even when an instance id comes back
    /// (an app removed and added again while its old instances drain).
    fn container_name(&self, instance: &str) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        format!("tidegate-{}-{instance}-{serial}", self.gateway_id)
    }
}

#[async_trait]
impl RuntimeBackend for ContainerBackend {
    fn kind(&self) -> &'static str {
        "container"
    }

    fn placement(&self, _app: &AppSpec) -> Placement {
        if !self.in_use.swap(true, Ordering::AcqRel) {
            self.watch_engine();
        }
        Placement::OnDemand
    }

    fn needs_prepare(&self, _runtime: &RuntimeSpec) -> bool {
        true
    }

    fn health(&self) -> Option<String> {
        if !self.in_use.load(Ordering::Acquire) {
            return None;
        }
        self.problem.load_full().map(|problem| (*problem).clone())
    }

    async fn prepare(&self, request: PrepareRequest) -> Result<Prepared, RuntimeError> {
        let failed = |reason: String| RuntimeError::PrepareFailed {
            revision: request.revision.clone(),
            reason,
        };
        let RuntimeSpec::Container(spec) = &request.app.runtime else {
            return Err(failed("not a container app".into()));
        };
        let unavailable = |reason: String| RuntimeError::Unavailable {
            reason: format!(
                "revision {} waits for the container engine: {reason}",
                request.revision
            ),
        };
        let docker = self.docker().map_err(unavailable)?;
        docker
            .ping()
            .await
            .map_err(|e| unavailable(format!("{} does not answer: {e}", self.socket.display())))?;
        let mut log = BuildLog::create(&self.logs_dir, &request.app.name, &request.revision)
            .map_err(|e| failed(format!("cannot write the build log: {e}")))?;
        let made = match &spec.image {
            Some(image) => self
                .ensure_image(&docker, image, spec.pull, &mut log)
                .await
                .map(|()| image.clone()),
            None => self.build_image(&docker, &request, spec, &mut log).await,
        };
        match made {
            Ok(image) => Ok(Prepared { image: Some(image) }),
            // The engine went away during the build or pull: try again later.
            Err(reason) if docker.ping().await.is_err() => Err(unavailable(reason)),
            Err(reason) => Err(failed(reason)),
        }
    }

    /// Removes the image built for a revision that left the history (or for a job run
    /// that ended). An image in use by a container that is still being removed is tried
    /// again for a few seconds; one in use for good (another tag) stays: the engine
    /// refuses, and that is fine.
    async fn forget(&self, revision: PrepareRequest, prepared: Option<Arc<Prepared>>) {
        let RuntimeSpec::Container(spec) = &revision.app.runtime else {
            return;
        };
        if spec.build.is_none() {
            return;
        }
        let Ok(docker) = self.docker() else { return };
        let tag = format!("tidegate/{}:{}", revision.app.name, revision.revision);
        // The tag only while it still points at this gateway's build; else the build by id.
        let built = prepared.as_ref().and_then(|p| p.image.clone());
        let target = match &built {
            Some(id) => {
                let tagged = docker
                    .inspect_image(&tag)
                    .await
                    .ok()
                    .and_then(|image| image.id);
                if tagged.as_deref() == Some(id.as_str()) {
                    tag.clone()
                } else {
                    id.clone()
                }
            }
            None => tag.clone(),
        };
        for _ in 0..20 {
            match docker
                .remove_image(
                    &target,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(image = %tag, "removed the image of a revision that left the history");
                    return;
                }
                Err(error) if is_not_found(&error) => return,
                Err(error) => {
                    tracing::debug!(image = %tag, error = %engine_message(&error), "image not removed (yet)");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn start(&self, request: StartRequest) -> Result<StartedInstance, RuntimeError> {
        let failed = |reason: String| RuntimeError::StartFailed {
            instance: request.instance_id.clone(),
            reason,
        };
        let RuntimeSpec::Container(spec) = &request.app.runtime else {
            return Err(failed("not a container app".into()));
        };
        let docker = self.docker().map_err(failed)?;
        // Until leftovers are gone a start could collide with one; a failed listing is retried
        // at the next start.
        let _ = self
            .cleaned
            .get_or_try_init(|| {
                remove_leftovers(&docker, &self.socket, &self.gateway_id, &self.run)
            })
            .await;
        if !self.following_events.swap(true, Ordering::AcqRel) {
            tokio::spawn(exits::follow_events(
                docker.clone(),
                format!("{LABEL_GATEWAY}={}", self.gateway_id),
                Arc::clone(&self.containers),
            ));
        }
        let image = request
            .prepared
            .image
            .clone()
            .or_else(|| spec.image.clone())
            .ok_or_else(|| failed("the revision has no image".into()))?;
        let name = self.container_name(&request.instance_id);
        let token = self.identities.issue(&request.app.project);
        let body = create_body(
            &request,
            spec,
            &image,
            (&self.gateway_id, &self.run),
            &token,
        );
        let created = create(&docker, &name, body).await;
        if let Err(error) = created {
            self.identities.revoke(&token);
            return Err(failed(error));
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let entry = Arc::new(Entry {
            name: name.clone(),
            stopping: AtomicBool::new(false),
            exited: exit_rx.clone(),
            ended: tokio::sync::Notify::new(),
            grace_secs: std::sync::atomic::AtomicU64::new(0),
        });
        self.containers()
            .insert(request.instance_id.clone(), Arc::clone(&entry));

        let started = async {
            docker
                .start_container(&name, None)
                .await
                .map_err(|e| format!("the engine could not start it: {}", engine_message(&e)))?;
            if request.job.is_some() {
                // Nothing published; and a short job may be gone before an inspect.
                return Ok(0);
            }
            let inspect = docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .map_err(|e| format!("cannot inspect it: {}", engine_message(&e)))?;
            published_port(&inspect, spec.port)
        }
        .await;
        let host_port = match started {
            Ok(port) => port,
            Err(reason) => {
                self.containers().remove(&request.instance_id);
                self.identities.revoke(&token);
                remove(&docker, &name).await;
                return Err(failed(reason));
            }
        };

        let target = LogTarget::of(&self.logs_dir, &request);
        let log = target.file.clone();
        let output = tokio::spawn(output::follow_logs(
            docker.clone(),
            self.socket.clone(),
            name.clone(),
            target,
        ));
        let containers = Arc::clone(&self.containers);
        let identities = Arc::clone(&self.identities);
        let id = request.instance_id.clone();
        let socket = self.socket.clone();
        tokio::spawn(async move {
            let exit = exits::await_exit(&docker, &socket, &entry).await;
            // Its last output is in the log before anyone hears it ended (a job's record
            // points at that log), and before the container, which holds it, goes.
            let _ = tokio::time::timeout(Duration::from_secs(10), output).await;
            identities.revoke(&token);
            containers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let _ = exit_tx.send(Some(exit));
            // Whatever ended it, the container goes.
            remove(&docker, &entry.name).await;
        });

        Ok(StartedInstance {
            id: request.instance_id,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)),
            exited: exit_rx,
            listen_hint: format!(
                "the app must listen on container port {} ($PORT), published there",
                spec.port
            ),
            log: Some(log),
        })
    }

    async fn stop(&self, instance_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(entry) = self.containers().get(instance_id).cloned() else {
            return Ok(());
        };
        entry.grace_secs.store(grace.as_secs(), Ordering::Relaxed);
        entry.stopping.store(true, Ordering::Release);
        let docker = self.docker().map_err(|reason| RuntimeError::StopFailed {
            instance: instance_id.to_string(),
            reason,
        })?;
        let seconds = grace.as_secs_f64().ceil() as i32;
        let stopped = docker
            .stop_container(
                &entry.name,
                Some(StopContainerOptionsBuilder::new().t(seconds).build()),
            )
            .await;
        if let Err(error) = stopped {
            if !is_not_found(&error) {
                tracing::warn!(instance = instance_id, error = %engine_message(&error), "engine refused to stop the container; removing it");
            }
            remove(&docker, &entry.name).await;
        }
        let mut exited = entry.exited.clone();
        let _ = tokio::time::timeout(
            grace + Duration::from_secs(10),
            exited.wait_for(Option::is_some),
        )
        .await;
        // Removed before returning, so a gateway that exits right after leaves nothing.
        remove(&docker, &entry.name).await;
        Ok(())
    }

    async fn shutdown(&self) {
        let entries: Vec<Arc<Entry>> = self.containers().values().cloned().collect();
        let Ok(docker) = self.docker() else {
            return;
        };
        let mut removals = tokio::task::JoinSet::new();
        for entry in entries {
            entry.stopping.store(true, Ordering::Release);
            let docker = docker.clone();
            removals.spawn(async move {
                remove(&docker, &entry.name).await;
                let mut exited = entry.exited.clone();
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some))
                        .await;
            });
        }
        while removals.join_next().await.is_some() {}
        // Anything else with this gateway's label: a start aborted between create and
        // registration, or an exit whose removal was still under way.
        if self.in_use.load(Ordering::Acquire) {
            let label = format!("{LABEL_RUN}={}", self.run);
            for container in list_labelled(&self.socket, &label)
                .await
                .unwrap_or_default()
            {
                remove(&docker, &container.id).await;
            }
        }
    }
}
