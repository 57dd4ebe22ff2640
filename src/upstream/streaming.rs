//! HTTP/1.1 connections to instances, through hyper's client, for the hyper path's requests
//! that have a body (HTTP/2 uploads, and handed-over HTTP/1.1 requests with a body): hyper's
//! client streams the upload while the response comes back. Requests without a body go over
//! the engine's connections instead (`Upstream::send`). Also `send_upgrade`, an unpooled
//! connection for a WebSocket handshake. Pooled per instance (`pool`) and driven by the
//! request using them.
//!
//! hyper's pooled client runs every upstream connection as a task of its own, so each proxied
//! request crosses tasks several times (request in, response head out, every body chunk out).
//! Here the request's own task polls the connection: while waiting for the response head, and
//! then from the response body's `poll_frame` while the body streams to the client. The
//! connection comes from the instance's one pool (`Upstream::checkout`) and, when the body
//! ends with the connection idle, hyper hands the socket back (`into_parts`) and it returns
//! to the pool for any client's next request. A pooled connection that turns out closed is
//! dropped and the request, which hyper hands back unsent, goes out on a fresh one.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::{root_cause, ClientBodyFault, Stage, UpstreamError};
use super::pool::InstancePool;
use super::Upstream;
use super::{Checkout, Connection as EngineConnection};
use crate::instance::Instance;
use crate::stall::{BodyError, BodyTimeout};

type Connection = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// A client's request body on its way to an instance, limited by `client_body_timeout`.
pub type RequestBody = BodyTimeout<Incoming>;

/// A pooled connection driven by hyper's client for one exchange.
pub struct Pooled {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended; dropping it makes hyper hand back a request it
    /// had queued but not written.
    connection: Option<Connection>,
}

impl Upstream {
    /// Sends `request`, whose body streams, to `instance` and waits for the response head.
    /// The returned [`Driver`] must be polled alongside the response body (see
    /// [`Driver::poll_connection`]). A pooled connection found closed before the request left
    /// is replaced once (see [`UpstreamError::may_retry`]).
    pub async fn send_streaming(
        &self,
        instance: &Arc<Instance>,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Driver), UpstreamError> {
        let pool = self.pools.of(instance);
        let mut pooled_allowed = true;
        loop {
            // A connection of the instance's one pool, the engine's kind: hyper drives it for
            // this exchange and gives it back when the response body ends.
            let checkout = self.checkout(instance, pooled_allowed).await?;
            let reused = checkout.reused;
            let mut pooled = drive(checkout.into_stream()).await?;
            if wait_ready(&mut pooled).await.is_err() {
                let error =
                    UpstreamError::reset("connection closed at once", reused, Stage::Unsent);
                if pooled_allowed && error.may_retry(false) {
                    pooled_allowed = false;
                    continue;
                }
                return Err(error);
            }
            let mut response = std::pin::pin!(pooled.sender.try_send_request(request));
            let result = poll_fn(|cx| {
                if let Some(connection) = pooled.connection.as_mut() {
                    if let Poll::Ready(result) = Pin::new(connection).poll(cx) {
                        if let Err(error) = result {
                            tracing::debug!(%error, "upstream connection ended");
                        }
                        // An idle connection the instance closed ends cleanly with our request
                        // still queued; only dropping it returns the request for a retry.
                        pooled.connection = None;
                    }
                }
                response.as_mut().poll(cx)
            })
            .await;
            let connection_done = pooled.connection.is_none();
            match result {
                Ok(response) => {
                    let driver = Driver {
                        pooled: (!connection_done).then_some(pooled),
                        pool: Arc::clone(&pool),
                        idle_timeout: self.idle_timeout,
                    };
                    return Ok((response, driver));
                }
                Err(mut error) => {
                    let unsent = error.take_message();
                    let error = error.into_error();
                    if let Some(fault) = client_body_fault(&error) {
                        return Err(UpstreamError::client_body(fault));
                    }
                    let stage = if unsent.is_some() {
                        Stage::Unsent
                    } else {
                        Stage::NoResponse
                    };
                    let failure = UpstreamError::reset(root_cause(&error), reused, stage);
                    // Only a request hyper hands back unsent can go again: its body is in it.
                    match unsent {
                        Some(unsent) if pooled_allowed && failure.may_retry(false) => {
                            pooled_allowed = false;
                            request = unsent;
                        }
                        _ => return Err(failure),
                    }
                }
            }
        }
    }

