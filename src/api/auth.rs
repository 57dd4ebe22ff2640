//! Who may use the API: the bearer token, or a console session (`session`), whose CSRF
//! token every change must carry. Also the console's login and logout.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::reply::{error, Refusal};
use super::{session, Api};

impl Api {
    /// Whether the request may use the API: the bearer token, or a console session (whose
    /// CSRF token a mutation must carry). `Ok` holds the session's CSRF token, if any.
    pub(super) fn caller(&self, request: &Request<Incoming>) -> Result<Option<String>, Refusal> {
        let headers = request.headers();
        let authorization = headers.get(http::header::AUTHORIZATION);
        if self.token.admits(authorization.map(|v| v.as_bytes())) {
            return Ok(None);
        }
        let cookie = headers.get(http::header::COOKIE).map(|v| v.as_bytes());
        match self.sessions.find(cookie) {
            Some(current) if authorization.is_none() => {
                let safe = matches!(*request.method(), Method::GET | Method::HEAD);
                let presented = headers.get(session::CSRF_HEADER).map(|v| v.as_bytes());
                if safe
                    || presented.is_some_and(|p| session::same_secret(p, current.csrf.as_bytes()))
                {
                    Ok(Some(current.csrf))
                } else {
                    Err(error(
                        StatusCode::FORBIDDEN,
                        "a change from the console needs its X-CSRF-Token header (GET /api/v1/session)",
                    ))
                }
            }
            _ => {
                let mut response = *error(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required (Authorization: Bearer <token>); a local gateway's is in <state_dir>/admin-token",
                );
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                Err(Box::new(response))
            }
        }
    }

    /// Starts a console session if `token` is the API token; the cookie's value.
    pub fn login(&self, token: &[u8]) -> Option<String> {
        self.token.matches(token).then(|| self.sessions.start())
    }

    /// Ends the console session a `Cookie` header names.
    pub fn logout(&self, cookie: Option<&[u8]>) {
        self.sessions.end(cookie);
    }

    /// Whether a `Cookie` header names a live console session.
    pub fn has_session(&self, cookie: Option<&[u8]>) -> bool {
        self.sessions.find(cookie).is_some()
    }
}
