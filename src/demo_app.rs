//! `tidegate demo-app`: a small HTTP server to route to, for the quick start, tests and
//! benchmarks, so none of them need anything beyond the tidegate binary.
//!
//! Contract (scripts rely on it): listens on `--port` or `$PORT` on 127.0.0.1. `GET /`
//! answers `instance=<id> revision=<rev>` (from `$TIDEGATE_INSTANCE` and `$TIDEGATE_REVISION`,
//! which the process runtime sets); `/env/<NAME>` answers that environment variable;
//! `?delay_ms=N` on any path delays the answer; `/healthz` answers 200.
//! `--startup-delay-ms N` (or `$STARTUP_DELAY_MS`) waits before listening, to simulate a slow
//! boot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// How to run the demo app.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Port to listen on; `None` reads `$PORT`, and without it picks a free port.
    pub port: Option<u16>,
    /// Wait this long before listening.
    pub startup_delay: Duration,
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
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
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

async fn answer(identity: &Identity, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(delay) = query_param(request.uri().query(), "delay_ms").and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = request.uri().path();
    let (status, body) = if path == "/" {
        (
            StatusCode::OK,
            format!(
                "instance={} revision={}\n",
                identity.instance, identity.revision
            ),
        )
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

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
