//! The HTTP/1.1 engine: serves HTTP/1.1 client connections and proxies their requests over
//! keep-alive HTTP/1.1 connections to instances, without hyper.
//!
//! Why it exists: proxying through hyper's server and client cost about 7.5 µs of user CPU
//! per request where nginx spends 3 µs, and kept tidegate at 0.72x nginx's requests/s on the
//! same core (BENCHMARKS.md). hyper's generality (a dispatcher per side, channels between a
//! connection and its bodies, a header map per message, a timer per request head) is most of
//! that. This engine is one loop per client connection that reads a head, routes it with the
//! same code as the hyper path (`Proxy::admit`, `lease`, `prepare_upstream`), writes the
//! request to a pooled instance connection, and copies the response back: one read and one
//! write per side for a small exchange, and the same syscalls as nginx.
//!
//! hyper still serves HTTP/2, and every request listed in [`request::Handoff`] (upgrades such as
//! WebSocket, `Expect: 100-continue`, CONNECT, HTTP/1.0, unusual transfer codings): the engine
//! stops at that request's first byte and hands the connection, with the bytes it has read,
//! to hyper, which serves it from there on.
//!
//! Timers are per connection, not per request: the header-read deadline and the request
//! deadline are each one tokio `Sleep` moved forward, which tokio does without touching its
//! timer wheel as long as the deadline only grows.

pub mod body;
mod date;
pub mod framing;
pub mod pool;
pub mod prefixed;
pub mod request;
pub mod response;

use std::future::Future;
use std::pin::{pin, Pin};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep, Instant, Sleep};

use super::headers::ClientFacts;
use super::upstream::UpstreamError;
use super::{ConnInfo, GatewayError, Proxy, RequestFacts, RequestRecord};
use crate::config::ListenerLimits;
use crate::instance::Instance;
use crate::server::stopped;
use body::CopyError;
use framing::HeadError;
use pool::Connection;
use request::{Field, Parsed, RequestHead};
use response::{RelayOptions, Relayed, ResponseHead};

/// Read buffer size of a client connection; grown for large heads up to the header limit.
const BUFFER: usize = 8 * 1024;

