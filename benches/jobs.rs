//! A 100-index job of `true`: the time from `jobrun submit` to every index succeeded, and
//! the gateway's overhead per index, against the same 100 `true` processes spawned directly.
//!
//! Sequential (`max_parallel = 1`) isolates the per-index cost: overhead per index =
//! (run time − direct time) / 100, where direct time is 100 `true`s spawned and waited for
//! one after another by this bench. All at once (no `max_parallel`) is what a user sees.
//!
//! Also timed: the same processes forked with a (no-op) pre_exec hook, as the gateway must
//! fork to set the parent-death signal, which std's posix_spawn path cannot.
//!
//! Run: `cargo bench --bench jobs` (ROUNDS=N, default 5; under `cargo test` 1 round).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

const INDICES: usize = 100;

#[tokio::main]
async fn main() {
    let rounds = rounds(5, 1);
    let dir = config_dir();
    let (gateway, token) = gateway(&dir).await;
    let admin = gateway.admin_addr();
    let token = token.as_str();
    api(admin, token, "POST", "/api/v1/projects", r#"{"name":"p"}"#).await;
    for (name, parallel) in [("all", ""), ("one", r#","max_parallel":1"#)] {
        let job = format!(
            r#"{{"name":"{name}","project":"p","array_indices":"0-{}","run":{{"command":["true"]}}{parallel}}}"#,
            INDICES - 1
        );
        api(admin, token, "POST", "/api/v1/jobs", &job).await;
    }
    let (mut all, mut one, mut direct, mut forked) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        all.push(run(admin, token, "all").await);
        one.push(run(admin, token, "one").await);
        let started = Instant::now();
        for _ in 0..INDICES {
            let status = tokio::process::Command::new("true").status().await.unwrap();
            assert!(status.success());
        }
        direct.push(started.elapsed());
        let started = Instant::now();
        for _ in 0..INDICES {
            let mut command = tokio::process::Command::new("true");
            // As the gateway must (to set the parent-death signal between fork and exec):
            // with a pre_exec hook the standard library forks instead of posix_spawn.
            #[allow(unsafe_code)]
            // SAFETY: the hook does nothing.
            unsafe {
                command.pre_exec(|| Ok(()));
            }
            assert!(command.status().await.unwrap().success());
        }
        forked.push(started.elapsed());
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (all, one, direct, forked) = (
        median(&mut all),
        median(&mut one),
        median(&mut direct),
        median(&mut forked),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{INDICES}-index job of `true` ({build} build, medians of {rounds}): submit -> all succeeded {:.1} ms all at once, {:.1} ms one at a time; the same {INDICES} processes spawned directly one at a time {:.1} ms (posix_spawn), {:.1} ms (fork + exec); gateway overhead per index {:.2} ms ({:.2} ms beyond fork + exec)",
        ms(all),
        ms(one),
        ms(direct),
        ms(forked),
        (ms(one) - ms(direct)) / INDICES as f64,
        (ms(one) - ms(forked)) / INDICES as f64
    );
    gateway.shutdown().await;
}

/// Submits a run of `job` and polls (every millisecond) until it has finished; the time.
async fn run(admin: SocketAddr, token: &str, job: &str) -> Duration {
    let started = Instant::now();
    let body = api(
        admin,
        token,
        "POST",
        "/api/v1/jobruns",
        &format!(r#"{{"job":"{job}"}}"#),
    )
    .await;
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = format!("/api/v1/jobruns/{}", run["name"].as_str().unwrap());
    loop {
        let record: serde_json::Value =
            serde_json::from_str(&api(admin, token, "GET", &path, "").await).unwrap();
        match record["state"].as_str() {
            Some("pending" | "running") => {}
            Some("succeeded") => return started.elapsed(),
            other => panic!("{job} ended {other:?}: {record}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{job} never finished"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
