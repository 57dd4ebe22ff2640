//! Scale from zero with real processes on loopback: cold start, bursts, scale out, scale to
//! zero, crash replacement, graceful scale down, queue limits and no leaked children.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use http::StatusCode;
use support::process::spawn_gateway;
use support::*;

const HOST: &str = "web.p.test.local";

fn instance_of(body: &str) -> String {
    body.split_whitespace()
        .find_map(|part| part.strip_prefix("instance="))
        .unwrap_or_else(|| panic!("no instance in {body:?}"))
        .to_string()
}

async fn pid_of(addr: std::net::SocketAddr) -> i32 {
    get(addr, HOST, "/pid").await.body.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_starts_the_app_and_is_answered() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[("GREETING", "hi")], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let status = app_status(&handle, "web").await;
    assert_eq!(
        (&status["ready"], &status["starting"], &status["desired"]),
        (&0.into(), &0.into(), &0.into()),
        "nothing runs before a request: {status}"
    );

    let answer = get(addr, HOST, "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.body.contains("revision=web-00001"),
        "{}",
        answer.body
    );
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "hi\n");
    assert_eq!(
        metric(
            &handle,
            "tidegate_cold_start_duration_seconds_count{app=\"web\"}"
        )
        .await,
        1.0
    );
    let status = app_status(&handle, "web").await;
    assert_eq!(status["ready"], 1);
    assert_eq!(status["instances"][0]["state"], "ready");

    // The instance's output is served by the admin API.
    let logs = admin_get(&handle, "/apps/web/logs").await.body;
    assert!(logs.contains("demo app listening"), "{logs}");

    let pid = pid_of(addr).await;
    handle.shutdown().await;
    assert!(!pid_alive(pid), "the instance outlived the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_at_zero_all_succeed() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "max_scale = 10");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let requests: Vec<_> = (0..200)
        .map(|_| tokio::spawn(get(addr, HOST, "/?delay_ms=50")))
        .collect();
    let mut instances = HashSet::new();
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        instances.insert(instance_of(&answer.body));
    }
    assert!(!instances.is_empty());
    assert_eq!(
        metric(&handle, "tidegate_requests_total{app=\"web\",code=\"200\"}").await,
        200.0
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_load_scales_out_and_the_hard_limit_holds() {
    let config = ConfigDir::new("", "");
    config.demo_app(
        "web",
        &[],
        "concurrency = 2\ntarget_utilization = 1.0\nmax_scale = 6",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let load = Load::start(10, addr, HOST, "/?delay_ms=100");
    eventually(
        "five distinct instances to answer",
        Duration::from_secs(20),
        || async {
            let ids: HashSet<String> = load
                .answers()
                .iter()
                .filter(|(status, _)| *status == StatusCode::OK)
                .map(|(_, body)| instance_of(body))
                .collect();
            (ids.len() >= 5).then_some(())
        },
    )
    .await;
    // No instance ever holds more than `concurrency` requests.
    for _ in 0..20 {
        let status = app_status(&handle, "web").await;
        for instance in status["instances"].as_array().unwrap() {
            assert!(instance["in_flight"].as_u64().unwrap() <= 2, "{status}");
        }
    }
    let answers = load.stop().await;
    assert!(failed(&answers).is_empty(), "{:?}", failed(&answers));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_app_scales_to_zero_after_the_grace_period() {
    let config = ConfigDir::new("", "");
    config.demo_app(
        "web",
        &[],
        "scale_to_zero_grace = \"1s\"\nstable_window = \"2s\"\npanic_window = \"1s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let started = std::time::Instant::now();
    let pid = pid_of(addr).await;
    eventually(
        "the app to scale to zero",
        Duration::from_secs(15),
        || async {
            (metric(&handle, "tidegate_instances{app=\"web\",state=\"ready\"}").await == 0.0
                && metric(
                    &handle,
                    "tidegate_instances{app=\"web\",state=\"draining\"}",
                )
                .await
                    == 0.0)
                .then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "scaled to zero within the grace period"
    );
    wait_gone(pid).await;
    // And it comes back on the next request.
    assert_eq!(get(addr, HOST, "/").await.status, StatusCode::OK);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_replaced() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "min_scale = 1");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let first = get(addr, HOST, "/").await;
    let first_id = instance_of(&first.body);
    let pid = pid_of(addr).await;

    let load = Load::start(1, addr, HOST, "/?delay_ms=5");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(
        "the crash to be counted",
        Duration::from_secs(10),
        || async {
            (metric(&handle, "tidegate_instance_crashes_total{app=\"web\"}").await == 1.0)
                .then_some(())
        },
    )
    .await;
    let replacement = eventually(
        "a replacement to answer",
        Duration::from_secs(10),
        || async {
            let answer = get(addr, HOST, "/").await;
            (answer.status == StatusCode::OK && instance_of(&answer.body) != first_id)
                .then(|| instance_of(&answer.body))
        },
    )
    .await;
    assert_ne!(replacement, first_id);
    assert!(!load.stop().await.is_empty());
    let status = app_status(&handle, "web").await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("killed by signal 9"),
        "{status}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_under_steady_load_fails_no_request() {
    let config = ConfigDir::new("", "");
    config.demo_app(
        "web",
        &[],
        "concurrency = 1\ntarget_utilization = 1.0\nmax_scale = 6\nstable_window = \"2s\"\npanic_window = \"1s\"\nscale_to_zero_grace = \"30s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let burst = Load::start(5, addr, HOST, "/?delay_ms=20");
    let steady = Load::start(1, addr, HOST, "/?delay_ms=20");
    eventually("four ready instances", Duration::from_secs(20), || async {
        (metric(&handle, "tidegate_instances{app=\"web\",state=\"ready\"}").await >= 4.0)
            .then_some(())
    })
    .await;
    let mut answers = burst.stop().await;
    // One client keeps going while the app scales down to what it needs.
    eventually("the app to scale down", Duration::from_secs(30), || async {
        (metric(&handle, "tidegate_instances{app=\"web\",state=\"ready\"}").await <= 2.0)
            .then_some(())
    })
    .await;
    answers.extend(steady.stop().await);
    assert!(
        failed(&answers).is_empty(),
        "requests failed during scale down: {:?}",
        failed(&answers)
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_503_and_a_long_wait_is_504() {
    let config = ConfigDir::new("", "");
    config.demo_app(
        "web",
        &[("STARTUP_DELAY_MS", "3000")],
        "queue_depth = 1\ncold_start_timeout = \"500ms\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let waiting = tokio::spawn(get(addr, HOST, "/"));
    eventually("one request to wait", Duration::from_secs(5), || async {
        (metric(&handle, "tidegate_activator_queue_depth{app=\"web\"}").await == 1.0).then_some(())
    })
    .await;
    let full = get(addr, HOST, "/").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.body.contains("app \"web\" is busy"), "{}", full.body);
    assert!(full.headers.contains_key("retry-after"));

    let late = waiting.await.unwrap();
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(late.body.contains("cold_start_timeout"), "{}", late.body);
    assert!(late.headers.contains_key("retry-after"));
    assert_eq!(
        metric(&handle, "tidegate_activator_queue_depth{app=\"web\"}").await,
        0.0
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_gets_ready_fails_waiters_with_503() {
    let config = ConfigDir::new("", "");
    config.demo_app(
        "web",
        &[("STARTUP_DELAY_MS", "10000")],
        "startup_timeout = \"300ms\"",
    );
    let handle = config.start().await;
    let answer = get(handle.http_addr().unwrap(), HOST, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("failed to start"), "{}", answer.body);
    assert!(answer.body.contains("startup_timeout"), "{}", answer.body);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_leaves_the_queue() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[("STARTUP_DELAY_MS", "3000")], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let client = tokio::spawn(get(addr, HOST, "/"));
    eventually("the request to wait", Duration::from_secs(5), || async {
        (metric(&handle, "tidegate_activator_queue_depth{app=\"web\"}").await == 1.0).then_some(())
    })
    .await;
    client.abort();
    eventually("the queue to empty", Duration::from_secs(5), || async {
        (metric(&handle, "tidegate_activator_queue_depth{app=\"web\"}").await == 0.0).then_some(())
    })
    .await;
    // Logged and counted as 499 (client closed request).
    eventually(
        "the abandoned request to be counted",
        Duration::from_secs(5),
        || async {
            (metric(&handle, "tidegate_requests_total{app=\"web\",code=\"499\"}").await == 1.0)
                .then_some(())
        },
    )
    .await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_die_with_a_gateway_killed_by_sigkill() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    // A real gateway process, not an in-process one, so it can be SIGKILLed.
    let addr = config.fixed_ports("").http;
    let mut gateway = spawn_gateway(&config, &[], std::process::Stdio::null(), addr).await;
    let pid = pid_of(addr).await;
    assert!(pid_alive(pid));
    gateway.start_kill().unwrap();
    gateway.wait().await.unwrap();
    wait_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_app_finishes_its_requests_before_its_instances_stop() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let pid = pid_of(addr).await;
    let slow = tokio::spawn(get(addr, HOST, "/?delay_ms=500"));
    wait_in_flight(&handle, "web", 1.0).await;
    std::fs::remove_file(config.app_file("web")).unwrap();
    handle.reload().await.unwrap();
    assert_eq!(get(addr, HOST, "/").await.status, StatusCode::NOT_FOUND);
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    wait_gone(pid).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_an_app_from_process_to_static_routes_to_the_static_upstream() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let pid = pid_of(addr).await;
    let echo = echo_backend("static").await;
    config.static_app("web", &[echo.addr], "", "");
    handle.reload().await.unwrap();
    wait_gone(pid).await;
    let answer = get(addr, HOST, "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.starts_with("backend=static"), "{}", answer.body);
    handle.shutdown().await;
}
