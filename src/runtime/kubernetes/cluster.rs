//! The connection to one namespace of a cluster: the client, the watches that feed
//! [`Shared`], one scaler task per revision, and the calls the backend makes.
//!
//! Every call is bounded ([`CALL_TIMEOUT`]) so a slow API server delays a scale change, never
//! a request: requests go to pods the watches already know.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::election::Elector;
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

    pub(super) fn is_not_found(&self) -> bool {
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
    /// The replicas' shared app definitions, which a sweep must not outrun.
    configmaps: Api<ConfigMap>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Whether this gateway may lower replica counts and clean up: always, unless
    /// `leader_election` makes it one replica of several, then while it holds the Lease.
    pub leading: watch::Receiver<bool>,
    elector: Mutex<Option<Elector>>,
    /// Keeps `leading` open (and true) for a gateway without an election.
    _always_leading: Option<watch::Sender<bool>>,
    /// Whether this gateway is one of several (fixed at connect; the elector goes at
    /// shutdown, the replica stays one).
    replica: bool,
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
        let (client, namespace) = client(settings).await?;
        let shared = Arc::new(Shared::default());
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let tasks = vec![
            tokio::spawn(watches::endpoint_slices(slices, Arc::clone(&shared))),
            tokio::spawn(watches::pods(pods.clone(), Arc::clone(&shared))),
            tokio::spawn(watches::deployments(
                Api::namespaced(client.clone(), &namespace),
                Arc::clone(&shared),
            )),
            tokio::spawn(watches::pulse(client.clone(), Arc::clone(&shared))),
        ];
        let (elector, leading, always) = if settings.leader_election {
            let identity = identity(settings);
            let elector = Elector::spawn(
                Api::namespaced(client.clone(), &namespace),
                LEADER_LEASE.to_string(),
                identity,
            );
            let leading = elector.leading.clone();
            (Some(elector), leading, None)
        } else {
            let (always, leading) = watch::channel(true);
            (None, leading, Some(always))
        };
        tracing::info!(%namespace, "kubernetes backend connected; watching its pods");
        Ok(Arc::new(Cluster {
            leading,
            elector: Mutex::new(elector),
            _always_leading: always,
            replica: settings.leader_election,
            deployments: Api::namespaced(client.clone(), &namespace),
            configmaps: Api::namespaced(client.clone(), &namespace),
            services: Api::namespaced(client, &namespace),
            pods,
            namespace,
            shared,
            tasks: Mutex::new(tasks),
        }))
    }

    /// Whether this gateway leads now (always without `leader_election`).
    pub fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// Whether this gateway is one replica of several.
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// Leaves the election, handing the Lease over at once.
    pub async fn step_down(&self) {
        let elector = self
            .elector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(elector) = elector {
            elector.step_down().await;
        }
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

    /// Starts the task that keeps the Deployment's replica count at `desired`
    /// ([`super::scaler`]); a count someone else raised is set back after `adopt_after`.
    /// Without `apply_first` (a new leader adopting a revision) the count is not set at
    /// once but only once it has drifted that long.
    pub fn spawn_scaler(
        &self,
        name: String,
        desired: watch::Receiver<i32>,
        adopt_after: Duration,
        apply_first: bool,
    ) {
        let task = tokio::spawn(super::scaler::run(
            self.deployments.clone(),
            name,
            desired,
            self.leading.clone(),
            Arc::clone(&self.shared),
            (adopt_after, apply_first),
        ));
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    /// Sets the replica count now (a shutdown's last step), not through the scaler task.
    pub async fn scale_now(&self, name: &str, replicas: i32) -> Result<(), CallError> {
        set_replicas(&self.deployments, name, replicas).await
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
    /// With several replicas the apps defined in the cluster count too (a follower's new
    /// app is there before any replica makes its Deployment, but may not have reached this
    /// gateway's config yet).
    pub async fn sweep(&self, apps: &HashSet<String>) -> Result<Sweep, CallError> {
        let mut apps = apps.clone();
        if self.replica {
            let defined = ListParams::default().labels("tidegate.dev/definition=app");
            for map in bounded(self.configmaps.list(&defined)).await?.items {
                let labels = map.metadata.labels.unwrap_or_default();
                if let Some(name) = labels.get("tidegate.dev/name") {
                    apps.insert(name.clone());
                }
            }
        }
        let apps = &apps;
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

/// A client for `settings` and the namespace to work in: the kubeconfig's (or, without one,
/// the usual places, then the in-cluster service account).
pub async fn client(settings: &KubernetesSettings) -> Result<(Client, String), String> {
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
    Ok((client, namespace))
}

/// This replica's identity: the configured one, or the default below.
pub fn identity(settings: &KubernetesSettings) -> String {
    settings.identity.clone().unwrap_or_else(default_identity)
}

/// The Lease the replicas elect their leader with.
const LEADER_LEASE: &str = "tidegate-leader";

/// `$POD_NAME` (else the host name and process id), and `_$POD_IP` when set: the pod and
/// where it is, for whoever reads the Lease.
fn default_identity() -> String {
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    match std::env::var("POD_IP") {
        Ok(ip) => format!("{name}_{ip}"),
        Err(_) => name,
    }
}

pub(super) async fn set_replicas(
    deployments: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> Result<(), CallError> {
    let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    bounded(deployments.patch_scale(name, &PatchParams::default(), &patch)).await?;
    Ok(())
}

/// Sets the count to 1 if it is still 0, and never lowers it: what any replica may do for
/// a request waiting at zero. The read's resourceVersion makes the write conditional, so a
/// count the leader set meanwhile is kept (409, read again).
pub(super) async fn wake(deployments: &Api<Deployment>, name: &str) -> Result<(), CallError> {
    loop {
        let scale = bounded(deployments.get_scale(name)).await?;
        if scale.spec.and_then(|s| s.replicas).unwrap_or(0) > 0 {
            return Ok(());
        }
        let patch = Patch::Merge(json!({
            "metadata": { "resourceVersion": scale.metadata.resource_version },
            "spec": { "replicas": 1 },
        }));
        match bounded(deployments.patch_scale(name, &PatchParams::default(), &patch)).await {
            Err(error) if error.already_exists() => continue,
            result => return result.map(|_| ()),
        }
    }
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
