//! The manifests' Role is enough: a gateway process whose only credential is a token of a
//! ServiceAccount bound to exactly the Role in `deploy/kubernetes/role.yaml` (RBAC enforced
//! by the real API server) cold-starts an app, scales it down (marking the pod), and cleans
//! up a deleted app, with no request of it refused.
#![cfg(feature = "kubernetes")]

mod support;

use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use serde::Deserialize;
use serde_json::{json, Value};
use support::cluster::{admin_kubeconfig, TestCluster};
use support::process::spawn_gateway;
use support::*;

/// A manifest of deploy/kubernetes, moved to `namespace`.
fn manifest(file: &str, namespace: &str) -> Value {
    let path = format!("{}/deploy/kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut value: Value = serde_yaml_ng::from_str(&text).unwrap();
    value["metadata"]["namespace"] = json!(namespace);
    if let Some(subjects) = value["subjects"].as_array_mut() {
        for subject in subjects {
            subject["namespace"] = json!(namespace);
        }
    }
    value
}

/// A kubeconfig with the test cluster's server and CA and `token` as the only credential.
fn token_kubeconfig(path: &std::path::Path, token: &str) {
    let admin: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(admin_kubeconfig()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: tidegate\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: tidegate}}\ncurrent-context: test\n",
        cluster["server"].as_str().unwrap(),
        cluster["certificate-authority"].as_str().unwrap(),
    );
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Every document of a manifest file, moved to `namespace`.
fn documents(file: &str, namespace: &str) -> Vec<Value> {
    let path = format!("{}/deploy/kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = Value::deserialize(document).unwrap();
            value["metadata"]["namespace"] = json!(namespace);
            value
        })
        .collect()
}

/// Has the API server check every object of `file` (a dry-run create).
async fn dry_run<K>(cluster: &TestCluster, file: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for document in documents(file, &cluster.namespace) {
        let object: K = serde_json::from_value(document).unwrap();
        if let Err(error) = cluster.api::<K>().create(&dry, &object).await {
            panic!("{file}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_are_accepted_by_the_api_server() {
    let cluster = TestCluster::new("manifests").await;
    dry_run::<Deployment>(&cluster, "deployment.yaml").await;
    dry_run::<Service>(&cluster, "service.yaml").await;
    dry_run::<ConfigMap>(&cluster, "configmap.yaml").await;
    dry_run::<PodDisruptionBudget>(&cluster, "poddisruptionbudget.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_only_the_manifests_role_runs_and_cleans_up_apps() {
    let cluster = TestCluster::new("rbac").await;
    let ns = cluster.namespace.clone();
    let post = PostParams::default();
    let account: ServiceAccount =
        serde_json::from_value(manifest("serviceaccount.yaml", &ns)).unwrap();
    cluster
        .api::<ServiceAccount>()
        .create(&post, &account)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(manifest("role.yaml", &ns)).unwrap();
    cluster.api::<Role>().create(&post, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(manifest("rolebinding.yaml", &ns)).unwrap();
    cluster
        .api::<RoleBinding>()
        .create(&post, &binding)
        .await
        .unwrap();
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": { "expirationSeconds": 3600 },
    });
    let answer: Value = cluster
        .api::<ServiceAccount>()
        .create_subresource("token", "tidegate", &post, &request)
        .await
        .unwrap();
    let token = answer["status"]["token"].as_str().unwrap();

    let config = ConfigDir::new("", "");
    let kubeconfig = config.dir.path().join("kubeconfig");
    token_kubeconfig(&kubeconfig, token);
    // As one of several replicas: the Role must allow the election and membership Leases
    // and the definition ConfigMaps too.
    config.write_gateway(
        "",
        &format!(
            "{}leader_election = true\n",
            cluster.gateway_section_with(&kubeconfig)
        ),
    );
    config.kube_app(
        "web",
        "",
        "scale_to_zero_grace = \"1s\"\nstable_window = \"2s\"\npanic_window = \"1s\"",
    );
    config.kube_app("gone", "", "");
    let listeners = config.fixed_ports("");
    let log = config.dir.path().join("gateway.log");
    let mut gateway = spawn_gateway(
        &config,
        &["--log-format", "json"],
        Stdio::from(std::fs::File::create(&log).unwrap()),
        listeners.admin,
    )
    .await;
    let answer = get(listeners.http, "web.p.test.local", "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // Scaled back to zero: the pod is marked for removal, then the count lowered.
    eventually("web back at zero", Duration::from_secs(60), || async {
        (cluster.replicas("web-00001").await == 0 && cluster.pods().await.is_empty()).then_some(())
    })
    .await;
    // A deleted app's objects are listed and deleted.
    std::fs::remove_file(config.app_file("gone")).unwrap();
    eventually(
        "gone's objects deleted",
        Duration::from_secs(30),
        || async {
            let names = cluster.deployment_names().await;
            (names == ["web-00001"]).then_some(())
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    gateway.wait().await.unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    for refused in ["forbidden", "Forbidden", "cannot"] {
        let lines: Vec<&str> = output.lines().filter(|l| l.contains(refused)).collect();
        assert!(
            lines.is_empty(),
            "the API server refused the gateway: {lines:#?}"
        );
    }
    assert!(output.contains("deployment and service ready"), "{output}");
}
