//! The Kubernetes objects of one revision: a Deployment whose pods run the app, and the
//! headless Service whose selector makes the EndpointSlice controller list those pods.
//!
//! Both carry `app.kubernetes.io/managed-by=tidegate` and the app, project and revision, so
//! the watches select them and a sweep at start finds what deleted apps left. The Service is
//! owned by the Deployment: deleting the Deployment takes its ReplicaSets, pods and Service
//! with it through the garbage collector.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use crate::config::{AppSpec, ContainerSpec, PullPolicy};

/// The label every object tidegate makes carries, and its value.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "tidegate";
pub const APP_LABEL: &str = "tidegate.dev/app";
pub const PROJECT_LABEL: &str = "tidegate.dev/project";
pub const REVISION_LABEL: &str = "tidegate.dev/revision";
/// The annotation the ReplicaSet controller reads to choose which pod a scale-down removes
/// (lower goes first).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// `app.kubernetes.io/managed-by=tidegate`, for list and watch selectors.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

fn labels(app: &AppSpec, revision: &str) -> Value {
    json!({
        MANAGED_BY: MANAGER,
        "app.kubernetes.io/name": app.name,
        APP_LABEL: app.name,
        PROJECT_LABEL: app.project,
        REVISION_LABEL: revision,
    })
}

/// The Deployment of `revision`, created with no replicas: from then on only the scale
/// subresource changes its count.
pub fn deployment(
    app: &AppSpec,
    container: &ContainerSpec,
    revision: &str,
    env: &[(String, String)],
) -> Result<Deployment, serde_json::Error> {
    let mut variables: Vec<Value> = env
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    // Each pod's own name, as a process instance gets its instance id.
    variables.push(json!({
        "name": "TIDEGATE_INSTANCE",
        "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
    }));
    let mut spec = json!({
        "name": "app",
        "image": container.image,
        "env": variables,
        "ports": [{ "name": "http", "containerPort": container.port, "protocol": "TCP" }],
        "imagePullPolicy": match container.pull {
            PullPolicy::Never => "Never",
            PullPolicy::Missing => "IfNotPresent",
            PullPolicy::Always => "Always",
        },
        // Stopping comes after a pause, so every gateway has seen the endpoint terminating
        // and sends it nothing new before the app gets SIGTERM (the kubelet runs it).
        "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_PAUSE_SECONDS } } },
        "readinessProbe": readiness_probe(container),
    });
    if let Some(command) = &container.command {
        spec["command"] = json!(command);
    }
    let resources = resources(container);
    if !resources.is_null() {
        spec["resources"] = resources;
    }
    let grace = app.scale.stop_grace.as_secs().max(1) + PRE_STOP_PAUSE_SECONDS;
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": revision, "labels": labels(app, revision) },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { MANAGED_BY: MANAGER, REVISION_LABEL: revision } },
            "template": {
                "metadata": { "labels": labels(app, revision) },
                "spec": {
                    "containers": [spec],
                    "terminationGracePeriodSeconds": grace,
                    "enableServiceLinks": false,
                    "automountServiceAccountToken": false,
                },
            },
        },
    }))
}

/// Seconds between a pod's deletion and its SIGTERM.
const PRE_STOP_PAUSE_SECONDS: u64 = 2;

fn readiness_probe(container: &ContainerSpec) -> Value {
    let mut probe = match &container.readiness_path {
        Some(path) => json!({ "httpGet": { "path": path, "port": container.port } }),
        None => json!({ "tcpSocket": { "port": container.port } }),
    };
    probe["periodSeconds"] = json!(1);
    probe["failureThreshold"] = json!(3);
    probe
}

/// cpu and memory as both requests and limits: the scheduler reserves what the app may use.
fn resources(container: &ContainerSpec) -> Value {
    let mut amounts = serde_json::Map::new();
    if let Some(millis) = container.resources.cpu_millis {
        amounts.insert("cpu".into(), json!(format!("{millis}m")));
    }
    if let Some(bytes) = container.resources.memory_bytes {
        amounts.insert("memory".into(), json!(bytes.to_string()));
    }
    if amounts.is_empty() {
        return Value::Null;
    }
    json!({ "requests": amounts, "limits": amounts })
}

/// The headless Service of `revision` (no cluster IP: the gateway reaches pods directly),
/// owned by its Deployment.
pub fn service(
    app: &AppSpec,
    container: &ContainerSpec,
    revision: &str,
    owner_uid: &str,
) -> Result<Service, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": revision,
            "labels": labels(app, revision),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": revision,
                "uid": owner_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "clusterIP": "None",
            "selector": { MANAGED_BY: MANAGER, REVISION_LABEL: revision },
            "ports": [{ "name": "http", "port": container.port, "targetPort": container.port }],
            "publishNotReadyAddresses": false,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Resources, RuntimeSpec, ScaleSpec, Visibility};

    fn app() -> AppSpec {
        AppSpec {
            name: "hello".into(),
            project: "default".into(),
            domain: "localhost".into(),
            file: Default::default(),
            visibility: Visibility::Public,
            hosts: vec![],
            runtime: RuntimeSpec::Kubernetes(container()),
            scale: ScaleSpec::default(),
            https_redirect: false,
            hsts_max_age: None,
            websocket_idle_timeout: None,
            traffic: vec![],
            revision_history: 10,
            cold_start_page: None,
        }
    }

    fn container() -> ContainerSpec {
        ContainerSpec {
            image: Some("registry.example/hello:1".into()),
            command: Some(vec!["/hello".into(), "--verbose".into()]),
            port: 8080,
            env: Default::default(),
            inherit_env: vec![],
            resources: Resources {
                cpu_millis: Some(250),
                memory_bytes: Some(64 << 20),
            },
            pull: PullPolicy::Missing,
            readiness_path: Some("/healthz".into()),
            build: None,
        }
    }

    #[test]
    fn the_deployment_starts_at_zero_with_labels_probe_resources_and_env() {
        let app = app();
        let env = vec![("PORT".to_string(), "8080".to_string())];
        let deployment = deployment(&app, &container(), "hello-00001", &env).unwrap();
        let value = serde_json::to_value(&deployment).unwrap();
        assert_eq!(value["spec"]["replicas"], 0);
        assert_eq!(value["metadata"]["labels"][REVISION_LABEL], "hello-00001");
        assert_eq!(value["metadata"]["labels"][MANAGED_BY], "tidegate");
        let pod = &value["spec"]["template"]["spec"];
        let app_container = &pod["containers"][0];
        assert_eq!(app_container["image"], "registry.example/hello:1");
        assert_eq!(app_container["command"][0], "/hello");
        assert_eq!(
            app_container["readinessProbe"]["httpGet"]["path"],
            "/healthz"
        );
        assert_eq!(app_container["resources"]["limits"]["cpu"], "250m");
        assert_eq!(app_container["resources"]["requests"]["memory"], "67108864");
        assert_eq!(app_container["env"][0]["name"], "PORT");
        assert_eq!(
            app_container["env"][1]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
        let selector = &value["spec"]["selector"]["matchLabels"];
        assert_eq!(selector[REVISION_LABEL], "hello-00001");
    }

    #[test]
    fn the_service_is_headless_and_owned_by_the_deployment() {
        let app = app();
        let service = service(&app, &container(), "hello-00001", "uid-1").unwrap();
        let value = serde_json::to_value(&service).unwrap();
        assert_eq!(value["spec"]["clusterIP"], "None");
        assert_eq!(value["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(value["spec"]["ports"][0]["port"], 8080);
    }
}