/// How an engine's turn on a connection ended.
pub enum Exit<IO> {
    /// The connection is finished (closed by either side, timed out, or shut down).
    Closed,
    /// hyper takes over from here, starting with these bytes already read from `IO`.
    Handoff(IO, BytesMut),
}

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
                return Exit::Closed;
            }
        };
        let keep_alive = exchange(
            proxy,
            &mut io,
            &mut buf,
            &mut out,
            (&head, &fields),
            conn,
            request_timer.as_mut(),
            stop,
        )
        .await
            && !*stop.borrow();
        if !keep_alive {
            let _ = io.shutdown().await;
            return Exit::Closed;
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
    loop {
        if !buf.is_empty() {
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

/// Why an exchange ended without the instance's complete response.
enum Failure {
    /// Before any of the response was written: the client gets the gateway's error response.
    Gateway(GatewayError),
    /// The client went away, or the response broke off after its head: the connection ends.
    Broken,
}

/// One request and its response. Returns whether the connection can take another request.
#[allow(clippy::too_many_arguments)]
async fn exchange<IO>(
    proxy: &Proxy,
    io: &mut IO,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    (head, fields): (&RequestHead, &[Field]),
    conn: ConnInfo,
    timer: Pin<&mut Sleep>,
    stop: &watch::Receiver<bool>,
) -> bool
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut record = RequestRecord::start(
        &head.method,
        &head.uri,
        Version::HTTP_11,
        conn.peer,
        &proxy.metrics,
    );
    let mut exchange = Exchange {
        io,
        buf,
        out,
        conn,
        stop,
        request: head,
        fields,
        body_sent: head.framing.is_empty(),
    };
    match exchange.forward(proxy, timer, &mut record).await {
        Ok(keep_alive) => keep_alive,
        Err(Failure::Broken) => false,
        Err(Failure::Gateway(error)) => {
            proxy.report(&error, &record);
            let keep_alive = exchange.keeps_alive();
            let (status, headers, body) = error.to_parts();
            record.status = status.as_u16();
            let head_request = head.method == Method::HEAD;
            if !head_request {
                record.bytes = body.len() as u64;
            }
            let written = write_gateway_response(
                exchange.io,
                exchange.out,
                status,
                headers,
                body,
                keep_alive,
                head_request,
            )
            .await;
            written && keep_alive
        }
    }
}

/// The state of one exchange on a client connection.
struct Exchange<'a, IO> {
    io: &'a mut IO,
    /// Bytes read from the client and not used yet: the request body, pipelined requests.
    buf: &'a mut BytesMut,
    /// Bytes to write, reused across requests.
    out: &'a mut Vec<u8>,
    conn: ConnInfo,
    /// The gateway's shutdown signal: a connection's response during shutdown is its last.
    stop: &'a watch::Receiver<bool>,
    /// The request's head and its fields.
    request: &'a RequestHead,
    fields: &'a [Field],
    /// The whole request body has gone to an instance (or there was none).
    body_sent: bool,
}

impl<IO> Exchange<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Whether the connection can stay open after the response about to be written: the
    /// client wants it, the gateway is not shutting down, and no unread request body is left
    /// that would be taken for the next request.
    fn keeps_alive(&self) -> bool {
        self.request.keep_alive && self.body_sent && !*self.stop.borrow()
    }

    async fn forward(
        &mut self,
        proxy: &Proxy,
        mut timer: Pin<&mut Sleep>,
        record: &mut RequestRecord,
    ) -> Result<bool, Failure> {
        let table = proxy.routes.load_full();
        let request = self.request;
        let facts = RequestFacts {
            uri: &request.uri,
            version: Version::HTTP_11,
            host: request.host.as_ref(),
            token: request.token.map(|field| field.value(&request.head)),
        };
        let admission = proxy
            .admit(&table, self.conn, &facts, record)
            .map_err(Failure::Gateway)?;
        // A client that gives up while its request waits for an instance leaves the queue.
        let lease = tokio::select! {
            biased;
            lease = proxy.lease(&admission, record) => lease.map_err(Failure::Gateway)?,
            () = client_gone(self.io, self.buf) => return Err(Failure::Broken),
        };
        let client = ClientFacts {
            peer: self.conn.peer,
            scheme: self.conn.listener.scheme(),
            host: &admission.host,
            version: Version::HTTP_11,
            trusted: admission.trusted,
        };
        let route = admission.route;
        let instance = lease.instance();
        let hsts = Proxy::hsts(route, self.conn);
        let timeout = route.spec.scale.request_timeout;
        timer.as_mut().reset(Instant::now() + timeout);
        let sent = tokio::select! {
            biased;
            sent = self.send(proxy, instance, &client, &route.app.name, hsts.as_ref()) => sent,
            _ = timer => Err(Failure::Gateway(GatewayError::UpstreamTimeout {
                app: route.app.name.clone(),
                addr: instance.addr,
                timeout,
            })),
        };
        let (mut upstream, response) = sent?;
        record.status = response.status.as_u16();
        let copied = body::copy(
            response.framing,
            &mut upstream.stream,
            &mut upstream.buffered,
            self.io,
            self.out,
            &mut record.bytes,
        )
        .await;
        if let Err(error) = copied {
            tracing::debug!(app = %route.app.name, ?error, "response broke off");
            record.lease = Some(lease);
            return Err(Failure::Broken);
        }
        if response.upstream_keep_alive {
            if upstream.buffered.capacity() > 4 * BUFFER {
                upstream.buffered = BytesMut::with_capacity(BUFFER);
            }
            upstream.go_idle();
            instance
                .h1_idle
                .put(upstream, proxy.upstream.idle_timeout());
        }
        record.lease = Some(lease);
        if self.io.flush().await.is_err() {
            return Err(Failure::Broken);
        }
        Ok(response.keep_alive)
    }

    /// Sends the request (head and body) to `instance` and relays the response head into
    /// `out`, on a pooled connection or a new one. A bodiless request with an idempotent
    /// method that meets a pooled connection the instance had just closed (closed or reset
    /// before any byte of a response) is sent again on another, as RFC 9110 9.2.2 allows.
    async fn send(
        &mut self,
        proxy: &Proxy,
        instance: &Instance,
        client: &ClientFacts<'_>,
        app: &str,
        hsts: Option<&HeaderValue>,
    ) -> Result<(Box<Connection>, ResponseHead), Failure> {
        let app_error = |error: UpstreamError| -> Failure {
            let app = app.to_string();
            Failure::Gateway(match error {
                UpstreamError::Connect(cause) => GatewayError::UpstreamConnect {
                    app,
                    addr: instance.addr,
                    cause,
                },
                UpstreamError::Reset(cause) => GatewayError::UpstreamReset {
                    app,
                    addr: instance.addr,
                    cause,
                },
            })
        };
        let head_request = self.request.method == Method::HEAD;
        let replayable = self.request.framing.is_empty() && self.request.method.is_idempotent();
        loop {
            let (mut upstream, reused) = match instance
                .h1_idle
                .take(proxy.upstream.idle_timeout(), Connection::is_reusable)
            {
                Some(connection) => (connection, true),
                None => (
                    Connection::new(
                        proxy
                            .upstream
                            .connect_stream(instance)
                            .await
                            .map_err(app_error)?,
                    ),
                    false,
                ),
            };
            let retry = reused && replayable;
            self.out.clear();
            request::write_request(self.out, self.request, self.fields, client);
            // The body goes up while the instance may already answer (a 401 or 413 before
            // reading it all): then the upload stops and the answer is passed on.
            let mut write_failed = None;
            match self.upload(&mut upstream).await {
                Ok(Upload::Sent) => self.body_sent = true,
                Ok(Upload::AnsweredEarly) => {}
                Err(CopyError::Destination(_)) if retry => continue,
                // Passed on below if the instance answered before closing.
                Err(CopyError::Destination(error)) => write_failed = Some(error),
                Err(CopyError::Source(_)) => return Err(Failure::Broken),
                Err(CopyError::Malformed(why)) => {
                    return Err(Failure::Gateway(GatewayError::BadRequest(why)))
                }
            }
            let options = RelayOptions {
                head_request,
                keep_alive: self.keeps_alive(),
                hsts,
            };
            let response = tokio::select! {
                biased;
                response = relay_response(&mut upstream, self.out, &options) => response,
                () = client_gone(self.io, self.buf) => return Err(Failure::Broken),
            };
            match response {
                Ok(mut response) => {
                    // Part of the body is still unsent: the connection cannot be reused.
                    response.upstream_keep_alive &= self.body_sent;
                    return Ok((upstream, response));
                }
                Err(ReadError::Closed(_)) if retry => continue,
                Err(ReadError::Closed(cause) | ReadError::Broken(cause)) => {
                    let cause = write_failed.map_or(cause, |error| error.to_string());
                    return Err(app_error(UpstreamError::Reset(cause)));
                }
                Err(ReadError::Invalid(why)) => {
                    return Err(app_error(UpstreamError::Reset(format!(
                        "invalid response: {why}"
                    ))))
                }
            }
        }
    }
}

