//! Random tokens and hex digits: the API token, console sessions, instance identities, and
//! the short digests that name versions and uploads.

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `len` random bytes from the system's source, in hex.
pub fn token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_hex_and_differ() {
        assert_eq!(super::hex(&[0, 15, 255]), "000fff");
        let (a, b) = (super::token(32), super::token(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