    /// Sends an upgrade request on a connection of its own (never pooled: after a 101 it
    /// belongs to the session). The connection runs as its own task so the upgrade can
    /// complete.
    pub async fn send_upgrade(
        &self,
        instance: &Instance,
        request: Request<http_body_util::Empty<bytes::Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let stream = self.connect_stream(instance).await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| UpstreamError::connect(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upgrade connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|error| UpstreamError::reset(root_cause(&error), false, Stage::NoResponse))
    }
}

/// Puts hyper's client on an open connection (no I/O: an HTTP/1.1 handshake only sets up
/// state).
async fn drive(stream: TcpStream) -> Result<Box<Pooled>, UpstreamError> {
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| UpstreamError::connect(error.to_string()))?;
    Ok(Box::new(Pooled {
        sender,
        connection: Some(connection),
    }))
}

/// Whether a failed exchange failed because of the client's request body, and how. The body
/// is the client's (hyper's server side): an `io::Error` of kind `InvalidInput`/`InvalidData`
/// in its chain is hyper's word for a malformed body; any other failure (an early end of
/// file, a reset HTTP/2 stream) means the client is gone.
fn client_body_fault(error: &(dyn std::error::Error + 'static)) -> Option<ClientBodyFault> {
    let mut current = Some(error);
    while let Some(error) = current {
        match error.downcast_ref::<BodyError>() {
            Some(BodyError::Stalled(stalled)) => return Some(ClientBodyFault::Stalled(*stalled)),
            Some(BodyError::Body(cause)) => {
                let cause: &(dyn std::error::Error + 'static) = cause.as_ref();
                let text = root_cause(cause);
                return Some(if is_malformed(cause) {
                    ClientBodyFault::Malformed(text)
                } else {
                    ClientBodyFault::Gone(text)
                });
            }
            None => current = error.source(),
        }
    }
    None
}

/// Whether `error`'s chain has hyper's marks of a malformed message.
fn is_malformed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{InvalidData, InvalidInput};
            return matches!(io.kind(), InvalidData | InvalidInput);
        }
        current = error.source();
    }
    false
}

/// Drives a connection until it can take a request.
async fn wait_ready(pooled: &mut Pooled) -> Result<(), ()> {
    poll_fn(|cx| {
        let Some(connection) = pooled.connection.as_mut() else {
            return Poll::Ready(Err(()));
        };
        if Pin::new(connection).poll(cx).is_ready() {
            pooled.connection = None;
            return Poll::Ready(Err(()));
        }
        pooled.sender.poll_ready(cx).map_err(|_| ())
    })
    .await
}

/// Keeps an upstream connection going while its response body streams, then returns it to
/// the instance's pool.
pub struct Driver {
    pooled: Option<Box<Pooled>>,
    pool: Arc<InstancePool>,
    idle_timeout: Duration,
}

impl Driver {
    /// Lets the connection read and write; call before polling the response body.
    pub fn poll_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(pooled) = &mut self.pooled {
            let ended = match pooled.connection.as_mut() {
                Some(connection) => Pin::new(connection).poll(cx).is_ready(),
                None => true,
            };
            if ended {
                self.pooled = None;
            }
        }
    }

    /// The response body has ended: the connection goes back to the pool for the next
    /// request, whichever client sends it.
    pub fn finish(&mut self) {
        let Some(pooled) = self.pooled.take() else {
            return;
        };
        // Only a connection that can take the next request now: one still writing the
        // previous request's body (the instance answered early) would stall whoever takes
        // it next.
        let Pooled { sender, connection } = *pooled;
        let (true, Some(connection)) = (sender.is_ready(), connection) else {
            return;
        };
        let parts = connection.into_parts();
        if !parts.read_buf.is_empty() {
            return; // the instance sent more than its response
        }
        let checkout = Checkout::new(
            EngineConnection::new(parts.io.into_inner()),
            true,
            Arc::clone(&self.pool),
            self.idle_timeout,
        );
        checkout.release();
    }
}
