//! Accepting client connections and serving HTTP/1.1 and HTTP/2 on them.
//!
//! One accept loop per listener. A semaphore caps open connections: at the cap the loop stops
//! accepting and new clients wait in the kernel's backlog rather than being reset. Every
//! connection gets TCP_NODELAY, a first-byte and header read timeout (slowloris), a header
//! size cap (431), a limit on how long a write may wait for the client to take bytes
//! (`send_timeout`, `stall`), and on a TLS listener the handshake (`tls::accept`). It
//! is then served by the handler's HTTP/1.1 engine (`Handler::serve_http1`: the proxy's
//! `h1`), unless ALPN chose h2; whatever the engine hands over, or never saw, goes to
//! hyper-util's auto builder: HTTP/1.1, and HTTP/2 by ALPN or prior knowledge, with upgrades
//! and extended CONNECT for WebSockets. A hyper connection with no request in progress for
//! `header_read_timeout` is shut down gracefully (`activity`). On shutdown the loop stops
//! accepting, asks every connection to finish (HTTP/1: close after the current response;
//! HTTP/2: GOAWAY), waits up to the grace period for every connection task, then drops the
//! rest.

mod activity;
mod conn;
mod h2_preface;
pub mod linger;
mod prefixed;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::config::ListenerLimits;
use crate::metrics::Metrics;
use crate::stall::SendTimeout;
use crate::tls::accept::accept;
use crate::tls::Tls;
use activity::{Activity, Tracked};
pub use conn::{ConnInfo, Exit, ListenerKind};
use prefixed::Prefixed;

/// Something that answers requests on a listener: the proxy or the admin API.
pub trait Handler: Send + Sync + 'static {
    type Body: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static;

    fn call(
        self: Arc<Self>,
        conn: ConnInfo,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;

    /// Serves an HTTP/1.1 connection without hyper, and gives it back, with the bytes read
    /// from it, at a request it leaves to hyper. By default every connection goes to hyper.
    fn serve_http1<'a, IO>(
        &'a self,
        io: IO,
        _conn: ConnInfo,
        _limits: &'a ListenerLimits,
        _stop: &'a mut watch::Receiver<bool>,
    ) -> impl Future<Output = Exit<IO>> + Send + 'a
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'a,
    {
        std::future::ready(Exit::Handoff(io, BytesMut::new()))
    }
}

/// Settings of one accept loop.
pub struct ListenerConfig {
    /// `listener` label of the connection metrics.
    pub name: &'static str,
    pub kind: ListenerKind,
    pub limits: ListenerLimits,
    /// How long open connections may take to finish after shutdown begins.
    pub grace: Duration,
    /// Certificates, for a TLS listener.
    pub tls: Option<Arc<Tls>>,
}

