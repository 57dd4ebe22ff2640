//! Header rewriting between the client and the instance.
//!
//! Towards the instance: hop-by-hop headers go (RFC 9110 7.6.1: `Connection`, the headers it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`, and the
//! proxy credentials), `X-Forwarded-For/-Proto/-Host` and `Forwarded` (RFC 7239) describe the
//! client, `Via` names the gateway, and `Host` keeps the client's value whatever protocol it
//! arrived on. Forwarding headers from the client are only trusted, and extended, when the
//! client is a configured trusted proxy; otherwise they are replaced, so an end user cannot
//! forge their address. Towards the client: hop-by-hop headers go and `Via` is added.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Version;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Who the client is, as the gateway saw it.
pub struct ClientFacts<'a> {
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The Host the client asked for, as sent (port included).
    pub host: &'a HeaderValue,
    /// The protocol the request arrived on, for `Via`.
    pub version: Version,
    /// Whether the peer is a trusted proxy whose forwarding headers are kept.
    pub trusted: bool,
}

/// Hop-by-hop headers of RFC 9110 7.6.1, and the proxy credentials meant for us. Both
/// HTTP engines drop these (and the headers `Connection` names) at each hop.
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static(HOP_BY_HOP_NAMES[0]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[1]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[2]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[3]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[4]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[5]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[6]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[7]),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The same test for a field name as it came off the wire (any case).
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP_NAMES
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) headers instead of a hash lookup per hop-by-hop name: most
    // messages carry none of them.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let connection_named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in connection_named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The forwarding fields an instance gets for one request, the same for both engines. The
/// values are written straight into the instance's head (or a field value) by the engine
/// that sends it, with no `format!` on the way: this runs for every request.
pub struct Forwarding {
    /// The client's address, as this hop's element of both lists.
    peer: IpAddr,
    /// A trusted proxy's `X-Forwarded-For` list, to extend.
    previous_for: Option<String>,
    /// A trusted proxy's `Forwarded` list, to extend.
    previous_forwarded: Option<String>,
    /// Keep the client's `X-Forwarded-Proto` (a trusted proxy sent one) instead of ours.
    pub keep_proto: bool,
    /// Keep the client's `X-Forwarded-Host` likewise.
    pub keep_host: bool,
}

/// What a request's own forwarding fields say, read only when the client is a trusted proxy
/// (anyone else's are replaced without a look).
#[derive(Default)]
pub struct PreviousForwarding {
    /// All `X-Forwarded-For` values joined with ", ".
    pub x_forwarded_for: Option<String>,
    /// All `Forwarded` values joined likewise.
    pub forwarded: Option<String>,
    pub has_proto: bool,
    pub has_host: bool,
}

impl Forwarding {
    pub fn new(client: &ClientFacts<'_>, previous: PreviousForwarding) -> Self {
        let trusted = client.trusted;
        Forwarding {
            peer: canonical_ip(client.peer.ip()),
            previous_for: previous.x_forwarded_for.filter(|_| trusted),
            previous_forwarded: previous.forwarded.filter(|_| trusted),
            keep_proto: trusted && previous.has_proto,
            keep_host: trusted && previous.has_host,
        }
    }

    /// `X-Forwarded-For`'s value: a trusted proxy's list, then the client's address.
    pub fn write_x_forwarded_for(&self, out: &mut Vec<u8>) {
        if let Some(previous) = &self.previous_for {
            out.extend_from_slice(previous.as_bytes());
            out.extend_from_slice(b", ");
        }
        crate::ascii::push_ip(out, self.peer);
    }

    /// `Forwarded`'s value (RFC 7239): a trusted proxy's list, then this hop's element.
    pub fn write_forwarded(&self, out: &mut Vec<u8>, client: &ClientFacts<'_>) {
        if let Some(previous) = &self.previous_forwarded {
            out.extend_from_slice(previous.as_bytes());
            out.extend_from_slice(b", ");
        }
        match self.peer {
            IpAddr::V4(_) => {
                out.extend_from_slice(b"for=");
                crate::ascii::push_ip(out, self.peer);
            }
            IpAddr::V6(_) => {
                out.extend_from_slice(b"for=\"[");
                crate::ascii::push_ip(out, self.peer);
                out.extend_from_slice(b"]\"");
            }
        }
        out.extend_from_slice(b";host=\"");
        // The host goes in a quoted string: its own quotes and backslashes are left out.
        let host = String::from_utf8_lossy(client.host.as_bytes());
        if host.contains(['"', '\\']) {
            out.extend_from_slice(host.replace(['"', '\\'], "").as_bytes());
        } else {
            out.extend_from_slice(host.as_bytes());
        }
        out.extend_from_slice(b"\";proto=");
        out.extend_from_slice(client.scheme.as_bytes());
    }
}

