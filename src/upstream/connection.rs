//! Keep-alive connections from the HTTP/1.1 engine to an instance.
//!
//! A connection is owned by one request at a time and kept in the instance's pool
//! between requests. When an exchange ends, one read that would block shows the instance
//! sent nothing more and did not close; it also leaves tokio's read readiness clear, so an
//! instance that closes the connection (or writes to it) while it sits idle makes it
//! readable again: a look at that readiness, without a system call, tells a stale connection
//! when it is taken, and it is dropped. One closed in the instant before reuse is caught by
//! the engine, which retries a bodiless idempotent request once on a fresh connection.

use std::task::{Context, Waker};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// One open connection to an instance, with the bytes it sent that were not used yet.
pub struct Connection {
    pub stream: TcpStream,
    pub buffered: BytesMut,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Box<Self> {
        Box::new(Connection {
            stream,
            buffered: BytesMut::with_capacity(8 * 1024),
        })
    }

    /// Ends an exchange that went cleanly: whether the connection can be kept for the next
    /// request. The instance must have sent nothing past its response, and must not have
    /// closed the connection. One read that would block tells (and, as tokio clears read
    /// readiness only on a would-block result, it also makes anything the instance sends
    /// or a close while the connection is idle show as readiness, see `is_reusable`).
    pub fn finish_exchange(&mut self) -> bool {
        if !self.buffered.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Whether the connection can take a request: the instance has neither closed it nor
    /// sent anything since its last response.
    pub fn is_reusable(&self) -> bool {
        if !self.buffered.is_empty() {
            return false;
        }
        // The readiness look goes through tokio's per-task budget, and with the budget spent
        // it says "pending" whatever the socket's state: then ask the socket itself. (A
        // stray byte read by the probe makes the connection unusable anyway.)
        if !tokio::task::coop::has_budget_remaining() {
            let mut probe = [0u8; 1];
            return matches!(
                self.stream.try_read(&mut probe),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
            );
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }
}
