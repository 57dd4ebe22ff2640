//! What the server knows about a client connection, and how a protocol engine hands a
//! connection back to the server.

use std::net::SocketAddr;

use bytes::BytesMut;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Http,
    Https,
}

impl ListenerKind {
    pub fn scheme(self) -> &'static str {
        match self {
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
        }
    }
}

/// What the gateway knows about a client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: ListenerKind,
}

/// How an HTTP/1.1 engine's turn on a connection ended.
pub enum Exit<IO> {
    /// The connection is finished (closed by either side, timed out, or shut down).
    Closed,
    /// hyper takes over from here, starting with these bytes already read from `IO`.
    Handoff(IO, BytesMut),
}
