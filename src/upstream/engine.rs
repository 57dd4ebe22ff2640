//! Requests that hyper serves (HTTP/2, and the HTTP/1.1 requests the engine hands over), when
//! they have no body, sent the engine's way: the request head is written from the client's
//! `http::request::Parts` with its fields rewritten on the way (`http1::hop`), its response
//! head read by [`Upstream::send`] and made into `http::response::Parts` in one pass,
//! and the body streams as an [`http_body::Body`] that puts the connection back in the
//! instance's pool when it ends.
//!
//! Why: through hyper's HTTP/1.1 client, an HTTP/2 request cost about 16 µs of CPU on the
//! upstream side where the engine spends about 7 (BENCHMARKS.md), which kept HTTP/2 at 0.6 to
//! 0.7 of nginx. Requests with a body still go through hyper's client, which streams the
//! upload while it reads the response (`streaming`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::{Checkout, Connection, Upstream, UpstreamError};
use crate::http1::body::ChunkedDecoder;
use crate::http1::framing::{
    self, is_framing_field, ConnectionTokens, Framing, FramingHeaders, HeadError,
};
use crate::http1::headers::{is_hop_by_hop_name, ClientFacts};
use crate::http1::hop;
use crate::http1::upstream_head::{self, Head, Parsed, StatusHead};
use crate::instance::Instance;

/// Read size for response bodies.
const CHUNK: usize = 64 * 1024;

/// Sends a bodiless request as the client sent it, its fields rewritten for the instance on
/// the way ([`crate::http1::hop`]: forwarding fields, `Host`, `Via`), and waits for the
/// response head. A pooled connection that turns out closed before any byte of a response
/// is replaced by a new one and the request sent once more, if its method is idempotent
/// (RFC 9110 9.2.2), as the engine does for its own.
pub async fn send(
    upstream: &Upstream,
    instance: &Arc<Instance>,
    request: &http::request::Parts,
    client: &ClientFacts<'_>,
) -> Result<(http::response::Parts, EngineBody), UpstreamError> {
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, request, client);
    let head_request = request.method == Method::HEAD;
    let idempotent = request.method.is_idempotent();
    let (checkout, response) = upstream
        .send(instance, &head, idempotent, |buf| {
            parse_response(buf, head_request)
        })
        .await?;
    let mut body = EngineBody {
        state: match response.framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => State::UntilClose,
        },
        checkout: Some(checkout),
        reusable: response.upstream_keep_alive,
    };
    if body.is_end_stream() {
        body.finish();
    }
    Ok((response.parts, body))
}

