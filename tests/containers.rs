//! The container runtime against a real engine (Podman's Docker-compatible API, started by
//! `scripts/test`; `DOCKER_HOST` points at it). The test image is built by the gateway itself
//! from a `[build]` context: a static busybox serving files and two CGI scripts.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bollard::query_parameters::KillContainerOptionsBuilder;
use http::StatusCode;
use support::engine::{engine, Engine};
use support::*;

/// A container app built from the busybox context, with `[container]` env and `[scale]`;
/// it keeps one revision's spec besides those in use.
fn container_app(config: &ConfigDir, name: &str, greeting: &str, build: &str, scale: &str) {
    config.write_app(
        name,
        &format!(
            "project = \"p\"\nruntime = \"container\"\nrevision_history = 1\n[container]\nenv = {{ GREETING = \"{greeting}\" }}\n\
             readiness_path = \"/\"\n[build]\ncontext = \"../ctx\"\n{build}\n[scale]\n{scale}\n"
        ),
    );
}

fn greeting_of(body: &str) -> (&str, &str) {
    let mut parts = body.split_whitespace();
    let greeting = parts
        .next()
        .and_then(|p| p.strip_prefix("greeting="))
        .unwrap_or("?");
    let instance = parts
        .next()
        .and_then(|p| p.strip_prefix("instance="))
        .unwrap_or("?");
    (greeting, instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_app_starts_from_zero_scales_out_and_returns_to_zero() {
    let engine = Engine::new("scale");
    let config = &engine.config;
    container_app(
        config,
        "boxscale",
        "hi",
        "",
        "concurrency = 1\nmax_scale = 3\nscale_to_zero_grace = \"1s\"\nstable_window = \"6s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert!(
        engine.containers().await.is_empty(),
        "nothing runs before a request"
    );

    let answer = get(addr, "boxscale.p.test.local", "/cgi-bin/env").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // One waiting request at concurrency 1 and utilisation 0.7 asks for two instances: either
    // may be ready first.
    let (greeting, instance) = greeting_of(&answer.body);
    assert_eq!(greeting, "hi");
    assert!(instance.starts_with("boxscale-00001-"), "{instance}");
    assert_eq!(
        metric(
            &handle,
            "tidegate_cold_start_duration_seconds_count{app=\"boxscale\"}"
        )
        .await,
        1.0
    );

    // Slow requests four at a time, one per instance at most: more containers.
    let load = Load::start(4, addr, "boxscale.p.test.local", "/cgi-bin/slow");
    engine
        .wait_containers("three containers under load", |n| n == 3)
        .await;
    let answers = load.stop().await;
    assert!(failed(&answers).is_empty(), "{:?}", failed(&answers));
    assert!(answers.iter().all(|(_, body)| body == "slow\n"));

    // Idle again: every container is stopped and removed.
    engine
        .wait_containers("no container after the grace period", |n| n == 0)
        .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_through_the_engine_is_replaced() {
    let engine = Engine::new("kill");
    let config = &engine.config;
    let docker = self::engine();
    container_app(config, "boxkill", "hi", "", "min_scale = 1");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let first = get(addr, "boxkill.p.test.local", "/cgi-bin/env").await;
    assert_eq!(
        greeting_of(&first.body).1,
        "boxkill-00001-1",
        "{}",
        first.body
    );

    let names = engine.containers().await;
    assert_eq!(names.len(), 1, "{names:?}");
    docker
        .kill_container(
            &names[0],
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
        .await
        .unwrap();
    eventually(
        "a replacement to answer",
        Duration::from_secs(30),
        || async {
            let answer = get(addr, "boxkill.p.test.local", "/cgi-bin/env").await;
            (answer.status == StatusCode::OK && greeting_of(&answer.body).1 != "boxkill-00001-1")
                .then_some(())
        },
    )
    .await;
    assert!(metric(&handle, "tidegate_instance_crashes_total{app=\"boxkill\"}").await >= 1.0);
    let status = app_status(&handle, "boxkill").await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with code 137"),
        "{status}"
    );
    handle.shutdown().await;
    engine
        .wait_containers("no container after shutdown", |n| n == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_keeps_the_previous_revision_serving() {
    let engine = Engine::new("build");
    let config = &engine.config;
    let docker = self::engine();
    container_app(config, "boxbuild", "v1", "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let answer = get(addr, "boxbuild.p.test.local", "/cgi-bin/env").await;
    assert_eq!(greeting_of(&answer.body).0, "v1", "{}", answer.body);
    let log = admin_get(&handle, "/apps/boxbuild/builds/boxbuild-00001").await;
    assert!(
        log.body.contains("built tidegate/boxbuild:boxbuild-00001"),
        "{}",
        log.body
    );
    assert!(docker
        .inspect_image("tidegate/boxbuild:boxbuild-00001")
        .await
        .is_ok());

    // A new revision whose build fails: reported, and traffic stays on the first one.
    container_app(
        config,
        "boxbuild",
        "v2",
        "dockerfile = \"Broken.Containerfile\"",
        "",
    );
    eventually(
        "the build failure to be reported",
        Duration::from_secs(30),
        || async {
            let status = app_status(&handle, "boxbuild").await;
            (status["revision"] == "boxbuild-00002"
                && status["last_error"].as_str().is_some_and(|e| {
                    e.contains("image build failed") && e.contains("no-such-file")
                }))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(
            &handle,
            "tidegate_builds_total{app=\"boxbuild\",result=\"error\"}"
        )
        .await,
        1.0
    );
    let log = admin_get(&handle, "/apps/boxbuild/builds").await;
    assert!(log.body.contains("COPY no-such-file"), "{}", log.body);
    for _ in 0..20 {
        let answer = get(addr, "boxbuild.p.test.local", "/cgi-bin/env").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(greeting_of(&answer.body).0, "v1", "{}", answer.body);
    }

    // Fixed: the third revision builds once and takes over.
    container_app(config, "boxbuild", "v3", "", "");
    eventually("v3 to answer", Duration::from_secs(30), || async {
        let answer = get(addr, "boxbuild.p.test.local", "/cgi-bin/env").await;
        (greeting_of(&answer.body).0 == "v3").then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &handle,
            "tidegate_builds_total{app=\"boxbuild\",result=\"ok\"}"
        )
        .await,
        2.0
    );

    // Once the first revision has drained and a fourth one is made, the first leaves the
    // history (revision_history = 1) and its image goes with it.
    eventually("web-00001 to drain", Duration::from_secs(30), || async {
        let status = app_status(&handle, "boxbuild").await;
        let instances = status["instances"].as_array().unwrap().clone();
        instances
            .iter()
            .all(|i| i["revision"] == "boxbuild-00003")
            .then_some(())
    })
    .await;
    container_app(config, "boxbuild", "v4", "", "");
    eventually(
        "the first revision's image to be removed",
        Duration::from_secs(30),
        || async {
            docker
                .inspect_image("tidegate/boxbuild:boxbuild-00001")
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    handle.shutdown().await;
    engine
        .wait_containers("no container after shutdown", |n| n == 0)
        .await;
}

/// A gateway in its own process, so it can be killed with SIGKILL.
struct GatewayProcess {
    child: Child,
    http: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl GatewayProcess {
    async fn start(config_file: &Path) -> Self {
        let text = std::fs::read_to_string(config_file).unwrap();
        let port = |key: &str| -> std::net::SocketAddr {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap()
                .parse()
                .unwrap()
        };
        let child = Command::new(TIDEGATE)
            .args(["serve", "--config"])
            .arg(config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = GatewayProcess {
            child,
            http: port("http"),
            admin: port("admin"),
        };
        eventually("the gateway to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(gateway.admin)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        gateway
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_leaves_no_stray_container_after_a_restart() {
    let engine = Engine::new("stray");
    let config = &engine.config;
    let (http, admin) = (free_addr(), free_addr());
    std::fs::write(
        config.gateway_file(),
        format!(
            "[gateway]\nhttp = \"{http}\"\nadmin = \"{admin}\"\ndomain = \"test.local\"\n\
             [container_engine]\ngateway_id = \"{}\"\n",
            engine.id
        ),
    )
    .unwrap();
    container_app(config, "boxstray", "hi", "", "");

    let mut gateway = GatewayProcess::start(&config.gateway_file()).await;
    let answer = get(gateway.http, "boxstray.p.test.local", "/").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    gateway.child.kill().unwrap(); // SIGKILL: no chance to stop anything
    gateway.child.wait().unwrap();
    drop(gateway);
    assert_eq!(
        engine.containers().await.len(),
        1,
        "the container outlives a gateway killed with SIGKILL"
    );

    let gateway = GatewayProcess::start(&config.gateway_file()).await;
    engine
        .wait_containers("the restarted gateway to remove the stray", |n| n == 0)
        .await;
    // And it serves as before, from zero.
    let answer = get(gateway.http, "boxstray.p.test.local", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    // A graceful stop removes its container.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    engine
        .wait_containers("no container after SIGTERM", |n| n == 0)
        .await;
}
