//! Every response the gateway writes itself, and why.
//!
//! Each error names the side that failed (client, routing, upstream) and the app where there is
//! one, and maps to one status code with a short plain-text body that says what happened, so
//! an end user or an operator reading `curl` output can tell "no such app" from "the app is
//! down" from "the app is slow" without looking at logs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::body::{ProxyBody, CLIENT_CLOSED_REQUEST};
use crate::activator::AcquireError;
use crate::config::Visibility;
use crate::upstream::{Cause, ClientBodyFault, UpstreamError};

/// A request the gateway answers itself instead of with an instance's response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("the request body stopped: no byte for {0:?} (client_body_timeout)")]
    ClientBodyTimeout(Duration),
    #[error("bad request: the request body is malformed: {0}")]
    ClientBodyMalformed(String),
    /// The client left before its request was sent on (nginx's 499); nobody reads the answer,
    /// but the access log and the metrics do.
    #[error("the client went away before its request was sent: {0}")]
    ClientGone(String),
    #[error("app {app:?}: instance {addr} did not accept the upgrade (it answered {status})")]
    UpgradeRefused {
        app: String,
        addr: SocketAddr,
        status: StatusCode,
    },
    #[error("this app is served over HTTPS: {0}")]
    HttpsRedirect(String),
    #[error("no app is routed for host {0:?}")]
    UnknownHost(String),
    #[error("host {0:?} is not served here: this gateway is not an open proxy")]
    ForeignHost(String),
    #[error("CONNECT is not supported: this gateway is not an open proxy")]
    Connect,
    #[error("app {app:?} is not public: {}", not_public_reason(visibility, peer))]
    NotPublic {
        app: String,
        peer: IpAddr,
        visibility: Visibility,
    },
    #[error("app {app:?} has no instance to serve the request: {reason}")]
    NoInstance { app: String, reason: String },
    #[error("app {app:?} is busy: {reason}")]
    QueueFull { app: String, reason: String },
    #[error("app {app:?}: {reason}")]
    ColdStartTimeout { app: String, reason: String },
    /// A browser waited `cold_start_page_after` for a cold start: it gets a page that says
    /// so and reloads itself (the wait goes on without it).
    #[error("app {app:?} is starting (cold_start_page)")]
    Starting { app: String },
    #[error("app {app:?}: could not connect to instance {addr}: {cause}")]
    UpstreamConnect {
        app: String,
        addr: SocketAddr,
        cause: String,
    },
    #[error("app {app:?}: instance {addr} closed the connection before responding: {cause}")]
    UpstreamReset {
        app: String,
        addr: SocketAddr,
        cause: String,
    },
    #[error("app {app:?}: instance {addr} did not respond within {timeout:?} (request_timeout)")]
    UpstreamTimeout {
        app: String,
        addr: SocketAddr,
        timeout: Duration,
    },
}

impl GatewayError {
    /// The error for a request that got no instance from the activator.
    pub fn from_acquire(app: &str, error: AcquireError) -> Self {
        let app = app.to_string();
        match error {
            AcquireError::QueueFull(_) => GatewayError::QueueFull {
                app,
                reason: error.to_string(),
            },
            AcquireError::Timeout(_) => GatewayError::ColdStartTimeout {
                app,
                reason: error.to_string(),
            },
            AcquireError::Unavailable(reason) => GatewayError::NoInstance { app, reason },
        }
    }

    /// The same error with `detail` added to its reason (cold-start timeouts only).
    pub fn with_detail(self, detail: &str) -> Self {
        match self {
            GatewayError::ColdStartTimeout { app, reason } => GatewayError::ColdStartTimeout {
                app,
                reason: format!("{reason}; {detail}"),
            },
            other => other,
        }
    }

