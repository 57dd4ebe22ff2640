//! A connection taken out of its instance's pool for one exchange, and put back after it.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::connection::Connection;
use super::pool::InstancePool;

/// Read buffer size of an instance connection; a larger buffer (grown by a big response) is
/// not kept while the connection is idle.
const BUFFER: usize = 8 * 1024;

/// An engine connection in use by one exchange. Dropping it closes the connection; only
/// [`Checkout::release`] keeps it.
pub struct Checkout {
    pub connection: Box<Connection>,
    /// It came from the pool rather than being opened for this exchange.
    pub reused: bool,
    pool: Arc<InstancePool>,
    idle_timeout: Duration,
}

impl Checkout {
    pub(crate) fn new(
        connection: Box<Connection>,
        reused: bool,
        pool: Arc<InstancePool>,
        idle_timeout: Duration,
    ) -> Self {
        Checkout {
            connection,
            reused,
            pool,
            idle_timeout,
        }
    }

    /// The socket, for a client that drives the exchange itself (hyper's, for streamed
    /// bodies); it comes back through a new checkout's `release`.
    pub fn into_stream(self) -> tokio::net::TcpStream {
        self.connection.stream
    }

    /// The exchange ended cleanly: the connection goes back to its instance's pool, unless
    /// the instance sent more than its response or closed it.
    pub fn release(self) {
        let mut connection = self.connection;
        if connection.buffered.capacity() > 4 * BUFFER {
            connection.buffered = BytesMut::with_capacity(BUFFER);
        }
        if connection.finish_exchange() {
            self.pool.idle.put(connection, self.idle_timeout);
        }
    }
}
