//! When a head that arrives in pieces is worth parsing.
//!
//! httparse parses from the start every time, so parsing after every read costs the square of
//! the head's size when a peer sends it a byte at a time: a 60 KB request head sent that way
//! cost 1.2 s of CPU (nginx, which parses incrementally, 0.4 s). A parse is only worth it
//! once the head can be complete (a blank line has arrived) or, so that a malformed head is
//! still refused early, when the bytes have doubled since the last attempt. Each byte is then
//! scanned once and parsed a bounded number of times: linear in the head's size however it
//! is split.

/// The scan state of one head; start a new one for the next head.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Bytes already searched for the end of the head.
    scanned: usize,
    /// Parse at the latest when this many bytes are there.
    next_attempt: usize,
}

impl HeadScan {
    /// Whether `buf` (the head so far, from its start) is worth parsing now.
    pub fn ready(&mut self, buf: &[u8]) -> bool {
        // A blank line ends a head: "\n\n" or "\n\r\n" (httparse accepts bare LF too). Look
        // back two bytes, so an end split across reads is found.
        let from = self.scanned.saturating_sub(2);
        let ended = buf[from..]
            .iter()
            .enumerate()
            .any(|(at, &byte)| byte == b'\n' && ends_head(&buf[from + at + 1..]));
        self.scanned = buf.len();
        if ended || buf.len() >= self.next_attempt {
            self.next_attempt = (buf.len() * 2).max(1024);
            return true;
        }
        false
    }
}

/// Whether the bytes after a line feed make it a blank line.
fn ends_head(rest: &[u8]) -> bool {
    matches!(rest, [b'\n', ..] | [b'\r', b'\n', ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many parses a head sent in `piece`-byte reads costs.
    fn attempts(head: &[u8], piece: usize) -> usize {
        let mut scan = HeadScan::default();
        let mut attempts = 0;
        for end in (piece..head.len() + piece).step_by(piece) {
            if scan.ready(&head[..end.min(head.len())]) {
                attempts += 1;
            }
        }
        attempts
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_is_parsed_a_few_times_not_once_per_byte() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..2000 {
            head.extend_from_slice(format!("x-field-{n}: some value\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(head.len() > 50_000);
        // The first byte, each doubling (1 KiB .. 32 KiB), and the end: 8, not 50,000.
        assert!(attempts(&head, 1) <= 8, "{}", attempts(&head, 1));
        assert!(attempts(&head, 7) <= 8, "{}", attempts(&head, 7));
    }

    #[test]
    fn the_end_of_a_head_is_found_however_it_is_split() {
        for end in [&b"\r\n\r\n"[..], b"\n\n", b"\n\r\n"] {
            let mut head = b"GET / HTTP/1.1\r\nhost: a".to_vec();
            head.extend_from_slice(end);
            for split in 1..head.len() {
                let mut scan = HeadScan::default();
                scan.ready(&head[..1]);
                scan.ready(&head[..split.max(1)]);
                assert!(scan.ready(&head), "{end:?} split at {split}");
            }
        }
    }

    #[test]
    fn an_incomplete_head_waits() {
        let mut scan = HeadScan::default();
        assert!(scan.ready(b"GET / HT"), "the first read is parsed");
        assert!(!scan.ready(b"GET / HTTP/1.1\r\n"));
        assert!(!scan.ready(b"GET / HTTP/1.1\r\nhost: a\r\n"));
        assert!(scan.ready(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"));
    }
}
