//! What a process instance gets and what the gateway says about it: a clean environment with
//! the variables Code Engine and Knative give their instances, and a clear word when an app
//! does not listen where the gateway looks for it. Real processes.

mod support;

use http::StatusCode;
use support::*;

/// A demo-app process app with extra `[run]` lines and `[scale]` lines.
fn demo_with(config: &ConfigDir, name: &str, run: &str, scale: &str) {
    config.write_app(
        name,
        &format!(
            "project = \"p\"\n[run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\nreadiness_path = \"/healthz\"\n{run}\n[scale]\n{scale}\n"
        ),
    );
}

#[tokio::test]
async fn an_instance_gets_a_clean_environment_with_the_injected_variables() {
    // The gateway (this test process) holds a secret and a value an app asks for by name.
    std::env::set_var("GATEWAY_SECRET_FOR_TEST", "hunter2");
    std::env::set_var("SHARED_FOR_TEST", "passed on");
    let config = ConfigDir::new("", "");
    demo_with(
        &config,
        "web",
        "env = { GREETING = \"hi\" }\ninherit_env = [\"SHARED_FOR_TEST\"]",
        "",
    );
    demo_with(&config, "other", "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let env = |app: &'static str, name: &'static str| async move {
        let answer = get(
            addr,
            &format!("{app}.p.test.local"),
            &format!("/env/{name}"),
        )
        .await;
        (answer.status == StatusCode::OK).then(|| answer.body.trim_end().to_string())
    };
    assert_eq!(env("web", "GATEWAY_SECRET_FOR_TEST").await, None);
    assert_eq!(
        env("web", "SHARED_FOR_TEST").await.as_deref(),
        Some("passed on")
    );
    assert_eq!(
        env("other", "SHARED_FOR_TEST").await,
        None,
        "only for apps that ask"
    );
    assert_eq!(env("web", "GREETING").await.as_deref(), Some("hi"));
    for (name, value) in [
        ("CE_APP", "web"),
        ("CE_PROJECT", "p"),
        ("CE_SUBDOMAIN", "p"),
        ("CE_DOMAIN", "test.local"),
        ("K_SERVICE", "web"),
        ("K_CONFIGURATION", "web"),
        ("K_REVISION", "web-00001"),
    ] {
        assert_eq!(env("web", name).await.as_deref(), Some(value), "{name}");
    }
    let port = env("web", "PORT").await.expect("PORT");
    let instance = app_status(&handle, "web").await["instances"][0]["addr"].clone();
    assert_eq!(instance, format!("127.0.0.1:{port}"));
    assert!(env("web", "PATH").await.is_some(), "a program needs PATH");
    handle.shutdown().await;
}

#[tokio::test]
async fn names_the_gateway_sets_cannot_be_set_by_an_app() {
    let config = ConfigDir::new("", "");
    demo_with(
        &config,
        "web",
        "env = { PORT = \"8000\", K_REVISION = \"mine\" }\ninherit_env = [\"TIDEGATE_TOKEN\"]",
        "",
    );
    let handle = config.start().await;
    let apps: serde_json::Value =
        serde_json::from_str(&admin_get(&handle, "/apps").await.body).unwrap();
    let issues = apps["rejected"][0]["issues"].to_string();
    assert!(
        issues.contains("run.env.PORT: is set by the gateway"),
        "{issues}"
    );
    assert!(
        issues.contains("run.env.K_REVISION: is set by the gateway"),
        "{issues}"
    );
    assert!(issues.contains("run.inherit_env[0]"), "{issues}");
    handle.shutdown().await;
}

#[tokio::test]
async fn an_app_that_does_not_listen_on_port_is_named_with_its_output() {
    let config = ConfigDir::new("", "");
    // A server hard-coded to another port: it says so, then never listens on $PORT.
    config.write_app(
        "deaf",
        "project = \"p\"\n[run]\ncommand = [\"sh\", \"-c\", \"echo listening on 8000; exec sleep 60\"]\n\
         [scale]\nstartup_timeout = \"1s\"\ncold_start_timeout = \"10s\"\n",
    );
    // The same, but the request gives up first: its 504 says what it waited for.
    config.write_app(
        "slow",
        "project = \"p\"\n[run]\ncommand = [\"sh\", \"-c\", \"exec sleep 60\"]\n\
         [scale]\nstartup_timeout = \"10s\"\ncold_start_timeout = \"500ms\"\n",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();

    let answer = get(addr, "deaf.p.test.local", "/").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    for words in [
        "nothing listened on 127.0.0.1:",
        "within 1s (startup_timeout)",
        "the app must listen on the port in $PORT",
        "its last output: listening on 8000",
    ] {
        assert!(
            answer.body.contains(words),
            "{words:?} missing: {}",
            answer.body
        );
    }
    let status = app_status(&handle, "deaf").await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("nothing listened on"),
        "{status}"
    );

    let answer = get(addr, "slow.p.test.local", "/").await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("has been starting for"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("$PORT"), "{}", answer.body);
    handle.shutdown().await;
}
