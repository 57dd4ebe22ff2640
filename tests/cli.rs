//! The real `tidegate` binary's `app` and `project` commands against a real gateway: create
//! from nothing and curl the printed URL, update an env var and see the new revision answer,
//! read, list, delete, and nothing left behind; exit codes for refusals and usage errors.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::cli::tidegate;
use support::*;

const HOST: &str = "web.p.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_lives_its_whole_life_through_the_cli() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let command = format!("{TIDEGATE} demo-app");
    let env_file = config.dir.path().join("web.env");
    std::fs::write(
        &env_file,
        "# settings\nFROM_FILE=yes\n\nGREETING=overridden\n",
    )
    .unwrap();
    let (code, out, err) = tidegate(&config, &handle, &["project", "create", "p"]).await;
    assert_eq!((code, out.trim()), (0, "created project p"), "{err}");

    let (code, out, err) = tidegate(
        &config,
        &handle,
        &[
            "app",
            "create",
            "web",
            "--project",
            "p",
            "--command",
            &command,
            "--env",
            "GREETING=one",
            "--env-from-file",
            env_file.to_str().unwrap(),
            "--max-scale",
            "2",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!("http://{HOST}:{}/", addr.port()),
        "prints the URL"
    );
    // Waited for the first revision: it answers at once.
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "one\n");
    assert_eq!(get(addr, HOST, "/env/FROM_FILE").await.body, "yes\n");
    let (_, out, _) = tidegate(&config, &handle, &["app", "get", "web", "-o", "json"]).await;
    let app: serde_json::Value = serde_json::from_str(&out).unwrap();
    let started = app["status"]["instances"][0]["started_at"]
        .as_str()
        .unwrap();
    assert!(started.ends_with('Z') && started.len() == 20, "{started}");

    let (code, out, err) = tidegate(
        &config,
        &handle,
        &["app", "update", "web", "--env", "GREETING=two"],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "web-00002"), "{err}");
    let addr2 = addr;
    eventually(
        "the new revision to answer",
        Duration::from_secs(10),
        || async move { (get(addr2, HOST, "/env/GREETING").await.body == "two\n").then_some(()) },
    )
    .await;

    // Split 50/50: both revisions answer.
    let (code, _, err) = tidegate(
        &config,
        &handle,
        &["app", "traffic", "web", "web-00001=50", "latest=50"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    for revision in ["revision=web-00001", "revision=web-00002"] {
        eventually(revision, Duration::from_secs(10), || async move {
            get(addr2, HOST, "/")
                .await
                .body
                .contains(revision)
                .then_some(())
        })
        .await;
    }
    let (code, out, _) = tidegate(&config, &handle, &["revision", "list", "--app", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("web-00001") && out.contains("50%"), "{out}");
    let (code, out, _) = tidegate(&config, &handle, &["revision", "get", "web-00002"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"name\": \"web-00002\""), "{out}");
    let (code, out, _) = tidegate(&config, &handle, &["app", "events", "web"]).await;
    assert_eq!(code, 0);
    for reason in ["RevisionCreated", "RevisionReady", "Scaled"] {
        assert!(out.contains(reason), "{reason}: {out}");
    }
    let (code, out, err) =
        tidegate(&config, &handle, &["app", "logs", "web", "--tail", "50"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("==> instance web-0000"), "{out}");
    let completion = tokio::process::Command::new(TIDEGATE)
        .args(["completion", "bash"])
        .output()
        .await
        .unwrap();
    assert!(completion.status.success());
    assert!(String::from_utf8_lossy(&completion.stdout).contains("_tidegate()"));

    let (code, out, _) = tidegate(&config, &handle, &["app", "get", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Status:    ready") && out.contains("web-00002"),
        "{out}"
    );
    let (code, out, _) = tidegate(&config, &handle, &["app", "list", "-o", "json"]).await;
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["apps"][0]["spec"]["run"]["env"]["GREETING"], "two");
    let (code, out, _) = tidegate(&config, &handle, &["project", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["p", "1"]),
        "{out}"
    );

    let pid: i32 = get(addr, HOST, "/pid").await.body.trim().parse().unwrap();
    let (code, _, err) = tidegate(&config, &handle, &["app", "delete", "web"]).await;
    assert_eq!(code, 1, "no terminal, no --force: not deleted");
    assert!(
        err.contains("--force") && config.app_file("web").exists(),
        "{err}"
    );
    let (code, _, err) = tidegate(&config, &handle, &["app", "delete", "web", "--force"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!config.app_file("web").exists(), "no file left");
    wait_gone(pid).await;
    let (code, _, err) = tidegate(&config, &handle, &["project", "delete", "p"]).await;
    assert_eq!(code, 0, "{err}");
    eventually("web to be gone", Duration::from_secs(10), || async move {
        (get(addr2, HOST, "/").await.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn refusals_exit_1_with_the_servers_message_and_usage_errors_exit_2() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let (code, _, err) = tidegate(&config, &handle, &["app", "get", "nothing"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no app named \"nothing\""), "{err}");
    let (code, _, err) = tidegate(
        &config,
        &handle,
        &[
            "app",
            "create",
            "x",
            "--project",
            "nope",
            "--command",
            "srv",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown project \"nope\"") && err.contains("project create nope"),
        "{err}"
    );
    let (code, _, _) = tidegate(&config, &handle, &["project", "create", "p"]).await;
    assert_eq!(code, 0);
    let (code, _, err) =
        tidegate(&config, &handle, &["app", "create", "x", "--project", "p"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--command") && err.contains("--image"),
        "{err}"
    );
    let (code, _, err) = tidegate(
        &config,
        &handle,
        &[
            "app",
            "create",
            "x",
            "--project",
            "p",
            "--command",
            "srv",
            "--env",
            "1BAD=x",
            "--no-wait",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("1BAD") && err.contains("422"), "{err}");
    assert!(!config.app_file("x").exists());
    let (code, _, _) = tidegate(&config, &handle, &["app", "frobnicate"]).await;
    assert_eq!(code, 2);
    handle.shutdown().await;
}

/// `--build-source`: a local directory uploaded, built in (`--build-command`) and run in;
/// the same tree again makes no new revision, a changed one does, and deleting the app
/// removes what was uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_app_is_built_and_run_from_an_uploaded_source() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(
        source.path().join("serve.sh"),
        "export GREETING=\"$(cat built.txt)\"\nexec \"$1\" demo-app\n",
    )
    .unwrap();
    std::fs::write(source.path().join("message.txt"), "from-source-1").unwrap();
    let command = format!("sh serve.sh {TIDEGATE}");
    let (code, _, err) = tidegate(&config, &handle, &["project", "create", "p"]).await;
    assert_eq!(code, 0, "{err}");
    let create = [
        "app",
        "create",
        "built",
        "--project",
        "p",
        "--command",
        &command,
        "--build-source",
        source.path().to_str().unwrap(),
        "--build-command",
        "cp message.txt built.txt",
    ];
    let (code, out, err) = tidegate(&config, &handle, &create).await;
    assert_eq!(code, 0, "{out}{err}");
    let host = "built.p.test.local";
    assert_eq!(
        get(addr, host, "/env/GREETING").await.body,
        "from-source-1\n"
    );
    assert!(
        !source.path().join("built.txt").exists(),
        "the build ran in the uploaded copy"
    );

    let update = [
        "app",
        "update",
        "built",
        "--build-source",
        source.path().to_str().unwrap(),
    ];
    let (code, out, err) = tidegate(&config, &handle, &update).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("built-00001") && out.contains("no new revision"),
        "{out}"
    );

    std::fs::write(source.path().join("message.txt"), "from-source-2").unwrap();
    let (code, out, err) = tidegate(&config, &handle, &update).await;
    assert_eq!((code, out.trim()), (0, "built-00002"), "{err}");
    eventually(
        "the rebuilt revision",
        Duration::from_secs(10),
        || async move {
            (get(addr, host, "/env/GREETING").await.body == "from-source-2\n").then_some(())
        },
    )
    .await;

    let (_, out, _) = tidegate(&config, &handle, &["app", "get", "built", "-o", "json"]).await;
    let app: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stored = std::path::PathBuf::from(app["spec"]["run"]["workdir"].as_str().unwrap());
    let sources = stored.parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::read_dir(&sources).unwrap().count(),
        2,
        "both trees kept while named"
    );
    let pid: i32 = get(addr, host, "/pid").await.body.trim().parse().unwrap();
    let (code, _, err) = tidegate(&config, &handle, &["app", "delete", "built", "-f"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!sources.exists(), "the uploads go with the app");
    wait_gone(pid).await;
    handle.shutdown().await;
}
