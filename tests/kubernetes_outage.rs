//! The Kubernetes backend while its API server is away: stopped for 10 s and started again
//! (`scripts/k8s-control-plane pause-apiserver`), ready pods keep answering, `/readyz` says
//! the backend is degraded without failing, and the watches resume: a scale-up afterwards
//! works. A test binary of its own, since the outage is the whole control plane's.
#![cfg(feature = "kubernetes")]

mod support;

use std::time::Duration;

use http::StatusCode;
use support::cluster::{Load, TestCluster};
use support::*;

const HOST: &str = "web.p.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pods_keep_serving_while_the_api_server_is_down_and_watches_resume() {
    let cluster = TestCluster::new("outage").await;
    let config = ConfigDir::new("", &cluster.gateway_section());
    config.kube_app(
        "web",
        "",
        "min_scale = 1\nconcurrency = 1\ntarget_utilization = 1.0\nmax_scale = 3\nstable_window = \"2s\"\npanic_window = \"1s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/").await.status, StatusCode::OK);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/k8s-control-plane");
    let outage = tokio::process::Command::new(script)
        .args(["pause-apiserver", "10"])
        .spawn()
        .unwrap();
    let load = Load::start(addr, HOST, "/", 1);
    // The watches notice the API server is gone; /readyz says so and stays 200.
    let readyz = eventually("/readyz degraded", Duration::from_secs(20), || async {
        let answer = admin_get(&handle, "/readyz").await;
        answer
            .body
            .contains("degraded: kubernetes")
            .then_some(answer)
    })
    .await;
    assert_eq!(readyz.status, StatusCode::OK, "{}", readyz.body);
    let output = outage.wait_with_output().await.unwrap();
    assert!(output.status.success());
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} failed during the outage: {failures:?}",
        failures.len()
    );
    assert!(sent > 20, "only {sent} requests during the outage");

    eventually(
        "/readyz no longer degraded",
        Duration::from_secs(20),
        || async {
            let answer = admin_get(&handle, "/readyz").await;
            (!answer.body.contains("degraded")).then_some(())
        },
    )
    .await;
    // Scaling works again: load that needs three pods gets them (the controller manager's
    // own watches take about 25 s more to resume here, hence the generous bound).
    let load = Load::start(addr, HOST, "/?delay_ms=300", 3);
    eventually(
        "3 ready pods after the outage",
        Duration::from_secs(60),
        || async { (cluster.ready_endpoints("web-00001").await >= 3).then_some(()) },
    )
    .await;
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    handle.shutdown().await;
}
