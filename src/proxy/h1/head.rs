//! Message heads of the HTTP/1.1 engine: parsing with httparse, the body framing of RFC 9112
//! section 6, and writing heads out.
//!
//! Parsing is strict where a proxy must be (request smuggling): a request with both
//! `Content-Length` and `Transfer-Encoding`, with differing or non-numeric lengths, or with a
//! header name `http` rejects is refused with 400 and the connection closes. Anything this
//! engine leaves to hyper (see [`Handoff`]) is recognised here, before any byte is consumed.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Most header fields accepted in one head, as hyper's default.
pub const MAX_HEADERS: usize = 100;

/// How a message body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, passed through chunk by chunk.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a head could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than the configured limit: 431 for a request.
    TooLarge,
    /// Not valid HTTP/1.1, with the reason for the 400 (or the 502 for a response).
    Malformed(&'static str),
}

/// What the engine leaves to hyper, with the reason in words for traces.
#[derive(Debug, PartialEq, Eq)]
pub enum Handoff {
    /// The HTTP/2 connection preface of a prior-knowledge (h2c) client.
    Http2Preface,
    /// A request this engine does not handle itself: upgrades, `Expect`, CONNECT, HTTP/1.0,
    /// transfer codings other than plain chunked.
    Request(&'static str),
}

/// A request head ready for routing, with how its body is framed.
pub struct RequestHead {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// The client asked to keep the connection open after this exchange.
    pub keep_alive: bool,
}

/// A parsed request, or what to do instead.
// Requests are the common case: boxing the head would allocate once per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Request(RequestHead),
    Handoff(Handoff),
}

type Span = (usize, usize);

/// Parses the request head at the start of `buf`. `Ok(None)`: more bytes are needed. On
/// success the head's bytes are taken from `buf` (a body and pipelined requests stay); on a
/// handoff nothing is taken.
pub fn parse_request(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Parsed>, HeadError> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let start = &buf[..buf.len().min(PREFACE.len())];
    if start == &PREFACE[..start.len()] {
        return Ok((start.len() == PREFACE.len()).then_some(Parsed::Handoff(Handoff::Http2Preface)));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if length > max_bytes {
        return Err(HeadError::TooLarge);
    }
    if request.version != Some(1) {
        return Ok(Some(Parsed::Handoff(Handoff::Request("HTTP/1.0"))));
    }
    let method = request.method.unwrap_or_default();
    if method == "CONNECT" {
        return Ok(Some(Parsed::Handoff(Handoff::Request("CONNECT"))));
    }

    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| (part.as_ptr() as usize - base, part.len());
    let path = span(request.path.unwrap_or_default().as_bytes());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let mut spans: [(Span, Span); MAX_HEADERS] = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = request.headers.len();
    let mut framing = FramingHeaders::default();
    let mut keep_alive = true;
    for (field, slot) in request.headers.iter().zip(spans.iter_mut()) {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"upgrade") {
            return Ok(Some(Parsed::Handoff(Handoff::Request("upgrade"))));
        }
        if name.eq_ignore_ascii_case(b"expect") {
            return Ok(Some(Parsed::Handoff(Handoff::Request("Expect"))));
        }
        if name.eq_ignore_ascii_case(b"connection") && has_token(field.value, b"close") {
            keep_alive = false;
        }
        framing.note(name, field.value)?;
        *slot = (span(name), span(field.value));
    }
    let framing = match framing.request()? {
        Some(framing) => framing,
        None => return Ok(Some(Parsed::Handoff(Handoff::Request("transfer coding")))),
    };

    let head = buf.split_to(length).freeze();
    let slice = |(start, len): Span| head.slice(start..start + len);
    let uri = Uri::from_maybe_shared(slice(path))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    for &(name, value) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[name.0..name.0 + name.1])
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        headers.append(name, header_value(slice(value))?);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Ok(Some(Parsed::Request(RequestHead {
        parts,
        framing,
        keep_alive,
    })))
}

