//! Everything between an instance lease and the instance's socket: connections, their pools,
//! the one way a request goes out and its response head comes back, and the one rule for
//! sending a request again.
//!
//! - [`Upstream::send`]: a request head (already written for the instance) goes out on a
//!   pooled connection or a new one, and the response head comes back through the caller's
//!   parser: the HTTP/1.1 engine relays it to its client as it parses (`proxy::h1`), the hyper
//!   path makes `http::response::Parts` of it ([`engine::send`]). A pooled connection that
//!   turns out closed is replaced and the request sent once more when
//!   [`UpstreamError::may_retry`] says so.
//! - [`Upstream::checkout`]: a connection for an exchange the caller drives itself (a request
//!   body streaming up while the response comes down).
//! - [`streaming`]: hyper's client, kept as the driver for request bodies of the hyper path
//!   (HTTP/2 uploads) and for WebSocket handshakes.
//!
//! Connections wait between requests in per-instance pools ([`pool`]) found by instance id,
//! not on the instance: the control plane, which makes and stops instances, never sees them.
//! This module imports nothing from the proxy; the proxy maps [`UpstreamError`] to a status.

mod checkout;
mod connection;
pub mod engine;
mod error;
mod idle;
pub mod pool;
pub mod streaming;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::UpstreamSettings;
use crate::http1::framing::HeadError;
use crate::http1::upstream_head::{self, Head, ReadError};
use crate::instance::Instance;
pub use checkout::Checkout;
pub use connection::Connection;
pub use error::{root_cause, Cause, ClientBodyFault, Stage, UpstreamError};
use pool::Pools;

/// Opens, pools and sends on connections to instances.
pub struct Upstream {
    connect_timeout: Duration,
    idle_timeout: Duration,
    pools: Pools,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Upstream {
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.idle_timeout,
            pools: Pools::default(),
        }
    }

    /// How long a pooled connection may sit idle before it is closed.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends `head` (a bodiless request, as the instance is to read it) and reads the
    /// response head with `parse`. `idempotent` is whether the request's method is; it
    /// decides, with [`UpstreamError::may_retry`], whether a pooled connection found closed
    /// gets the request once more on a new one. A response that fails after its first byte is
    /// never retried.
    pub async fn send<T>(
        &self,
        instance: &Arc<Instance>,
        head: &[u8],
        idempotent: bool,
        mut parse: impl FnMut(&mut BytesMut) -> Result<Option<Head<T>>, HeadError>,
    ) -> Result<(Checkout, T), UpstreamError> {
        let mut pooled = true;
        loop {
            let mut checkout = self.checkout(instance, pooled).await?;
            let reused = checkout.reused;
            let attempt = async {
                let connection = &mut *checkout.connection;
                if let Err(error) = connection.stream.write_all(head).await {
                    return Err(UpstreamError::reset(
                        error.to_string(),
                        reused,
                        Stage::NoResponse,
                    ));
                }
                let Connection { stream, buffered } = connection;
                upstream_head::read(stream, buffered, &mut parse)
                    .await
                    .map_err(|error| read_error(error, reused, None))
            };
            match attempt.await {
                Ok(response) => return Ok((checkout, response)),
                Err(error) if pooled && error.may_retry(idempotent) => pooled = false,
                Err(error) => return Err(error),
            }
        }
    }

    /// A connection to `instance` for one exchange: the most recently used idle one if
    /// `pooled` allows and there is one, else a new one.
    pub async fn checkout(
        &self,
        instance: &Arc<Instance>,
        pooled: bool,
    ) -> Result<Checkout, UpstreamError> {
        let pool = self.pools.of(instance);
        let idle = pooled
            .then(|| pool.idle.take(self.idle_timeout, Connection::is_reusable))
            .flatten();
        let (connection, reused) = match idle {
            Some(connection) => (connection, true),
            None => (Connection::new(self.connect_stream(instance).await?), false),
        };
        Ok(Checkout::new(connection, reused, pool, self.idle_timeout))
    }

    /// Opens a TCP connection to `instance` within `connect_timeout`, with TCP_NODELAY.
    pub async fn connect_stream(&self, instance: &Instance) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(instance.addr))
            .await
            .map_err(|_| {
                UpstreamError::connect(format!("timed out after {:?}", self.connect_timeout))
            })?
            .map_err(|error| UpstreamError::connect(error.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// A failed read of a response head as an [`UpstreamError`]; a failed write of the request
/// body, if there was one, explains a close better than the close itself.
pub fn read_error(
    error: ReadError,
    reused: bool,
    write_failed: Option<&std::io::Error>,
) -> UpstreamError {
    let stage = match error {
        ReadError::Closed(_) => Stage::NoResponse,
        _ => Stage::Responding,
    };
    UpstreamError::reset(error.cause(write_failed), reused, stage)
}
