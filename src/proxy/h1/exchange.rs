//! One request of the HTTP/1.1 engine and its response: admission, the request to an
//! instance, the response back.
//!
//! A request without a body is the common case and the fast one: its head goes out in one
//! write, then the response comes back; it may be retried once (see [`Exchange::send`]). A
//! request with a body is a duplex exchange ([`Exchange::duplex`]): the body goes up while the
//! response comes down, because the two are independent streams. An instance may answer
//! before it has read the body (a `413` or `401` on an upload), or stream its answer while it
//! reads (an echo); waiting for the whole upload first would stall the first until
//! `request_timeout` and could deadlock the second.

use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use http::header::HeaderValue;
use http::{Method, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::body::{self, CopyError};
use super::framing::HeadError;
use super::pool::Connection;
use super::request::{self, Field, RequestHead};
use super::response::{self, RelayOptions, Relayed, ResponseHead};
use super::{write_gateway_response, BUFFER};
use crate::instance::Instance;
use crate::proxy::headers::ClientFacts;
use crate::proxy::upstream::UpstreamError;
use crate::proxy::{ConnInfo, GatewayError, Proxy, RequestFacts, RequestRecord};

/// What the connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next request.
    KeepAlive,
    Close,
    /// Close, but part of the request body was never read: drain it briefly first, so the
    /// client reads the response before the kernel answers its unread bytes with a reset.
    CloseAfterUnreadBody,
}

/// Why an exchange ended without the instance's complete response.
enum Failure {
    /// Before any of the response was written: the client gets the gateway's error response.
    Gateway(GatewayError),
    /// The client went away, or the response broke off after its head: the connection ends.
    Broken,
}

/// One request and its response.
#[allow(clippy::too_many_arguments)]
pub async fn exchange<IO>(
    proxy: &Proxy,
    io: &mut IO,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    (head, fields): (&RequestHead, &[Field]),
    conn: ConnInfo,
    timer: Pin<&mut Sleep>,
    stop: &watch::Receiver<bool>,
) -> Next
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
    let unread = |exchange: &Exchange<'_, IO>, next: Next| match next {
        Next::KeepAlive => Next::KeepAlive,
        _ if exchange.body_sent => Next::Close,
        _ => Next::CloseAfterUnreadBody,
    };
    match exchange.forward(proxy, timer, &mut record).await {
        Ok(next) => unread(&exchange, next),
        Err(Failure::Broken) => Next::Close,
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
            match (written, keep_alive) {
                (true, true) => Next::KeepAlive,
                (true, false) => unread(&exchange, Next::Close),
                (false, _) => Next::Close,
            }
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

/// Where a request goes, as `forward` resolved it.
struct Target<'a> {
    instance: &'a Instance,
    client: ClientFacts<'a>,
    app: &'a str,
    hsts: Option<HeaderValue>,
    /// The app's limit on a quiet response body.
    idle_timeout: Option<Duration>,
}