/// A response head from an instance.
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The instance will take another request on this connection.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf`, taking its bytes. `Ok(None)`: more bytes
/// are needed. `head_request` says the body is absent whatever the headers say.
pub fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let length = match response.parse(buf) {
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
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let base = buf.as_ptr() as usize;
    let mut spans: [(Span, Span); MAX_HEADERS] = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = response.headers.len();
    let mut framing = FramingHeaders::default();
    let mut keep_alive = version == Version::HTTP_11;
    for (field, slot) in response.headers.iter().zip(spans.iter_mut()) {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            if has_token(field.value, b"close") {
                keep_alive = false;
            } else if has_token(field.value, b"keep-alive") {
                keep_alive = true;
            }
        }
        framing.note(name, field.value)?;
        *slot = (
            (name.as_ptr() as usize - base, name.len()),
            (field.value.as_ptr() as usize - base, field.value.len()),
        );
    }
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else {
        framing.response()
    };
    keep_alive &= framing != Framing::UntilClose;

    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &((name, name_len), (value, value_len)) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[name..name + name_len])
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        headers.append(name, header_value(head.slice(value..value + value_len))?);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Response heads larger than this are refused (hyper's client limit is about 400 KiB).
const MAX_RESPONSE_HEAD: usize = 256 * 1024;

fn header_value(bytes: Bytes) -> Result<HeaderValue, HeadError> {
    HeaderValue::from_maybe_shared(bytes).map_err(|_| HeadError::Malformed("invalid header value"))
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

/// The framing headers of one message, collected while its fields are read.
#[derive(Default)]
struct FramingHeaders {
    length: Option<u64>,
    /// Every `Transfer-Encoding` value seen; `Some(true)` if the last coding is chunked and
    /// it is the only one.
    chunked_only: Option<bool>,
    chunked_last: bool,
}

impl FramingHeaders {
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(value)?;
            if self.length.is_some_and(|seen| seen != length) {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            self.length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let mut codings = value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|coding| !coding.is_empty());
            let only = match (codings.next(), codings.next()) {
                (Some(coding), None) => coding.eq_ignore_ascii_case(b"chunked"),
                _ => false,
            };
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            self.chunked_only = Some(self.chunked_only.is_none() && only);
            self.chunked_last = last;
        }
        Ok(())
    }

    /// A request's framing; `None` for a transfer coding left to hyper.
    fn request(&self) -> Result<Option<Framing>, HeadError> {
        match (self.chunked_only, self.length) {
            // RFC 9112 6.1: a server may reject both; a proxy must, or it can be smuggled past.
            (Some(_), Some(_)) => Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            )),
            (Some(true), None) => Ok(Some(Framing::Chunked)),
            (Some(false), None) if !self.chunked_last => Err(HeadError::Malformed(
                "Transfer-Encoding does not end in chunked",
            )),
            (Some(false), None) => Ok(None),
            (None, Some(0)) | (None, None) => Ok(Some(Framing::Empty)),
            (None, Some(length)) => Ok(Some(Framing::Length(length))),
        }
    }

    /// A response's framing (RFC 9112 6.3): chunked last wins over a length; any other
    /// coding, or none of either, reads until close.
    fn response(&self) -> Framing {
        match (self.chunked_only.is_some(), self.length) {
            (true, _) if self.chunked_last => Framing::Chunked,
            (true, _) => Framing::UntilClose,
            (false, Some(0)) => Framing::Empty,
            (false, Some(length)) => Framing::Length(length),
            (false, None) => Framing::UntilClose,
        }
    }
}

fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    // A list of identical values ("5, 5") is allowed by RFC 9110 8.6; hyper accepts it too.
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        let parsed = std::str::from_utf8(part)
            .ok()
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or(HeadError::Malformed("invalid Content-Length"))?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err(HeadError::Malformed("conflicting Content-Length"));
        }
        length = Some(parsed);
    }
    length.ok_or(HeadError::Malformed("invalid Content-Length"))
}

/// Writes a request head for the instance: origin-form target, the headers as they are, and
/// the framing header of the body that follows.
pub fn write_request(out: &mut Vec<u8>, parts: &http::request::Parts, framing: Framing) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, &parts.headers);
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response head for the client, with the framing the body will be sent in and
/// `Connection: close` when this is the connection's last response. A length travels in
/// `headers` (the instance's own `Content-Length`, kept as it is).
pub fn write_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(out, headers);
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close || framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<Option<Parsed>, HeadError> {
        parse_request(&mut BytesMut::from(text), 16 * 1024)
    }

    fn framing(text: &str) -> Result<Framing, HeadError> {
        match request(text)? {
            Some(Parsed::Request(head)) => Ok(head.framing),
            Some(Parsed::Handoff(reason)) => panic!("handed off: {reason:?}"),
            None => panic!("incomplete"),
        }
    }

    fn handoff(text: &str) -> Handoff {
        match request(text) {
            Ok(Some(Parsed::Handoff(reason))) => reason,
            _ => panic!("not handed off: {text:?}"),
        }
    }

    #[test]
    fn a_head_is_taken_and_the_body_and_next_request_stay() {
        let mut buf =
            BytesMut::from("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET");
        let Ok(Some(Parsed::Request(head))) = parse_request(&mut buf, 1024) else {
            panic!("not parsed");
        };
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/a?b=1");
        assert_eq!(head.parts.headers["host"], "x");
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"hiGET");
    }

    #[test]
    fn a_partial_head_waits_and_an_endless_one_is_too_large() {
        assert!(matches!(request("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
        let endless = format!("GET / HTTP/1.1\r\nx-big: {}", "y".repeat(20_000));
        assert!(matches!(request(&endless), Err(HeadError::TooLarge)));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(framing("GET / HTTP/1.1\r\n\r\n"), Ok(Framing::Empty));
        assert_eq!(
            framing("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header: x\r\n\r\n",
        ] {
            assert!(
                matches!(request(text), Err(HeadError::Malformed(_))),
                "accepted {text:?}"
            );
        }
    }

    #[test]
    fn what_the_engine_does_not_handle_goes_to_hyper() {
        assert_eq!(
            handoff("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Handoff::Http2Preface
        );
        assert!(matches!(request("PRI * HT"), Ok(None)));
        for text in [
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        ] {
            assert!(matches!(handoff(text), Handoff::Request(_)), "{text:?}");
        }
        // Nothing is consumed on a handoff: hyper reads the request from the start.
        let mut buf = BytesMut::from("GET / HTTP/1.0\r\n\r\n");
        parse_request(&mut buf, 1024).unwrap();
        assert_eq!(&buf[..], b"GET / HTTP/1.0\r\n\r\n");
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        let Ok(Some(Parsed::Request(head))) =
            request("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
        else {
            panic!("not parsed");
        };
        assert!(!head.keep_alive);
    }

    #[test]
    fn response_framing_and_keep_alive() {
        let response = |text: &str, head_request| {
            parse_response(&mut BytesMut::from(text), head_request)
                .unwrap()
                .unwrap()
        };
        let ok = response("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", false);
        assert_eq!((ok.framing, ok.keep_alive), (Framing::Length(3), true));
        let head = response("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true);
        assert_eq!(head.framing, Framing::Empty);
        let chunked = response(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        let until_close = response("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(
            (until_close.framing, until_close.keep_alive),
            (Framing::UntilClose, false)
        );
        let closing = response(
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
            false,
        );
        assert_eq!(
            (closing.framing, closing.keep_alive),
            (Framing::Empty, false)
        );
        let old = response("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false);
        assert_eq!((old.version, old.keep_alive), (Version::HTTP_10, false));
        assert!(parse_response(
            &mut BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            false
        )
        .is_err());
    }
}
