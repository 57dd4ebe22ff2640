//! Jobs against a real gateway with real processes: retries until success or the limit,
//! parallelism held to `max_parallel`, attempts killed at `max_execution_time`, cancel,
//! logs per index and attempt, records that outlive the gateway.

mod support;

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::api::Api;
use support::*;

/// `sh -c script` as a job's command.
fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

async fn gateway() -> (ConfigDir, tidegate::Handle, Api) {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    api.project("p").await;
    (config, handle, api)
}

fn attempts(record: &Value, index: u64) -> Vec<Value> {
    record["indices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["index"] == index)
        .map(|i| i["attempts"].as_array().unwrap().clone())
        .unwrap()
}

fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_indices_are_retried_until_they_succeed_or_reach_the_limit() {
    let (_config, handle, api) = gateway().await;
    let markers = tempfile::tempdir().unwrap();
    // Odd indices fail their first attempt (a marker file says it was made).
    let flaky = "if [ $((JOB_INDEX % 2)) = 1 ] && [ ! -e \"$DIR/$JOB_INDEX\" ]; then touch \"$DIR/$JOB_INDEX\"; echo failing; exit 1; fi; echo \"index $JOB_INDEX attempt $JOB_ATTEMPT of $JOB_ARRAY_SIZE in $CE_JOBRUN of $CE_JOB ($CE_PROJECT)\"";
    api.create_job(json!({
        "name": "flaky", "project": "p", "array_indices": "0-9",
        "run": {"command": sh(flaky), "env": {"DIR": markers.path().to_str().unwrap()}},
    }))
    .await;
    let run = api.submit("flaky", json!({})).await;
    assert_eq!(run, "flaky-run-1");
    let record = api.finished(&run).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    assert_eq!(record["counts"], json!({"succeeded": 10}));
    for index in 0..10u64 {
        let tries = attempts(&record, index);
        if index % 2 == 1 {
            assert_eq!(tries.len(), 2, "index {index}: {tries:?}");
            assert_eq!(tries[0]["exit_code"], 1);
            assert_eq!(tries[0]["reason"], "exited with code 1");
            assert_eq!(tries[1]["exit_code"], 0);
            assert_eq!(tries[1]["reason"], Value::Null);
        } else {
            assert_eq!(tries.len(), 1, "index {index}: {tries:?}");
        }
    }
    let (status, log) = api
        .text(&format!("/api/v1/jobruns/{run}/logs?index=3"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log, "index 3 attempt 2 of 10 in flaky-run-1 of flaky (p)\n");
    let (_, first) = api
        .text(&format!("/api/v1/jobruns/{run}/logs?index=3&attempt=1"))
        .await;
    assert_eq!(first, "failing\n", "every attempt's output is kept");
    let (_, all) = api.text(&format!("/api/v1/jobruns/{run}/logs")).await;
    assert!(
        all.contains("==> index 9 attempt 2 <==\nindex 9 attempt 2"),
        "{all}"
    );

    api.create_job(json!({
        "name": "broken", "project": "p", "array_indices": "0-4", "retry_limit": 2,
        "run": {"command": sh("[ \"$JOB_INDEX\" != 3 ]")},
    }))
    .await;
    let run = api.submit("broken", json!({})).await;
    let record = api.finished(&run).await;
    assert_eq!(record["state"], "failed", "{record:#}");
    assert_eq!(record["counts"], json!({"failed": 1, "succeeded": 4}));
    assert_eq!(attempts(&record, 3).len(), 3, "retry_limit + 1 attempts");
    assert_eq!(attempts(&record, 2).len(), 1);
    assert_eq!(
        metric(
            &handle,
            "tidegate_jobruns_total{job=\"broken\",result=\"failed\"}"
        )
        .await,
        1.0
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_parallel_indices_run_at_once() {
    let (_config, handle, api) = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    // Each instance counts the others running beside it; three at once leaves a mark.
    let script = "touch \"$DIR/run-$JOB_INDEX\"; n=$(ls \"$DIR\" | grep -c '^run-'); [ \"$n\" -le 2 ] || touch \"$DIR/too-many\"; sleep 0.2; rm \"$DIR/run-$JOB_INDEX\"";
    api.create_job(json!({
        "name": "pair", "project": "p", "array_indices": "0-7", "max_parallel": 2,
        "run": {"command": sh(script), "env": {"DIR": dir.path().to_str().unwrap()}},
    }))
    .await;
    let run = api.submit("pair", json!({})).await;
    let path = format!("/api/v1/jobruns/{run}");
    // The most instances running at once, sampled until the run ends.
    let most = std::cell::Cell::new(0);
    let record = eventually("the run to end", Duration::from_secs(60), || async {
        let record = api.call(Method::GET, &path, None, None).await.body;
        most.set(
            most.get()
                .max(record["counts"]["running"].as_u64().unwrap_or(0)),
        );
        (record["state"] != "running" && record["state"] != "pending").then_some(record)
    })
    .await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let most = most.get();
    assert!(most <= 2 && most > 0, "at most 2 running, saw {most}");
    assert!(
        !dir.path().join("too-many").exists(),
        "3 instances ran at once"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_time_is_killed_and_a_cancel_stops_everything() {
    let (_config, handle, api) = gateway().await;
    let pids = tempfile::tempdir().unwrap();
    api.create_job(json!({
        "name": "slow", "project": "p", "retry_limit": 0,
        "max_execution_time": "1s", "stop_grace": "1s",
        "run": {"command": sh("echo $$ > \"$DIR/$CE_JOBRUN-$JOB_INDEX\"; exec sleep 30"),
                "env": {"DIR": pids.path().to_str().unwrap()}},
    }))
    .await;
    let run = api.submit("slow", json!({})).await;
    let record = api.finished(&run).await;
    assert_eq!(record["state"], "failed");
    let tries = attempts(&record, 0);
    assert!(
        tries[0]["reason"].as_str().unwrap().starts_with("timeout"),
        "{tries:?}"
    );
    for pid in pids_in(pids.path()) {
        wait_gone(pid).await;
    }

    // Four indices running: a delete stops them and keeps the record as cancelled.
    let run = api
        .submit(
            "slow",
            json!({"array_indices": "0-3", "max_execution_time": "60s"}),
        )
        .await;
    let path = format!("/api/v1/jobruns/{run}");
    eventually("4 indices running", Duration::from_secs(10), || async {
        let record = api.call(Method::GET, &path, None, None).await.body;
        (record["counts"]["running"] == 4 && pids_in(pids.path()).len() == 5).then_some(())
    })
    .await;
    let cancelled = api.call(Method::DELETE, &path, None, None).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["state"], "cancelled", "{}", cancelled.body);
    assert_eq!(cancelled.body["counts"], json!({"cancelled": 4}));
    for pid in pids_in(pids.path()) {
        wait_gone(pid).await;
    }
    let kept = api.call(Method::GET, &path, None, None).await;
    assert_eq!(kept.body["state"], "cancelled");
    // A finished run's delete removes it.
    let gone = api.call(Method::DELETE, &path, None, None).await;
    assert_eq!(gone.body["deleted"], run.as_str());
    assert_eq!(
        api.call(Method::GET, &path, None, None).await.status,
        StatusCode::NOT_FOUND
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_caps_apps_and_jobs_take_only_what_apps_leave() {
    let config = ConfigDir::new("max_instances = 2", "");
    // The app asks for three instances; the limit gives it two.
    config.demo_app("web", &[], "min_scale = 3");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    eventually("two app instances", Duration::from_secs(10), || async {
        (app_instances(&handle).await == 2).then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let script = "touch \"$DIR/run-$JOB_INDEX\"; n=$(ls \"$DIR\" | grep -c '^run-'); [ \"$n\" -le 1 ] || touch \"$DIR/too-many\"; sleep 0.2; rm \"$DIR/run-$JOB_INDEX\"";
    api.create_job(json!({
        "name": "squeezed", "project": "p", "array_indices": "0-3",
        "run": {"command": sh(script), "env": {"DIR": dir.path().to_str().unwrap()}},
    }))
    .await;
    let run = api.submit("squeezed", json!({})).await;
    let pending = "tidegate_job_instances{job=\"squeezed\",state=\"pending\"}";
    eventually(
        "every index held pending",
        Duration::from_secs(5),
        || async { (metric(&handle, pending).await == 4.0).then_some(()) },
    )
    .await;
    assert_eq!(
        app_instances(&handle).await,
        2,
        "the app stays at the limit"
    );
    let record = api
        .call(Method::GET, &format!("/api/v1/jobruns/{run}"), None, None)
        .await;
    assert_eq!(
        record.body["counts"],
        json!({"pending": 4}),
        "apps hold every place"
    );

    // The app shrinks to one instance: one place for the job, whose indices take turns.
    config.demo_app("web", &[], "min_scale = 1");
    let record = api.finished(&run).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    assert!(
        !dir.path().join("too-many").exists(),
        "more than max_instances ran"
    );
    assert_eq!(metric(&handle, pending).await, 0.0);
    assert_eq!(app_instances(&handle).await, 1);
    handle.shutdown().await;
}

async fn app_instances(handle: &tidegate::Handle) -> usize {
    app_status(handle, "web").await["instances"]
        .as_array()
        .map_or(0, Vec::len)
}
