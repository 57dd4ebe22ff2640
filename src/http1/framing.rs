//! Body framing of HTTP/1.1 messages (RFC 9112 section 6), decided from a message's
//! `Content-Length` and `Transfer-Encoding` fields and always written by the engine itself.
//!
//! The engine never forwards a peer's framing fields: it writes the framing of the body it
//! actually sends (a length, or chunks it re-encodes). A field list that names
//! `Content-Length` in `Connection`, or carries both fields, can therefore not make the two
//! sides of the gateway disagree on where a message ends.

/// How a message body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, passed through chunk by chunk.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

impl Framing {
    /// No body bytes follow (nothing, or a length of zero).
    pub fn is_empty(self) -> bool {
        matches!(self, Framing::Empty | Framing::Length(0))
    }

    /// Writes the field that announces this framing, if it has one.
    pub fn write_field(self, out: &mut Vec<u8>) {
        match self {
            Framing::Length(length) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Empty | Framing::UntilClose => {}
        }
    }
}

/// Whether a field is one of the two that frame a body, which only the engine writes.
pub fn is_framing_field(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
}

/// Why a head could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than the configured limit: 431 for a request.
    TooLarge,
    /// Not valid HTTP/1.1, with the reason for the 400 (or the 502 for a response).
    Malformed(&'static str),
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

/// What the `Connection` fields of a message say, read in one pass over each value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    /// A token other than `close` and `keep-alive`: fields named there are hop-by-hop and
    /// dropped. Most messages name none, and then no field needs a look at the list.
    pub names_fields: bool,
}

impl ConnectionTokens {
    /// Adds one `Connection` value.
    pub fn note(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                self.names_fields = true;
            }
        }
    }
}

/// The framing headers of one message, collected while its fields are read.
#[derive(Default)]
pub struct FramingHeaders {
    /// The `Content-Length`, when there is one and it is valid.
    pub length: Option<u64>,
    /// Every `Transfer-Encoding` value seen; `Some(true)` if the last coding is chunked and
    /// it is the only one.
    chunked_only: Option<bool>,
    chunked_last: bool,
}

impl FramingHeaders {
    pub fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(value)?;
            if self.length.is_some_and(|seen| seen != length) {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            self.length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let mut codings = value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|coding| !coding.is_empty());
            let only = match (codings.next(), codings.next()) {
                (Some(coding), None) => coding.eq_ignore_ascii_case(b"chunked"),
                _ => false,
            };
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            self.chunked_only = Some(self.chunked_only.is_none() && only);
            self.chunked_last = last;
        }
        Ok(())
    }

    /// A request's framing; `None` for a transfer coding left to hyper.
    pub fn request(&self) -> Result<Option<Framing>, HeadError> {
        match (self.chunked_only, self.length) {
            // RFC 9112 6.1: a server may reject both; a proxy must, or it can be smuggled past.
            (Some(_), Some(_)) => Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            )),
            (Some(true), None) => Ok(Some(Framing::Chunked)),
            (Some(false), None) if !self.chunked_last => Err(HeadError::Malformed(
                "Transfer-Encoding does not end in chunked",
            )),
            (Some(false), None) => Ok(None),
            (None, None) => Ok(Some(Framing::Empty)),
            (None, Some(length)) => Ok(Some(Framing::Length(length))),
        }
    }

    /// The head has a `Transfer-Encoding` field.
    pub fn has_transfer_coding(&self) -> bool {
        self.chunked_only.is_some()
    }

    /// Both a length and a transfer coding: RFC 9112 6.3 treats such a response as an error
    /// in its sender; its connection is not reused.
    pub fn is_ambiguous(&self) -> bool {
        self.chunked_only.is_some() && self.length.is_some()
    }

    /// A response's framing (RFC 9112 6.3): chunked last wins over a length; any other
    /// coding, or none of either, reads until close.
    pub fn response(&self) -> Framing {
        match (self.chunked_only.is_some(), self.length) {
            (true, _) if self.chunked_last => Framing::Chunked,
            (true, _) => Framing::UntilClose,
            (false, Some(length)) => Framing::Length(length),
            (false, None) => Framing::UntilClose,
        }
    }
}

fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    // A list of identical values ("5, 5") is allowed by RFC 9110 8.6; hyper accepts it too.
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        let parsed = std::str::from_utf8(part)
            .ok()
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or(HeadError::Malformed("invalid Content-Length"))?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err(HeadError::Malformed("conflicting Content-Length"));
        }
        length = Some(parsed);
    }
    length.ok_or(HeadError::Malformed("invalid Content-Length"))
}
