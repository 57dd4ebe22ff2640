//! Console sessions: the console logs in with the API token once, through a form, and then
//! holds a session cookie instead (HttpOnly, SameSite=Strict, never readable by scripts),
//! so the token is never in a URL or in the page. Every request that changes something
//! must also carry the session's CSRF token in `X-CSRF-Token`, which only the console's own
//! pages can read (`GET /api/v1/session`); a cross-site form cannot.
//!
//! Sessions live in memory: a restarted gateway asks to log in again. They last
//! [`LIFETIME`] from login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The cookie's name.
pub const COOKIE: &str = "tidegate_session";
/// The header a mutation carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

struct Session {
    csrf: String,
    expires: Instant,
}

/// The live sessions, by id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

/// A request's session: its CSRF token.
pub struct Current {
    pub csrf: String,
}

impl Sessions {
    /// Starts a session; returns its id (the cookie's value).
    pub fn start(&self) -> String {
        let id = crate::random::token(32);
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, session| session.expires > now);
        sessions.insert(
            id.clone(),
            Session {
                csrf: crate::random::token(32),
                expires: now + LIFETIME,
            },
        );
        id
    }

    /// The session a `Cookie` header names, if it is live.
    pub fn find(&self, cookie_header: Option<&[u8]>) -> Option<Current> {
        let id = cookie_value(cookie_header?, COOKIE)?;
        let sessions = self.lock();
        let session = sessions.get(id)?;
        (session.expires > Instant::now()).then(|| Current {
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session a `Cookie` header names.
    pub fn end(&self, cookie_header: Option<&[u8]>) {
        if let Some(id) = cookie_header.and_then(|h| cookie_value(h, COOKIE)) {
            self.lock().remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `Set-Cookie` value that carries a new session (or, with `None`, clears it).
pub fn set_cookie(id: Option<&str>) -> String {
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'h>(header: &'h [u8], name: &str) -> Option<&'h str> {
    std::str::from_utf8(header)
        .ok()?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_ends() {
        let sessions = Sessions::default();
        let id = sessions.start();
        let header = format!("other=1; {COOKIE}={id}; x=y");
        let current = sessions.find(Some(header.as_bytes())).expect("live");
        assert_eq!(current.csrf.len(), 64);
        assert_ne!(current.csrf, id);
        assert!(sessions.find(Some(b"tidegate_session=forged")).is_none());
        assert!(sessions.find(None).is_none());
        sessions.end(Some(header.as_bytes()));
        assert!(sessions.find(Some(header.as_bytes())).is_none());
        assert!(set_cookie(Some(&id)).contains("HttpOnly; SameSite=Strict"));
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
    }
}
