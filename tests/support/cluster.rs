//! A namespace of the real test control plane (`scripts/k8s-control-plane`, started by
//! `scripts/test`, which exports `TIDEGATE_KUBECONFIG`) with a node agent serving its pods;
//! dropping it deletes the namespace and the node, so a test leaves no object behind.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::node_agent::{NodeAgent, DEMO_IMAGE};
use super::{eventually, get, ConfigDir};

impl ConfigDir {
    /// A Kubernetes app running the demo image, with `container` and `[scale]` lines.
    pub fn kube_app(&self, name: &str, container: &str, scale: &str) {
        self.write_app(
            name,
            &format!(
                "name = \"{name}\"\nproject = \"p\"\nruntime = \"kubernetes\"\n\n[container]\nimage = \"{DEMO_IMAGE}\"\nport = 8080\nreadiness_path = \"/healthz\"\n{container}\n\n[scale]\n{scale}\n"
            ),
        );
    }
}

/// Clients sending GETs to `host` through `addr` back to back until stopped; what failed.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests answered so far, by all clients.
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    pub fn start(
        addr: std::net::SocketAddr,
        host: &'static str,
        path: &'static str,
        clients: usize,
    ) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                let total = std::sync::Arc::clone(&total);
                tokio::spawn(async move {
                    let (mut sent, mut failures) = (0, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let answer = get(addr, host, path).await;
                        sent += 1;
                        total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if answer.status != http::StatusCode::OK {
                            failures.push(format!("{} {}", answer.status, answer.body.trim()));
                        }
                    }
                    (sent, failures)
                })
            })
            .collect();
        Load {
            stop,
            sent: total,
            clients,
        }
    }

    /// Waits until the clients have had `count` more answers than now.
    pub async fn wait_sent(&self, count: usize) {
        let target = self.sent.load(std::sync::atomic::Ordering::Relaxed) + count;
        eventually(
            &format!("{count} more answers"),
            Duration::from_secs(30),
            || async {
                (self.sent.load(std::sync::atomic::Ordering::Relaxed) >= target).then_some(())
            },
        )
        .await
    }

    /// Stops the clients; the number of requests sent and the failures.
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut sent, mut failures) = (0, Vec::new());
        for client in self.clients {
            let (n, mut f) = client.await.unwrap();
            sent += n;
            failures.append(&mut f);
        }
        (sent, failures)
    }
}

/// The admin kubeconfig of the test control plane.
pub fn admin_kubeconfig() -> PathBuf {
    let path = std::env::var("TIDEGATE_KUBECONFIG").unwrap_or_default();
    assert!(
        !path.is_empty(),
        "TIDEGATE_KUBECONFIG must name the test control plane's kubeconfig; run ./scripts/test, which starts one"
    );
    PathBuf::from(path)
}

pub async fn admin_client() -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(admin_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// One test's namespace and node.
pub struct TestCluster {
    pub client: Client,
    pub namespace: String,
    pub agent: NodeAgent,
}

impl TestCluster {
    pub async fn new(test: &str) -> TestCluster {
        let client = admin_client().await;
        let namespace = format!("tg-{test}-{:04x}", fastrand::u16(..));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let body: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
        namespaces
            .create(&PostParams::default(), &body)
            .await
            .expect("test namespace");
        let agent =
            NodeAgent::start(client.clone(), &namespace, &format!("node-{namespace}")).await;
        TestCluster {
            client,
            namespace,
            agent,
        }
    }

    /// `[kubernetes]` for a gateway file, with the admin kubeconfig.
    pub fn gateway_section(&self) -> String {
        self.gateway_section_with(&admin_kubeconfig())
    }

    pub fn gateway_section_with(&self, kubeconfig: &std::path::Path) -> String {
        format!(
            "\n[kubernetes]\nkubeconfig = \"{}\"\nnamespace = \"{}\"\n",
            kubeconfig.display(),
            self.namespace
        )
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn deployments(&self) -> Vec<Deployment> {
        self.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// The names of the namespace's Deployments, sorted.
    pub async fn deployment_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .deployments()
            .await
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// Replicas in the spec of Deployment `name` (0 if it does not exist).
    pub async fn replicas(&self, name: &str) -> i32 {
        match self.api::<Deployment>().get_opt(name).await.unwrap() {
            Some(d) => d.spec.and_then(|s| s.replicas).unwrap_or(0),
            None => 0,
        }
    }

    pub async fn pods(&self) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// Names of the pods that are not being deleted.
    pub async fn live_pods(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pods()
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// Ready endpoints of revision `name` across its slices.
    pub async fn ready_endpoints(&self, name: &str) -> usize {
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        let slices = self
            .api::<EndpointSlice>()
            .list(&params)
            .await
            .unwrap()
            .items;
        slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count()
    }

    /// Waits until Deployment `name` is at zero replicas and the namespace has no pod.
    pub async fn wait_zero(&self, name: &str) {
        eventually(
            &format!("{name} at zero"),
            Duration::from_secs(60),
            || async {
                (self.replicas(name).await == 0 && self.pods().await.is_empty()).then_some(())
            },
        )
        .await
    }

    /// Waits until the namespace holds no Deployment, Service or pod.
    pub async fn wait_empty(&self, what: &str, timeout: Duration) {
        eventually(what, timeout, || async {
            let deployments = self.deployments().await.len();
            let services = self
                .api::<Service>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
            let pods = self.pods().await.len();
            (deployments + services + pods == 0).then_some(())
        })
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Pods are force-deleted (no kubelet finalizes them once the agent is gone), then the
        // namespace and node; the agent, dropped after this, kills its processes and removes
        // its network namespaces. The calls run on a runtime of their own, as the test's may
        // be ending.
        let client = self.client.clone();
        let namespace = self.namespace.clone();
        let node = self.agent.node.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let nodes: Api<Node> = Api::all(client);
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    let force = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    let _ = pods.delete_collection(&force, &ListParams::default()).await;
                    let _ = namespaces
                        .delete(&namespace, &DeleteParams::default())
                        .await;
                    let _ = nodes.delete(&node, &DeleteParams::default()).await;
                })
                .await;
            });
        })
        .join()
        .ok();
    }
}
