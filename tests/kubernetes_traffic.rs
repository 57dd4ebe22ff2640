//! Requests through the Kubernetes backend while the cluster changes under them: a pod
//! deleted under load, and a revision rollout, both with no failed request.
#![cfg(feature = "kubernetes")]

mod support;

use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use support::cluster::{Load, TestCluster};
use support::*;

const HOST: &str = "web.p.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_under_load_is_replaced_with_no_failed_request() {
    let cluster = TestCluster::new("podkill").await;
    let config = ConfigDir::new("", &cluster.gateway_section());
    config.kube_app("web", "", "min_scale = 2\nmax_scale = 2");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    eventually("2 ready pods", Duration::from_secs(60), || async {
        (app_status(&handle, "web").await["ready"] == 2).then_some(())
    })
    .await;
    let before = cluster.live_pods().await;
    let load = Load::start(addr, HOST, "/?delay_ms=20", 4);
    // Some requests go through before the deletion.
    load.wait_sent(20).await;
    cluster
        .api::<Pod>()
        .delete(&before[0], &DeleteParams::default())
        .await
        .unwrap();
    // The ReplicaSet replaces it, and the gateway takes the replacement in.
    eventually(
        "a replacement pod in routing",
        Duration::from_secs(60),
        || async {
            let pods = cluster.live_pods().await;
            let replaced = pods.len() == 2 && !pods.contains(&before[0]);
            (replaced && app_status(&handle, "web").await["ready"] == 2).then_some(())
        },
    )
    .await;
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 50, "only {sent} requests");
    let body = get(addr, HOST, "/").await.body;
    assert!(!body.contains(&before[0]), "{body}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_rollout_under_load_fails_no_request() {
    let cluster = TestCluster::new("rollout").await;
    let config = ConfigDir::new("", &cluster.gateway_section());
    config.kube_app("web", "env = { GREETING = \"one\" }", "min_scale = 1");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "one\n");
    let load = Load::start(addr, HOST, "/", 4);
    config.kube_app("web", "env = { GREETING = \"two\" }", "min_scale = 1");
    eventually(
        "the new revision serving",
        Duration::from_secs(60),
        || async {
            let answer = get(addr, HOST, "/env/GREETING").await;
            (answer.status == StatusCode::OK && answer.body == "two\n").then_some(())
        },
    )
    .await;
    // The old revision's pods go once it has drained.
    eventually("web-00001 at zero", Duration::from_secs(60), || async {
        (cluster.replicas("web-00001").await == 0).then_some(())
    })
    .await;
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(cluster.replicas("web-00002").await, 1);
    handle.shutdown().await;
}
