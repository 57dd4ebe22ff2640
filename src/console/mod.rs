//! The web console on the admin listener (docs/console.md): plain HTML, CSS and a little
//! JavaScript, embedded in the binary (it works with no network access and installs
//! nothing), talking to the management API only, so whatever the console does the CLI can
//! do too.
//!
//! `/` leads to `/console/`, which is the console for a browser holding a session and the
//! login form otherwise. The form posts the API token once; the answer sets an HttpOnly,
//! SameSite=Strict session cookie (`api::session`). No token ever goes into a URL.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::api::session::set_cookie;
use crate::api::Api;

/// One embedded file: its path under `/console/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// An embedded file of `assets/`, served as `/console/<path>`.
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("assets/", $path)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("console.js", JAVASCRIPT),
    asset!("pages.js", JAVASCRIPT),
    asset!("forms.js", JAVASCRIPT),
    asset!("jobs.js", JAVASCRIPT),
    asset!("charts.js", JAVASCRIPT),
];

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");

/// Whether the console answers `path` (the admin listener asks before its own routes).
pub fn serves(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// Answers a console request.
pub async fn handle(api: &Api, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let cookie = request
        .headers()
        .get(header::COOKIE)
        .map(|v| v.as_bytes().to_vec());
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/" | "/console") => redirect("/console/", None),
        (Method::GET | Method::HEAD, "/console/") => {
            if api.has_session(cookie.as_deref()) {
                page(StatusCode::OK, INDEX.to_string())
            } else {
                page(StatusCode::OK, LOGIN.to_string())
            }
        }
        (Method::POST, "/console/login") => {
            let body = Limited::new(request.into_body(), 8 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let token = form_value(&body, "token").unwrap_or_default();
            match api.login(token.as_bytes()) {
                Some(session) => redirect("/console/", Some(&set_cookie(Some(&session)))),
                None => {
                    tracing::info!("console login refused: wrong token");
                    page(
                        StatusCode::UNAUTHORIZED,
                        LOGIN.replace(
                            "<!--error-->",
                            "<p class=\"error\" id=\"login-error\">That is not the API token.</p>",
                        ),
                    )
                }
            }
        }
        (Method::POST, "/console/logout") => {
            api.logout(cookie.as_deref());
            redirect("/console/", Some(&set_cookie(None)))
        }
        (Method::GET | Method::HEAD, asset) => {
            let name = asset.trim_start_matches("/console/");
            match ASSETS.iter().find(|a| a.path == name) {
                Some(asset) => {
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(asset.content_type),
                    );
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    secure(headers);
                    response
                }
                None => plain(StatusCode::NOT_FOUND, "no such console file\n"),
            }
        }
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "not allowed\n"),
    }
}

/// The value of `name` in a form-urlencoded body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            let spaced = value.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8_lossy()
                .into_owned()
        })
}

fn page(status: StatusCode, html: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(headers);
    response
}

/// Scripts and styles only from the console itself, no framing, no sniffing.
fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn redirect(to: &'static str, cookie: Option<&str>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
