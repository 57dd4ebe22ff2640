//! The TLS handshake of one client connection, with the certificate chosen by SNI.
//!
//! The ClientHello is read first (rustls' `Acceptor`) so the certificate can be picked from
//! the live store before the handshake goes on. A name no certificate covers, with no default
//! certificate, ends the connection with the `unrecognized_name` alert (rustls itself would
//! send `access_denied`). Bytes that are not TLS (plain HTTP sent to the TLS port, garbage)
//! end it with rustls' alert; plain HTTP gets a readable 400 instead, as nginx does, because
//! a person with curl is the usual sender. Nothing here can affect another connection.

use std::sync::Arc;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::StartHandshake;

use super::store::CertStore;

/// A fatal `unrecognized_name` (112) alert record, as sent in answer to a ClientHello.
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// The answer to a plain-HTTP request sent to the TLS port.
fn plain_http_answer() -> Vec<u8> {
    let body = "tidegate: a plain HTTP request was sent to the HTTPS port; use https://\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether the first bytes of a connection look like an HTTP/1 request line ("GET /...").
fn looks_like_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=7).contains(&method_len) && bytes.get(method_len) == Some(&b' ')
}

/// Why a handshake failed; `reason()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no certificate for server name {0:?}")]
    UnrecognizedName(Option<String>),
    #[error("not a TLS ClientHello: {0}")]
    NotTls(rustls::Error),
    #[error("handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("connection closed during the handshake")]
    Closed,
}

impl HandshakeError {
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::UnrecognizedName(_) => "unrecognized_name",
            HandshakeError::NotTls(_) => "not_tls",
            HandshakeError::Handshake(_) => "handshake",
            HandshakeError::Closed => "closed",
        }
    }
}

/// Runs the server side of a TLS handshake on `stream` (a TCP connection, wrapped by the
/// caller as it needs).
pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
    mut stream: IO,
    store: &Arc<CertStore>,
) -> Result<TlsStream<IO>, HandshakeError> {
    let mut acceptor = Acceptor::default();
    let mut buffer = vec![0u8; 4096];
    let mut first = true;
    let accepted = loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(HandshakeError::Handshake)?;
        if read == 0 {
            return Err(HandshakeError::Closed);
        }
        if first && looks_like_http(&buffer[..read]) {
            let _ = stream.write_all(&plain_http_answer()).await;
            let _ = stream.shutdown().await;
            return Err(HandshakeError::NotTls(rustls::Error::General(
                "plain HTTP on the TLS port".into(),
            )));
        }
        first = false;
        let mut input = &buffer[..read];
        while !input.is_empty() {
            acceptor
                .read_tls(&mut input)
                .map_err(HandshakeError::Handshake)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => continue,
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write(&mut out);
                let _ = stream.write_all(&out).await;
                return Err(HandshakeError::NotTls(error));
            }
        }
    };
    let server_name = accepted.client_hello().server_name().map(str::to_string);
    let Some(config) = store.lookup(server_name.as_deref()) else {
        let _ = stream.write_all(&UNRECOGNIZED_NAME).await;
        let _ = stream.shutdown().await;
        return Err(HandshakeError::UnrecognizedName(server_name));
    };
    StartHandshake::from_parts(accepted, stream)
        .into_stream(config)
        .await
        .map_err(HandshakeError::Handshake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_recognised_and_the_answer_is_well_formed() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"OPTIONS * HTTP/1.1\r\n"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_http(b"garbage"));
        let answer = plain_http_answer();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