/// How an upload ended.
enum Upload {
    /// The head and the whole body went to the instance.
    Sent,
    /// The instance's response head arrived first; the rest of the body was not sent.
    AnsweredEarly,
}

impl<IO> Exchange<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Writes the request head in `out` and the body to the instance, watching for a
    /// response that comes before the body is all sent. A bodiless request is written in the
    /// first poll, so it never reads the instance here.
    async fn upload(&mut self, upstream: &mut Connection) -> Result<Upload, CopyError> {
        let (mut reader, mut writer) = upstream.stream.split();
        let buffered = &mut upstream.buffered;
        let mut sent = 0;
        let copy = body::copy(
            self.request.framing,
            self.io,
            self.buf,
            &mut writer,
            self.out,
            &mut sent,
        );
        let answered = async {
            loop {
                buffered.reserve(BUFFER);
                match reader.read_buf(buffered).await {
                    // A close is the upload's to notice (a failed write) or the response's.
                    Ok(0) | Err(_) => return std::future::pending().await,
                    Ok(_) if has_final_head(buffered) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            biased;
            copied = copy => copied.map(|()| Upload::Sent),
            () = answered => Ok(Upload::AnsweredEarly),
        }
    }
}

/// Whether `buffered` starts with a complete final (not 1xx) response head.
fn has_final_head(buffered: &[u8]) -> bool {
    let interim = buffered.get(9) == Some(&b'1');
    !interim && buffered.windows(4).any(|window| window == b"\r\n\r\n")
}

/// Resolves when the client closes its connection (or it fails) while its request waits, so
/// that the request stops holding a queue place or an instance for nobody, as hyper's server
/// does. What the client sends meanwhile (a pipelined request) is kept in `buf`; past
/// [`BUFFER`] bytes of it the client is no longer watched.
async fn client_gone<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) {
    while buf.len() < BUFFER {
        buf.reserve(BUFFER);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

enum ReadError {
    /// Closed or reset before the first byte of a response: safe to retry where allowed.
    Closed(String),
    /// Failed after part of the response head arrived.
    Broken(String),
    Invalid(&'static str),
}

/// Reads an instance's response head and writes the client's version of it to `out`,
/// skipping interim (1xx) responses as hyper's client does.
async fn relay_response(
    upstream: &mut Connection,
    out: &mut Vec<u8>,
    options: &RelayOptions<'_>,
) -> Result<ResponseHead, ReadError> {
    let mut received = !upstream.buffered.is_empty();
    loop {
        match response::relay_response(&mut upstream.buffered, out, options) {
            Ok(Some(Relayed::Interim)) => continue,
            Ok(Some(Relayed::Final(response))) => return Ok(response),
            Ok(None) => {}
            Err(HeadError::TooLarge) => return Err(ReadError::Invalid("head too large")),
            Err(HeadError::Malformed(why)) => return Err(ReadError::Invalid(why)),
        }
        if upstream.buffered.capacity() - upstream.buffered.len() < 1024 {
            upstream.buffered.reserve(BUFFER);
        }
        let read = upstream.stream.read_buf(&mut upstream.buffered).await;
        match (read, received) {
            (Ok(0), false) => {
                return Err(ReadError::Closed(
                    "connection closed before a response".into(),
                ))
            }
            (Ok(0), true) => {
                return Err(ReadError::Broken(
                    "connection closed inside the response head".into(),
                ))
            }
            (Ok(_), _) => received = true,
            (Err(error), false) => return Err(ReadError::Closed(error.to_string())),
            (Err(error), true) => return Err(ReadError::Broken(error.to_string())),
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

/// Writes one header field line.
fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
