//! Request heads of the HTTP/1.1 engine: parsed from the client with httparse into the
//! `http` types the shared routing code takes, and written out for the instance.
//!
//! Parsing is strict where a proxy must be (request smuggling): ambiguous framing (see
//! [`super::framing`]), a second `Host`, or a field `http` rejects is refused with 400 and the
//! connection closes. Anything this engine leaves to hyper (see [`Handoff`]) is recognised
//! here, before any byte is consumed.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use super::framing::{has_token, is_framing_field, Framing, FramingHeaders, HeadError};

/// Most header fields accepted in one head, as hyper's default.
pub const MAX_HEADERS: usize = 100;

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

/// Where a field's name and value are in the head: start and length of each.
type Span = [u32; 4];

/// Parses the request head at the start of `buf`. `Ok(None)`: more bytes are needed. On
/// success the head's bytes are taken from `buf` (a body and pipelined requests stay); on a
/// handoff nothing is taken.
pub fn parse_request(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Parsed>, HeadError> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let start = &buf[..buf.len().min(PREFACE.len())];
    if start == &PREFACE[..start.len()] {
        return Ok((start.len() == PREFACE.len()).then_some(Parsed::Handoff(Handoff::Http2Preface)));
    }
    if buf.len() > u32::MAX as usize {
        return Err(HeadError::TooLarge);
    }
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(buf, &mut fields) {
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
    // In bounds of a buffer checked above to be under 4 GiB.
    let span = |part: &[u8]| ((part.as_ptr() as usize - base) as u32, part.len() as u32);
    let path = span(request.path.unwrap_or_default().as_bytes());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let mut spans: [Span; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
    let count = request.headers.len();
    let mut framing = FramingHeaders::default();
    let mut keep_alive = true;
    let mut hosts = 0;
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
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
        framing.note(name, field.value)?;
        let (name, value) = (span(name), span(field.value));
        *slot = [name.0, name.1, value.0, value.1];
    }
    // RFC 9112 3.2: a request with more than one Host is answered 400.
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    let framing = match framing.request()? {
        Some(framing) => framing,
        None => return Ok(Some(Parsed::Handoff(Handoff::Request("transfer coding")))),
    };

    let head = buf.split_to(length).freeze();
    let slice = |(start, len): (u32, u32)| head.slice(start as usize..(start + len) as usize);
    let uri = Uri::from_maybe_shared(slice(path))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(count);
    for &[name, name_len, value, value_len] in &spans[..count] {
        let name = HeaderName::from_bytes(&head[name as usize..(name + name_len) as usize])
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        headers.append(name, header_value(slice((value, value_len)))?);
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

fn header_value(bytes: Bytes) -> Result<HeaderValue, HeadError> {
    HeaderValue::from_maybe_shared(bytes).map_err(|_| HeadError::Malformed("invalid header value"))
}

/// Writes a request head for the instance: origin-form target, the (already rewritten)
/// fields, and the framing of the body that will follow, which only the engine decides.
pub fn write_request(out: &mut Vec<u8>, parts: &http::request::Parts, framing: Framing) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if is_framing_field(name.as_str().as_bytes()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    framing.write_field(out);
    out.extend_from_slice(b"\r\n");
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
            Ok(Framing::Length(0))
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
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
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
    fn the_instance_gets_the_framing_the_engine_sends_and_no_other() {
        // What a client's `Connection: content-length` left of its fields, or an instance's
        // length that disagrees: only the engine's framing is written.
        let (mut parts, ()) = http::Request::post("/up").body(()).unwrap().into_parts();
        parts
            .headers
            .insert("content-length", HeaderValue::from_static("3"));
        parts
            .headers
            .insert("transfer-encoding", HeaderValue::from_static("gzip"));
        let mut out = Vec::new();
        write_request(&mut out, &parts, Framing::Length(45));
        assert_eq!(out, b"POST /up HTTP/1.1\r\ncontent-length: 45\r\n\r\n");
        out.clear();
        write_request(&mut out, &parts, Framing::Chunked);
        assert_eq!(
            out,
            b"POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
