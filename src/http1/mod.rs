//! HTTP/1.1 on the wire, below both the proxy and the upstream client: framing rules
//! (`framing`), head parsing (`request`, `upstream_head`, with `head_scan` finding a head's
//! end incrementally), head writing (`request`, `response`, `write_field`, and `hop`: a
//! client's fields rewritten for the instance, from a parsed head or a `HeaderMap`), chunked
//! coding and body copying (`body`), and the header rules of an intermediary (`headers`:
//! hop-by-hop fields, forwarding fields, `Via`). It knows nothing of apps, instances or routing, so both
//! sides of the gateway can use it without depending on each other.

pub mod body;
mod date;
pub mod framing;
pub mod head_scan;
pub mod headers;
pub mod hop;
pub mod request;
pub mod response;
pub mod upstream_head;

/// Writes one header field line.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
