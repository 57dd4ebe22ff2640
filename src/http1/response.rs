//! Response heads of the HTTP/1.1 engine: an instance's head relayed to the client field by
//! field, without building a header map, and the heads of responses the gateway makes itself.
//!
//! Relaying applies the same rules as the hyper path's `prepare_response_headers`: hop-by-hop
//! fields and the fields `Connection` names are dropped, `Via` is added (as a field of its
//! own after any the instance sent, which means the same list), and the instance's framing
//! fields make way for the engine's own (see [`super::framing`]). `Date` is added when the
//! instance sent none (RFC 9110 6.6.1, as hyper does), `Strict-Transport-Security` when the
//! app sets `hsts_max_age`, and `Connection: close` on a connection's last response.

use bytes::{Buf, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;

use super::date;
use super::framing::{
    has_token, is_framing_field, ConnectionTokens, Framing, FramingHeaders, HeadError,
};
use super::upstream_head::{self, Head, Parsed, StatusHead};
use super::write_field;
use crate::http1::headers::is_hop_by_hop_name;

/// How the client's response is to be written.
pub struct RelayOptions<'a> {
    /// The request was HEAD: no body follows whatever the fields say.
    pub head_request: bool,
    /// The client connection may stay open after this response.
    pub keep_alive: bool,
    /// `Strict-Transport-Security` to send instead of the instance's.
    pub hsts: Option<&'a HeaderValue>,
}

/// A relayed final response head.
pub struct ResponseHead {
    pub status: StatusCode,
    /// How the instance frames the body that follows.
    pub framing: Framing,
    /// How the client's copy is framed: the same, except that a body the instance ends by
    /// closing its connection goes to a keep-alive client chunked, so that the client
    /// connection survives it and a body cut short can be told from a complete one.
    pub client_framing: Framing,
    /// The instance will take another request on its connection.
    pub upstream_keep_alive: bool,
    /// The client connection stays open (said so in the head written).
    pub keep_alive: bool,
}

/// Takes the response head at the start of `buf` and writes the client's version of it to
/// `out`. `Ok(None)`: more bytes are needed.
pub fn relay_response(
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    options: &RelayOptions<'_>,
) -> Result<Option<Head<ResponseHead>>, HeadError> {
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
    let mut has_date = false;
    for field in response_fields.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            connection.note(field.value);
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
        framing_fields.note(name, field.value)?;
    }
    // `close` wins over `keep-alive` (RFC 9112 9.6); HTTP/1.0 stays open only if asked.
    if connection.close {
        upstream_keep_alive = false;
    } else if connection.keep_alive {
        upstream_keep_alive = true;
    }
    let bodiless = options.head_request
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else {
        framing_fields.response()
    };
    upstream_keep_alive &= framing != Framing::UntilClose && !framing_fields.is_ambiguous();
    let keep_alive = options.keep_alive;
    let client_framing = match framing {
        Framing::UntilClose if keep_alive => Framing::Chunked,
        framing => framing,
    };

    write_status_line(out, status);
    let named_by_connection = |name: &[u8]| {
        connection.names_fields
            && response_fields.iter().any(|field| {
                field.name.eq_ignore_ascii_case("connection") && has_token(field.value, name)
            })
    };
    for field in response_fields.iter() {
        let name = field.name.as_bytes();
        let replaced =
            options.hsts.is_some() && name.eq_ignore_ascii_case(b"strict-transport-security");
        if is_hop_by_hop_name(name)
            || is_framing_field(name)
            || replaced
            || named_by_connection(name)
        {
            continue;
        }
        write_field(out, name, field.value);
    }
    out.extend_from_slice(if http11 {
        b"via: 1.1 tidegate\r\n"
    } else {
        b"via: 1.0 tidegate\r\n"
    });
    if bodiless && status != StatusCode::NO_CONTENT {
        // The length a HEAD or 304 describes is that of the body it stands for.
        if let Some(length) = framing_fields.length {
            Framing::Length(length).write_field(out);
        }
    }
    client_framing.write_field(out);
    if !has_date {
        date::write_field(out);
    }
    if let Some(hsts) = options.hsts {
        write_field(out, b"strict-transport-security", hsts.as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    buf.advance(length);
    Ok(Some(Head::Final(ResponseHead {
        status,
        framing,
        client_framing,
        upstream_keep_alive,
        keep_alive,
    })))
}

/// Writes the head of a response the gateway makes itself, whose body is `length` bytes.
pub fn write_gateway_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    length: u64,
    keep_alive: bool,
) {
    write_status_line(out, status);
    for (name, value) in headers {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    Framing::Length(length).write_field(out);
    date::write_field(out);
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(text: &str, head_request: bool, keep_alive: bool) -> (ResponseHead, String) {
        let mut buf = BytesMut::from(text);
        let mut out = Vec::new();
        let options = RelayOptions {
            head_request,
            keep_alive,
            hsts: None,
        };
        loop {
            match relay_response(&mut buf, &mut out, &options)
                .unwrap()
                .unwrap()
            {
                Head::Interim => continue,
                Head::Final(head) => return (head, String::from_utf8(out).unwrap()),
            }
        }
    }

    #[test]
    fn framing_and_keep_alive_follow_rfc_9112() {
        let (ok, _) = relay(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
            false,
            true,
        );
        assert_eq!(
            (ok.framing, ok.upstream_keep_alive, ok.keep_alive),
            (Framing::Length(3), true, true)
        );
        let (head, text) = relay("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true, true);
        assert_eq!(head.framing, Framing::Empty);
        assert!(text.contains("content-length: 3\r\n"), "{text}");
        // Delimited by close: chunked to a keep-alive client, close-delimited to the last
        // response of a connection.
        let (until_close, text) = relay("HTTP/1.1 200 OK\r\n\r\n", false, true);
        assert_eq!(
            (
                until_close.framing,
                until_close.client_framing,
                until_close.upstream_keep_alive,
                until_close.keep_alive
            ),
            (Framing::UntilClose, Framing::Chunked, false, true)
        );
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(!text.contains("connection: close"), "{text}");
        let (last, text) = relay("HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert_eq!(last.client_framing, Framing::UntilClose);
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
        let (closing, _) = relay(
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
            false,
            true,
        );
        assert_eq!(
            (closing.framing, closing.upstream_keep_alive),
            (Framing::Empty, false)
        );
        let (old, text) = relay("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false, true);
        assert!(!old.upstream_keep_alive);
        assert!(text.contains("via: 1.0 tidegate"), "{text}");
        let (interim_then_final, _) =
            relay("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false, true);
        assert_eq!(interim_then_final.framing, Framing::Length(0));
    }

    #[test]
    fn hop_by_hop_and_framing_fields_are_the_engines_own() {
        let (head, text) = relay(
            "HTTP/1.1 200 OK\r\nConnection: x-secret, content-length\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nVia: 1.1 lb\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Kept: yes\r\n\r\n",
            false,
            true,
        );
        // Chunked wins over a length (RFC 9112 6.3), and the length is not passed on.
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nVia: 1.1 lb\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Kept: yes\r\nvia: 1.1 tidegate\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (_, text) = relay(
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            false,
            false,
        );
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    }

    #[test]
    fn broken_heads_are_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
        ] {
            let options = RelayOptions {
                head_request: false,
                keep_alive: true,
                hsts: None,
            };
            assert!(
                relay_response(&mut BytesMut::from(text), &mut Vec::new(), &options).is_err(),
                "{text:?}"
            );
        }
    }
}
