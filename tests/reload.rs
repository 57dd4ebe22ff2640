//! Live reload: edits, additions, deletions and invalid edits of config files while serving.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn file_edits_apply_without_restart() {
    let config = ConfigDir::new("", "");
    let one = echo_backend("one").await;
    let two = echo_backend("two").await;
    config.static_app("app", &[one.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert!(get(addr, "app.p.test.local", "/")
        .await
        .body
        .starts_with("backend=one"));

    // Edit: the upstream changes (written as editors do, by rename).
    config.static_app("app", &[two.addr], "", "");
    served_by(addr, "backend=two", "the edit to take effect").await;

    // Add: a new app file routes its host.
    config.static_app("other", &[one.addr], "hosts = [\"other.example\"]", "");
    eventually(
        "the new app to be routed",
        Duration::from_secs(10),
        || async { (get(addr, "other.example", "/").await.status == StatusCode::OK).then_some(()) },
    )
    .await;

    // Delete: the app's host is unknown again and its metrics are gone.
    std::fs::remove_file(config.app_file("other")).unwrap();
    eventually(
        "the deleted app to be gone",
        Duration::from_secs(10),
        || async {
            (get(addr, "other.example", "/").await.status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    let metrics = admin_get(&handle, "/metrics").await.body;
    assert!(!metrics.contains("app=\"other\""), "{metrics}");
    assert_eq!(
        metric(&handle, "tidegate_config_reload_total{result=\"error\"}").await,
        0.0
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_old_config_serving() {
    let config = ConfigDir::new("", "");
    let one = echo_backend("one").await;
    config.static_app("app", &[one.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();

    config.write_app(
        "app",
        "name = \"app\"\nproject = \"p\"\nruntime = \"static\"\n[static]\nupstreams = [\"not-an-address\"]\n[scale]\nmin_scale = 3\nmax_scale = 1\n",
    );
    wait_reloads(&handle, "error", 1.0).await;
    assert_eq!(
        get(addr, "app.p.test.local", "/").await.status,
        StatusCode::OK
    );

    // The same errors come back from an explicit reload (SIGHUP), naming file and field.
    let errors = handle.reload().await.unwrap_err().to_string();
    assert!(errors.contains("app.toml: static.upstreams[0]"), "{errors}");
    assert!(
        errors.contains("app.toml: scale.min_scale: 3 is greater than max_scale 1"),
        "{errors}"
    );

    // A syntax error and an unknown key are rejected too.
    config.write_app("app", "name = \"app\"\nrutnime = \"static\"\n");
    let errors = handle.reload().await.unwrap_err().to_string();
    assert!(errors.contains("app.toml: line 2"), "{errors}");
    assert!(errors.contains("rutnime"), "{errors}");
    config.write_app("app", "name = [\n");
    assert!(handle.reload().await.is_err());
    assert_eq!(
        get(addr, "app.p.test.local", "/").await.status,
        StatusCode::OK
    );

    // A gateway-file error keeps the old config as well.
    config.write_gateway("header_read_timeout = \"soon\"", "");
    let errors = handle.reload().await.unwrap_err().to_string();
    assert!(
        errors.contains("tidegate.toml: gateway.header_read_timeout"),
        "{errors}"
    );
    assert_eq!(
        get(addr, "app.p.test.local", "/").await.status,
        StatusCode::OK
    );
    assert!(metric(&handle, "tidegate_config_reload_total{result=\"error\"}").await >= 4.0);
    handle.shutdown().await;
}

#[tokio::test]
async fn duplicate_hosts_across_apps_are_rejected_on_reload() {
    let config = ConfigDir::new("", "");
    let one = echo_backend("one").await;
    config.static_app("a", &[one.addr], "hosts = [\"shared.example\"]", "");
    let handle = config.start().await;
    config.static_app("b", &[one.addr], "hosts = [\"shared.example\"]", "");
    let errors = handle.reload().await.unwrap_err().to_string();
    assert!(
        errors.contains("b.toml: hosts: host shared.example is already routed to app \"a\""),
        "{errors}"
    );
    // b is not served: the whole reload was refused.
    let addr = handle.http_addr().unwrap();
    assert_eq!(
        get(addr, "b.p.test.local", "/").await.status,
        StatusCode::NOT_FOUND
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_old_table() {
    let config = ConfigDir::new("", "");
    let slow = backend(|_request| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        text_response(StatusCode::OK, "backend=slow\n")
    })
    .await;
    config.static_app("app", &[slow.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let request = tokio::spawn(get(addr, "app.p.test.local", "/"));
    wait_in_flight(&handle, "app", 1.0).await;
    std::fs::remove_file(config.app_file("app")).unwrap();
    handle.reload().await.unwrap();
    assert_eq!(
        get(addr, "app.p.test.local", "/").await.status,
        StatusCode::NOT_FOUND
    );
    let answer = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "backend=slow\n");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_bad_app_file_keeps_its_app_and_blocks_no_other_app() {
    let config = ConfigDir::new("", "");
    let one = echo_backend("one").await;
    let two = echo_backend("two").await;
    config.static_app("a", &[one.addr], "", "");
    config.static_app("b", &[one.addr], "", "");
    // A broken file at start: the gateway starts, serves the rest and says what is wrong.
    config.write_app("broken", "name = \"broken\"\nrutnime = \"static\"\n");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(
        get(addr, "a.p.test.local", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(metric(&handle, "tidegate_config_rejected_files").await, 1.0);

    // a breaks, b changes in the same reload: b's change applies, a keeps its old spec.
    config.write_app(
        "a",
        "name = \"a\"\nproject = \"p\"\nruntime = \"static\"\n[static]\nupstreams = [\"nowhere\"]\n",
    );
    config.static_app("b", &[two.addr], "", "");
    let errors = handle.reload().await.unwrap_err().to_string();
    assert!(errors.contains("a.toml: static.upstreams[0]"), "{errors}");
    assert!(errors.contains("broken.toml: line 2"), "{errors}");
    assert!(get(addr, "b.p.test.local", "/")
        .await
        .body
        .starts_with("backend=two"));
    assert!(get(addr, "a.p.test.local", "/")
        .await
        .body
        .starts_with("backend=one"));

    // /apps shows the error on the app it concerns, and every rejected file with what serves.
    let a = app_status(&handle, "a").await;
    assert!(a["config_error"]["issues"][0]
        .as_str()
        .unwrap()
        .contains("static.upstreams[0]"));
    assert_eq!(a["config_error"]["serving"], "previous spec");
    assert!(app_status(&handle, "b").await["config_error"].is_null());
    let apps: serde_json::Value =
        serde_json::from_str(&admin_get(&handle, "/apps").await.body).unwrap();
    let rejected = apps["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[1]["app"], "broken");
    assert_eq!(rejected[1]["serving"], "nothing");
    let ready = admin_get(&handle, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(ready.body.contains("a.toml rejected"), "{}", ready.body);
    assert_eq!(metric(&handle, "tidegate_config_rejected_files").await, 2.0);

    // Fixed files apply and the listing is clean again.
    config.static_app("a", &[two.addr], "", "");
    std::fs::remove_file(config.app_file("broken")).unwrap();
    handle.reload().await.unwrap();
    assert!(get(addr, "a.p.test.local", "/")
        .await
        .body
        .starts_with("backend=two"));
    assert!(app_status(&handle, "a").await["config_error"].is_null());
    assert_eq!(metric(&handle, "tidegate_config_rejected_files").await, 0.0);
    handle.shutdown().await;
}

/// A directory laid out as the kubelet mounts a ConfigMap: each version in a directory of
/// its own, `..data` a symlink to the current one, every file a symlink through `..data`.
/// An update writes a new version and swaps `..data` in one rename.
#[tokio::test]
async fn a_mounted_configmap_update_applies_through_its_data_symlink_swap() {
    use std::os::unix::fs::symlink;
    let config = ConfigDir::new("", "");
    let one = echo_backend("one").await;
    let two = echo_backend("two").await;
    let apps = config.dir.path().join("apps");
    let app = |upstream: std::net::SocketAddr| {
        format!("name = \"app\"\nproject = \"p\"\nruntime = \"static\"\n\n[static]\nupstreams = [\"{upstream}\"]\n")
    };
    std::fs::create_dir(apps.join("..2026_12_07_01")).unwrap();
    std::fs::write(apps.join("..2026_12_07_01/app.toml"), app(one.addr)).unwrap();
    symlink("..2026_12_07_01", apps.join("..data")).unwrap();
    symlink("..data/app.toml", apps.join("app.toml")).unwrap();
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert!(get(addr, "app.p.test.local", "/")
        .await
        .body
        .starts_with("backend=one"));

    std::fs::create_dir(apps.join("..2026_12_07_02")).unwrap();
    std::fs::write(apps.join("..2026_12_07_02/app.toml"), app(two.addr)).unwrap();
    symlink("..2026_12_07_02", apps.join("..data_tmp")).unwrap();
    std::fs::rename(apps.join("..data_tmp"), apps.join("..data")).unwrap();
    std::fs::remove_dir_all(apps.join("..2026_12_07_01")).unwrap();
    served_by(addr, "backend=two", "the swapped version to apply").await;
    handle.shutdown().await;
}

/// Waits until `app.p.test.local` is answered by the backend whose body starts with `backend`.
async fn served_by(addr: std::net::SocketAddr, backend: &str, what: &str) {
    eventually(what, Duration::from_secs(10), || async {
        get(addr, "app.p.test.local", "/")
            .await
            .body
            .starts_with(backend)
            .then_some(())
    })
    .await;
}
