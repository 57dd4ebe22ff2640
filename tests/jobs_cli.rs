//! `tidegate job` and `tidegate jobrun` (the real binary) against a real gateway: create a
//! job, submit and wait, read the run and its logs, resubmit, refusals, delete.

mod support;

use support::cli::tidegate;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_made_run_and_read_through_the_cli() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let (code, _, err) = tidegate(&config, &handle, &["project", "create", "batch"]).await;
    assert_eq!(code, 0, "{err}");
    let script = config.dir.path().join("work.sh");
    std::fs::write(
        &script,
        "echo \"index $JOB_INDEX of $JOB_ARRAY_SIZE says $GREETING\"\n[ \"$JOB_INDEX\" != 2 ] || [ \"$JOB_ATTEMPT\" -gt 1 ]\n",
    )
    .unwrap();
    let command = format!("sh {}", script.display());
    let create = [
        "job",
        "create",
        "work",
        "--project",
        "batch",
        "--command",
        &command,
        "--array-indices",
        "0-3",
        "--env",
        "GREETING=hi",
        "--retry-limit",
        "1",
    ];
    let (code, out, err) = tidegate(&config, &handle, &create).await;
    assert_eq!((code, out.trim()), (0, "created job work"), "{err}");

    let submit = [
        "jobrun",
        "submit",
        "--job",
        "work",
        "--env",
        "GREETING=hello",
        "--wait",
    ];
    let (code, out, err) = tidegate(&config, &handle, &submit).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "work-run-1 succeeded: 4 succeeded");

    let (code, out, _) = tidegate(&config, &handle, &["jobrun", "get", "work-run-1"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("State:      succeeded"), "{out}");
    let index2 = out
        .lines()
        .find(|l| l.starts_with("2 "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(index2, Some(vec!["2", "succeeded", "2", "0", "-"]), "{out}");
    let (code, out, _) = tidegate(
        &config,
        &handle,
        &["jobrun", "logs", "work-run-1", "--index", "1"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "index 1 of 4 says hello\n"));

    // Resubmit repeats the run's settings (its env too); one index through the override.
    let (code, out, err) = tidegate(
        &config,
        &handle,
        &["jobrun", "resubmit", "work-run-1", "--wait"],
    )
    .await;
    assert_eq!(
        (code, out.trim()),
        (0, "work-run-2 succeeded: 4 succeeded"),
        "{err}"
    );
    let (code, out, err) = tidegate(
        &config,
        &handle,
        &[
            "jobrun",
            "submit",
            "--job",
            "work",
            "--array-indices",
            "2",
            "--retry-limit",
            "0",
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, 1, "index 2 fails its only attempt: {out}");
    assert!(err.contains("work-run-3 failed"), "{err}");

    let (code, out, _) = tidegate(&config, &handle, &["jobrun", "list", "--job", "work"]).await;
    assert_eq!(code, 0);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["work-run-3", "work-run-2", "work-run-1"],
        "newest first: {out}"
    );
    let (code, out, _) = tidegate(&config, &handle, &["job", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("work") && out.contains("work-run-3") && out.contains("failed"),
        "{out}"
    );

    // Refusals say what is wrong, with the field.
    let (code, _, err) = tidegate(
        &config,
        &handle,
        &[
            "jobrun",
            "submit",
            "--job",
            "work",
            "--array-indices",
            "5-1",
            "--env",
            "JOB_INDEX=1",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("array_indices") && err.contains("runs backwards"),
        "{err}"
    );
    assert!(err.contains("env.JOB_INDEX"), "{err}");
    let (code, _, err) = tidegate(&config, &handle, &["jobrun", "submit", "--job", "nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no job named \"nope\""), "{err}");
    let (code, _, err) = tidegate(&config, &handle, &["project", "delete", "batch"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("still has jobs (work)"), "{err}");

    let (code, _, err) =
        tidegate(&config, &handle, &["jobrun", "delete", "work-run-1", "-f"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = tidegate(&config, &handle, &["job", "delete", "work", "--force"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!config.dir.path().join("jobs/work.toml").exists());
    let (code, _, _) = tidegate(&config, &handle, &["jobrun", "get", "work-run-1"]).await;
    assert_eq!(code, 1, "deleted");
    let (code, _, _) = tidegate(&config, &handle, &["jobrun", "get", "work-run-2"]).await;
    assert_eq!(code, 0, "records stay after their job is deleted");
    handle.shutdown().await;
}