/// Whether a request field's name has an underscore. Such fields are not forwarded (as
/// nginx does by default): servers that map field names CGI-style (`X-Forwarded-For` and
/// `X_Forwarded_For` both become `HTTP_X_FORWARDED_FOR`) would let a client's own field pass
/// for the gateway's.
pub fn has_underscore(name: &[u8]) -> bool {
    name.contains(&b'_')
}

/// Rewrites a request's headers for the hop to an instance.
pub fn prepare_request_headers(headers: &mut HeaderMap, client: &ClientFacts<'_>) {
    strip_hop_by_hop(headers);
    if headers
        .keys()
        .any(|name| has_underscore(name.as_str().as_bytes()))
    {
        let underscored: Vec<HeaderName> = headers
            .keys()
            .filter(|name| has_underscore(name.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in underscored {
            headers.remove(name);
        }
    }
    let previous = if client.trusted {
        PreviousForwarding {
            x_forwarded_for: joined(headers, &X_FORWARDED_FOR),
            forwarded: joined(headers, &header::FORWARDED),
            has_proto: headers.contains_key(&X_FORWARDED_PROTO),
            has_host: headers.contains_key(&X_FORWARDED_HOST),
        }
    } else {
        PreviousForwarding::default()
    };
    let forwarding = Forwarding::new(client, previous);
    let mut value = Vec::with_capacity(64);
    forwarding.write_x_forwarded_for(&mut value);
    set(headers, &X_FORWARDED_FOR, value);
    if !forwarding.keep_proto {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(client.scheme),
        );
    }
    if !forwarding.keep_host {
        headers.insert(X_FORWARDED_HOST.clone(), client.host.clone());
    }
    let mut value = Vec::with_capacity(96);
    forwarding.write_forwarded(&mut value, client);
    set(headers, &header::FORWARDED, value);
    append_via(headers, client.version);
    headers.insert(header::HOST, client.host.clone());
}

/// Rewrites a response's headers for the hop back to the client.
pub fn prepare_response_headers(headers: &mut HeaderMap, upstream_version: Version) {
    strip_hop_by_hop(headers);
    append_via(headers, upstream_version);
}

fn append_via(headers: &mut HeaderMap, version: Version) {
    let protocol = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    match joined(headers, &header::VIA) {
        Some(previous) => set(
            headers,
            &header::VIA,
            format!("{previous}, {protocol} tidegate"),
        ),
        None => {
            let value = match protocol {
                "1.0" => "1.0 tidegate",
                "2" => "2 tidegate",
                _ => "1.1 tidegate",
            };
            headers.insert(header::VIA, HeaderValue::from_static(value));
        }
    }
}

/// All values of a list header joined with ", ", or `None` if absent or not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let mut out = first.to_string();
    for value in values {
        out.push_str(", ");
        out.push_str(value.to_str().ok()?);
    }
    Some(out)
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: impl Into<Vec<u8>>) {
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value.into())) {
        headers.insert(name.clone(), value);
    }
}

/// An IPv4 peer seen through an IPv6 socket as `::ffff:a.b.c.d` is reported as `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(host: &HeaderValue, trusted: bool) -> ClientFacts<'_> {
        ClientFacts {
            peer: "10.1.2.3:5555".parse().unwrap(),
            scheme: "http",
            host,
            version: Version::HTTP_11,
            trusted,
        }
    }

    #[test]
    fn strips_hop_by_hop_including_connection_named() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("upgrade", HeaderValue::from_static("h2c"));
        headers.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        headers.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-keep"));
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let host = HeaderValue::from_static("app.example.com:8080");
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        prepare_request_headers(&mut headers, &facts(&host, false));
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "app.example.com:8080");
        assert_eq!(
            headers["forwarded"],
            "for=10.1.2.3;host=\"app.example.com:8080\";proto=http"
        );
        assert_eq!(headers["via"], "1.1 tidegate");
        assert_eq!(headers["host"], "app.example.com:8080");
    }

    #[test]
    fn trusted_forwarding_headers_are_extended() {
        let host = HeaderValue::from_static("app.example.com");
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("forwarded", HeaderValue::from_static("for=1.1.1.1"));
        headers.insert("via", HeaderValue::from_static("1.1 edge"));
        prepare_request_headers(&mut headers, &facts(&host, true));
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(
            headers["forwarded"],
            "for=1.1.1.1, for=10.1.2.3;host=\"app.example.com\";proto=http"
        );
        assert_eq!(headers["via"], "1.1 edge, 1.1 tidegate");
    }
}
