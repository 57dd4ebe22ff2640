//! `runtime = "kubernetes"`: each revision is a Deployment scaled through its scale
//! subresource, and requests go straight to its pods' addresses from the EndpointSlices, as
//! Knative's activator does (design: docs/kubernetes.md).
//!
//! The controller keeps asking for instances one at a time; each is a slot ([`state`]): a
//! start adds a slot, raises the replica count to the number of slots and returns once a
//! ready pod nobody holds is bound to it; a stop marks the slot's pod with the lowest
//! `pod-deletion-cost` and lowers the count, so the ReplicaSet removes that pod and not a
//! busy one. A pod that crash-loops fails the start with the pod's reason, which makes the
//! revision failed as a crashing process does. Nothing here waits for the API server on a
//! request's path.
//!
//! The cluster is connected on first use (or at start when `[kubernetes]` is configured), so
//! gateways without Kubernetes apps never touch a kubeconfig.

mod cluster;
mod election;
mod objects;
mod scaler;
mod state;
mod sweeper;
mod watches;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Mutex};

use super::{
    Exit, Placement, PrepareRequest, Prepared, RuntimeBackend, RuntimeError, StartRequest,
    StartedInstance,
};
use crate::config::{AppSpec, ContainerSpec, KubernetesSettings, RuntimeSpec};
pub use cluster::{client, identity};
use cluster::{CallError, Cluster};
use state::{RevisionSlots, Slot};

/// Runs app revisions as Deployments in one namespace.
pub struct KubernetesBackend {
    connection: Arc<Connection>,
}

/// The cluster, connected on first use.
struct Connection {
    settings: KubernetesSettings,
    /// The latest set of this backend's apps, for the sweeper.
    sweeps: watch::Sender<Option<HashSet<String>>>,
    /// Whether the sweeper task runs.
    sweeper: std::sync::atomic::AtomicBool,
    cluster: std::sync::Mutex<Option<Arc<Cluster>>>,
    /// Held while connecting, so only one attempt runs at a time.
    connecting: Mutex<()>,
    /// Why the last connection attempt failed, for `/readyz`.
    error: std::sync::Mutex<Option<String>>,
    /// Whether the operator configured `[kubernetes]`: then the cluster is connected at
    /// start, and orphans are swept even when no app uses the backend any more.
    configured: bool,
}

impl Connection {
    async fn get(&self) -> Result<Arc<Cluster>, RuntimeError> {
        if let Some(cluster) = self.connected() {
            return Ok(cluster);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(cluster) = self.connected() {
            return Ok(cluster);
        }
        let connected = Cluster::connect(&self.settings).await;
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match connected {
            Ok(connected) => {
                *error = None;
                *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::clone(&connected));
                Ok(connected)
            }
            Err(reason) => {
                tracing::error!(%reason, "kubernetes backend cannot connect");
                *error = Some(reason.clone());
                Err(RuntimeError::Unavailable { reason })
            }
        }
    }

