//! One access-log line, formatted by hand: the same text and JSON lines the tracing
//! formatter writes (`<time>  INFO tidegate::access: app="web" ... version=HTTP/1.1`, and
//! `{"timestamp":...,"level":"INFO",...,"target":"tidegate::access"}`), at a fraction of its
//! cost: no per-field dynamic dispatch, the timestamp's date and time formatted once a second
//! per thread, and the bytes appended to a reused buffer.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ascii::push_decimal;

/// The line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// nginx's `combined` ([`super::combined`]); lines with fields are not written in it.
    Combined,
}

/// A line being written: fields are appended in order.
pub struct Line<'b> {
    out: &'b mut Vec<u8>,
    format: Format,
}

thread_local! {
    /// The second last formatted, and `YYYY-MM-DDTHH:MM:SS` for it.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl<'b> Line<'b> {
    /// Starts a line at `now`, in `format`.
    pub fn start(out: &'b mut Vec<u8>, format: Format, now: SystemTime) -> Self {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if format == Format::Json {
            out.extend_from_slice(b"{\"timestamp\":\"");
        }
        SECOND.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != since.as_secs() {
                let time = chrono::DateTime::<chrono::Utc>::from(now);
                *cached = (
                    since.as_secs(),
                    time.format("%Y-%m-%dT%H:%M:%S").to_string(),
                );
            }
            out.extend_from_slice(cached.1.as_bytes());
        });
        // `.` and six digits of microseconds, then `Z`.
        let micros = since.subsec_micros();
        let mut fraction = *b".000000Z";
        for (at, place) in [100_000, 10_000, 1_000, 100, 10, 1].into_iter().enumerate() {
            fraction[at + 1] = b'0' + (micros / place % 10) as u8;
        }
        out.extend_from_slice(&fraction);
        match format {
            Format::Text | Format::Combined => out.extend_from_slice(b"  INFO tidegate::access:"),
            Format::Json => out.extend_from_slice(b"\",\"level\":\"INFO\""),
        }
        Line { out, format }
    }

    /// A text field, quoted (as tracing writes a `&str`).
    pub fn quoted(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        self.out.push(b'"');
        escape(self.out, value);
        self.out.push(b'"');
        self
    }

    /// A field written as its `Display` form: bare in text, a string in JSON.
    pub fn display(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.name(name);
        match self.format {
            Format::Text | Format::Combined => {
                let _ = write!(Buf(self.out), "{value}");
            }
            Format::Json => {
                self.out.push(b'"');
                let start = self.out.len();
                let _ = write!(Buf(self.out), "{value}");
                let written = self.out.split_off(start);
                escape(self.out, &String::from_utf8_lossy(&written));
                self.out.push(b'"');
            }
        }
        self
    }

    /// Text written as is in a text line (as `Display` would), as a string in JSON.
    pub fn bare(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        match self.format {
            Format::Text | Format::Combined => self.out.extend_from_slice(value.as_bytes()),
            Format::Json => {
                self.out.push(b'"');
                escape(self.out, value);
                self.out.push(b'"');
            }
        }
        self
    }

    /// A socket address, or `-`: bare in text, a string in JSON. Written digit by digit:
    /// `SocketAddr`'s `Display` pads through a buffer and costs several times more.
    pub fn addr(&mut self, name: &str, addr: Option<std::net::SocketAddr>) -> &mut Self {
        self.name(name);
        let quote = self.format == Format::Json;
        if quote {
            self.out.push(b'"');
        }
        match addr {
            Some(addr) => crate::ascii::push_socket_addr(self.out, addr),
            None => self.out.push(b'-'),
        }
        if quote {
            self.out.push(b'"');
        }
        self
    }

    /// An unsigned number.
    pub fn unsigned(&mut self, name: &str, value: u64) -> &mut Self {
        self.name(name);
        push_decimal(self.out, value);
        self
    }

    /// Milliseconds from a duration, with three decimals (microseconds).
    pub fn millis(&mut self, name: &str, elapsed: std::time::Duration) -> &mut Self {
        self.name(name);
        let micros = elapsed.as_micros() as u64;
        push_decimal(self.out, micros / 1000);
        self.out.push(b'.');
        let fraction = micros % 1000;
        if fraction < 100 {
            self.out.push(b'0');
        }
        if fraction < 10 {
            self.out.push(b'0');
        }
        push_decimal(self.out, fraction);
        self
    }

    /// A number: bare in both formats.
    pub fn number(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.name(name);
        let _ = write!(Buf(self.out), "{value}");
        self
    }

    /// Ends the line (with its message in text, if any) and its newline.
    pub fn finish(self, message: Option<&str>) {
        match self.format {
            Format::Text | Format::Combined => {
                if let Some(message) = message {
                    self.out.push(b' ');
                    self.out.extend_from_slice(message.as_bytes());
                }
            }
            Format::Json => {
                if let Some(message) = message {
                    self.out.extend_from_slice(b",\"message\":\"");
                    escape(self.out, message);
                    self.out.push(b'"');
                }
                self.out
                    .extend_from_slice(b",\"target\":\"tidegate::access\"}");
            }
        }
        self.out.push(b'\n');
    }

    fn name(&mut self, name: &str) {
        match self.format {
            Format::Text | Format::Combined => {
                self.out.push(b' ');
                self.out.extend_from_slice(name.as_bytes());
                self.out.push(b'=');
            }
            Format::Json => {
                self.out.extend_from_slice(b",\"");
                self.out.extend_from_slice(name.as_bytes());
                self.out.extend_from_slice(b"\":");
            }
        }
    }
}

/// `fmt::Write` onto a byte buffer.
struct Buf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends `value` with `"`, `\` and control characters escaped (JSON's rules, which also
/// keep a text line on one line).
fn escape(out: &mut Vec<u8>, value: &str) {
    // Nearly always nothing to escape: copy it whole.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for byte in value.bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let _ = write!(Buf(out), "\\u{byte:04x}");
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(format: Format) -> String {
        let mut out = Vec::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_764_979_200_123_456);
        let mut line = Line::start(&mut out, format, at);
        line.quoted("app", "web")
            .bare("method", "GET")
            .display("path", "/a\"b")
            .unsigned("status", 200)
            .millis("duration_ms", Duration::from_micros(912))
            .addr("peer", Some("127.0.0.1:8080".parse().unwrap()))
            .addr("upstream", None);
        line.finish(None);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_look_as_the_tracing_formatter_writes_them() {
        assert_eq!(
            line(Format::Text),
            "2025-12-06T00:00:00.123456Z  INFO tidegate::access: app=\"web\" method=GET path=/a\"b status=200 duration_ms=0.912 peer=127.0.0.1:8080 upstream=-\n"
        );
        let json = line(Format::Json);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"timestamp": "2025-12-06T00:00:00.123456Z", "level": "INFO",
                "app": "web", "method": "GET", "path": "/a\"b", "status": 200,
                "duration_ms": 0.912, "peer": "127.0.0.1:8080", "upstream": "-",
                "target": "tidegate::access"})
        );
    }
}
