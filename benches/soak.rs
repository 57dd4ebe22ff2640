//! Soak (issue 11): the gateway binary, as operators run it, under mixed load for a long time
//! while its config changes every 2 s, an instance is killed every 10 s and an app cycles
//! between zero and several instances. It reports what must stay at zero or flat:
//!
//! - failed requests (all are idempotent GETs), split into those that were in flight on an
//!   instance the soak had just killed (expected) and all others (target: 0);
//! - the gateway's RSS and open file descriptors at start, middle and end (target: flat);
//! - processes left behind after the gateway's SIGTERM (target: 0), found by an environment
//!   variable unique to this run that every instance carries.
//!
//! Load: HTTP/1.1 keep-alive, h2c, HTTPS (HTTP/1.1 and h2 by ALPN) and WebSocket echo sessions
//! on a steady app (2-4 instances), the same on an app that rolls a new revision on every
//! reload, and bursts of 24 clients on an app that scales 0 -> N -> 0 between them.
//!
//! Run: `cargo bench --bench soak` (DURATION=seconds, default 600). Under `cargo test
//! --all-targets` it runs for a few seconds, so the code stays tested.

mod support;

#[path = "soak/clients.rs"]
mod clients;
#[path = "soak/gateway.rs"]
mod gateway;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clients::{Client, Tally};
use gateway::SoakGateway;

const TIDEGATE: &str = env!("CARGO_BIN_EXE_tidegate");
/// A failure of the steady app this soon after a kill counts as the killed instance's.
const KILL_WINDOW: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let duration = Duration::from_secs(
        std::env::var("DURATION")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { 600 } else { 6 }),
    );
    let gateway = SoakGateway::start(TIDEGATE).await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for host in ["steady.p.soak", "rolling.p.soak"] {
        for client in [
            Client::Http1,
            Client::H2c,
            Client::TlsHttp1,
            Client::TlsH2,
            Client::WebSocket,
        ] {
            for _ in 0..2 {
                let (gateway, tally, stop) = (gateway.clone(), tally.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    client.run(&gateway, host, &tally, &stop).await
                }));
            }
        }
    }
    let burst = {
        let (gateway, tally, stop) = (gateway.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move { clients::burst_cycles(&gateway, &tally, &stop).await })
    };

    let start_usage = gateway.usage();
    let mut middle_usage = None;
    let mut reloads = 0u64;
    let mut kills = Vec::new();
    let mut next_kill = Instant::now() + Duration::from_secs(10);
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(2)).await;
        reloads += 1;
        gateway.write_rolling(reloads);
        if Instant::now() >= next_kill {
            next_kill += Duration::from_secs(10);
            if let Some(pid) = gateway.kill_one_steady_instance().await {
                kills.push((Instant::now(), pid));
            }
        }
        if middle_usage.is_none() && started.elapsed() >= duration / 2 {
            middle_usage = Some(gateway.usage());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let cycles = burst.await.unwrap_or_default();
    let end_usage = gateway.usage();
    let leaked = gateway.stop().await;

    let failures = tally.failures();
    let (near_kill, other): (Vec<_>, Vec<_>) = failures.iter().partition(|failure| {
        failure.host == "steady.p.soak"
            && kills
                .iter()
                .any(|(at, _)| failure.at >= *at - KILL_WINDOW && failure.at <= *at + KILL_WINDOW)
    });
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "soak: {:.0} s ({build} build), {} config reloads, {} instances killed, {} burst cycles 0 -> N -> 0 (longest to zero {:.1} s)",
        started.elapsed().as_secs_f64(),
        reloads,
        kills.len(),
        cycles.len(),
        cycles.iter().map(Duration::as_secs_f64).fold(0.0, f64::max),
    );
    for (kind, ok) in tally.successes() {
        println!("  {kind:<10} {ok:>9} answers");
    }
    println!(
        "  failed requests: {} in flight on a killed instance, {} other (target 0)",
        near_kill.len(),
        other.len()
    );
    for failure in other.iter().take(10) {
        println!(
            "    {:>7.2} s {} {}: {}",
            failure.at.duration_since(started).as_secs_f64(),
            failure.kind,
            failure.host,
            failure.what
        );
    }
    println!(
        "  WebSocket sessions ended by a kill or rollout: {}",
        tally.sessions_cut()
    );
    let middle_usage = middle_usage.unwrap_or(end_usage);
    println!(
        "  gateway RSS MiB / fds: start {start_usage}, middle {middle_usage}, end {end_usage}"
    );
    println!("  processes left after SIGTERM: {leaked} (target 0)");
    assert_eq!(leaked, 0, "instances outlived the gateway");
    assert!(
        full || other.is_empty(),
        "failed requests: {:?}",
        other.iter().take(5).map(|f| &f.what).collect::<Vec<_>>()
    );
}
