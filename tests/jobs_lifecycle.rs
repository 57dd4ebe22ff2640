//! Jobs across the gateway's life: runs a SIGKILLed gateway left are marked interrupted at
//! the next start with no process left, a stopped gateway interrupts its runs, schedules
//! submit runs and skip overlapping ticks, and bad definitions are refused field by field
//! while a live job keeps its previous one.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::api::Api;
use support::process::spawn_gateway;
use support::*;

/// A config with a project `p` and the job `name` written as files.
fn config_with_job(name: &str, body: &str) -> ConfigDir {
    let config = ConfigDir::new("", "");
    std::fs::create_dir_all(config.dir.path().join("projects")).unwrap();
    std::fs::write(config.dir.path().join("projects/p.toml"), "").unwrap();
    std::fs::create_dir_all(config.dir.path().join("jobs")).unwrap();
    std::fs::write(
        config.dir.path().join(format!("jobs/{name}.toml")),
        format!("project = \"p\"\n{body}"),
    )
    .unwrap();
    config
}

fn pids(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

const SLEEPER: &str = "array_indices = \"0-2\"\n[run]\ncommand = [\"sh\", \"-c\", \"echo $$ > \\\"$DIR/$CE_JOBRUN-$JOB_INDEX\\\"; exec sleep 60\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_a_killed_or_stopped_gateway_end_interrupted_with_no_process_left() {
    let pid_dir = tempfile::tempdir().unwrap();
    let config = config_with_job(
        "sleeper",
        &format!(
            "{SLEEPER}env = {{ DIR = \"{}\" }}\n",
            pid_dir.path().display()
        ),
    );
    let addr = config.fixed_ports("").admin;
    let mut gateway = spawn_gateway(&config, &[], std::process::Stdio::null(), addr).await;
    let api = Api::at(&config, addr);
    api.submit("sleeper", json!({})).await;
    eventually("3 indices running", Duration::from_secs(10), || async {
        let running = api.run("sleeper-run-1").await["counts"]["running"] == 3;
        (running && pids(pid_dir.path()).len() == 3).then_some(())
    })
    .await;
    gateway.start_kill().unwrap();
    gateway.wait().await.unwrap();
    for pid in pids(pid_dir.path()) {
        wait_gone(pid).await;
    }

    let handle = config.start().await;
    let run = api.run("sleeper-run-1").await;
    assert_eq!(run["state"], "interrupted", "{run:#}");
    assert_eq!(run["counts"], json!({"interrupted": 3}));
    assert!(
        run["message"].as_str().unwrap().contains("gateway stopped"),
        "{run}"
    );

    // A gateway that is stopped interrupts its runs itself, and leaves no process.
    assert_eq!(
        api.submit("sleeper", json!({})).await,
        "sleeper-run-2",
        "numbers are never reused"
    );
    eventually("3 more running", Duration::from_secs(10), || async {
        (pids(pid_dir.path()).len() == 6).then_some(())
    })
    .await;
    handle.shutdown().await;
    for pid in pids(pid_dir.path()) {
        assert!(!pid_alive(pid), "{pid} outlived the gateway");
    }
    let stored = std::fs::read_to_string(
        config
            .dir
            .path()
            .join("state/jobruns/sleeper-run-2/record.json"),
    )
    .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["state"], "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_submits_runs_and_skips_ticks_while_its_last_run_runs() {
    // Every second; each run takes longer, so some ticks find the last run still running.
    let config = config_with_job(
        "tick",
        "schedule = \"* * * * * *\"\n[run]\ncommand = [\"sleep\", \"1.5\"]\n",
    );
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let skipped = "tidegate_job_schedule_skipped_total{job=\"tick\"}";
    eventually(
        "two runs and a skipped tick",
        Duration::from_secs(15),
        || async {
            let runs = api
                .call(Method::GET, "/api/v1/jobruns?job=tick", None, None)
                .await
                .body;
            let count = runs["jobruns"].as_array().unwrap().len();
            (count >= 2 && metric(&handle, skipped).await >= 1.0).then_some(())
        },
    )
    .await;
    // Stop the schedule, then look at what it did.
    let deleted = api
        .call(Method::DELETE, "/api/v1/jobs/tick", None, None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let runs = api
        .call(Method::GET, "/api/v1/jobruns?job=tick", None, None)
        .await
        .body;
    let mut runs: Vec<Value> = runs["jobruns"].as_array().unwrap().clone();
    runs.reverse();
    for pair in runs.windows(2) {
        assert_eq!(pair[0]["scheduled"], true);
        let (finished, started) = (&pair[0]["finished_at"], &pair[1]["started_at"]);
        assert!(
            finished.as_str().unwrap() <= started.as_str().unwrap(),
            "scheduled runs overlapped: {pair:#?}"
        );
    }
    assert_eq!(runs[0]["state"], "succeeded", "{runs:#?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_by_field_and_a_live_job_keeps_its_last_good_one() {
    let config = config_with_job("bad", "");
    std::fs::write(
        config.dir.path().join("jobs/bad.toml"),
        "project = \"nope\"\narray_indices = \"3-1\"\nretry_limit = -1\nmax_parallel = 0\nschedule = \"every day\"\n[run]\ncommand = [\"true\"]\nenv = { JOB_INDEX = \"1\" }\n",
    )
    .unwrap();
    let checked = std::process::Command::new(TIDEGATE)
        .args(["check", "--config"])
        .arg(config.gateway_file())
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(1));
    let err = String::from_utf8_lossy(&checked.stderr);
    for field in [
        "project",
        "array_indices",
        "retry_limit",
        "max_parallel",
        "schedule",
        "run.env.JOB_INDEX",
    ] {
        assert!(err.contains(&format!("{field}: ")), "{field}: {err}");
    }
    assert!(err.contains("unknown project \"nope\""), "{err}");
    std::fs::remove_file(config.dir.path().join("jobs/bad.toml")).unwrap();

    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let refused = api
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "j", "project": "p", "array_indices": "x", "max_execution_time": "0s", "run": {"command": ["true"]}})),
            None,
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let fields: Vec<&str> = refused.body["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["array_indices", "max_execution_time"]);
    assert!(
        !config.dir.path().join("jobs/j.toml").exists(),
        "nothing written"
    );
    let unknown = api
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"name": "j", "project": "zz", "run": {"command": ["true"]}})),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.body["error"]
        .as_str()
        .unwrap()
        .contains("unknown project \"zz\""));

    // A good job, then a bad edit by hand: the job keeps running as it was.
    let made = api
        .call(Method::POST, "/api/v1/jobs", Some(json!({"name": "j", "project": "p", "array_indices": "0-1", "run": {"command": ["true"]}})), None)
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let file = config.dir.path().join("jobs/j.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    write_atomically(&file, &format!("{text}retry_limit = -5\n"));
    eventually(
        "the bad edit to be rejected",
        Duration::from_secs(10),
        || async {
            let job = api
                .call(Method::GET, "/api/v1/jobs/j", None, None)
                .await
                .body;
            job["config_error"]
                .as_array()
                .map(|issues| (job.clone(), issues.clone()))
        },
    )
    .await;
    let job = api
        .call(Method::GET, "/api/v1/jobs/j", None, None)
        .await
        .body;
    assert_eq!(job["served"], true, "{job:#}");
    let issue = job["config_error"][0].as_str().unwrap();
    assert!(
        issue.contains("retry_limit") && issue.contains("-5"),
        "{issue}"
    );
    let run = api
        .call(
            Method::POST,
            "/api/v1/jobruns",
            Some(json!({"job": "j"})),
            None,
        )
        .await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.body);
    assert_eq!(run.body["array_size"], 2, "the last good definition runs");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_older_than_the_retention_are_pruned_with_their_logs() {
    let config = config_with_job("old", "[run]\ncommand = [\"true\"]\n");
    config.write_gateway("jobrun_retention = \"2d\"", "");
    // Records as a gateway left them: one finished three days ago, one an hour ago.
    let stamp = |ago: i64| (chrono::Utc::now() - chrono::Duration::seconds(ago)).to_rfc3339();
    for (run, ago) in [("old-run-1", 3 * 86_400), ("old-run-2", 3600)] {
        let dir = config.dir.path().join("state/jobruns").join(run);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("logs/0-1.log"), "done\n").unwrap();
        let record = json!({
            "name": run, "job": "old", "project": "p", "state": "succeeded",
            "submitted_at": stamp(ago + 10), "started_at": stamp(ago + 9),
            "finished_at": stamp(ago), "message": null,
            "settings": {"array_indices": "0", "retry_limit": 3, "max_execution_time": 7200,
                         "max_parallel": null, "env": {}},
            "indices": [{"index": 0, "state": "succeeded", "attempts": []}],
        });
        std::fs::write(dir.join("record.json"), record.to_string()).unwrap();
    }
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    assert_eq!(
        api.run("old-run-1").await["error"],
        "no job run named \"old-run-1\""
    );
    assert!(
        !config.dir.path().join("state/jobruns/old-run-1").exists(),
        "logs go too"
    );
    assert_eq!(api.run("old-run-2").await["state"], "succeeded");
    handle.shutdown().await;
}
