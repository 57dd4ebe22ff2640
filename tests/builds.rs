//! Revision builds of process apps, and a container engine that cannot be reached.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

const HOST: &str = "web.p.test.local";

/// A process app whose `[build] command` writes the greeting its instances serve, and counts
/// its runs in `builds.txt`.
fn built_app(config: &ConfigDir, greeting: &str, scale: &str) {
    config.write_app(
        "web",
        &format!(
            "name = \"web\"\nproject = \"p\"\n[run]\nworkdir = \"..\"\n\
             command = [\"sh\", \"-c\", \"GREETING=$(cat greeting-$TIDEGATE_REVISION.txt) exec {TIDEGATE} demo-app\"]\n\
             env = {{ WANTED = \"{greeting}\" }}\nreadiness_path = \"/healthz\"\n\
             [build]\ncommand = [\"sh\", \"-c\", \"echo building $TIDEGATE_REVISION; echo $WANTED > greeting-$TIDEGATE_REVISION.txt; echo $TIDEGATE_REVISION >> builds.txt; test $WANTED != broken\"]\n\
             [scale]\n{scale}\n"
        ),
    );
}

fn builds_run(config: &ConfigDir) -> Vec<String> {
    std::fs::read_to_string(config.dir.path().join("builds.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_build_runs_once_per_revision_and_a_failed_one_takes_no_traffic() {
    let config = ConfigDir::new("", "");
    built_app(&config, "built-v1", "scale_to_zero_grace = \"1s\"");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "built-v1\n");
    let log = admin_get(&handle, "/apps/web/builds/web-00001").await;
    assert!(log.body.contains("building web-00001"), "{}", log.body);
    assert!(log.body.contains("build succeeded"), "{}", log.body);

    // Back to zero and up again: the build is not repeated.
    eventually(
        "the app to scale to zero",
        Duration::from_secs(20),
        || async { (app_status(&handle, "web").await["ready"] == 0).then_some(()) },
    )
    .await;
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "built-v1\n");
    assert_eq!(builds_run(&config), ["web-00001"]);

    // A failing build: the first revision keeps serving; the failure is reported.
    built_app(&config, "broken", "scale_to_zero_grace = \"1s\"");
    eventually(
        "the failed build to be reported",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            status["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("web-00002") && e.contains("build command"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(
            &handle,
            "tidegate_builds_total{app=\"web\",result=\"error\"}"
        )
        .await,
        1.0
    );
    let status = app_status(&handle, "web").await;
    assert_eq!(status["latest_ready"], "web-00001");
    let answer = get(addr, HOST, "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body.contains("revision=web-00001"),
        "{}",
        answer.body
    );
    // Through a cold start too: web-00001 starts again from its own build's output.
    eventually(
        "the app to scale to zero again",
        Duration::from_secs(20),
        || async { (app_status(&handle, "web").await["ready"] == 0).then_some(()) },
    )
    .await;
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "built-v1\n");
    assert_eq!(builds_run(&config), ["web-00001", "web-00002"]);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_is_reported_in_readyz_and_requests_get_503() {
    let config = ConfigDir::new("", "");
    std::fs::write(
        config.gateway_file(),
        "[gateway]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndomain = \"test.local\"\n\
         [container_engine]\nsocket = \"/nonexistent/engine.sock\"\n",
    )
    .unwrap();
    config.write_app(
        "box",
        "project = \"p\"\nruntime = \"container\"\n[container]\nimage = \"busybox\"\n",
    );
    let handle = config.start().await;
    let ready = eventually(
        "readyz to report the engine",
        Duration::from_secs(10),
        || async {
            let answer = admin_get(&handle, "/readyz").await;
            (answer.status == StatusCode::SERVICE_UNAVAILABLE).then_some(answer.body)
        },
    )
    .await;
    assert!(
        ready.contains("container engine at /nonexistent/engine.sock is unreachable"),
        "{ready}"
    );
    let answer = get(handle.http_addr().unwrap(), "box.p.test.local", "/").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("/nonexistent/engine.sock"),
        "{}",
        answer.body
    );
    handle.shutdown().await;
}
