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

use super::{write_gateway_response, BUFFER};
use crate::http1::body;
use crate::http1::headers::ClientFacts;
use crate::http1::request::{self, Field, RequestHead};
use crate::http1::response::{self, RelayOptions, ResponseHead};
use crate::proxy::{ConnInfo, GatewayError, Proxy, RequestFacts, RequestRecord};
use crate::upstream::Checkout;
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
    (out, request_out): (&mut Vec<u8>, &mut Vec<u8>),
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
        &proxy.access_log,
    );
    if record.wants_client_fields() {
        let value = |wanted: &[u8]| {
            fields
                .iter()
                .find(|field| field.name(&head.head).eq_ignore_ascii_case(wanted))
                .and_then(|field| http::HeaderValue::from_bytes(field.value(&head.head)).ok())
        };
        record.referer = value(b"referer");
        record.user_agent = value(b"user-agent");
    }
    let mut exchange = Exchange {
        io,
        buf,
        out,
        request_out,
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
    /// Bytes to write to the client, reused across requests.
    out: &'a mut Vec<u8>,
    /// The request head as the instance gets it, reused across requests.
    request_out: &'a mut Vec<u8>,
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
        let page = admission.route.spec.cold_start_page.is_some() && {
            let accept = self
                .fields
                .iter()
                .find(|field| field.name(&request.head).eq_ignore_ascii_case(b"accept"))
                .map(|field| field.value(&request.head));
            crate::proxy::error::wants_page(&request.method, accept)
        };
        // A client that gives up while its request waits for an instance leaves the queue.
        let lease = tokio::select! {
            biased;
            lease = proxy.lease(&admission, record, page) => lease.map_err(Failure::Gateway)?,
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
        let connection = &mut *upstream.connection;
        let copied = body::copy(
            (response.framing, response.client_framing),
            &mut connection.stream,
            &mut connection.buffered,
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
            upstream.release();
        }
        record.lease = Some(lease);
        if self.io.flush().await.is_err() {
            return Err(Failure::Broken);
        }
        Ok(next(response.keep_alive))
    }

    /// Sends a bodiless request to the instance (`Upstream::send`, which retries it once on
    /// a new connection where that is safe) and relays the response head into `out`. A client
    /// that leaves meanwhile ends the exchange.
    async fn send(
        &mut self,
        proxy: &Proxy,
        target: &Target<'_>,
    ) -> Result<(Checkout, ResponseHead), Failure> {
        let (request, stop) = (self.request, self.stop);
        self.request_out.clear();
        request::write_request(self.request_out, request, self.fields, &target.client);
        self.out.clear();
        let out = &mut *self.out;
        // Keep-alive is decided when the head is complete (the gateway may be stopping).
        let relay = |buf: &mut BytesMut| {
            let options = RelayOptions {
                head_request: request.method == Method::HEAD,
                keep_alive: request.keep_alive && !*stop.borrow(),
                hsts: target.hsts.as_ref(),
            };
            response::relay_response(buf, out, &options)
        };
        let sent = proxy.upstream.send(
            target.instance,
            self.request_out,
            request.method.is_idempotent(),
            relay,
        );
        tokio::select! {
            biased;
            sent = sent => sent.map_err(|error| target.error(error)),
            () = client_gone(self.io, self.buf) => Err(Failure::Broken),
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