    fn connected(&self) -> Option<Arc<Cluster>> {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl KubernetesBackend {
    pub fn new(settings: Option<KubernetesSettings>) -> Self {
        KubernetesBackend {
            connection: Arc::new(Connection {
                configured: settings.is_some(),
                settings: settings.unwrap_or_default(),
                sweeps: watch::channel(None).0,
                sweeper: std::sync::atomic::AtomicBool::new(false),
                cluster: std::sync::Mutex::new(None),
                connecting: Mutex::new(()),
                error: std::sync::Mutex::new(None),
            }),
        }
    }

    async fn cluster(&self) -> Result<Arc<Cluster>, RuntimeError> {
        self.connection.get().await
    }

    fn connected(&self) -> Option<Arc<Cluster>> {
        self.connection.connected()
    }
}

/// The `[container]` table of a Kubernetes app.
fn container_of(app: &AppSpec) -> Result<&ContainerSpec, String> {
    match &app.runtime {
        RuntimeSpec::Kubernetes(container) => Ok(container),
        other => Err(format!("runtime {:?} is not kubernetes", other.kind())),
    }
}

/// The pods' environment: the inherited variables, the app's own, then the injected ones
/// (`runtime::env`), each name once (the last value wins, as it would in the pod).
fn environment(app: &AppSpec, container: &ContainerSpec, revision: &str) -> Vec<(String, String)> {
    let mut vars = super::env::inherited(&container.inherit_env);
    vars.extend(container.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    vars.extend(super::env::injected(app, revision));
    vars.push(("PORT".into(), container.port.to_string()));
    let mut seen = HashSet::new();
    let mut unique: Vec<(String, String)> = vars
        .into_iter()
        .rev()
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect();
    unique.reverse();
    unique
}

/// Creates the revision's Deployment (at zero) and Service unless they exist.
async fn ensure_objects(
    cluster: &Cluster,
    app: &AppSpec,
    container: &ContainerSpec,
    revision: &str,
) -> Result<(), RuntimeError> {
    let env = environment(app, container, revision);
    let deployment = objects::deployment(app, container, revision, &env).map_err(|e| {
        RuntimeError::PrepareFailed {
            revision: revision.to_string(),
            reason: e.to_string(),
        }
    })?;
    cluster
        .ensure(deployment, |uid| {
            objects::service(app, container, revision, uid).ok()
        })
        .await
        .map_err(|error| call_failed(revision, error))
}

fn call_failed(revision: &str, error: CallError) -> RuntimeError {
    if error.transient {
        RuntimeError::Unavailable {
            reason: format!("kubernetes: {}", error.message),
        }
    } else {
        RuntimeError::PrepareFailed {
            revision: revision.to_string(),
            reason: format!("the Kubernetes API refused it: {}", error.message),
        }
    }
}

/// The slots of `revision`, made with a scaler task (which applies their number, zero to
/// start with) the first time. Every replica count goes through that one task, in order.
fn revision_entry<'a>(
    cluster: &Cluster,
    state: &'a mut state::ClusterState,
    revision: &str,
    (port, adopt_after): (u16, Duration),
    apply_first: bool,
) -> &'a mut RevisionSlots {
    state
        .revisions
        .entry(revision.to_string())
        .or_insert_with(|| {
            let (desired, watcher) = watch::channel(0);
            cluster.spawn_scaler(revision.to_string(), watcher, adopt_after, apply_first);
            RevisionSlots {
                port,
                slots: Vec::new(),
                desired,
            }
        })
}

/// Adds slot `id` to `revision` and publishes the new replica count; its exit receiver.
fn add_slot(
    cluster: &Cluster,
    revision: &str,
    port_and_grace: (u16, Duration),
    id: &str,
) -> watch::Receiver<Option<Exit>> {
    let (exited, receiver) = watch::channel(None);
    let mut state = cluster.shared.lock();
    let entry = revision_entry(cluster, &mut state, revision, port_and_grace, true);
    entry.slots.push(Slot {
        id: id.to_string(),
        pod: None,
        exited,
    });
    entry.publish();
    receiver
}

/// Removes slot `id` wherever it is; its bound pod, if it had one.
fn remove_slot(cluster: &Cluster, id: &str) -> Option<(String, Option<String>)> {
    let mut state = cluster.shared.lock();
    for (revision, entry) in state.revisions.iter_mut() {
        if let Some(index) = entry.slots.iter().position(|s| s.id == id) {
            let slot = entry.slots.remove(index);
            slot.exited.send_replace(Some(Exit::Stopped));
            entry.publish();
            return Some((revision.clone(), slot.pod));
        }
    }
    None
}

/// Removes the slot of a start that did not finish (failed, timed out or dropped).
struct PendingSlot<'a> {
    cluster: &'a Cluster,
    id: String,
    bound: bool,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if !self.bound {
            remove_slot(self.cluster, &self.id);
        }
    }
}

#[async_trait]
impl RuntimeBackend for KubernetesBackend {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn placement(&self, _app: &AppSpec) -> Placement {
        Placement::OnDemand
    }

    fn needs_prepare(&self, _runtime: &RuntimeSpec) -> bool {
        true
    }

    /// Creates the revision's Deployment (at zero) and Service, once.
    async fn prepare(&self, request: PrepareRequest) -> Result<Prepared, RuntimeError> {
        let revision = request.revision.as_str();
        let container =
            container_of(&request.app).map_err(|reason| RuntimeError::PrepareFailed {
                revision: revision.to_string(),
                reason,
            })?;
        let cluster = self.cluster().await?;
        ensure_objects(&cluster, &request.app, container, revision).await?;
        tracing::info!(app = %request.app.name, %revision, namespace = %cluster.namespace, "deployment and service ready");
        Ok(Prepared {
            image: container.image.clone(),
        })
    }

    async fn forget(&self, request: PrepareRequest, _prepared: Option<Arc<Prepared>>) {
        let Ok(cluster) = self.cluster().await else {
            return;
        };
        cluster.shared.lock().revisions.remove(&request.revision);
        match cluster.delete_revision(&request.revision).await {
            Ok(()) => {
                tracing::info!(revision = %request.revision, "deployment and service deleted")
            }
            Err(error) => {
                tracing::warn!(revision = %request.revision, message = %error.message, "could not delete the revision's objects; the sweep at the next start will")
            }
        }
    }