impl Target<'_> {
    /// A connection to the instance: the most recently used idle one if `pooled` allows and
    /// there is one (then `true`), else a new one.
    async fn connection(
        &self,
        proxy: &Proxy,
        pooled: bool,
    ) -> Result<(Box<Connection>, bool), Failure> {
        let idle = pooled
            .then(|| {
                let max_idle = proxy.upstream.idle_timeout();
                self.instance
                    .h1_idle
                    .take(max_idle, Connection::is_reusable)
            })
            .flatten();
        match idle {
            Some(connection) => Ok((connection, true)),
            None => {
                let stream = proxy.upstream.connect_stream(self.instance).await;
                Ok((
                    Connection::new(stream.map_err(|error| self.error(error))?),
                    false,
                ))
            }
        }
    }

    /// Logs why a response broke off after its head went to the client, and counts an
    /// instance that went quiet for the app's `idle_timeout`.
    fn broke_off(&self, error: CopyError, record: &RequestRecord) {
        if let CopyError::Stalled(stalled) = error {
            tracing::warn!(
                app = %self.app,
                instance = %self.instance.addr,
                "response cut off: the instance sent nothing for {:?} (idle_timeout)",
                stalled.0
            );
            if let Some(in_flight) = &record.app {
                in_flight.app().metrics.upstream_error("idle_timeout");
            }
        } else {
            tracing::debug!(app = %self.app, ?error, "response broke off");
        }
    }

    fn error(&self, error: UpstreamError) -> Failure {
        Failure::Gateway(GatewayError::from_upstream(
            self.app,
            self.instance.addr,
            error,
        ))
    }
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
    ) -> Result<Next, Failure> {
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
        let route = admission.route;
        let target = Target {
            instance: lease.instance(),
            client: ClientFacts {
                peer: self.conn.peer,
                scheme: self.conn.listener.scheme(),
                host: &admission.host,
                version: Version::HTTP_11,
                trusted: admission.trusted,
            },
            app: &route.app.name,
            hsts: Proxy::hsts(route, self.conn),
            idle_timeout: route.spec.scale.idle_timeout,
        };
        let timeout = route.spec.scale.request_timeout;
        timer.as_mut().reset(Instant::now() + timeout);
        let timed_out = || {
            Failure::Gateway(GatewayError::UpstreamTimeout {
                app: route.app.name.clone(),
                addr: target.instance.addr,
                timeout,
            })
        };
        if !request.framing.is_empty() {
            let body_timeout = table.settings.limits.client_body_timeout;
            let next = self
                .duplex(proxy, &target, (timer, timed_out), body_timeout, record)
                .await;
            record.lease = Some(lease);
            return next;
        }

        let sent = tokio::select! {
            biased;
            sent = self.send(proxy, &target) => sent,
            _ = timer => Err(timed_out()),
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
            target.idle_timeout,
        )
        .await;
        if let Err(error) = copied {
            target.broke_off(error, record);
            record.lease = Some(lease);
            return Err(Failure::Broken);
        }
        if response.upstream_keep_alive {
            keep(proxy, target.instance, upstream);
        }
        record.lease = Some(lease);
        if self.io.flush().await.is_err() {
            return Err(Failure::Broken);
        }
        Ok(next(response.keep_alive))
    }

    /// Sends a bodiless request to the instance and relays the response head into `out`, on
    /// a pooled connection or a new one. If a pooled connection turns out closed (closed or
    /// reset before any byte of a response) and the method is idempotent, the request is sent
    /// once more, on a new connection, as RFC 9110 9.2.2 allows.
    async fn send(
        &mut self,
        proxy: &Proxy,
        target: &Target<'_>,
    ) -> Result<(Box<Connection>, ResponseHead), Failure> {
        let method = &self.request.method;
        let mut may_retry = method.is_idempotent();
        loop {
            let (mut upstream, reused) = target.connection(proxy, may_retry).await?;
            let retry = reused && may_retry;
            self.out.clear();
            request::write_request(self.out, self.request, self.fields, &target.client);
            let written = upstream.stream.write_all(self.out).await;
            self.out.clear();
            if let Err(error) = written {
                if retry {
                    may_retry = false;
                    continue;
                }
                return Err(target.error(UpstreamError::Reset(error.to_string())));
            }
            let keep_alive = self.keeps_alive();
            let options = || RelayOptions {
                head_request: *method == Method::HEAD,
                keep_alive,
                hsts: target.hsts.as_ref(),
            };
            let Connection { stream, buffered } = &mut *upstream;
            let response = tokio::select! {
                biased;
                response = relay_response(stream, buffered, self.out, options) => response,
                () = client_gone(self.io, self.buf) => return Err(Failure::Broken),
            };
            match response {
                Ok(response) => return Ok((upstream, response)),
                Err(ReadError::Closed(_)) if retry => may_retry = false,
                Err(error) => return Err(target.error(UpstreamError::Reset(error.cause(None)))),
            }
        }
    }

    /// A request with a body: the body goes up while the response comes down (see the module
    /// header). The response head must come within the request timer; after it, the body
    /// streams as long as both sides do. Never retried: the body cannot be sent twice.
    async fn duplex(
        &mut self,
        proxy: &Proxy,
        target: &Target<'_>,
        (timer, timed_out): (Pin<&mut Sleep>, impl FnOnce() -> Failure),
        client_body_timeout: Duration,
        record: &mut RequestRecord,
    ) -> Result<Next, Failure> {
        let (mut upstream, _) = target.connection(proxy, true).await?;
        let mut head = Vec::with_capacity(512);
        request::write_request(&mut head, self.request, self.fields, &target.client);

        let request = self.request;
        let stop = self.stop;
        let idle_timeout = target.idle_timeout;
        // Set by the upload when the whole body is sent; by the download once the response
        // head has gone (or may have gone) to the client.
        // (Atomics only because the connection's future must be Send; both halves run on
        // one task.)
        let body_sent = AtomicBool::new(false);
        let head_sent = AtomicBool::new(false);
        let mut write_failed = None;
        let downloaded = {
            let (mut client_in, mut client_out) = tokio::io::split(&mut *self.io);
            let buf = &mut *self.buf;
            let out = &mut *self.out;
            let Connection { stream, buffered } = &mut *upstream;
            let (mut upstream_in, mut upstream_out) = stream.split();

            let upload = async {
                let mut sent = 0;
                body::copy(
                    request.framing,
                    &mut client_in,
                    buf,
                    &mut upstream_out,
                    &mut head,
                    &mut sent,
                    Some(client_body_timeout),
                )
                .await?;
                body_sent.store(true, Relaxed);
                // Nothing more to send: watch for the client leaving while the response is due.
                client_gone(&mut client_in, buf).await;
                Err(CopyError::Source(
                    std::io::ErrorKind::ConnectionAborted.into(),
                ))
            };
            let download = async {
                // Keep-alive is decided when the head is complete: only if the whole body
                // has gone up by then (else its rest would be read as the next request).
                let options = || RelayOptions {
                    head_request: request.method == Method::HEAD,
                    keep_alive: body_sent.load(Relaxed) && request.keep_alive && !*stop.borrow(),
                    hsts: target.hsts.as_ref(),
                };
                let relayed = tokio::select! {
                    biased;
                    relayed = relay_response(&mut upstream_in, buffered, out, options) => relayed,
                    _ = timer => return Err(Download::BeforeHead(timed_out())),
                };
                let response = relayed.map_err(Download::Read)?;
                head_sent.store(true, Relaxed);
                record.status = response.status.as_u16();
                let copied = body::copy(
                    response.framing,
                    &mut upstream_in,
                    buffered,
                    &mut client_out,
                    out,
                    &mut record.bytes,
                    idle_timeout,
                )
                .await;
                if let Err(error) = copied {
                    target.broke_off(error, record);
                    return Err(Download::AfterHead);
                }
                client_out.flush().await.map_err(|_| Download::AfterHead)?;
                Ok(response)
            };

            let mut upload = pin!(upload);
            let mut download = pin!(download);
            loop {
                tokio::select! {
                    biased;
                    uploaded = &mut upload, if write_failed.is_none() => match uploaded {
                        // The instance stopped reading: its answer may still come.
                        Err(CopyError::Destination(error)) => write_failed = Some(error),
                        Err(CopyError::Malformed(why)) if !head_sent.load(Relaxed) => {
                            return Err(Failure::Gateway(GatewayError::BadRequest(why)))
                        }
                        Err(CopyError::Stalled(stalled)) if !head_sent.load(Relaxed) => {
                            return Err(Failure::Gateway(GatewayError::ClientBodyTimeout(stalled.0)))
                        }
                        // The client left (during the body or after it), or its body broke, or
                        // it stalled after the response began. A stall is not treated like the
                        // instance's early answer: an instance that streams while it reads (an
                        // echo, a transcoder) would wait for the rest for ever, holding its slot.
                        Err(_) | Ok(()) => return Err(Failure::Broken),
                    },
                    downloaded = &mut download => break downloaded,
                }
            }
        };
        let response = match downloaded {
            Ok(response) => response,
            Err(Download::BeforeHead(failure)) => return Err(failure),
            Err(Download::Read(error)) => {
                let cause = error.cause(write_failed.as_ref());
                return Err(target.error(UpstreamError::Reset(cause)));
            }
            Err(Download::AfterHead) => return Err(Failure::Broken),
        };
        self.body_sent = body_sent.load(Relaxed);
        if response.upstream_keep_alive && self.body_sent && write_failed.is_none() {
            keep(proxy, target.instance, upstream);
        }
        Ok(next(response.keep_alive && self.body_sent))
    }
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

