//! HTTP/1.1 connections to instances, through hyper's client, for the hyper path's requests
//! that have a body (HTTP/2 uploads, and handed-over HTTP/1.1 requests with a body): hyper's
//! client streams the upload while the response comes back. Requests without a body go over
//! the engine's connections instead (`h1::client`, `h1::pool`). Also `send_upgrade`, an
//! unpooled connection for a WebSocket handshake. Pooled per instance and driven by the
//! request using them.
//!
//! hyper's pooled client runs every upstream connection as a task of its own, so each proxied
//! request crosses tasks several times (request in, response head out, every body chunk out).
//! Here the request's own task polls the connection: while waiting for the response head, and
//! then from the response body's `poll_frame` while the body streams to the client. When the
//! body ends the connection goes back to its instance's idle list (most recently used first);
//! a connection taken from the list that turns out closed is dropped and the request, which
//! hyper hands back unsent, goes out on a fresh one.

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

use super::stall::{BodyError, BodyTimeout, Stalled};
use crate::config::UpstreamSettings;
use crate::instance::Instance;

type Connection = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// A client's request body on its way to an instance, limited by `client_body_timeout`.
pub type RequestBody = BodyTimeout<Incoming>;

/// One open connection to an instance.
pub struct Pooled {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended; dropping it makes hyper hand back a request it
    /// had queued but not written.
    connection: Option<Connection>,
}

/// An instance's idle hyper connections. Boxed: a connection is large, and it moves from the
/// list to the request, its body and back; moving a pointer is cheaper than copying it.
pub type IdleConnections = super::idle::IdleList<Pooled>;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Reset(String),
    /// The client's request body failed on its way: the client's fault, not the instance's.
    #[error("{0}")]
    ClientBody(ClientBodyFault),
}

/// How a client's request body failed on its way to an instance.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyFault {
    /// No byte for `client_body_timeout`.
    #[error("{0}")]
    Stalled(Stalled),
    /// The body was malformed (a bad chunk, say).
    #[error("{0}")]
    Malformed(String),
    /// The client went away (closed its connection, reset its stream) before the body ended.
    #[error("{0}")]
    Gone(String),
}

/// Sends requests to instances over pooled connections.
pub struct Upstream {
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Upstream {
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
        }
    }

    /// How long a pooled connection may sit idle before it is closed.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends `request` to `instance` and waits for the response head. The returned [`Driver`]
    /// must be polled alongside the response body (see [`Driver::poll_connection`]).
    pub async fn send(
        &self,
        instance: &Arc<Instance>,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Driver), UpstreamError> {
        loop {
            let (mut pooled, reused) = match instance
                .idle
                .take(self.idle_timeout, |pooled| !pooled.sender.is_closed())
            {
                Some(pooled) => (pooled, true),
                None => (self.connect(instance).await?, false),
            };
            if wait_ready(&mut pooled).await.is_err() {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Reset("connection closed at once".into()));
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
                        instance: Arc::clone(instance),
                        idle_timeout: self.idle_timeout,
                    };
                    return Ok((response, driver));
                }
                Err(mut error) => match error.take_message() {
                    // Never written: a pooled connection the instance had closed. Retry.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        let error = error.into_error();
                        if let Some(fault) = client_body_fault(&error) {
                            return Err(UpstreamError::ClientBody(fault));
                        }
                        return Err(UpstreamError::Reset(super::error::root_cause(&error)));
                    }
                },
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
            .map_err(|error| UpstreamError::Connect(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upgrade connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|error| UpstreamError::Reset(super::error::root_cause(&error)))
    }

    /// Opens a TCP connection to `instance` within `connect_timeout`, with TCP_NODELAY.
    pub(crate) async fn connect_stream(
        &self,
        instance: &Instance,
    ) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(instance.addr))
            .await
            .map_err(|_| {
                UpstreamError::Connect(format!("timed out after {:?}", self.connect_timeout))
            })?
            .map_err(|error| UpstreamError::Connect(error.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self, instance: &Instance) -> Result<Box<Pooled>, UpstreamError> {
        let stream = self.connect_stream(instance).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| UpstreamError::Connect(error.to_string()))?;
        Ok(Box::new(Pooled {
            sender,
            connection: Some(connection),
        }))
    }
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
                let text = super::error::root_cause(cause);
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
/// the instance's idle list.
pub struct Driver {
    pooled: Option<Box<Pooled>>,
    instance: Arc<Instance>,
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

    /// The response body has ended: keep the connection for the next request. (The next
    /// user drives it through the end of this exchange before sending.)
    pub fn finish(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            // Only a connection that can take the next request now: one still writing the
            // previous request's body (the instance answered early) would stall whoever
            // takes it next.
            if pooled.sender.is_ready() && pooled.connection.is_some() {
                self.instance.idle.put(pooled, self.idle_timeout);
            }
        }
    }
}
