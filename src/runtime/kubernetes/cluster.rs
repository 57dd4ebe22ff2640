//! The connection to one namespace of a cluster: the client, the watches that feed
//! [`Shared`], one scaler task per revision, and the calls the backend makes.
//!
//! Every call is bounded ([`CALL_TIMEOUT`]) so a slow API server delays a scale change, never
//! a request: requests go to pods the watches already know.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::objects::{managed_selector, APP_LABEL, DELETION_COST};
use super::watches::{self, Shared};
use crate::config::KubernetesSettings;

/// Longest any single API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call: whether trying again later may help, and the API server's words.
#[derive(Debug)]
pub struct CallError {
    pub transient: bool,
    /// The HTTP status the API server answered with, if it answered.
    pub code: Option<u16>,
    pub message: String,
}

impl CallError {
    fn from_kube(error: kube::Error) -> Self {
        match &error {
            // 4xx but conflicts and throttling: the request itself is wrong.
            kube::Error::Api(status) => CallError {
                transient: !(400..500).contains(&status.code) || status.code == 429,
                code: Some(status.code),
                message: status.message.clone(),
            },
            _ => CallError {
                transient: true,
                code: None,
                message: error.to_string(),
            },
        }
    }

    fn is_not_found(&self) -> bool {
        self.code == Some(404)
    }

    fn already_exists(&self) -> bool {
        self.code == Some(409)
    }
}

/// Runs an API call with [`CALL_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = kube::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(CallError::from_kube),
        Err(_) => Err(CallError {
            transient: true,
            code: None,
            message: format!("the API server did not answer within {CALL_TIMEOUT:?}"),
        }),
    }
}

