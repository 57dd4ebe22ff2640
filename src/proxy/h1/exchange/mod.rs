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

mod duplex;
mod head;
mod target;

use std::pin::Pin;

use bytes::BytesMut;
use http::{Method, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::body;
use super::pool::Connection;
use super::request::{self, Field, RequestHead};
use super::response::{RelayOptions, ResponseHead};
use super::upstream_head::ReadError;
use super::{write_gateway_response, BUFFER};
use crate::instance::Instance;
use crate::proxy::headers::ClientFacts;
use crate::proxy::upstream::UpstreamError;
use crate::proxy::{ConnInfo, GatewayError, Proxy, RequestFacts, RequestRecord};
use head::relay_response;
use target::Target;

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
            (response.framing, response.client_framing),
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
        // Every request may take a pooled connection; only an idempotent one is sent again
        // if that connection turns out closed (a non-idempotent one gets the 502).
        let mut may_retry = method.is_idempotent();
        let mut pooled = true;
        loop {
            let (mut upstream, reused) = target.connection(proxy, pooled).await?;
            let retry = reused && may_retry;
            self.out.clear();
            request::write_request(self.out, self.request, self.fields, &target.client);
            let written = upstream.stream.write_all(self.out).await;
            self.out.clear();
            if let Err(error) = written {
                if retry {
                    (may_retry, pooled) = (false, false);
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
                Err(ReadError::Closed(_)) if retry => (may_retry, pooled) = (false, false),
                Err(error) => return Err(target.error(UpstreamError::Reset(error.cause(None)))),
            }
        }
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
