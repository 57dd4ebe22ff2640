//! Numbers and addresses written as ASCII digits straight into a byte buffer, for the text
//! made on every request (the access log line, the forwarding fields). `fmt` would do the
//! same through `Display`, padding and a trait object, at several times the cost.

use std::net::{IpAddr, SocketAddr};

/// Appends `value` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends an IP address as `Display` writes it (IPv6 through `Display` itself: rarer, and
/// its zero compression is not worth writing twice).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Into a stack buffer, then one copy: this runs twice for every request.
            let mut text = [0u8; 15];
            let mut at = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[at] = b'.';
                    at += 1;
                }
                if octet >= 100 {
                    text[at] = b'0' + octet / 100;
                    at += 1;
                }
                if octet >= 10 {
                    text[at] = b'0' + octet / 10 % 10;
                    at += 1;
                }
                text[at] = b'0' + octet % 10;
                at += 1;
            }
            out.extend_from_slice(&text[..at]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends a socket address as `Display` writes it (`[v6]:port` for IPv6).
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => push_ip(out, IpAddr::V4(*v4.ip())),
        SocketAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "[{}", v6.ip());
            if v6.scope_id() != 0 {
                let _ = write!(out, "%{}", v6.scope_id());
            }
            out.push(b']');
        }
    }
    out.push(b':');
    push_decimal(out, u64::from(addr.port()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_display_writes_them() {
        for value in [0, 7, 10, 255, 65535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
        for addr in [
            "0.0.0.0:0",
            "192.0.2.255:65535",
            "10.1.20.3:80",
            "100.99.109.1:8",
            "[::1]:8080",
            "[2001:db8::a:b]:443",
            "[fe80::1%3]:1",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            let mut out = Vec::new();
            push_ip(&mut out, addr.ip());
            assert_eq!(String::from_utf8(out).unwrap(), addr.ip().to_string());
        }
    }
}
