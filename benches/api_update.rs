//! `app update` to the new revision serving: the time from a management API update of an
//! env var (what `tidegate app update --env` sends) until requests get the new value. It
//! includes the write, the config watcher's debounce (150 ms), the new revision's start and
//! readiness probe, and the takeover. Process app: the built-in demo app.
//!
//! Run: `cargo bench --bench api_update` (ROUNDS=N, default 20).

mod support;

use support::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TIDEGATE: &str = env!("CARGO_BIN_EXE_tidegate");

#[tokio::main]
async fn main() {
    let rounds = rounds(20, 2);
    let dir = config_dir();
    let (gateway, token) = gateway(&dir).await;
    let admin = gateway.admin_addr();
    let addr = gateway.http_addr().unwrap();
    let token = token.as_str();
    api(admin, token, "POST", "/api/v1/projects", r#"{"name":"p"}"#).await;
    let app = format!(
        r#"{{"name":"web","project":"p","run":{{"command":["{TIDEGATE}","demo-app"],"env":{{"GREETING":"start"}},"readiness_path":"/healthz"}}}}"#
    );
    api(admin, token, "POST", "/api/v1/apps", &app).await;
    wait_for(addr, "start").await;

    let mut times = Vec::new();
    for round in 0..rounds {
        let value = format!("round-{round}");
        let patch = format!(r#"{{"run":{{"env":{{"GREETING":"{value}"}}}}}}"#);
        let started = Instant::now();
        api(admin, token, "PATCH", "/api/v1/apps/web", &patch).await;
        wait_for(addr, &value).await;
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "app update -> new revision serving, {rounds} rounds ({build} build, demo app): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        ms(*times.last().unwrap())
    );
    gateway.shutdown().await;
}

/// Polls every millisecond until `/env/GREETING` answers `value`.
async fn wait_for(addr: SocketAddr, value: &str) {
    let started = Instant::now();
    let want = format!("{value}\n");
    loop {
        if let Some((200, body)) = try_send(addr, "web.p.bench", "/env/GREETING").await {
            if body == want {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never served {value}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
