//! App updates under load: a changed run spec rolls out as a new revision without a failed
//! request, and a new revision that cannot start leaves traffic on the old one.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

const HOST: &str = "web.p.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_change_under_load_fails_no_request() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[("GREETING", "old")], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "old\n");

    let load = Load::start(4, addr, HOST, "/env/GREETING");
    eventually(
        "200 requests before the edit",
        Duration::from_secs(20),
        || async { (load.answers().len() >= 200).then_some(()) },
    )
    .await;
    config.demo_app("web", &[("GREETING", "new")], "");
    eventually(
        "2,000 requests and the new env answering",
        Duration::from_secs(60),
        || async {
            let answers = load.answers();
            let last = answers.last().map(|(_, body)| body.as_str());
            (answers.len() >= 2000 && last == Some("new\n")).then_some(())
        },
    )
    .await;
    // Once the old revision has drained, only the new one answers.
    eventually(
        "the old revision to be gone",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            let instances = status["instances"].as_array().unwrap().clone();
            (status["revision"] == "web-00002"
                && instances.iter().all(|i| i["revision"] == "web-00002"))
            .then_some(())
        },
    )
    .await;
    let answers = load.stop().await;
    assert!(
        failed(&answers).is_empty(),
        "requests failed during the rollout: {:?}",
        failed(&answers)
    );
    assert_eq!(
        answers.first().map(|(_, body)| body.as_str()),
        Some("old\n")
    );
    assert!(answers
        .iter()
        .all(|(_, body)| body == "old\n" || body == "new\n"));
    assert!(answers.len() >= 2000);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_revision_leaves_traffic_on_the_old_one() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[("GREETING", "old")], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "old\n");

    config.write_app(
        "web",
        "name = \"web\"\nproject = \"p\"\n[run]\ncommand = [\"/nonexistent/app\"]\nenv = { GREETING = \"new\" }\n",
    );
    eventually(
        "the new revision's failure to be reported",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            status["last_error"]
                .as_str()
                .is_some_and(|error| {
                    error.contains("web-00002") && error.contains("failed to start")
                })
                .then_some(())
        },
    )
    .await;
    assert!(metric(&handle, "tidegate_instance_crashes_total{app=\"web\"}").await >= 1.0);
    for _ in 0..50 {
        let answer = get(addr, HOST, "/env/GREETING").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "old\n");
    }
    handle.shutdown().await;
}
