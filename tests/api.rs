//! The management API against a real gateway: token auth, apps created, updated and deleted
//! through it and served, versions (`If-Match`), refused input that writes nothing, and
//! concurrent writers that never lose an edit.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use support::api::Api;
use support::*;

/// The demo app as the API takes it.
fn demo(name: &str, greeting: &str) -> Value {
    json!({
        "name": name,
        "project": "p",
        "run": {
            "command": [TIDEGATE, "demo-app"],
            "env": {"GREETING": greeting},
            "readiness_path": "/healthz",
        },
    })
}

/// Every file in the apps directory with its contents.
fn apps_dir_contents(config: &ConfigDir) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(config.dir.path().join("apps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

async fn answers(handle: &tidegate::Handle, host: &str, path: &str, want: &str) {
    let addr = handle.http_addr().unwrap();
    eventually(
        &format!("{host}{path} to answer {want:?}"),
        Duration::from_secs(20),
        || async { (get(addr, host, path).await.body == want).then_some(()) },
    )
    .await
}

#[tokio::test]
async fn every_api_request_needs_the_token() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let token_file = config.dir.path().join("state/admin-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    for authorization in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut request = Request::get("/api/v1/apps").header("host", "admin");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let answer = send(
            handle.admin_addr(),
            request.body(full(Bytes::new())).unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(
        metric(&handle, "tidegate_api_requests_total{code=\"401\"}").await,
        3.0
    );
    let api = Api::of(&config, &handle);
    assert_eq!(
        api.call(Method::GET, "/api/v1/apps", None, None)
            .await
            .status,
        StatusCode::OK
    );
    // The open endpoints stay open.
    assert_eq!(admin_get(&handle, "/healthz").await.status, StatusCode::OK);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_created_updated_and_deleted_through_the_api_is_served_accordingly() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);

    let project = api
        .call(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"name": "p"})),
            None,
        )
        .await;
    assert_eq!(project.status, StatusCode::CREATED, "{}", project.body);
    let created = api
        .call(Method::POST, "/api/v1/apps", Some(demo("web", "one")), None)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let port = handle.http_addr().unwrap().port();
    assert_eq!(
        created.body["url"],
        format!("http://web.p.test.local:{port}/")
    );
    let file = config.app_file("web");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "env values may be secrets");
    answers(&handle, "web.p.test.local", "/env/GREETING", "one\n").await;
    assert_eq!(
        api.call(
            Method::POST,
            "/api/v1/apps",
            Some(demo("web", "again")),
            None
        )
        .await
        .status,
        StatusCode::CONFLICT
    );

    // A stale version changes nothing; the current one lands and rolls a new revision.
    let version = created.etag.unwrap();
    let patch = json!({"run": {"env": {"GREETING": "two"}}});
    let updated = api
        .call(
            Method::PATCH,
            "/api/v1/apps/web",
            Some(patch),
            Some(&version),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    answers(&handle, "web.p.test.local", "/env/GREETING", "two\n").await;
    let before = apps_dir_contents(&config);
    let stale = json!({"run": {"env": {"GREETING": "three"}}});
    let refused = api
        .call(
            Method::PATCH,
            "/api/v1/apps/web",
            Some(stale),
            Some(&version),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        refused.body
    );
    assert_eq!(apps_dir_contents(&config), before);

    // An edit by hand shows at once.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"two\"", "\"by hand\"");
    write_atomically(&file, &text);
    let read = api.call(Method::GET, "/api/v1/apps/web", None, None).await;
    assert_eq!(read.body["spec"]["run"]["env"]["GREETING"], "by hand");

    let listed = api
        .call(Method::GET, "/api/v1/apps?project=p", None, None)
        .await;
    assert_eq!(listed.body["apps"][0]["name"], "web");
    let projects = api.call(Method::GET, "/api/v1/projects", None, None).await;
    assert_eq!(
        projects.body["projects"],
        json!([{"name": "p", "created": true, "apps": ["web"], "jobs": []}])
    );
    let busy = api
        .call(Method::DELETE, "/api/v1/projects/p", None, None)
        .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);

    let deleted = api
        .call(Method::DELETE, "/api/v1/apps/web", None, None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert!(!file.exists());
    let addr = handle.http_addr().unwrap();
    eventually("web to be gone", Duration::from_secs(10), || async {
        (get(addr, "web.p.test.local", "/").await.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_eq!(
        api.call(Method::GET, "/api/v1/apps/web", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let emptied = api
        .call(Method::DELETE, "/api/v1/projects/p", None, None)
        .await;
    assert_eq!(emptied.status, StatusCode::OK, "{}", emptied.body);
    let gone = api
        .call(Method::GET, "/api/v1/projects/p", None, None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    handle.shutdown().await;
}

#[tokio::test]
async fn refused_input_says_why_and_writes_nothing() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let before = apps_dir_contents(&config);
    let mut unknown_field = demo("new", "x");
    unknown_field["sclae"] = json!({"max_scale": 1});
    let mut bad_env = demo("new", "x");
    bad_env["run"]["env"]["1BAD-NAME"] = json!("x");
    let mut reserved_env = demo("new", "x");
    reserved_env["run"]["env"]["PORT"] = json!("9000");
    let mut bad_split = demo("new", "x");
    bad_split["traffic"] =
        json!([{"revision": "latest", "percent": 60}, {"revision": "new-00001", "percent": 30}]);
    let mut unknown_project_host = demo("new", "x");
    unknown_project_host["project"] = json!("Not A Project");
    let mut unknown_project = demo("new", "x");
    unknown_project["project"] = json!("nope");
    let cases = [
        (unknown_project, "unknown project \"nope\""),
        (demo("Bad_Name", "x"), "is not an app name"),
        (unknown_field, "sclae"),
        (bad_env, "1BAD-NAME"),
        (reserved_env, "PORT"),
        (bad_split, "100"),
        (unknown_project_host, "project"),
        (json!({"project": "p"}), "needs a \"name\""),
    ];
    for (body, says) in cases {
        let reply = api
            .call(Method::POST, "/api/v1/apps", Some(body.clone()), None)
            .await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.status);
        let message = reply.body["error"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
        assert_eq!(apps_dir_contents(&config), before, "{body} wrote something");
    }
    let renamed = api
        .call(
            Method::PATCH,
            "/api/v1/apps/web",
            Some(json!({"name": "other"})),
            None,
        )
        .await;
    assert_eq!(renamed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_scale = api
        .call(
            Method::PATCH,
            "/api/v1/apps/web",
            Some(json!({"scale": {"min_scale": 5, "max_scale": 2}})),
            None,
        )
        .await;
    assert_eq!(
        bad_scale.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bad_scale.body
    );
    assert_eq!(
        bad_scale.body["issues"][0]["field"]
            .as_str()
            .map(|f| f.starts_with("scale.")),
        Some(true),
        "{}",
        bad_scale.body
    );
    assert_eq!(apps_dir_contents(&config), before);
    for (body, status) in [
        (json!({"name": "p"}), StatusCode::CONFLICT),
        (
            json!({"name": "Not-Valid"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let reply = api
            .call(Method::POST, "/api/v1/projects", Some(body.clone()), None)
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
    assert!(
        !config.dir.path().join("projects").exists(),
        "no project file written"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_updates_each_land_or_are_told_why() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    let handle = config.start().await;
    let api = std::sync::Arc::new(Api::of(&config, &handle));
    let version = api
        .call(Method::GET, "/api/v1/apps/web", None, None)
        .await
        .etag
        .unwrap();

    // Ten writers without a version: each merges into whatever is there, so all land.
    // Ten writers that all name the same first version: only one of those can land.
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let (api, version) = (std::sync::Arc::clone(&api), version.clone());
            tokio::spawn(async move {
                let patch = json!({"run": {"env": {format!("VAR_{i}"): i.to_string()}}});
                let if_match = (i >= 10).then_some(version.as_str());
                (
                    i,
                    api.call(Method::PATCH, "/api/v1/apps/web", Some(patch), if_match)
                        .await
                        .status,
                )
            })
        })
        .collect();
    let mut landed = Vec::new();
    for writer in writers {
        let (i, status) = writer.await.unwrap();
        match status {
            StatusCode::OK => landed.push(i),
            StatusCode::PRECONDITION_FAILED => assert!(i >= 10, "writer {i} had no version"),
            other => panic!("writer {i}: {other}"),
        }
    }
    assert!((0..10).all(|i| landed.contains(&i)), "{landed:?}");
    assert!(
        landed.iter().filter(|i| **i >= 10).count() <= 1,
        "{landed:?}"
    );
    let spec = api
        .call(Method::GET, "/api/v1/apps/web", None, None)
        .await
        .body["spec"]
        .clone();
    let env = spec["run"]["env"].as_object().unwrap();
    let mut in_file: Vec<i32> = env
        .keys()
        .filter_map(|k| k.strip_prefix("VAR_")?.parse().ok())
        .collect();
    in_file.sort();
    landed.sort();
    assert_eq!(
        in_file, landed,
        "the file holds exactly the updates that landed"
    );
    tidegate::config::load(&config.gateway_file()).expect("the final file is valid");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_projects_made_through_the_api_outlive_a_restart() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let empty = json!({"name": "empty"});
    let made = api
        .call(Method::POST, "/api/v1/projects", Some(empty), None)
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let p = json!({"name": "p"});
    api.call(Method::POST, "/api/v1/projects", Some(p), None)
        .await;
    let created = api
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(demo("web", "kept")),
            None,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    handle.shutdown().await;

    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let read = api.call(Method::GET, "/api/v1/apps/web", None, None).await;
    assert_eq!(read.etag, created.etag, "the same file, the same version");
    let projects = api.call(Method::GET, "/api/v1/projects", None, None).await;
    let names: Vec<_> = projects.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["empty", "p"]);
    answers(&handle, "web.p.test.local", "/env/GREETING", "kept\n").await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_streams_what_instances_write_until_the_client_leaves() {
    use http_body_util::BodyExt;
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let stream = tokio::net::TcpStream::connect(handle.admin_addr())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/api/v1/apps/web/logs?follow=true")
        .header("host", "admin")
        .header("authorization", format!("Bearer {}", api.token))
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();

    // The app is at zero: a request starts an instance, whose start-up line streams in.
    assert_eq!(
        get(handle.http_addr().unwrap(), "web.p.test.local", "/")
            .await
            .status,
        StatusCode::OK
    );
    let mut seen = String::new();
    while !seen.contains("demo app listening") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("output within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }
    assert!(seen.starts_with("[web-00001-1] "), "{seen}");
    drop(body);

    let bad = api
        .call(
            Method::GET,
            "/api/v1/apps/web/logs?follow=true&instance=../../etc",
            None,
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    handle.shutdown().await;
}
