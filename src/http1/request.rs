//! Request heads of the HTTP/1.1 engine: parsed from the client with httparse, and written
//! out for the instance straight from the client's fields, rewritten on the way, without a
//! header map.
//!
//! Parsing is strict where a proxy must be (request smuggling): ambiguous framing (see
//! [`super::framing`]), a second `Host`, or a field `http` rejects is refused with 400 and the
//! connection closes. Anything this engine leaves to hyper (see [`Handoff`]) is recognised
//! here, before any byte is consumed.
//!
//! The fields are rewritten for the instance by [`super::hop`], as for the requests hyper
//! parsed; a test checks that they come out as the hyper path's `prepare_request_headers`
//! makes them.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Method, Uri};

use super::framing::{has_token, Framing, FramingHeaders, HeadError};
use crate::http1::headers::ClientFacts;
use crate::identity::TOKEN_HEADER;

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

/// Where one field's name and value are in a request head.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Field {
    pub fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name.0 as usize..(self.name.0 + self.name.1) as usize]
    }

    pub fn value<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.value.0 as usize..(self.value.0 + self.value.1) as usize]
    }
}

/// A request head ready for routing, with how its body is framed. Its fields are in the
/// list [`parse_request`] filled.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    /// The head's bytes, which the fields point into.
    pub head: Bytes,
    /// The `Host` field (at most one is accepted).
    pub host: Option<HeaderValue>,
    /// The instance token field, for `project` visibility.
    pub token: Option<Field>,
    /// Some `Connection` field may name fields to drop at this hop.
    pub connection: bool,
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