/// Serves `handler` on `listener` until `shutdown` turns true, then drains.
pub async fn run<H: Handler>(
    listener: TcpListener,
    config: ListenerConfig,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = connection_builder(&config.limits);
    let h2_builder = builder.clone().http2_only();
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let mut connections = JoinSet::new();
    let open = metrics.connections_open.with_label_values(&[config.name]);
    let total = metrics.connections_total.with_label_values(&[config.name]);
    let send_timeouts = metrics.client_timeouts.with_label_values(&["send"]);

    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning on the error.
                    tracing::warn!(listener = config.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let first_byte_timeout = config.limits.header_read_timeout;
        let conn = ConnInfo {
            peer,
            listener: config.kind,
        };
        let engine = Arc::clone(&handler);
        let handler = Arc::clone(&handler);
        let activity = Arc::new(Activity::new());
        let busy = Arc::clone(&activity);
        let service = service_fn(move |request| {
            let busy = busy.begin();
            // Boxed: the proxy's future is about 3.5 KB, and hyper moves the service future
            // several times per HTTP/2 stream (into its stream task, into the spawned task);
            // a box moves as a pointer.
            let response = Box::pin(Arc::clone(&handler).call(conn, request));
            async move { Ok::<_, Infallible>(response.await.map(|body| Tracked::new(body, busy))) }
        });
        total.inc();
        let guard = ConnectionGuard::new(permit, open.clone());
        let builder = builder.clone();
        let h2_builder = h2_builder.clone();
        let config_limits = config.limits.clone();
        let tls = config.tls.clone();
        let send_timeouts = send_timeouts.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            // A client that connects and sends nothing would otherwise hold its slot forever:
            // hyper's header timeout only starts once the protocol is known.
            let mut probe = [0u8; 1];
            let first_byte = tokio::time::timeout(first_byte_timeout, stream.peek(&mut probe));
            let spoke = tokio::select! {
                peeked = first_byte => matches!(peeked, Ok(Ok(n)) if n > 0),
                _ = stopped(&mut stop) => false,
            };
            if !spoke {
                drop(guard);
                return;
            }
            let limits = &config_limits;
            let result = match tls {
                None => {
                    let stream = SendTimeout::new(stream, limits.send_timeout, send_timeouts);
                    let exit = engine.serve_http1(stream, conn, limits, &mut stop).await;
                    let hyper = Hyper::new(&builder, &activity, limits, &mut stop);
                    hyper.serve(exit, service).await
                }
                Some(tls) => {
                    let store = tls.store();
                    // Under TLS, so that every byte of ciphertext the client takes counts as
                    // progress: above it, a flush that moves part of rustls' buffer and then
                    // waits would look like no progress at all.
                    let stream = SendTimeout::new(stream, limits.send_timeout, send_timeouts);
                    let handshake =
                        tokio::time::timeout(first_byte_timeout, accept(stream, &store));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tls.handshake_errors
                                .with_label_values(&[error.reason()])
                                .inc();
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tls.handshake_errors.with_label_values(&["timeout"]).inc();
                            return;
                        }
                    };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let mut stream = stream;
                        let timeout = limits.header_read_timeout;
                        let Some(preface) = h2_preface::expect_preface(&mut stream, timeout).await
                        else {
                            return;
                        };
                        let hyper = Hyper::new(&h2_builder, &activity, limits, &mut stop);
                        // h2 writes a frame's head and its payload separately when the
                        // stream cannot write vectored, as TLS cannot: each write became a
                        // TLS record of its own. Buffered up to h2's flush, they become one
                        // (CPU per request 25.8 -> 23.1 µs, BENCHMARKS.md).
                        let stream = tokio::io::BufWriter::with_capacity(16 * 1024, stream);
                        hyper.serve(Exit::Handoff(stream, preface), service).await
                    } else {
                        let exit = engine.serve_http1(stream, conn, limits, &mut stop).await;
                        let hyper = Hyper::new(&builder, &activity, limits, &mut stop);
                        hyper.serve(exit, service).await
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
            drop(guard);
        });
    }
    drop(listener);

    while connections.try_join_next().is_some() {}
    let open_now = connections.len();
    if open_now > 0 {
        tracing::info!(
            listener = config.name,
            connections = open_now,
            "draining connections"
        );
    }
    // Every connection task watches `shutdown`: the engine's answers its current request and
    // closes, hyper's get a graceful shutdown (HTTP/1: close after the current response;
    // HTTP/2: GOAWAY).
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(config.grace, drained).await.is_err() {
        tracing::warn!(
            listener = config.name,
            connections = connections.len(),
            grace = ?config.grace,
            "connections still open after the shutdown grace period; closing them"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// hyper's part of a connection.
struct Hyper<'a> {
    builder: &'a auto::Builder<TokioExecutor>,
    /// The connection's requests in progress (its service counts them).
    activity: &'a Activity,
    limits: &'a ListenerLimits,
    stop: &'a mut watch::Receiver<bool>,
}

impl<'a> Hyper<'a> {
    fn new(
        builder: &'a auto::Builder<TokioExecutor>,
        activity: &'a Activity,
        limits: &'a ListenerLimits,
        stop: &'a mut watch::Receiver<bool>,
    ) -> Self {
        Hyper {
            builder,
            activity,
            limits,
            stop,
        }
    }

    /// Serves what the HTTP/1.1 engine handed over (or a connection it never saw): HTTP/1.1
    /// with upgrades, or HTTP/2. The connection is shut down gracefully when the gateway stops
    /// or when it has had no request in progress for `header_read_timeout`.
    async fn serve<IO, S, B>(
        self,
        exit: Exit<IO>,
        service: S,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Exit::Handoff(io, read) = exit else {
            return Ok(());
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(Prefixed::new(read, io)), service);
        let mut connection = pin!(connection);
        self.activity.touch();
        tokio::select! {
            // The connection first: a request the engine handed over is taken up before
            // either watch is looked at.
            biased;
            result = connection.as_mut() => return result,
            () = self.activity.idle_for(self.limits.header_read_timeout) => {
                tracing::trace!("idle connection closed (header_read_timeout)");
            }
            () = stopped(self.stop) => {}
        }
        connection.as_mut().graceful_shutdown();
        connection.await
    }
}

/// Resolves once `shutdown` is true (or its sender is gone). Drops the borrow guard inside, so
/// the future stays `Send`.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Releases a connection's slot and gauge however its task ends (finished or aborted).
struct ConnectionGuard {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl ConnectionGuard {
    fn new(permit: OwnedSemaphorePermit, open: IntGauge) -> Self {
        open.inc();
        ConnectionGuard {
            _permit: permit,
            open,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

fn connection_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        .enable_connect_protocol();
    builder
}