/// Writes the request line (origin form: the instance learns the host from `Host`) and the
/// fields. The request has no body: no framing field goes out but `Content-Length: 0` for
/// methods whose requests normally carry one, as hyper writes it.
fn write_request_head(out: &mut Vec<u8>, request: &http::request::Parts, client: &ClientFacts<'_>) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request
        .uri
        .path_and_query()
        .map_or("/", |target| target.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    hop::write_fields(out, || hop::map_fields(&request.headers), client);
    if matches!(request.method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A final response head, parsed.
struct Response {
    parts: http::response::Parts,
    framing: Framing,
    upstream_keep_alive: bool,
}

/// Takes a response head off the front of `buf`: `Ok(None)` if it is not complete yet. The
/// headers are the client's, made in one pass over the fields as the engine relays them
/// (`http1::response`): hop-by-hop fields and those named in `Connection` left out, `Via`
/// added, framing fields kept only where they describe the body as it will be sent.
fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Head<Response>>, HeadError> {
    let mut fields = upstream_head::fields();
    let head = match upstream_head::parse(buf, &mut fields)? {
        None => return Ok(None),
        Some(Parsed::Interim(length)) => {
            buf.advance(length);
            return Ok(Some(Head::Interim));
        }
        Some(Parsed::Final(head)) => head,
    };
    let StatusHead {
        status,
        http11,
        fields: response_fields,
        length,
    } = head;
    let mut framing_fields = FramingHeaders::default();
    let mut upstream_keep_alive = http11;
    let mut connection = ConnectionTokens::default();
    for field in response_fields.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            connection.note(field.value);
        }
        framing_fields.note(name, field.value)?;
    }
    // `close` wins over `keep-alive` (RFC 9112 9.6); HTTP/1.0 stays open only if asked.
    if connection.close {
        upstream_keep_alive = false;
    } else if connection.keep_alive {
        upstream_keep_alive = true;
    }
    let bodiless =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else {
        framing_fields.response()
    };
    upstream_keep_alive &= framing != Framing::UntilClose && !framing_fields.is_ambiguous();

    let named_by_connection = |name: &[u8]| {
        connection.names_fields
            && response_fields.iter().any(|field| {
                field.name.eq_ignore_ascii_case("connection")
                    && framing::has_token(field.value, name)
            })
    };
    let mut headers = HeaderMap::with_capacity(response_fields.len() + 2);
    for field in response_fields.iter() {
        let name = field.name.as_bytes();
        // Transfer codings are hop-by-hop; a `Trailer` announcement goes too, as trailers
        // are not forwarded; the length is written below, once.
        if is_hop_by_hop_name(name)
            || is_framing_field(name)
            || name.eq_ignore_ascii_case(b"trailer")
            || named_by_connection(name)
        {
            continue;
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    // `Via` names this hop after the instance's own (one list, as the engine writes it).
    headers.append(
        http::header::VIA,
        HeaderValue::from_static(if http11 {
            "1.1 tidegate"
        } else {
            "1.0 tidegate"
        }),
    );
    // One length, written as a number, where it is the body's (or, for HEAD and 304, that of
    // the body it stands for): an instance's "5, 5" is valid HTTP/1.1 but a protocol error
    // to HTTP/2 clients.
    let body_length = match framing {
        Framing::Length(length) => Some(length),
        _ if bodiless && status != StatusCode::NO_CONTENT => framing_fields.length,
        _ => None,
    };
    if let Some(body_length) = body_length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body_length));
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    buf.advance(length);
    Ok(Some(Head::Final(Response {
        parts,
        framing,
        upstream_keep_alive,
    })))
}

enum State {
    /// Bytes of the body still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
    /// Broke off; the error was returned.
    Failed,
}

/// An instance's response body on an engine connection.
pub struct EngineBody {
    state: State,
    /// `None` once the body has ended (the connection went back to the pool, or was closed).
    checkout: Option<Checkout>,
    /// The instance will take another request on the connection after this response.
    reusable: bool,
}

/// Why a response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum EngineBodyError {
    #[error("instance connection failed inside the response body: {0}")]
    Io(#[from] std::io::Error),
    #[error("the instance closed its connection inside the response body")]
    Truncated,
    #[error("malformed chunked response body: {0}")]
    Malformed(&'static str),
    #[error("the response body already broke off")]
    Failed,
}

impl EngineBody {
    /// The body has ended cleanly: the connection goes back to the pool if it can be reused.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(checkout) = self.checkout.take() {
            if self.reusable {
                checkout.release();
            }
        }
    }

    /// Takes the next piece of the body out of what has been read, if there is one.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, EngineBodyError> {
        let Some(checkout) = self.checkout.as_mut() else {
            return Ok(None);
        };
        let buffered = &mut checkout.connection.buffered;
        let data = match &mut self.state {
            State::Done => None,
            State::Failed => return Err(EngineBodyError::Failed),
            State::Length(remaining) => {
                if buffered.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(*remaining)
                    .map_or(buffered.len(), |remaining| remaining.min(buffered.len()));
                *remaining -= take as u64;
                let data = buffered.split_to(take).freeze();
                if *remaining == 0 {
                    self.finish();
                }
                Some(data)
            }
            State::UntilClose => {
                if buffered.is_empty() {
                    return Ok(None);
                }
                Some(buffered.split().freeze())
            }
            State::Chunked(decoder) => {
                let mut data = BytesMut::new();
                let used = decoder
                    .advance(buffered, |run| data.extend_from_slice(run))
                    .map_err(EngineBodyError::Malformed)?;
                buffered.advance(used);
                if decoder.is_done() {
                    self.finish();
                }
                (!data.is_empty()).then(|| data.freeze())
            }
        };
        Ok(data)
    }
}