    fn health(&self) -> Option<String> {
        // Only a backend that cannot even connect is unhealthy: while the API server is
        // down, pods already known keep serving (see `degraded`).
        self.connection
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|reason| format!("kubernetes: {reason}"))
    }

    fn degraded(&self) -> Option<String> {
        let problem = self.connected()?.shared.problem()?;
        Some(format!(
            "kubernetes: {problem}; known pods keep serving, scaling waits for the API server"
        ))
    }

    async fn start(&self, request: StartRequest) -> Result<StartedInstance, RuntimeError> {
        let id = request.instance_id.clone();
        if request.job.is_some() {
            return Err(RuntimeError::StartFailed {
                instance: id,
                reason: "jobs run on the local backends, not kubernetes".into(),
            });
        }
        let container = container_of(&request.app).map_err(|reason| RuntimeError::StartFailed {
            instance: id.clone(),
            reason,
        })?;
        let cluster = self.cluster().await?;
        let revision = request.revision.clone();
        let mut changed = cluster.shared.changed.subscribe();
        // A revision this gateway has no scaler for (its objects were deleted since it was
        // prepared, or never made here): make sure they exist first.
        if !cluster.shared.lock().revisions.contains_key(&revision) {
            ensure_objects(&cluster, &request.app, container, &revision)
                .await
                .map_err(|error| match error {
                    RuntimeError::PrepareFailed { reason, .. } => RuntimeError::StartFailed {
                        instance: id.clone(),
                        reason,
                    },
                    other => other,
                })?;
        }
        let grace = request.app.scale.scale_to_zero_grace;
        let exited = add_slot(&cluster, &revision, (container.port, grace), &id);
        let mut pending = PendingSlot {
            cluster: &cluster,
            id: id.clone(),
            bound: false,
        };
        let timeout = request.app.scale.startup_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let mut state = cluster.shared.lock();
                if let Some((pod, addr)) = state.bind(&revision, &id) {
                    pending.bound = true;
                    tracing::debug!(instance = %id, %pod, %addr, "slot bound to a ready pod");
                    return Ok(StartedInstance {
                        id,
                        addr,
                        exited,
                        listen_hint: format!("pod {pod} must listen on 0.0.0.0:{}", container.port),
                        log: None,
                    });
                }
                if let Some(problem) = state.problem(&revision) {
                    return Err(RuntimeError::StartFailed {
                        instance: id,
                        reason: problem,
                    });
                }
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() {
                    return Err(RuntimeError::Unavailable { reason: "kubernetes watches stopped".into() });
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let summary = cluster.shared.lock().summary(&revision);
                    let behind = cluster.shared.problem().map(|p| format!("; {p}")).unwrap_or_default();
                    return Err(RuntimeError::StartFailed {
                        instance: id,
                        reason: format!("no pod of {revision} became ready within {}: {summary}{behind}", humantime::format_duration(timeout)),
                    });
                }
            }
        }
    }

    async fn stop(&self, instance_id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let Some(cluster) = self.connected() else {
            return Ok(());
        };
        // Mark first, lower the count after: the ReplicaSet then removes this pod.
        let pod = {
            let state = cluster.shared.lock();
            state
                .revisions
                .values()
                .flat_map(|entry| entry.slots.iter())
                .find(|slot| slot.id == instance_id)
                .and_then(|slot| slot.pod.clone())
        };
        // Only the replica that lowers the count chooses the pod.
        if let Some(pod) = pod.as_ref().filter(|_| cluster.leads()) {
            if let Err(error) = cluster.mark_for_removal(pod).await {
                tracing::warn!(%pod, message = %error.message, "could not mark the pod for removal; the ReplicaSet chooses");
            }
        }
        remove_slot(&cluster, instance_id);
        Ok(())
    }

    fn apps_configured(&self, apps: HashSet<String>) {
        let connection = &self.connection;
        if apps.is_empty() && !connection.configured && connection.connected().is_none() {
            return;
        }
        connection.sweeps.send_replace(Some(apps));
        if !connection
            .sweeper
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tokio::spawn(sweeper::sweeper(Arc::clone(connection)));
        }
    }

    async fn shutting_down(&self) {
        if let Some(cluster) = self.connected() {
            cluster.step_down().await;
        }
    }

    async fn shutdown(&self) {
        let Some(cluster) = self.connected() else {
            return;
        };
        if cluster.is_replica() {
            // The other replicas go on serving these revisions; the new leader scales them.
            return;
        }
        let names: Vec<String> = cluster.shared.lock().revisions.keys().cloned().collect();
        let scaled = names.iter().map(|name| cluster.scale_now(name, 0));
        for (name, result) in names
            .iter()
            .zip(futures_util::future::join_all(scaled).await)
        {
            if let Err(error) = result {
                tracing::warn!(deployment = %name, message = %error.message, "could not scale to zero at shutdown; the next start does");
            }
        }
    }
}
