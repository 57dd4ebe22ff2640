//! A connection that chose `h2` by ALPN speaks HTTP/2 and nothing else.
//!
//! hyper-util's auto builder sniffs the protocol, so a TLS connection that negotiated `h2` and
//! then sent an HTTP/1.1 request was served as HTTP/1.1, and a bad preface was answered with
//! `HTTP/1.1 400`. After ALPN `h2` the client has promised HTTP/2 (RFC 9113 3.2): the preface
//! is checked here, and a connection that does not send it gets the server's SETTINGS and a
//! GOAWAY with PROTOCOL_ERROR (RFC 9113 3.4), then a lingering close. One that does goes to
//! hyper's HTTP/2-only server with the preface put back in front.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (RFC 9113 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame (the server's preface), then GOAWAY: last stream 0,
/// PROTOCOL_ERROR (1).
const REFUSAL: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, no parameters
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes of payload on stream 0
    0, 0, 0, 0, 0, 0, 0, 1, // last stream 0, PROTOCOL_ERROR
];

/// Reads the client's preface within `timeout`: `Some(bytes read)` if it is HTTP/2's, else
/// the connection is refused as the module header says and `None` returned.
pub async fn expect_preface<IO>(io: &mut IO, timeout: Duration) -> Option<BytesMut>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut read = BytesMut::with_capacity(PREFACE.len());
    let preface = async {
        while read.len() < PREFACE.len() {
            match io.read_buf(&mut read).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            let seen = read.len().min(PREFACE.len());
            if read[..seen] != PREFACE[..seen] {
                return false;
            }
        }
        true
    };
    if tokio::time::timeout(timeout, preface).await == Ok(true) {
        return Some(read);
    }
    tracing::debug!("connection refused: no HTTP/2 preface after ALPN h2");
    if io.write_all(&REFUSAL).await.is_ok() && io.flush().await.is_ok() {
        super::linger::linger(io).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_passes_with_what_followed_it_and_anything_else_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"\0\0\0").await.unwrap();
        let read = expect_preface(&mut server, Duration::from_secs(1)).await;
        assert!(read.unwrap().starts_with(PREFACE));

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client.shutdown().await);
        assert!(expect_preface(&mut server, Duration::from_secs(1))
            .await
            .is_none());
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, REFUSAL);
    }
}
