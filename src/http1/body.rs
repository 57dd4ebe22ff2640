//! Message bodies of the HTTP/1.1 engine, copied from one connection to the other as they
//! arrive, in constant memory whatever their size.
//!
//! A chunked body is decoded and re-encoded, so its end is found exactly and nothing of the
//! sender's framing (sizes, extensions, trailers) reaches the other side: a malformed or
//! ambiguous body cannot smuggle a second request past the gateway.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::framing::Framing;
use crate::stall::Stalled;

/// Bytes read from the source in one go; also when pending output is written before a read.
const CHUNK: usize = 64 * 1024;

/// Why a body could not be copied.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed, or it closed before the body ended.
    Source(std::io::Error),
    /// Writing the destination failed.
    Destination(std::io::Error),
    /// The chunked framing is broken.
    Malformed(&'static str),
    /// The source sent nothing for the read limit.
    Stalled(Stalled),
}

/// Copies one body from `src` (whose bytes read so far are in `buffered`) to `dst`, after
/// `out`, bytes not written yet (a head): a small message goes out in one write. Bytes past
/// the body's end stay in `buffered`. `payload` counts the body's bytes (without chunk
/// framing) as they go, so a body that breaks off is counted as far as it went. A read that
/// waits longer than `read_limit` fails the copy with [`CopyError::Stalled`].
///
/// A chunked body is re-encoded rather than passed on: each run of data becomes a chunk of
/// our own, and chunk extensions and trailers are dropped, so whatever the sender put in its
/// framing never reaches a parser on the other side that might read it differently.
///
/// `framing` is the body's framing on the source side and on the destination side: the same,
/// or a body delimited by the source's close sent on chunked (see
/// [`super::response::ResponseHead::client_framing`]).
pub async fn copy<R, W>(
    (framing, output): (Framing, Framing),
    src: &mut R,
    buffered: &mut BytesMut,
    dst: &mut W,
    out: &mut Vec<u8>,
    payload: &mut u64,
    read_limit: Option<Duration>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = match framing {
        Framing::Length(length) => length,
        _ => 0,
    };
    debug_assert!(
        output == framing || (framing == Framing::UntilClose && output == Framing::Chunked)
    );
    let rechunk = output != framing;
    let mut chunked = ChunkedDecoder::default();
    let mut ended = false;
    loop {
        let done = match framing {
            Framing::Empty => true,
            Framing::Length(_) | Framing::UntilClose => {
                let take = match framing {
                    Framing::Length(_) => usize::try_from(remaining)
                        .map_or(buffered.len(), |remaining| remaining.min(buffered.len())),
                    _ => buffered.len(),
                };
                if take > 0 && rechunk {
                    write_chunk_size(out, take);
                    out.extend_from_slice(&buffered[..take]);
                    out.extend_from_slice(b"\r\n");
                    buffered.advance(take);
                    *payload += take as u64;
                } else if take > 0 {
                    if out.is_empty() && take >= CHUNK / 4 {
                        dst.write_all(&buffered[..take])
                            .await
                            .map_err(CopyError::Destination)?;
                    } else {
                        out.extend_from_slice(&buffered[..take]);
                    }
                    buffered.advance(take);
                    remaining = remaining.saturating_sub(take as u64);
                    *payload += take as u64;
                }
                if ended {
                    // The source closed: the end of a body delimited by close.
                    if rechunk {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    true
                } else {
                    matches!(framing, Framing::Length(_)) && remaining == 0
                }
            }
            Framing::Chunked => {
                let used = chunked
                    .advance(buffered, |data| {
                        write_chunk_size(out, data.len());
                        out.extend_from_slice(data);
                        out.extend_from_slice(b"\r\n");
                        *payload += data.len() as u64;
                    })
                    .map_err(CopyError::Malformed)?;
                buffered.advance(used);
                if chunked.is_done() {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                chunked.is_done()
            }
        };
        // Done, or about to wait for more: either way the peer can start on what it has.
        flush(dst, out).await?;
        if done {
            return Ok(());
        }
        if buffered.capacity() - buffered.len() < CHUNK / 4 {
            buffered.reserve(CHUNK);
        }
        let read = match read_limit {
            None => src.read_buf(buffered).await,
            Some(limit) => tokio::time::timeout(limit, src.read_buf(buffered))
                .await
                .map_err(|_| CopyError::Stalled(Stalled(limit)))?,
        };
        let read = read.map_err(CopyError::Source)?;
        if read == 0 {
            if framing != Framing::UntilClose {
                return Err(CopyError::Source(std::io::ErrorKind::UnexpectedEof.into()));
            }
            ended = true;
        }
    }
}

/// Writes a chunk-size line: the length in hex, then CRLF.
fn write_chunk_size(out: &mut Vec<u8>, length: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = length;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[rest & 15];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

async fn flush<W: AsyncWrite + Unpin>(dst: &mut W, out: &mut Vec<u8>) -> Result<(), CopyError> {
    if !out.is_empty() {
        dst.write_all(out).await.map_err(CopyError::Destination)?;
        out.clear();
    }
    Ok(())
}

/// Finds the end of a chunked body (RFC 9112 7.1) and hands its data on, byte by byte in the
/// framing and in bulk in the data.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes as much of `input` as belongs to the body, handing each run of data to `data`;
    /// returns how many bytes of `input` that is.
    pub fn advance(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, &'static str> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = usize::try_from(self.size)
                    .map_or(input.len() - at, |size| size.min(input.len() - at));
                data(&input[at..at + take]);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 16 {
                        return Err("chunk size too large");
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::Extension,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, _) => return Err("invalid chunk size"),
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err("bare LF in chunk extension"),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
                (State::SizeLf, b'\n') => State::Data,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.digits = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => {
                    return Err("bare LF in trailer")
                }
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => State::Done,
                _ => return Err("invalid chunked framing"),
            };
        }
        Ok(at)
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<(usize, bool, u64), &'static str> {
        let mut decoder = ChunkedDecoder::default();
        let mut payload = 0;
        let used = decoder.advance(input, |data| payload += data.len() as u64)?;
        Ok((used, decoder.is_done(), payload))
    }

    #[test]
    fn a_chunked_body_ends_exactly_after_its_trailers() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(decode(body), Ok((end, true, 11)));
        assert_eq!(decode(b"0\r\n\r\n"), Ok((5, true, 0)));
    }

    #[test]
    fn a_body_split_anywhere_decodes_the_same() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut payload = 0;
            let first = decoder
                .advance(&body[..split], |data| payload += data.len())
                .unwrap();
            assert_eq!(first, split);
            let second = decoder
                .advance(&body[split..], |data| payload += data.len())
                .unwrap();
            assert_eq!(first + second, body.len());
            assert!(decoder.is_done());
            assert_eq!(payload, 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_goes_quiet_for_the_read_limit_fails_the_copy_as_stalled() {
        let (mut source, mut feeder) = tokio::io::duplex(64);
        let mut buffered = BytesMut::new();
        let (mut sent, mut out, mut payload) = (Vec::new(), Vec::new(), 0);
        let limit = Duration::from_secs(30);
        let feed = async {
            feeder.write_all(b"5\r\nhel").await.unwrap();
            tokio::time::sleep(Duration::from_secs(29)).await;
            feeder.write_all(b"lo\r\n").await.unwrap();
            // Then nothing, with the connection open.
            std::future::pending::<()>().await
        };
        let started = tokio::time::Instant::now();
        let copied = tokio::select! {
            copied = copy(
                (Framing::Chunked, Framing::Chunked),
                &mut source,
                &mut buffered,
                &mut sent,
                &mut out,
                &mut payload,
                Some(limit),
            ) => copied,
            () = feed => unreachable!(),
        };
        assert!(matches!(copied, Err(CopyError::Stalled(Stalled(l))) if l == limit));
        assert_eq!(started.elapsed(), Duration::from_secs(29) + limit);
        // What came before the silence went on, as it came.
        assert_eq!((payload, &sent[..]), (5, &b"3\r\nhel\r\n2\r\nlo\r\n"[..]));
    }

    #[tokio::test]
    async fn a_chunked_body_is_re_encoded_without_extensions_or_trailers() {
        let body = b"5;ext=\"x\"\r\nhello\r\n0\r\nGET /admin HTTP/1.1\r\n\r\nnext";
        let mut buffered = BytesMut::from(&body[..]);
        let (mut sent, mut out, mut payload) = (Vec::new(), Vec::new(), 0);
        copy(
            (Framing::Chunked, Framing::Chunked),
            &mut tokio::io::empty(),
            &mut buffered,
            &mut sent,
            &mut out,
            &mut payload,
            None,
        )
        .await
        .unwrap();
        assert_eq!(sent, b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!((payload, &buffered[..]), (5, &b"next"[..]));
        let mut long = Vec::new();
        write_chunk_size(&mut long, 0x1f40);
        assert_eq!(long, b"1f40\r\n");
    }

    #[tokio::test]
    async fn a_body_delimited_by_close_is_sent_on_chunked_and_ends_with_the_last_chunk() {
        let (mut source, mut feeder) = tokio::io::duplex(64);
        let mut buffered = BytesMut::from(&b"first "[..]);
        let (mut sent, mut out, mut payload) = (Vec::new(), b"HEAD\r\n\r\n".to_vec(), 0);
        let feed = async {
            feeder.write_all(b"second").await.unwrap();
            drop(feeder);
        };
        let (copied, ()) = tokio::join!(
            copy(
                (Framing::UntilClose, Framing::Chunked),
                &mut source,
                &mut buffered,
                &mut sent,
                &mut out,
                &mut payload,
                None,
            ),
            feed
        );
        copied.unwrap();
        assert_eq!(sent, b"HEAD\r\n\r\n6\r\nfirst \r\n6\r\nsecond\r\n0\r\n\r\n");
        assert_eq!(payload, 12);
    }

    #[test]
    fn broken_framing_is_refused() {
        assert!(decode(b"x\r\n").is_err());
        assert!(decode(b"\r\n").is_err());
        assert!(decode(b"5\r\nhelloXX").is_err());
        assert!(decode(b"5\nhello").is_err());
        assert!(decode(b"11111111111111111\r\n").is_err());
        assert!(decode(b"0\r\nbad\n").is_err());
    }
}