/// How the download half of a duplex exchange failed.
enum Download {
    /// Timed out before the response head.
    BeforeHead(Failure),
    /// Reading the response head failed.
    Read(ReadError),
    /// The response broke off after its head went to the client.
    AfterHead,
}

fn next(keep_alive: bool) -> Next {
    match keep_alive {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

/// Returns a connection whose exchange ended cleanly to its instance's idle list, unless the
/// instance sent more than its response.
fn keep(proxy: &Proxy, instance: &Instance, mut upstream: Box<Connection>) {
    if upstream.buffered.capacity() > 4 * BUFFER {
        upstream.buffered = BytesMut::with_capacity(BUFFER);
    }
    if upstream.finish_exchange() {
        instance
            .h1_idle
            .put(upstream, proxy.upstream.idle_timeout());
    }
}

enum ReadError {
    /// Closed or reset before the first byte of a response: safe to retry where allowed.
    Closed(String),
    /// Failed after part of the response head arrived.
    Broken(String),
    Invalid(&'static str),
}

impl ReadError {
    /// The cause for the 502's body; a failed write of the request body, if there was one,
    /// explains a close better.
    fn cause(self, write_failed: Option<&std::io::Error>) -> String {
        match (self, write_failed) {
            (ReadError::Closed(_), Some(error)) => error.to_string(),
            (ReadError::Closed(cause) | ReadError::Broken(cause), _) => cause,
            (ReadError::Invalid(why), _) => format!("invalid response: {why}"),
        }
    }
}

/// Reads an instance's response head and writes the client's version of it to `out`,
/// skipping interim (1xx) responses as hyper's client does. `options` are read when the head
/// is complete.
async fn relay_response<'o, R: AsyncRead + Unpin>(
    stream: &mut R,
    buffered: &mut BytesMut,
    out: &mut Vec<u8>,
    options: impl Fn() -> RelayOptions<'o>,
) -> Result<ResponseHead, ReadError> {
    let mut received = !buffered.is_empty();
    loop {
        match response::relay_response(buffered, out, &options()) {
            Ok(Some(Relayed::Interim)) => continue,
            Ok(Some(Relayed::Final(response))) => return Ok(response),
            Ok(None) => {}
            Err(HeadError::TooLarge) => return Err(ReadError::Invalid("head too large")),
            Err(HeadError::Malformed(why)) => return Err(ReadError::Invalid(why)),
        }
        if buffered.capacity() - buffered.len() < 1024 {
            buffered.reserve(BUFFER);
        }
        let read = stream.read_buf(buffered).await;
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
