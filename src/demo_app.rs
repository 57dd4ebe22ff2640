//! `tidegate demo-app`: a small HTTP server to route to, for the quick start, tests and
//! benchmarks, so none of them need anything beyond the tidegate binary.
//!
//! Contract (scripts rely on it): listens on `--port` or `$PORT` on 127.0.0.1 (or `--host`,
//! e.g. `0.0.0.0` inside a pod's network namespace). `GET /`
//! answers `instance=<id> revision=<rev>` (from `$TIDEGATE_INSTANCE` and `$TIDEGATE_REVISION`,
//! which the process runtime sets); `/env/<NAME>` answers that environment variable;
//! `?delay_ms=N` on any path delays the answer; `/healthz` answers 200; `/ws` echoes WebSocket
//! messages; `/pid` answers the process id (tests use it to kill an instance);
//! `/alloc/<MiB>` allocates and keeps that much more memory (tests of memory limits).
//! `--startup-delay-ms N` (or `$STARTUP_DELAY_MS`) waits before listening, to simulate a slow
//! boot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

/// How to run the demo app.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Port to listen on; `None` reads `$PORT`, and without it picks a free port.
    pub port: Option<u16>,
    /// Wait this long before listening.
    pub startup_delay: Duration,
    /// The address to listen on; `None`: 127.0.0.1.
    pub host: Option<std::net::IpAddr>,
}

struct Identity {
    instance: String,
    revision: String,
}

/// Binds the demo app's listener (after the start-up delay). Split from [`serve`] so tests can
/// learn the port before serving.
pub async fn bind(options: &DemoOptions) -> std::io::Result<TcpListener> {
    if !options.startup_delay.is_zero() {
        tokio::time::sleep(options.startup_delay).await;
    }
    let port = match options.port {
        Some(port) => port,
        None => std::env::var("PORT")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0),
    };
    let host = options
        .host
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    TcpListener::bind(SocketAddr::new(host, port)).await
}

/// Serves the demo app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let identity = Arc::new(Identity {
        instance: std::env::var("TIDEGATE_INSTANCE")
            .unwrap_or_else(|_| format!("demo-{}", std::process::id())),
        revision: std::env::var("TIDEGATE_REVISION").unwrap_or_else(|_| "none".to_string()),
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let identity = Arc::clone(&identity);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let identity = Arc::clone(&identity);
                async move { Ok::<_, Infallible>(answer(&identity, request).await) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(identity: &Identity, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(delay) = query_param(request.uri().query(), "delay_ms").and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = request.uri().path().to_string();
    let path = path.as_str();
    if path == "/ws" {
        return websocket_echo(&mut request);
    }
    let (status, body) = if path == "/" {
        (
            StatusCode::OK,
            format!(
                "instance={} revision={}\n",
                identity.instance, identity.revision
            ),
        )
    } else if path == "/pid" {
        (StatusCode::OK, format!("{}\n", std::process::id()))
    } else if let Some(mib) = path.strip_prefix("/alloc/") {
        match mib.parse::<usize>() {
            Ok(mib) => (
                StatusCode::OK,
                format!("holding {} MiB\n", hold_memory(mib)),
            ),
            Err(_) => (StatusCode::BAD_REQUEST, "usage: /alloc/<MiB>\n".to_string()),
        }
    } else if path == "/healthz" {
        (StatusCode::OK, "ok\n".to_string())
    } else if let Some(name) = path.strip_prefix("/env/") {
        match std::env::var(name) {
            Ok(value) => (StatusCode::OK, format!("{value}\n")),
            Err(_) => (StatusCode::NOT_FOUND, format!("{name} is not set\n")),
        }
    } else {
        (StatusCode::NOT_FOUND, "not found\n".to_string())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Allocates `mib` MiB more, touching every page so it is really resident, and keeps it for
/// the life of the process. Returns the MiB held in all.
fn hold_memory(mib: usize) -> usize {
    static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..mib {
        held.push(vec![1u8; 1 << 20]);
    }
    held.len()
}

/// Accepts a WebSocket upgrade and echoes every text and binary message until the peer closes.
fn websocket_echo(request: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()));
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (Some(accept), true) = (key, upgrade) else {
        let mut response = Response::new(Full::new(Bytes::from("expected a WebSocket upgrade\n")));
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return response;
    };
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(read) = socket.next().await {
            match read {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                // tungstenite has queued the reply to a Close (RFC 6455 5.5.1, the peer's
                // code echoed); only a flush sends it.
                Ok(Message::Close(_)) => {
                    let _ = socket.flush().await;
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = socket.close(close_frame_for(&error)).await;
                    return;
                }
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    response
}

/// The Close frame that fails a session after a read error (RFC 6455 7.4.1): 1007 for text
/// that is not UTF-8, 1009 for a message over the size limit, 1002 for other violations.
fn close_frame_for(error: &WsError) -> Option<CloseFrame> {
    let code = match error {
        WsError::Utf8(_) => CloseCode::Invalid,
        WsError::Capacity(_) => CloseCode::Size,
        WsError::Protocol(_) => CloseCode::Protocol,
        // The connection itself failed: nothing can be sent.
        _ => return None,
    };
    Some(CloseFrame {
        code,
        // A control frame's payload is at most 125 bytes, the code included.
        reason: error
            .to_string()
            .chars()
            .filter(char::is_ascii)
            .take(120)
            .collect::<String>()
            .into(),
    })
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
