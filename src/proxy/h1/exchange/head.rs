//! Reading an instance's response head, with what went wrong said precisely enough to decide
//! on a retry and to explain a `502`.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::super::framing::HeadError;
use super::super::response::{self, RelayOptions, Relayed, ResponseHead};
use super::super::BUFFER;

pub(super) enum ReadError {
    /// Closed or reset before the first byte of a response: safe to retry where allowed.
    Closed(String),
    /// Failed after part of the response head arrived.
    Broken(String),
    Invalid(&'static str),
}

impl ReadError {
    /// The cause for the 502's body; a failed write of the request body, if there was one,
    /// explains a close better.
    pub fn cause(self, write_failed: Option<&std::io::Error>) -> String {
        match (self, write_failed) {
            (ReadError::Closed(_), Some(error)) => error.to_string(),
            (ReadError::Closed(cause) | ReadError::Broken(cause), _) => cause,
            (ReadError::Invalid(why), _) => format!("invalid response: {why}"),
        }
    }
}

/// Reads an instance's response head and writes the client's version of it to `out`,
/// skipping interim (1xx) responses as hyper's client does. `options` are read when the head
/// is complete.
pub(super) async fn relay_response<'o, R: AsyncRead + Unpin>(
    stream: &mut R,
    buffered: &mut BytesMut,
    out: &mut Vec<u8>,
    options: impl Fn() -> RelayOptions<'o>,
) -> Result<ResponseHead, ReadError> {
    let mut received = !buffered.is_empty();
    loop {
        match response::relay_response(buffered, out, &options()) {
            Ok(Some(Relayed::Interim)) => continue,
            Ok(Some(Relayed::Final(response))) => return Ok(response),
            Ok(None) => {}
            Err(HeadError::TooLarge) => return Err(ReadError::Invalid("head too large")),
            Err(HeadError::Malformed(why)) => return Err(ReadError::Invalid(why)),
        }
        if buffered.capacity() - buffered.len() < 1024 {
            buffered.reserve(BUFFER);
        }
        let read = stream.read_buf(buffered).await;
        match (read, received) {
            (Ok(0), false) => {
                return Err(ReadError::Closed(
                    "connection closed before a response".into(),
                ))
            }
            (Ok(0), true) => {
                return Err(ReadError::Broken(
                    "connection closed inside the response head".into(),
                ))
            }
            (Ok(_), _) => received = true,
            (Err(error), false) => return Err(ReadError::Closed(error.to_string())),
            (Err(error), true) => return Err(ReadError::Broken(error.to_string())),
        }
    }
}