    /// The error for a request that an instance did not answer: refused, reset, or (the
    /// client's fault) a request body that stalled on its way.
    pub fn from_upstream(app: &str, addr: SocketAddr, error: UpstreamError) -> Self {
        let app = app.to_string();
        match error.cause {
            Cause::Connect(cause) => GatewayError::UpstreamConnect { app, addr, cause },
            Cause::Reset(cause) => GatewayError::UpstreamReset { app, addr, cause },
            Cause::ClientBody(ClientBodyFault::Stalled(stalled)) => {
                GatewayError::ClientBodyTimeout(stalled.0)
            }
            Cause::ClientBody(ClientBodyFault::Malformed(cause)) => {
                GatewayError::ClientBodyMalformed(cause)
            }
            Cause::ClientBody(ClientBodyFault::Gone(cause)) => GatewayError::ClientGone(cause),
        }
    }

    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) | GatewayError::ClientBodyMalformed(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::ClientGone(_) => {
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).expect("499 is a valid status code")
            }
            GatewayError::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::HttpsRedirect(_) => StatusCode::PERMANENT_REDIRECT,
            GatewayError::UnknownHost(_) => StatusCode::NOT_FOUND,
            GatewayError::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::NotPublic { .. } => StatusCode::FORBIDDEN,
            GatewayError::NoInstance { .. }
            | GatewayError::QueueFull { .. }
            | GatewayError::Starting { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::ColdStartTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamReset { .. }
            | GatewayError::UpgradeRefused { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `kind` label of `tidegate_upstream_errors_total`, for errors on the upstream side.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            GatewayError::UpstreamConnect { .. } => Some("connect"),
            GatewayError::UpstreamReset { .. } => Some("reset"),
            GatewayError::UpstreamTimeout { .. } => Some("timeout"),
            GatewayError::UpgradeRefused { .. } => Some("upgrade"),
            _ => None,
        }
    }

    /// The response: status, plain-text body naming the cause, `Retry-After` where waiting helps.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let (status, headers, body) = self.to_parts();
        let mut response = Response::new(ProxyBody::full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// The response's status, headers and body, for an engine that writes them itself.
    pub fn to_parts(&self) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(
            self,
            GatewayError::NoInstance { .. }
                | GatewayError::QueueFull { .. }
                | GatewayError::ColdStartTimeout { .. }
                | GatewayError::Starting { .. }
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let GatewayError::Starting { app } = self {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return (self.status(), headers, starting_page(app));
        }
        if let GatewayError::HttpsRedirect(location) = self {
            if let Ok(value) = HeaderValue::try_from(location.as_str()) {
                headers.insert(header::LOCATION, value);
            }
        }
        if let GatewayError::Connect = self {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        (
            self.status(),
            headers,
            Bytes::from(format!("tidegate: {self}\n")),
        )
    }
}

fn not_public_reason(visibility: &Visibility, peer: &IpAddr) -> String {
    match visibility {
        Visibility::Project => {
            "it serves only instances of its own project (no valid X-Tidegate-Token)".into()
        }
        _ => format!("requests from {peer} are refused (outside private_networks)"),
    }
}

/// The page a browser gets while its app starts: it says so and loads the same address
/// again every second, which lands on the app once it serves.
fn starting_page(app: &str) -> Bytes {
    let app: String = app
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"1\"><title>{app} is starting</title>\
         <style>body{{font:16px system-ui,sans-serif;color:#1d2330;display:flex;\
         align-items:center;justify-content:center;height:90vh}}</style></head>\
         <body><main><h1>{app} is starting</h1><p>It was scaled to zero and gets an \
         instance now; this page reloads until it answers.</p></main></body></html>\n"
    ))
}

/// Whether a request is a browser's page load: a GET that accepts HTML.
pub fn wants_page(method: &http::Method, accept: Option<&[u8]>) -> bool {
    method == http::Method::GET
        && accept.is_some_and(|accept| {
            accept
                .windows(b"text/html".len())
                .any(|window| window.eq_ignore_ascii_case(b"text/html"))
        })
}
