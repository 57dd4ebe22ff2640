//! The HTTP/1.1 engine: serves HTTP/1.1 client connections and proxies their requests over
//! keep-alive HTTP/1.1 connections to instances, without hyper.
//!
//! Why it exists: proxying through hyper's server and client cost about 7.5 µs of user CPU
//! per request where nginx spends 3 µs, and kept tidegate at 0.72x nginx's requests/s on the
//! same core (BENCHMARKS.md). hyper's generality (a dispatcher per side, channels between a
//! connection and its bodies, a header map per message, a timer per request head) is most of
//! that. This engine is one loop per client connection (here) that reads a head
//! (`http1::request`), runs the exchange (`exchange`: routed with the same code as the hyper
//! path, `Proxy::admit` and `Proxy::lease`; the request written to a pooled instance
//! connection by `upstream`; the response relayed back, `http1::response`, `http1::body`):
//! one read and one write per side for a small exchange, and the same syscalls as nginx. This
//! module also owns the gateway-made responses and the lingering close.
//!
//! hyper still serves HTTP/2, and every request listed in [`crate::http1::request::Handoff`] (upgrades such as
//! WebSocket, `Expect: 100-continue`, CONNECT, HTTP/1.0, unusual transfer codings): the engine
//! stops at that request's first byte and hands the connection, with the bytes it has read,
//! to hyper, which serves it from there on.
//!
//! Timers are per connection, not per request: the header-read deadline and the request
//! deadline are each one tokio `Sleep` moved forward, which tokio does without touching its
//! timer wheel as long as the deadline only grows.

mod exchange;

use std::future::Future;
use std::pin::{pin, Pin};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep, Instant, Sleep};

use super::{ConnInfo, Proxy};
use crate::config::ListenerLimits;
use crate::http1::framing::HeadError;
use crate::http1::request::{self, Field, Parsed, RequestHead};
use crate::http1::{head_scan, response};
use crate::server::linger::linger;
use crate::server::stopped;
pub use crate::server::Exit;
use exchange::{exchange, Next};

/// Read buffer size of a client connection; grown for large heads up to the header limit.
const BUFFER: usize = 8 * 1024;

/// Serves HTTP/1.1 requests on `io` until the connection ends or a request needs hyper.
pub async fn serve<IO>(
    proxy: &Proxy,
    mut io: IO,
    conn: ConnInfo,
    limits: &ListenerLimits,
    stop: &mut watch::Receiver<bool>,
) -> Exit<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(BUFFER);
    let mut out = Vec::with_capacity(1024);
    let mut request_out = Vec::with_capacity(1024);
    let mut fields = Vec::with_capacity(32);
    let mut head_timer = pin!(sleep(limits.header_read_timeout));
    let mut request_timer = pin!(sleep(limits.header_read_timeout));
    // One wait for shutdown for the connection's life, rather than one per request: it stays
    // registered with the channel between polls.
    let mut shutdown = pin!(stopped_owned(stop.clone()));
    loop {
        head_timer
            .as_mut()
            .reset(Instant::now() + limits.header_read_timeout);
        let deadlines = Waits {
            head: head_timer.as_mut(),
            shutdown: shutdown.as_mut(),
        };
        let head = match read_head(&mut io, &mut buf, &mut fields, limits, deadlines).await {
            HeadRead::Request(head) => head,
            HeadRead::Handoff => return Exit::Handoff(io, buf),
            HeadRead::Closed => return Exit::Closed,
            HeadRead::Refused(status, why) => {
                let body = Bytes::from(format!("tidegate: {why}\n"));
                write_gateway_response(
                    &mut io,
                    &mut out,
                    status,
                    http::HeaderMap::new(),
                    body,
                    false,
                    false,
                )
                .await;
                // Whatever else the client sent is unread: closing now would answer it with a
                // reset, which can destroy the answer before the client reads it.
                linger(&mut io).await;
                return Exit::Closed;
            }
        };
        let next = exchange(
            proxy,
            &mut io,
            &mut buf,
            (&mut out, &mut request_out),
            (&head, &fields),
            conn,
            request_timer.as_mut(),
            stop,
        )
        .await;
        match next {
            Next::KeepAlive if !*stop.borrow() => {}
            Next::CloseAfterUnreadBody => {
                linger(&mut io).await;
                return Exit::Closed;
            }
            _ => {
                let _ = io.shutdown().await;
                return Exit::Closed;
            }
        }
        // An upload grew the buffer; an idle connection should not keep that much.
        if buf.is_empty() && buf.capacity() > 4 * BUFFER {
            buf = BytesMut::with_capacity(BUFFER);
        }
    }
}

// Requests are the common case: boxing the head would allocate once per request.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Request(RequestHead),
    Handoff,
    Closed,
    /// Answered with this status and reason, then closed.
    Refused(StatusCode, &'static str),
}

/// What a connection waiting for its next request head also waits for.
struct Waits<'a> {
    /// The header-read deadline.
    head: Pin<&'a mut Sleep>,
    /// The gateway's shutdown.
    shutdown: Pin<&'a mut (dyn Future<Output = ()> + Send)>,
}

/// Resolves once the gateway shuts down.
async fn stopped_owned(mut stop: watch::Receiver<bool>) {
    stopped(&mut stop).await;
}

/// Reads the next request head, within the header-read deadline. An idle connection (no byte
/// of a next request yet) closes quietly at the deadline or on shutdown.
async fn read_head<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    fields: &mut Vec<Field>,
    limits: &ListenerLimits,
    mut waits: Waits<'_>,
) -> HeadRead
where
    IO: AsyncRead + Unpin,
{
    let mut scan = head_scan::HeadScan::default();
    loop {
        if !buf.is_empty() && (scan.ready(buf) || buf.len() > limits.max_header_bytes) {
            match request::parse_request(buf, limits.max_header_bytes, fields) {
                Ok(Some(Parsed::Request(head))) => return HeadRead::Request(head),
                Ok(Some(Parsed::Handoff(reason))) => {
                    tracing::trace!(?reason, "request handed to hyper");
                    return HeadRead::Handoff;
                }
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    return HeadRead::Refused(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request header fields too large",
                    )
                }
                Err(HeadError::Malformed(why)) => {
                    return HeadRead::Refused(StatusCode::BAD_REQUEST, why)
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(BUFFER);
        }
        let idle = buf.is_empty();
        let read = tokio::select! {
            biased;
            read = io.read_buf(buf) => read,
            _ = waits.head.as_mut() => {
                return if idle {
                    HeadRead::Closed
                } else {
                    HeadRead::Refused(StatusCode::REQUEST_TIMEOUT, "request head not received in time")
                };
            }
            _ = waits.shutdown.as_mut(), if idle => return HeadRead::Closed,
        };
        match read {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(_) => {}
        }
    }
}

/// Writes a response the gateway makes itself (no body for HEAD, but its length). Returns
/// whether it was written.
async fn write_gateway_response<IO>(
    io: &mut IO,
    out: &mut Vec<u8>,
    status: StatusCode,
    mut headers: http::HeaderMap,
    body: Bytes,
    keep_alive: bool,
    head_request: bool,
) -> bool
where
    IO: AsyncWrite + Unpin,
{
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("text/plain; charset=utf-8"));
    out.clear();
    response::write_gateway_head(out, status, &headers, body.len() as u64, keep_alive);
    if !head_request {
        out.extend_from_slice(&body);
    }
    io.write_all(out).await.is_ok() && io.flush().await.is_ok()
}
