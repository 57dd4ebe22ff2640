//! Cold-start overhead and scale-out speed, measured in one run:
//!
//! 1. the demo app's own time from spawn to accepting connections (polled every 100 us);
//! 2. the time to the first response through tidegate for an app at zero (a fresh app each
//!    round, so every round is a real cold start);
//!
//! tidegate's overhead is (2) - (1), medians over the rounds. Then a 1 -> 50 concurrent-client
//! step against an app with `concurrency = 10` (7 per instance at 70% utilisation): seconds
//! until the ready instance count reaches the autoscaler's decision.
//!
//! Run: `cargo bench --bench cold_start` (ROUNDS=N to change the 30 rounds).

mod support;

use support::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

const TIDEGATE: &str = env!("CARGO_BIN_EXE_tidegate");

#[tokio::main]
async fn main() {
    // Under `cargo test --all-targets` (no --bench flag) run a smoke version: the code stays
    // tested without the test suite paying for a benchmark.
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds = rounds(30, 2);
    let dir = config_dir();
    for round in 0..rounds {
        std::fs::write(
            dir.path().join(format!("apps/cold{round}.toml")),
            format!("project = \"p\"\n[run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\n[scale]\nscale_to_zero_grace = \"1h\"\n"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("apps/step.toml"),
        format!("project = \"p\"\n[run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\n[scale]\nconcurrency = 10\nmax_scale = 20\n"),
    )
    .unwrap();
    let gateway = tidegate::Gateway::start(dir.path().join("tidegate.toml"))
        .await
        .unwrap();
    let addr = gateway.http_addr().unwrap();

    let mut own = Vec::new();
    let mut through = Vec::new();
    for round in 0..rounds {
        own.push(spawn_to_listen().await);
        let started = Instant::now();
        let status = send(addr, &format!("cold{round}.p.bench"), "/").await.0;
        through.push(started.elapsed());
        assert_eq!(status, 200);
    }
    own.sort();
    through.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let p90 = |v: &[Duration]| v[v.len() * 9 / 10];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("cold start, {rounds} rounds ({build} build, demo app, readiness by TCP connect):");
    println!(
        "  demo app spawn -> accepting:      median {:7.2} ms  p90 {:7.2} ms",
        ms(median(&own)),
        ms(p90(&own))
    );
    println!(
        "  first response through tidegate: median {:7.2} ms  p90 {:7.2} ms",
        ms(median(&through)),
        ms(p90(&through))
    );
    println!(
        "  tidegate cold-start overhead:     median {:7.2} ms",
        ms(median(&through)) - ms(median(&own))
    );

    if !full {
        gateway.shutdown().await;
        return;
    }
    // 1 -> 50 concurrent clients.
    let host = "step.p.bench";
    assert_eq!(send(addr, host, "/").await.0, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    send(addr, host, "/?delay_ms=50").await;
                }
            })
        })
        .collect();
    let admin = gateway.admin_addr();
    let (ready, desired) = loop {
        let apps: serde_json::Value =
            serde_json::from_str(&send(admin, "admin", "/apps").await.1).unwrap();
        let app = apps["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "step")
            .unwrap()
            .clone();
        let (ready, desired) = (
            app["ready"].as_u64().unwrap(),
            app["desired"].as_u64().unwrap(),
        );
        if desired >= 7 && ready >= desired {
            break (ready, desired);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never reached the desired count"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "1 -> 50 clients (concurrency 10, target 7/instance): {desired} desired, {ready} ready after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    gateway.shutdown().await;
}

/// Spawns the demo app on a free port and times spawn -> first accepted connection.
async fn spawn_to_listen() -> Duration {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut child = tokio::process::Command::new(TIDEGATE)
        .args(["demo-app", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    let elapsed = started.elapsed();
    let _ = child.kill().await;
    elapsed
}