impl Body for EngineBody {
    type Data = Bytes;
    type Error = EngineBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, EngineBodyError>>> {
        let this = self.get_mut();
        loop {
            match this.take_buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if this.is_end_stream() => return Poll::Ready(None),
                Ok(None) => {}
                Err(error) => {
                    (this.state, this.checkout) = (State::Failed, None);
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let Some(checkout) = this.checkout.as_mut() else {
                this.state = State::Failed;
                return Poll::Ready(Some(Err(EngineBodyError::Failed)));
            };
            let connection = &mut *checkout.connection;
            if connection.buffered.capacity() - connection.buffered.len() < CHUNK / 4 {
                connection.buffered.reserve(CHUNK);
            }
            let Connection { stream, buffered } = connection;
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(stream),
                cx,
                buffered
            ));
            match read {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    // The end of a body delimited by close; the connection is done.
                    this.state = State::Done;
                    this.checkout = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    (this.state, this.checkout) = (State::Failed, None);
                    return Poll::Ready(Some(Err(EngineBodyError::Truncated)));
                }
                Ok(_) => {}
                Err(error) => {
                    (this.state, this.checkout) = (State::Failed, None);
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    fn parse(text: &str, head_request: bool) -> Response {
        let mut buf = BytesMut::from(text);
        loop {
            match parse_response(&mut buf, head_request).unwrap().unwrap() {
                Head::Interim => continue,
                Head::Final(response) => return response,
            }
        }
    }

    #[test]
    fn response_heads_become_the_clients_headers() {
        let response = parse(
            "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: x-secret\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\nx-app: yes\r\n\r\nhello",
            false,
        );
        let headers = &response.parts.headers;
        assert_eq!(response.parts.status, StatusCode::OK);
        assert_eq!(response.framing, Framing::Length(5));
        assert!(response.upstream_keep_alive);
        assert_eq!(headers["content-length"], "5");
        assert_eq!(headers["x-app"], "yes");
        assert_eq!(headers["via"], "1.1 tidegate");
        for gone in ["connection", "x-secret", "keep-alive"] {
            assert!(!headers.contains_key(gone), "{gone} was kept");
        }

        let chunked = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
            false,
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        assert!(
            !chunked.upstream_keep_alive,
            "ambiguous framing: not reused"
        );
        assert!(!chunked.parts.headers.contains_key("content-length"));
        assert!(!chunked.parts.headers.contains_key("transfer-encoding"));

        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true);
        assert_eq!(head.framing, Framing::Empty);
        assert_eq!(head.parts.headers["content-length"], "9");

        let repeated = parse(
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        let lengths: Vec<_> = repeated
            .parts
            .headers
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(lengths, ["5"], "one length, as a number");

        let trailing = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n",
            false,
        );
        assert!(!trailing.parts.headers.contains_key("trailer"));

        let old = parse("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!(old.framing, Framing::UntilClose);
        assert!(!old.upstream_keep_alive);
        assert_eq!(old.parts.headers["via"], "1.0 tidegate");
    }

    /// The request head written for `parts` from a client at 192.0.2.7 over `version`.
    fn head_text(parts: &http::request::Parts, version: Version) -> String {
        let host = HeaderValue::from_static("app.example");
        let client = ClientFacts {
            peer: "192.0.2.7:40000".parse().unwrap(),
            scheme: "http",
            host: &host,
            version,
            trusted: false,
        };
        let mut out = Vec::new();
        write_request_head(&mut out, parts, &client);
        String::from_utf8(out).unwrap()
    }

    /// What follows the client's own fields in every head written for 192.0.2.7.
    const FORWARDING: &str = "host: app.example\r\nx-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: app.example\r\nforwarded: for=192.0.2.7;host=\"app.example\";proto=http\r\n";

    #[test]
    fn cookies_of_an_http2_request_become_one_field() {
        let (parts, ()) = http::Request::get("http://app.example/")
            .header("cookie", "a=1")
            .header("x-other", "o")
            .header("cookie", "b=2")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            head_text(&parts, Version::HTTP_2),
            format!("GET / HTTP/1.1\r\nx-other: o\r\ncookie: a=1; b=2\r\n{FORWARDING}via: 2 tidegate\r\n\r\n")
        );
        assert_eq!(
            head_text(&parts, Version::HTTP_10),
            format!("GET / HTTP/1.1\r\ncookie: a=1\r\ncookie: b=2\r\nx-other: o\r\n{FORWARDING}via: 1.0 tidegate\r\n\r\n"),
            "HTTP/1 fields pass as they came"
        );
    }

    #[test]
    fn request_heads_carry_no_framing_but_a_zero_length_for_posts() {
        let (mut parts, ()) = http::Request::post("/form?a=1")
            .header("host", "app.example")
            .header("content-length", "0")
            .header("transfer-encoding", "chunked")
            .header("x-tidegate-token", "secret")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            head_text(&parts, Version::HTTP_11),
            format!("POST /form?a=1 HTTP/1.1\r\n{FORWARDING}via: 1.1 tidegate\r\ncontent-length: 0\r\n\r\n")
        );
        parts.method = Method::GET;
        assert_eq!(
            head_text(&parts, Version::HTTP_11),
            format!("GET /form?a=1 HTTP/1.1\r\n{FORWARDING}via: 1.1 tidegate\r\n\r\n")
        );
    }
}
