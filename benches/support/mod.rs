//! Helpers the custom benches share (each bench is its own crate and includes this module).
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `GET path` with `host` over a new HTTP/1.1 connection: the status and the body, or `None`
/// if the connection or the exchange failed.
pub async fn try_send(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `try_send` that must succeed.
pub async fn send(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    try_send(addr, host, path)
        .await
        .unwrap_or_else(|| panic!("GET {path} on {addr} got no answer"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many rounds to run: `ROUNDS`, else `full` under `cargo bench` and `smoke` under
/// `cargo test --all-targets`, which keeps the code tested without the suite paying for
/// a benchmark.
pub fn rounds(full: usize, smoke: usize) -> usize {
    let bench = std::env::args().any(|arg| arg == "--bench");
    std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { full } else { smoke })
}

/// A gateway started in process from `dir` (see [`config_dir`]), and its API token.
pub async fn gateway(dir: &tempfile::TempDir) -> (tidegate::Handle, String) {
    let handle = tidegate::Gateway::start(dir.path().join("tidegate.toml"))
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join("state/admin-token")).unwrap();
    (handle, token.trim().to_string())
}

/// A config directory: a gateway file on port 0 for `http` and `admin` with domain `bench`,
/// and an empty apps directory.
pub fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    std::fs::write(
        dir.path().join("tidegate.toml"),
        "[gateway]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndomain = \"bench\"\n",
    )
    .unwrap();
    dir
}

/// One management API request that must succeed.
pub async fn api(admin: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> String {
    let stream = TcpStream::connect(admin).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}
