//! App updates under load: a changed run spec rolls out as a new revision without a failed
//! request, and a new revision that cannot start leaves traffic on the old one.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (done, failures, seen, stop) = (
                Arc::clone(&done),
                Arc::clone(&failures),
                Arc::clone(&seen),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = get(addr, HOST, "/env/GREETING").await;
                    if answer.status == StatusCode::OK {
                        seen.lock().unwrap().push(answer.body);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    eventually(
        "200 requests before the edit",
        Duration::from_secs(20),
        || async { (done.load(Ordering::Relaxed) >= 200).then_some(()) },
    )
    .await;
    config.demo_app("web", &[("GREETING", "new")], "");
    eventually(
        "2,000 requests and the new env answering",
        Duration::from_secs(60),
        || async {
            let last = seen.lock().unwrap().last().cloned();
            (done.load(Ordering::Relaxed) >= 2000 && last.as_deref() == Some("new\n")).then_some(())
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
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the rollout"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.first().map(String::as_str), Some("old\n"));
        assert!(seen.iter().all(|body| body == "old\n" || body == "new\n"));
        assert!(seen.len() >= 2000);
    }
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