/// One namespace of one cluster, watched.
pub struct Cluster {
    pub namespace: String,
    pub shared: Arc<Shared>,
    deployments: Api<Deployment>,
    services: Api<Service>,
    pods: Api<Pod>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Cluster {
    /// Connects with `settings` and starts the watches; fails only on a bad kubeconfig or a
    /// missing service account, not on an unreachable server (the watches retry).
    pub async fn connect(settings: &KubernetesSettings) -> Result<Arc<Cluster>, String> {
        let mut config = match &settings.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                format!("no kubeconfig and not in a cluster ({e}); set [kubernetes] kubeconfig")
            })?,
        };
        config.connect_timeout = Some(Duration::from_secs(5));
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))?;
        let shared = Arc::new(Shared::default());
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let tasks = vec![
            tokio::spawn(watches::endpoint_slices(slices, Arc::clone(&shared))),
            tokio::spawn(watches::pods(pods.clone(), Arc::clone(&shared))),
            tokio::spawn(watches::pulse(client.clone(), Arc::clone(&shared))),
        ];
        tracing::info!(%namespace, "kubernetes backend connected; watching its pods");
        Ok(Arc::new(Cluster {
            deployments: Api::namespaced(client.clone(), &namespace),
            services: Api::namespaced(client, &namespace),
            pods,
            namespace,
            shared,
            tasks: Mutex::new(tasks),
        }))
    }

    /// Creates the revision's Deployment (at zero replicas) and Service unless they exist.
    pub async fn ensure(
        &self,
        deployment: Deployment,
        service: impl FnOnce(&str) -> Option<Service>,
    ) -> Result<(), CallError> {
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let created = match bounded(self.deployments.create(&PostParams::default(), &deployment))
            .await
        {
            Ok(created) => created,
            Err(error) if error.already_exists() => bounded(self.deployments.get(&name)).await?,
            Err(error) => return Err(error),
        };
        let uid = created.metadata.uid.unwrap_or_default();
        let Some(service) = service(&uid) else {
            return Err(CallError {
                transient: false,
                code: None,
                message: "the Service could not be described".into(),
            });
        };
        match bounded(self.services.create(&PostParams::default(), &service)).await {
            Err(error) if !error.already_exists() => Err(error),
            _ => Ok(()),
        }
    }

    /// Starts the task that keeps the Deployment's replica count at `desired`, through the
    /// scale subresource, retrying until the API server takes it.
    pub fn spawn_scaler(&self, name: String, mut desired: watch::Receiver<i32>) {
        let deployments = self.deployments.clone();
        let task = tokio::spawn(async move {
            loop {
                let replicas = *desired.borrow_and_update();
                let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
                loop {
                    match bounded(deployments.patch_scale(&name, &PatchParams::default(), &patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::debug!(deployment = %name, replicas, "scaled");
                            break;
                        }
                        Err(error) if error.is_not_found() => return,
                        Err(error) => {
                            tracing::warn!(deployment = %name, replicas, message = %error.message, "scale not applied; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                changed = desired.changed() => if changed.is_err() { return },
                            }
                            if desired.has_changed().unwrap_or(false) {
                                break;
                            }
                        }
                    }
                }
                if !desired.has_changed().unwrap_or(false) && desired.changed().await.is_err() {
                    return;
                }
            }
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// Sets the replica count now (a shutdown's last step), not through the scaler task.
    pub async fn scale_now(&self, name: &str, replicas: i32) -> Result<(), CallError> {
        let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        bounded(
            self.deployments
                .patch_scale(name, &PatchParams::default(), &patch),
        )
        .await?;
        Ok(())
    }

    /// Marks `pod` to go first when its ReplicaSet scales down.
    pub async fn mark_for_removal(&self, pod: &str) -> Result<(), CallError> {
        let patch =
            Patch::Merge(json!({ "metadata": { "annotations": { DELETION_COST: "-1000" } } }));
        bounded(self.pods.patch(pod, &PatchParams::default(), &patch)).await?;
        Ok(())
    }

    /// Deletes a revision's Deployment and Service; the garbage collector takes the pods.
    pub async fn delete_revision(&self, name: &str) -> Result<(), CallError> {
        let params = DeleteParams::background();
        for result in [
            bounded(self.deployments.delete(name, &params))
                .await
                .map(|_| ()),
            bounded(self.services.delete(name, &params))
                .await
                .map(|_| ()),
        ] {
            match result {
                Err(error) if !error.is_not_found() => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes the objects of apps not in `apps` (removed while the gateway was down, or
    /// just now). Returns the revisions deleted, and the Deployments left with replicas
    /// (name, container port) for the caller to scale down unless it runs them.
    pub async fn sweep(&self, apps: &HashSet<String>) -> Result<Sweep, CallError> {
        let params = ListParams::default().labels(&managed_selector());
        let mut orphans: HashMap<String, ()> = HashMap::new();
        let mut running = Vec::new();
        for deployment in bounded(self.deployments.list(&params)).await?.items {
            collect_orphan(&deployment.metadata, apps, &mut orphans);
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let spec = deployment.spec.as_ref();
            let replicas = spec.and_then(|s| s.replicas).unwrap_or(0);
            let port = spec
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|pod| pod.containers.first())
                .and_then(|c| c.ports.as_ref()?.first())
                .map(|p| p.container_port as u16)
                .unwrap_or(0);
            if replicas > 0 && !orphans.contains_key(&name) {
                running.push((name, port));
            }
        }
        for service in bounded(self.services.list(&params)).await?.items {
            collect_orphan(&service.metadata, apps, &mut orphans);
        }
        let mut deleted: Vec<String> = orphans.into_keys().collect();
        deleted.sort();
        for name in &deleted {
            self.delete_revision(name).await?;
        }
        Ok(Sweep { deleted, running })
    }
}

/// What [`Cluster::sweep`] found.
pub struct Sweep {
    pub deleted: Vec<String>,
    pub running: Vec<(String, u16)>,
}

fn collect_orphan(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    apps: &HashSet<String>,
    names: &mut HashMap<String, ()>,
) {
    let app = metadata.labels.as_ref().and_then(|l| l.get(APP_LABEL));
    if let (Some(app), Some(name)) = (app, &metadata.name) {
        if !apps.contains(app) {
            names.insert(name.clone(), ());
        }
    }
}
