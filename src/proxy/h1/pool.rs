//! Keep-alive connections from the HTTP/1.1 engine to an instance.
//!
//! A connection is owned by one request at a time and kept in the instance's idle list
//! between requests. Its read readiness is cleared when it goes idle, so an instance that
//! closes it (or writes to it) while it sits there makes it readable again: a look at tokio's
//! readiness, without a system call, tells a stale connection when it is taken, and it is
//! dropped. One closed in the instant before reuse is caught by the engine, which retries a
//! request without a body on a fresh connection.

use std::task::{Context, Waker};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One open connection to an instance, with the bytes it sent that were not used yet.
pub struct Connection {
    pub stream: TcpStream,
    pub buffered: BytesMut,
}

/// An instance's idle connections of the HTTP/1.1 engine.
pub type IdleConnections = crate::proxy::idle::IdleList<Connection>;

impl Connection {
    pub fn new(stream: TcpStream) -> Box<Self> {
        Box::new(Connection {
            stream,
            buffered: BytesMut::with_capacity(8 * 1024),
        })
    }

    /// Marks the end of an exchange: from here on, read readiness means the instance closed
    /// the connection or sent something unasked. (tokio clears readiness only on a
    /// would-block result, which a read that got the last bytes of a response did not see.)
    pub fn go_idle(&self) {
        let _ = self.stream.try_io(Interest::READABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
    }

    /// Whether the connection can take a request: the instance has neither closed it nor
    /// sent anything since its last response.
    pub fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.buffered.is_empty() && self.stream.poll_read_ready(&mut cx).is_pending()
    }
}
