//! nginx's `combined` access-log format, which log tools read as they are (GoAccess, AWStats,
//! most log pipelines):
//!
//! ```text
//! $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//! ```
//!
//! tidegate authenticates no user, so `$remote_user` is `-`; times are UTC (`+0000`); an
//! absent Referer or User-Agent is `"-"`, as nginx writes it. In the quoted parts, `"`, `\`
//! and bytes outside printable ASCII are written `\xHH`, as nginx escapes them, so a client
//! cannot end a field or a line early.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ascii::{push_decimal, push_ip};

/// What one combined line says about a request.
pub struct Request<'a> {
    pub peer: IpAddr,
    pub method: &'a str,
    /// The request target as the client sent it (path and query).
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: &'a str,
    pub status: u16,
    /// Bytes of the response body sent.
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

thread_local! {
    /// The second last formatted, and `[dd/Mon/yyyy:HH:MM:SS +0000]` for it.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the line for `request`, ended at `now`, with its newline.
pub fn write(out: &mut Vec<u8>, now: SystemTime, request: &Request<'_>) {
    push_ip(out, request.peer);
    out.extend_from_slice(b" - - ");
    let second = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let time = chrono::DateTime::<chrono::Utc>::from(now);
            *cached = (second, time.format("[%d/%b/%Y:%H:%M:%S +0000]").to_string());
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    out.extend_from_slice(b" \"");
    escaped(out, request.method.as_bytes());
    out.push(b' ');
    escaped(out, request.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.version.as_bytes());
    out.extend_from_slice(b"\" ");
    push_decimal(out, u64::from(request.status));
    out.push(b' ');
    push_decimal(out, request.bytes);
    for value in [request.referer, request.user_agent] {
        out.extend_from_slice(b" \"");
        match value {
            Some(value) if !value.is_empty() => escaped(out, value),
            _ => out.push(b'-'),
        }
        out.push(b'"');
    }
    out.push(b'\n');
}

/// Appends `value` with `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escaped(out: &mut Vec<u8>, value: &[u8]) {
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if value.iter().all(|&b| plain(b)) {
        out.extend_from_slice(value);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in value {
        if plain(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(request: &Request<'_>) -> String {
        let mut out = Vec::new();
        // 2026-12-07T06:20:05Z
        let now = UNIX_EPOCH + Duration::from_secs(1_796_624_405);
        write(&mut out, now, request);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_read_as_nginx_writes_them() {
        let mut request = Request {
            peer: "192.0.2.7".parse().unwrap(),
            method: "GET",
            target: "/a?b=1",
            version: "HTTP/1.1",
            status: 200,
            bytes: 19,
            referer: Some(b"https://example.com/"),
            user_agent: Some(b"curl/8.5.0"),
        };
        assert_eq!(
            line(&request),
            "192.0.2.7 - - [07/Dec/2026:06:20:05 +0000] \"GET /a?b=1 HTTP/1.1\" 200 19 \"https://example.com/\" \"curl/8.5.0\"\n"
        );
        request.referer = None;
        request.user_agent = Some(b"evil\" \"x\\\n\xff");
        request.version = "HTTP/2.0";
        assert_eq!(
            line(&request),
            "192.0.2.7 - - [07/Dec/2026:06:20:05 +0000] \"GET /a?b=1 HTTP/2.0\" 200 19 \"-\" \"evil\\x22 \\x22x\\x5C\\x0A\\xFF\"\n"
        );
    }
}
