//! A job on the container runtime against a real engine: its image built once per run
//! from a `[build]` context, indices retried, each attempt's output kept, and no container
//! or built image left after the run.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use support::api::Api;
use support::engine::{engine, job_containerfile, Engine};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_runs_its_indices_and_leaves_nothing_behind() {
    let engine_guard = Engine::new("job");
    let config = &engine_guard.config;
    job_containerfile(config);
    std::fs::create_dir_all(config.dir.path().join("jobs")).unwrap();
    std::fs::create_dir_all(config.dir.path().join("projects")).unwrap();
    std::fs::write(config.dir.path().join("projects/p.toml"), "").unwrap();
    std::fs::write(
        config.dir.path().join("jobs/cjob.toml"),
        "project = \"p\"\nruntime = \"container\"\narray_indices = \"0-2\"\n\
         [container]\ncommand = [\"echo index $JOB_INDEX attempt $JOB_ATTEMPT of $CE_JOB says $WORD; [ $JOB_INDEX != 1 ] || [ $JOB_ATTEMPT -gt 1 ]\"]\n\
         env = { WORD = \"hi\" }\n[build]\ncontext = \"../ctx\"\ndockerfile = \"Job.Containerfile\"\n",
    )
    .unwrap();
    let handle = config.start().await;
    let api = Api::of(config, &handle);
    let run = api.submit("cjob", json!({})).await;
    let path = format!("/api/v1/jobruns/{run}");
    let record = api.finished(&run).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let attempts = |index: usize| {
        record["indices"][index]["attempts"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((attempts(0), attempts(1), attempts(2)), (1, 2, 1));
    assert_eq!(record["indices"][1]["attempts"][0]["exit_code"], 1);
    let (status, log) = api.text(&format!("{path}/logs?index=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log, "index 1 attempt 2 of cjob says hi\n");
    engine_guard
        .wait_containers("every job container removed", |n| n == 0)
        .await;
    eventually(
        "the run's image to be removed with the run",
        Duration::from_secs(10),
        || async {
            engine()
                .inspect_image("tidegate/cjob:cjob-run-1")
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    handle.shutdown().await;
}
