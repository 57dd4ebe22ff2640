//! Closing a connection that still has unread input without destroying the last answer.
//!
//! A socket closed with unread bytes in its receive buffer makes the kernel send a reset
//! instead of a FIN, and a client that gets the reset may drop the answer it had not read yet
//! (a `400` for a refused head, an instance's early answer to an upload). nginx's lingering
//! close avoids that: shut the write side, then read and drop what the client still sends,
//! for a bounded time and amount, and only then close.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a closing connection's input is drained at most.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it at most.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Shuts `io`'s write side, then drains its input until the client closes, for at most
/// [`LINGER`] and [`LINGER_BYTES`].
pub async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) {
    if io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
