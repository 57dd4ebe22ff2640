//! Memory that idle proxied WebSocket sessions add to the gateway: RSS of a release tidegate
//! process before and after N sessions are open (each has echoed one message), divided by N.
//! The echo backend is the demo app in its own process, so only the gateway is measured.
//!
//! Run: `cargo bench --bench websocket_memory` (SESSIONS=N to change the 10,000).

mod support;

use support::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TIDEGATE: &str = env!("CARGO_BIN_EXE_tidegate");

#[tokio::main]
async fn main() {
    // Each session is two sockets in the gateway: raise the soft file limit to the hard one
    // (children inherit it) and fit the session count under it.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let fits = ((hard.saturating_sub(256)) / 2) as usize;
    // Under `cargo test --all-targets` (no --bench flag): a smoke run of a few sessions.
    let full = std::env::args().any(|arg| arg == "--bench");
    let wanted: usize = std::env::var("SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000 } else { 50 });
    let sessions = wanted.min(fits);
    if sessions < wanted {
        println!("note: the file limit ({hard}) fits {sessions} sessions, not {wanted}; measuring {sessions}");
    }

    let backend_port = free_port();
    let mut backend = tokio::process::Command::new(TIDEGATE)
        .args(["demo-app", "--port", &backend_port.to_string()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    let http = free_port();
    std::fs::write(
        dir.path().join("tidegate.toml"),
        format!("[gateway]\nhttp = \"127.0.0.1:{http}\"\nadmin = \"127.0.0.1:0\"\nmax_connections = {}\n", sessions * 2),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("apps/echo.toml"),
        format!("project = \"p\"\nruntime = \"static\"\n[static]\nupstreams = [\"127.0.0.1:{backend_port}\"]\n[scale]\nconcurrency = 0\nqueue_depth = {sessions}\n"),
    )
    .unwrap();
    let mut gateway = tokio::process::Command::new(TIDEGATE)
        .args(["serve", "--config"])
        .arg(dir.path().join("tidegate.toml"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let gateway_pid = gateway.id().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    wait_port(addr).await;
    wait_port(SocketAddr::from(([127, 0, 0, 1], backend_port))).await;

    // Warm up: one session, so buffers and pools that exist once are not counted per session.
    let mut warm = open(addr).await;
    warm.close(None).await.ok();
    let before = rss_kib(gateway_pid);
    let started = Instant::now();
    let mut open_sockets = Vec::with_capacity(sessions);
    while open_sockets.len() < sessions {
        let batch = (sessions - open_sockets.len()).min(500);
        let tasks: Vec<_> = (0..batch).map(|_| tokio::spawn(open(addr))).collect();
        for task in tasks {
            open_sockets.push(task.await.unwrap());
        }
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await; // let the gateway's allocator settle
    let after = rss_kib(gateway_pid);
    let per_session = (after.saturating_sub(before)) as f64 * 1024.0 / sessions as f64;
    println!(
        "{sessions} idle WebSocket sessions through tidegate ({} build): RSS {} -> {} KiB, {:.1} KiB per session; opened in {:.1} s",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        before,
        after,
        per_session / 1024.0,
        opened_in.as_secs_f64()
    );
    drop(open_sockets);
    let _ = gateway.kill().await;
    let _ = backend.kill().await;
}

async fn open(addr: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = "ws://echo.p.localhost/ws".into_client_request().unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello"));
    socket
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} never answered");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
