//! Reading an instance's response head, for both users of the engine's instance connections
//! (the engine's own exchange, and `client` for requests hyper serves): the read loop, with
//! errors precise enough to decide on a retry and to explain a `502`, and the parse up to the
//! status line's meaning, after which each makes its client's version of the head.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::framing::HeadError;
use super::head_scan::HeadScan;
use super::request::MAX_HEADERS;

/// Response heads larger than this are refused (hyper's client limit is about 400 KiB).
const MAX_RESPONSE_HEAD: usize = 256 * 1024;

/// Read size while a head is incomplete.
const READ: usize = 8 * 1024;

/// A head taken off the front of the bytes read.
pub enum Head<T> {
    /// An interim (1xx) response, skipped as hyper's client does; a final one follows.
    Interim,
    Final(T),
}

/// A final response head as httparse read it.
pub struct StatusHead<'h, 'b> {
    pub status: StatusCode,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    pub fields: &'h [httparse::Header<'b>],
    /// The head's length in bytes, to take off the buffer once used.
    pub length: usize,
}

/// Space for a head's fields.
pub type Fields<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// An empty [`Fields`].
pub fn fields<'b>() -> Fields<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// What [`parse`] found at the start of the bytes read.
pub enum Parsed<'h, 'b> {
    /// An interim head of this many bytes, to be taken off and skipped.
    Interim(usize),
    Final(StatusHead<'h, 'b>),
}

/// Parses the response head at the start of `buf`. `Ok(None)`: more bytes are needed.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut Fields<'b>,
) -> Result<Option<Parsed<'h, 'b>>, HeadError> {
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        fields,
    );
    let length = match parsed {
        // A head that arrived whole in one read is held to the same limit.
        Ok(httparse::Status::Complete(length)) if length > MAX_RESPONSE_HEAD => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed response head")),
    };
    let status = StatusCode::from_u16(response.code.unwrap_or_default())
        .map_err(|_| HeadError::Malformed("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(HeadError::Malformed(
            "101 to a request that asked no upgrade",
        ));
    }
    if status.is_informational() {
        return Ok(Some(Parsed::Interim(length)));
    }
    Ok(Some(Parsed::Final(StatusHead {
        status,
        http11: response.version == Some(1),
        fields: response.headers,
        length,
    })))
}

/// Why no response head could be read.
pub enum ReadError {
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

/// Reads from `stream` into `buffered` until `take` finds a final head in it (`take` is
/// called again after an interim one, and after a read that may have completed the head, see
/// [`HeadScan`]).
pub async fn read<R, T>(
    stream: &mut R,
    buffered: &mut BytesMut,
    mut take: impl FnMut(&mut BytesMut) -> Result<Option<Head<T>>, HeadError>,
) -> Result<T, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut received = !buffered.is_empty();
    let mut scan = HeadScan::default();
    loop {
        if !buffered.is_empty() && (scan.ready(buffered) || buffered.len() > MAX_RESPONSE_HEAD) {
            match take(buffered) {
                Ok(Some(Head::Interim)) => {
                    scan = HeadScan::default();
                    continue;
                }
                Ok(Some(Head::Final(head))) => return Ok(head),
                Ok(None) => {}
                Err(HeadError::TooLarge) => return Err(ReadError::Invalid("head too large")),
                Err(HeadError::Malformed(why)) => return Err(ReadError::Invalid(why)),
            }
        }
        if buffered.capacity() - buffered.len() < 1024 {
            buffered.reserve(READ);
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
