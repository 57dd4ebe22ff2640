//! The Kubernetes backend against a real control plane (etcd, kube-apiserver and
//! kube-controller-manager built from source by `scripts/k8s-control-plane`) and a test node
//! agent that runs pods as local processes in network namespaces of their own: cold start
//! through a Deployment, scale out and back to zero, a crash-looping revision, a deleted app.
#![cfg(feature = "kubernetes")]

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use support::cluster::{Load, TestCluster};
use support::*;

const HOST: &str = "web.p.test.local";

fn gateway(cluster: &TestCluster) -> ConfigDir {
    ConfigDir::new("", &cluster.gateway_section())
}

/// Opens a watch of `api` (filtered by `fields`) now and returns a task that resolves at
/// the first event whose object passes `check`.
async fn first_event<K>(
    api: kube::Api<K>,
    fields: &str,
    check: impl Fn(&K) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Instant>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures_util::StreamExt;
    use kube::runtime::watcher::{watcher, Config, Event};
    let config = Config::default().fields(fields);
    let mut stream = watcher(api, config).boxed();
    // The initial list arrives first: the watch is open once it is done.
    let mut current = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(Event::InitApply(object))) => current.push(object),
            Some(_) => {}
            None => panic!("watch ended"),
        }
    }
    assert!(
        !current.iter().any(&check),
        "already true before the request"
    );
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if let Ok(Event::Apply(object)) = event {
                if check(&object) {
                    return Instant::now();
                }
            }
        }
        panic!("watch ended");
    })
}

/// Sorted values of a sample, and its median and 90th percentile.
fn median_p90(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_starts_through_a_deployment_and_scales_back_to_zero() {
    let cluster = TestCluster::new("cold").await;
    let config = gateway(&cluster);
    config.kube_app(
        "web",
        "env = { GREETING = \"hi\" }",
        "scale_to_zero_grace = \"1s\"\nstable_window = \"2s\"\npanic_window = \"1s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let deployments: kube::Api<Deployment> = cluster.api();
    let mut totals = Vec::new();
    let mut own = Vec::new();
    for round in 0..10 {
        // At zero: no pod.
        eventually(
            "no pod before the request",
            Duration::from_secs(60),
            || async {
                (cluster.replicas("web-00001").await == 0 && cluster.live_pods().await.is_empty())
                    .then_some(())
            },
        )
        .await;
        // The Deployment's replica change and the endpoint's readiness, seen through watches
        // opened before the request, bracket what the cluster does; the rest is tidegate's.
        let scaled = first_event(
            deployments.clone(),
            "metadata.name=web-00001",
            |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas) == Some(1),
        )
        .await;
        let ready = first_event(cluster.api(), "", |slice: &EndpointSlice| {
            slice
                .endpoints
                .iter()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        })
        .await;
        let started = Instant::now();
        let request =
            tokio::spawn(async move { (get(addr, HOST, "/env/GREETING").await, Instant::now()) });
        let scaled = scaled.await.unwrap();
        let ready = ready.await.unwrap();
        let (answer, answered) = request.await.unwrap();
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "round {round}: {}",
            answer.body
        );
        assert_eq!(answer.body, "hi\n");
        let total = answered.duration_since(started).as_secs_f64() * 1000.0;
        let tidegate = (scaled.duration_since(started) + answered.saturating_duration_since(ready))
            .as_secs_f64()
            * 1000.0;
        totals.push(total);
        own.push(tidegate);
        // The instance is the pod: its name is the instance id the demo app reports.
        let pods = cluster.live_pods().await;
        assert_eq!(pods.len(), 1, "{pods:?}");
        let body = get(addr, HOST, "/").await.body;
        assert!(
            body.contains(&format!("instance={}", pods[0])),
            "{body} vs {pods:?}"
        );
        assert!(body.contains("revision=web-00001"), "{body}");
    }
    let (median, p90) = median_p90(totals);
    let (own_median, own_p90) = median_p90(own);
    println!(
        "cold start through Kubernetes: median {median:.1} ms, p90 {p90:.1} ms; tidegate's part (request -> replicas 1 seen, endpoint ready seen -> response) median {own_median:.1} ms, p90 {own_p90:.1} ms"
    );
    // Labels, the probe and the environment are in the Deployment.
    let deployment = deployments.get("web-00001").await.unwrap();
    let labels = deployment.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tidegate");
    assert_eq!(labels["tidegate.dev/project"], "p");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_out_under_load_and_back_to_zero() {
    let cluster = TestCluster::new("scale").await;
    let config = gateway(&cluster);
    config.kube_app("web",
        "",
        "concurrency = 1\ntarget_utilization = 1.0\nmax_scale = 4\nstable_window = \"2s\"\npanic_window = \"1s\"\nscale_to_zero_grace = \"1s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    // Four clients, each with a request of 300 ms at a time, for a while.
    let load = Load::start(addr, HOST, "/?delay_ms=300", 4);
    eventually("4 ready pods", Duration::from_secs(90), || async {
        (cluster.ready_endpoints("web-00001").await >= 4).then_some(())
    })
    .await;
    assert_eq!(cluster.replicas("web-00001").await, 4);
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    eventually("back to zero pods", Duration::from_secs(60), || async {
        (cluster.replicas("web-00001").await == 0 && cluster.pods().await.is_empty()).then_some(())
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_pod_fails_the_revision_with_its_reason() {
    let cluster = TestCluster::new("crash").await;
    let config = gateway(&cluster);
    config.kube_app(
        "web",
        "command = [\"/bin/sh\", \"-c\", \"echo starting; exit 3\"]",
        "startup_timeout = \"60s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let answer = get(addr, HOST, "/").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("CrashLoopBackOff") && answer.body.contains("exited with code 3"),
        "{}",
        answer.body
    );
    let status = app_status(&handle, "web").await;
    assert_eq!(status["revisions"][0]["state"], "failed", "{status}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_app_leaves_no_deployment_service_or_pod() {
    let cluster = TestCluster::new("delete").await;
    let config = gateway(&cluster);
    config.kube_app("web", "", "min_scale = 1");
    config.kube_app("gone", "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/").await.status, StatusCode::OK);
    assert_eq!(
        get(addr, "gone.p.test.local", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(cluster.deployments().await.len(), 2);
    // Removed while the gateway runs: its objects go at once.
    std::fs::remove_file(config.app_file("gone")).unwrap();
    eventually(
        "gone's objects deleted",
        Duration::from_secs(30),
        || async {
            let names = cluster.deployment_names().await;
            let pods = cluster.pods().await;
            let gone_pods = pods
                .iter()
                .filter(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("gone-")
                })
                .count();
            (names == ["web-00001"] && gone_pods == 0).then_some(())
        },
    )
    .await;
    // Removed while the gateway is down: the next start deletes them.
    handle.shutdown().await;
    std::fs::remove_file(config.app_file("web")).unwrap();
    config.kube_app("other", "", "");
    let handle = config.start().await;
    eventually("nothing left of web", Duration::from_secs(30), || async {
        let names = cluster.deployment_names().await;
        let services = cluster
            .api::<k8s_openapi::api::core::v1::Service>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len();
        (names == ["other-00001"] && services == 1 && cluster.pods().await.is_empty()).then_some(())
    })
    .await;
    handle.shutdown().await;
}
