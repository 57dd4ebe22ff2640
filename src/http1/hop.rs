//! A client's request fields written out for the hop to an instance, from whatever holds
//! them: the HTTP/1.1 engine's parsed head (byte ranges of the head as it arrived) or the
//! `HeaderMap` of a request hyper parsed (HTTP/2, and what the engine hands over). Both
//! write straight into the instance's request head, so no header map is built or changed
//! on the way; the rules are those of [`super::headers::prepare_request_headers`], which
//! the hyper path still applies to the requests it sends through hyper's client (a test
//! checks that both give the same fields):
//!
//! hop-by-hop fields and those `Connection` names go, as do fields with `_` in their name,
//! the instance token and the framing fields (the caller writes its own); `Host` and the
//! forwarding fields are the ones [`Forwarding`] computes; `Via` gets this hop as a field
//! of its own after the client's. HTTP/2 clients send each cookie as a field of its own;
//! HTTP/1.1 has one `Cookie` field, so theirs are joined with "; " (RFC 9113 8.2.3).

use http::header::HeaderValue;
use http::Version;

use super::framing::{has_token, is_framing_field, ConnectionTokens};
use super::headers::{
    has_underscore, is_hop_by_hop_name, ClientFacts, Forwarding, PreviousForwarding,
};
use super::write_field;
use crate::identity::TOKEN_HEADER;

/// Writes the fields of a client's request (each call of `fields` gives them afresh, as
/// name and value) rewritten for the instance, up to and without the framing field and
/// the head's final empty line.
pub fn write_fields<'h, I>(out: &mut Vec<u8>, fields: impl Fn() -> I, client: &ClientFacts<'_>)
where
    I: Iterator<Item = (&'h [u8], &'h [u8])>,
{
    let mut connection = ConnectionTokens::default();
    for (name, value) in fields() {
        if name.eq_ignore_ascii_case(b"connection") {
            connection.note(value);
        }
    }
    let named_by_connection = |name: &[u8]| {
        connection.names_fields
            && fields().any(|(field, value)| {
                field.eq_ignore_ascii_case(b"connection") && has_token(value, name)
            })
    };
    let dropped = |name: &[u8]| {
        is_hop_by_hop_name(name)
            || has_underscore(name)
            || is_framing_field(name)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(TOKEN_HEADER.as_str().as_bytes())
            || named_by_connection(name)
    };
    let previous = if client.trusted {
        let values = |wanted: &'static [u8]| {
            fields()
                .filter(move |(name, _)| name.eq_ignore_ascii_case(wanted) && !dropped(name))
                .map(|(_, value)| value)
        };
        PreviousForwarding {
            x_forwarded_for: joined(values(b"x-forwarded-for")),
            forwarded: joined(values(b"forwarded")),
            has_proto: values(b"x-forwarded-proto").next().is_some(),
            has_host: values(b"x-forwarded-host").next().is_some(),
        }
    } else {
        PreviousForwarding::default()
    };
    let forwarding = Forwarding::new(client, previous);
    let join_cookies = client.version >= Version::HTTP_2;
    let mut cookies = false;
    for (name, value) in fields() {
        let cookie = join_cookies && name.eq_ignore_ascii_case(b"cookie");
        cookies |= cookie;
        let replaced = cookie
            || name.eq_ignore_ascii_case(b"x-forwarded-for")
            || name.eq_ignore_ascii_case(b"forwarded")
            || (!forwarding.keep_proto && name.eq_ignore_ascii_case(b"x-forwarded-proto"))
            || (!forwarding.keep_host && name.eq_ignore_ascii_case(b"x-forwarded-host"));
        if replaced || dropped(name) {
            continue;
        }
        write_field(out, name, value);
    }
    if cookies {
        write_joined_cookies(out, fields());
    }
    write_field(out, b"host", client.host.as_bytes());
    write_composed_field(out, b"x-forwarded-for", |out| {
        forwarding.write_x_forwarded_for(out)
    });
    if !forwarding.keep_proto {
        write_field(out, b"x-forwarded-proto", client.scheme.as_bytes());
    }
    if !forwarding.keep_host {
        write_field(out, b"x-forwarded-host", client.host.as_bytes());
    }
    write_composed_field(out, b"forwarded", |out| {
        forwarding.write_forwarded(out, client)
    });
    out.extend_from_slice(match client.version {
        Version::HTTP_09 | Version::HTTP_10 => b"via: 1.0 tidegate\r\n",
        Version::HTTP_2 => b"via: 2 tidegate\r\n",
        Version::HTTP_3 => b"via: 3 tidegate\r\n",
        _ => b"via: 1.1 tidegate\r\n",
    });
}

/// The fields of a request hyper parsed, for [`write_fields`].
pub fn map_fields(headers: &http::HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
}

/// Every `Cookie` field's value in one field, joined with "; ".
fn write_joined_cookies<'h>(out: &mut Vec<u8>, fields: impl Iterator<Item = (&'h [u8], &'h [u8])>) {
    let mut cookies = fields
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"cookie"))
        .map(|(_, value)| value);
    let Some(first) = cookies.next() else {
        return;
    };
    out.extend_from_slice(b"cookie: ");
    out.extend_from_slice(first);
    for cookie in cookies {
        out.extend_from_slice(b"; ");
        out.extend_from_slice(cookie);
    }
    out.extend_from_slice(b"\r\n");
}

/// All `values` joined with ", ", or `None` if there are none or one is not text (as the
/// hyper path's header map reading does).
fn joined<'h>(mut values: impl Iterator<Item = &'h [u8]>) -> Option<String> {
    let text = |value: &'h [u8]| {
        HeaderValue::from_bytes(value)
            .ok()?
            .to_str()
            .ok()
            .map(str::to_string)
    };
    let mut out = text(values.next()?)?;
    for value in values {
        out.push_str(", ");
        out.push_str(&text(value)?);
    }
    Some(out)
}

/// A field whose value the gateway composes with `value`; left out, as the hyper path
/// leaves it out, if the value is not a valid field value.
fn write_composed_field(out: &mut Vec<u8>, name: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    let value_start = out.len();
    value(out);
    // `HeaderValue::from_bytes`'s rule, without the copy it makes.
    let valid = out[value_start..]
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if valid {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(start);
    }
}