/// Parses the request head at the start of `buf`, its fields into `fields` (a list kept by
/// the connection, so no request allocates one). `Ok(None)`: more bytes are needed. On
/// success the head's bytes are taken from `buf` (a body and pipelined requests stay); on a
/// handoff nothing is taken.
pub fn parse_request(
    buf: &mut BytesMut,
    max_bytes: usize,
    fields: &mut Vec<Field>,
) -> Result<Option<Parsed>, HeadError> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let start = &buf[..buf.len().min(PREFACE.len())];
    if start == &PREFACE[..start.len()] {
        return Ok((start.len() == PREFACE.len()).then_some(Parsed::Handoff(Handoff::Http2Preface)));
    }
    if buf.len() > u32::MAX as usize {
        return Err(HeadError::TooLarge);
    }
    let mut parsed_fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(buf, &mut parsed_fields) {
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
    // What goes to hyper is still checked in full here first: hyper would accept, say, a
    // second Host on an upgrade request.
    let mut handoff = None;
    if request.version != Some(1) {
        handoff = Some("HTTP/1.0");
    }
    let method = request.method.unwrap_or_default();
    if method == "CONNECT" {
        handoff = handoff.or(Some("CONNECT"));
    }

    let base = buf.as_ptr() as usize;
    // In bounds of a buffer checked above to be under 4 GiB.
    let span = |part: &[u8]| ((part.as_ptr() as usize - base) as u32, part.len() as u32);
    let path = span(request.path.unwrap_or_default().as_bytes());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    fields.clear();
    let mut framing = FramingHeaders::default();
    let mut keep_alive = true;
    let mut connection = false;
    let mut host = None;
    let mut token = None;
    for parsed in request.headers.iter() {
        let name = parsed.name.as_bytes();
        let field = Field {
            name: span(name),
            value: span(parsed.value),
        };
        if name.eq_ignore_ascii_case(b"upgrade") {
            handoff = handoff.or(Some("upgrade"));
        } else if name.eq_ignore_ascii_case(b"expect") {
            handoff = handoff.or(Some("Expect"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection = true;
            keep_alive &= !has_token(parsed.value, b"close");
        } else if name.eq_ignore_ascii_case(b"host") {
            // RFC 9112 3.2: a request with more than one Host is answered 400.
            if host.replace(field).is_some() {
                return Err(HeadError::Malformed("more than one Host header"));
            }
        } else if name.eq_ignore_ascii_case(TOKEN_HEADER.as_str().as_bytes()) {
            // The first, as the hyper path's header map lookup takes.
            token.get_or_insert(field);
        }
        framing.note(name, parsed.value)?;
        fields.push(field);
    }
    if request.version != Some(1) && framing.has_transfer_coding() {
        // RFC 9112 6.1: the framing of such a message is faulty (nginx refuses it too).
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    let framing = framing.request()?;
    if let Some(reason) = handoff {
        return Ok(Some(Parsed::Handoff(Handoff::Request(reason))));
    }
    let Some(framing) = framing else {
        return Ok(Some(Parsed::Handoff(Handoff::Request("transfer coding"))));
    };

    let head = buf.split_to(length).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path.0 as usize..(path.0 + path.1) as usize))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let host = match host {
        Some(field) => {
            let range = field.value.0 as usize..(field.value.0 + field.value.1) as usize;
            Some(
                HeaderValue::from_maybe_shared(head.slice(range))
                    .map_err(|_| HeadError::Malformed("invalid Host"))?,
            )
        }
        None => None,
    };
    Ok(Some(Parsed::Request(RequestHead {
        method,
        uri,
        head,
        host,
        token,
        connection,
        framing,
        keep_alive,
    })))
}

/// Writes the request head for the instance: origin-form target, the client's fields
/// rewritten for this hop ([`super::hop`]), and the framing of the body that will follow,
/// which only the engine decides.
pub fn write_request(
    out: &mut Vec<u8>,
    request: &RequestHead,
    fields: &[Field],
    client: &ClientFacts<'_>,
) {
    let head = &request.head[..];
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let fields = || {
        fields
            .iter()
            .map(|field| (field.name(head), field.value(head)))
    };
    super::hop::write_fields(out, fields, client);
    request.framing.write_field(out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::framing::is_framing_field;
    use crate::identity::TOKEN_HEADER;
    use std::net::SocketAddr;

    fn request(text: &str) -> Result<Option<Parsed>, HeadError> {
        parse_request(&mut BytesMut::from(text), 16 * 1024, &mut Vec::new())
    }

    fn parsed(text: &str) -> (RequestHead, Vec<Field>) {
        let mut fields = Vec::new();
        match parse_request(&mut BytesMut::from(text), 16 * 1024, &mut fields) {
            Ok(Some(Parsed::Request(head))) => (head, fields),
            _ => panic!("not parsed: {text:?}"),
        }
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
        let mut fields = Vec::new();
        let Ok(Some(Parsed::Request(head))) = parse_request(&mut buf, 1024, &mut fields) else {
            panic!("not parsed");
        };
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri, "/a?b=1");
        assert_eq!(head.host.unwrap(), "x");
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].name(&head.head), b"Content-Length");
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
            // What goes to hyper is checked as strictly first.
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nHost: a\r\nHost: b\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
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
        parse_request(&mut buf, 1024, &mut Vec::new()).unwrap();
        assert_eq!(&buf[..], b"GET / HTTP/1.0\r\n\r\n");
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        let (head, _) = parsed("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!head.keep_alive);
    }

    /// A head's fields as a sorted list of (lowercase name, comma-joined values).
    type FieldList = Vec<(String, String)>;

    fn field_list(fields: impl Iterator<Item = (String, String)>) -> FieldList {
        let mut joined: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (name, value) in fields {
            joined
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push(value);
        }
        joined
            .into_iter()
            .map(|(name, values)| (name, values.join(", ")))
            .collect()
    }

    /// The fields of a written request head, without its framing field.
    fn written_fields(head: &[u8]) -> FieldList {
        let mut parsed_fields = [httparse::EMPTY_HEADER; 64];
        let mut reparsed = httparse::Request::new(&mut parsed_fields);
        reparsed.parse(head).unwrap();
        field_list(reparsed.headers.iter().map(|field| {
            (
                field.name.to_string(),
                String::from_utf8_lossy(field.value).into_owned(),
            )
        }))
    }

    /// The instance's head from this engine, and the fields the hyper path would send.
    fn both_ways(text: &str, trusted: bool) -> (String, FieldList, FieldList) {
        let (head, fields) = parsed(text);
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let host = head.host.clone().unwrap();
        let client = ClientFacts {
            peer,
            scheme: "https",
            host: &host,
            version: http::Version::HTTP_11,
            trusted,
        };
        let mut out = Vec::new();
        write_request(&mut out, &head, &fields, &client);
        let written = String::from_utf8(out).unwrap();
        let engine = written_fields(written.as_bytes());

        let mut map = http::HeaderMap::new();
        for field in &fields {
            map.append(
                http::HeaderName::from_bytes(field.name(&head.head)).unwrap(),
                HeaderValue::from_bytes(field.value(&head.head)).unwrap(),
            );
        }
        // The bodiless requests hyper parsed are written from their map by the same writer.
        let mut from_map = b"GET / HTTP/1.1\r\n".to_vec();
        crate::http1::hop::write_fields(
            &mut from_map,
            || crate::http1::hop::map_fields(&map),
            &client,
        );
        from_map.extend_from_slice(b"\r\n");
        let unframed = |fields: &FieldList| -> FieldList {
            let framing = |name: &str| is_framing_field(name.as_bytes());
            fields
                .iter()
                .filter(|(name, _)| !framing(name))
                .cloned()
                .collect()
        };
        assert_eq!(
            written_fields(&from_map),
            unframed(&engine),
            "{text:?} trusted={trusted}: the map's fields\n{}",
            String::from_utf8_lossy(&from_map)
        );
        map.remove(&TOKEN_HEADER);
        crate::http1::headers::prepare_request_headers(&mut map, &client);
        let hyper_path = field_list(
            map.iter()
                .filter(|(name, _)| !is_framing_field(name.as_str().as_bytes()))
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                }),
        );
        (written, engine, hyper_path)
    }

    #[test]
    fn the_engine_rewrites_fields_as_the_hyper_path_does() {
        let heads = [
            "GET /a HTTP/1.1\r\nHost: app.example.com\r\nAccept: */*\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nForwarded: for=10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: edge\r\nVia: 1.1 edge\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: app.example.com\r\nConnection: keep-alive, x-secret, x-forwarded-for\r\nX-Secret: 1\r\nX-Forwarded-For: 10.9.9.9\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: basic x\r\nx-tidegate-token: secret\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\nX-Forwarded-Host: \"quoted\"\r\n\r\n",
        ];
        for text in heads {
            for trusted in [false, true] {
                let (written, engine, hyper_path) = both_ways(text, trusted);
                assert_eq!(
                    engine
                        .iter()
                        .filter(|(name, _)| name != "content-length")
                        .cloned()
                        .collect::<Vec<_>>(),
                    hyper_path,
                    "{text:?} trusted={trusted}\n{written}"
                );
                assert!(!written.contains("x-tidegate-token"), "{written}");
            }
        }
    }

    #[test]
    fn the_instance_gets_the_framing_the_engine_sends_and_no_other() {
        // A client's `Connection: content-length` must not leave its body unframed, and a
        // length field is written once, by the engine.
        let (written, _, _) = both_ways(
            "POST /up HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 45\r\n\r\n",
            false,
        );
        assert_eq!(
            written.matches("content-length: 45\r\n").count(),
            1,
            "{written}"
        );
        assert!(!written.contains("Content-Length"), "{written}");
        let (written, _, _) = both_ways(
            "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert!(
            written.ends_with("via: 1.1 tidegate\r\ntransfer-encoding: chunked\r\n\r\n"),
            "{written}"
        );
    }
}
