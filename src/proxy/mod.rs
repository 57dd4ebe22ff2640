//! The data plane: one request from arrival to the end of its response.
//!
//! Plain HTTP/1.1 requests go through tidegate's own engine (`h1`); HTTP/2, WebSocket
//! upgrades and the requests the engine hands over go through hyper and `handle` here. Both
//! share what decides where a request goes: `admit` finds the app by host and checks
//! redirects, visibility and the traffic split; `lease` gets an instance from the app's
//! activator (waiting through a cold start if need be); the forwarding fields are written
//! by `http1::hop` (bodiless requests) or `prepare_upstream` (the rest). `handle` then forwards through `upstream` (the engine's connections for a request
//! without a body, `upstream::engine`; hyper's client for one with a body,
//! `upstream::streaming`), or hands a WebSocket upgrade to `websocket`, and streams the
//! response back. Every failure becomes a
//! [`GatewayError`] with its own status and a body that says which app and why. The
//! [`RequestRecord`] counts the request as in flight, and logs it, exactly until its last
//! byte.

pub mod body;
pub mod error;
mod forward;
pub mod h1;
pub mod websocket;

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::activator::{AcquireError, Lease};
use crate::apps::InFlight;
use crate::config::{UpstreamSettings, Visibility};
use crate::http1::headers::{canonical_ip, prepare_request_headers, ClientFacts};
use crate::identity::{Identities, TOKEN_HEADER};
use crate::metrics::Metrics;
use crate::routes::{normalize_host, Route, RouteTable};
pub use crate::server::{ConnInfo, ListenerKind};
use crate::upstream::Upstream;
pub use body::{ProxyBody, RequestRecord};
pub use error::GatewayError;

/// The proxy's shared state: the swappable route table, metrics and the upstream client.
pub struct Proxy {
    pub routes: ArcSwap<RouteTable>,
    pub metrics: Arc<Metrics>,
    upstream: Upstream,
    /// The bound port of the HTTPS listener, for redirects (the configured one may be 0).
    pub https_port: std::sync::OnceLock<u16>,
    /// The bound port of the HTTP listener, for the URLs the management API shows.
    pub http_port: std::sync::OnceLock<u16>,
    /// Open WebSocket sessions.
    pub sessions: Arc<websocket::Sessions>,
    /// Instance tokens, for `project` visibility.
    pub identities: Arc<Identities>,
    /// One line per request.
    pub access_log: Arc<AccessLog>,
}

impl Proxy {
    pub fn new(
        routes: RouteTable,
        metrics: Arc<Metrics>,
        upstream: &UpstreamSettings,
        identities: Arc<Identities>,
        access_log: Arc<AccessLog>,
    ) -> Self {
        Proxy {
            routes: ArcSwap::from_pointee(routes),
            metrics,
            upstream: Upstream::new(upstream),
            https_port: std::sync::OnceLock::new(),
            http_port: std::sync::OnceLock::new(),
            sessions: Arc::default(),
            identities,
            access_log,
        }
    }

    /// Answers one request: the instance's response, or the gateway's own error response.
    pub async fn handle(&self, conn: ConnInfo, request: Request<Incoming>) -> Response<ProxyBody> {
        let mut record = RequestRecord::start(
            request.method(),
            request.uri(),
            request.version(),
            conn.peer,
            &self.metrics,
            &self.access_log,
        );
        if record.wants_client_fields() {
            let headers = request.headers();
            record.referer = headers.get(http::header::REFERER).cloned();
            record.user_agent = headers.get(http::header::USER_AGENT).cloned();
        }
        let table = self.routes.load_full();
        let version = request.version();
        let response = match self.forward(&table, conn, request, &mut record).await {
            Ok(response) => response,
            Err(error) => {
                self.report(&error, &record);
                let mut response = error.to_response();
                if response.status() == http::StatusCode::BAD_REQUEST && version < Version::HTTP_2 {
                    // As the engine does: after a malformed request, nothing more is read on
                    // this connection.
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        record.status = response.status().as_u16();
        response.map(|body| body.with_record(record))
    }

    /// Counts and logs a failure on the instance's side.
    fn report(&self, error: &GatewayError, record: &RequestRecord) {
        if let GatewayError::ClientBodyTimeout(_) = error {
            self.metrics
                .client_timeouts
                .with_label_values(&["body"])
                .inc();
        }
        if let (Some(kind), Some(in_flight)) = (error.upstream_kind(), &record.app) {
            in_flight.app().metrics.upstream_error(kind);
            tracing::warn!(app = %in_flight.app().name, %error, "upstream failure");
        }
    }

    /// Routing and admission, the same for both HTTP engines: finds the app by host, applies
    /// the HTTPS redirect, visibility and `max_scale = 0`, picks the revision from the
    /// traffic split (or the tag), and counts the request on it in `record`.
    fn admit<'t>(
        &self,
        table: &'t RouteTable,
        conn: ConnInfo,
        request: &RequestFacts<'_>,
        record: &mut RequestRecord,
    ) -> Result<Admission<'t>, GatewayError> {
        let target = RequestHost::of(request)?;
        if record.access_log.is_some() {
            record.host = Some(target.original.clone());
        }
        let Some(route) = table.lookup(&target.name) else {
            return Err(if target.absolute_form {
                GatewayError::ForeignHost(target.name.into_owned())
            } else {
                GatewayError::UnknownHost(target.name.into_owned())
            });
        };
        let app = &route.app;
        let in_flight = record.app.insert(app.begin_request());

        // Only when an HTTPS listener is bound (one added by a reload waits for a restart).
        if let (true, ListenerKind::Http, Some(port)) = (
            route.spec.https_redirect,
            conn.listener,
            self.https_port.get().copied(),
        ) {
            return Err(GatewayError::HttpsRedirect(https_location(
                &target.name,
                port,
                request.uri,
            )));
        }

        let peer_ip = canonical_ip(conn.peer.ip());
        let admitted = match route.spec.visibility {
            Visibility::Public => true,
            Visibility::Private => table
                .settings
                .private_networks
                .iter()
                .any(|net| net.contains(&peer_ip)),
            Visibility::Project => request
                .token
                .and_then(|token| std::str::from_utf8(token).ok())
                .and_then(|token| self.identities.project_of(token))
                .is_some_and(|project| project == route.spec.project),
        };
        if !admitted {
            return Err(GatewayError::NotPublic {
                app: app.name.clone(),
                peer: peer_ip,
                visibility: route.spec.visibility,
            });
        }

        if route.spec.scale.max_scale == 0 {
            return Err(GatewayError::NoInstance {
                app: app.name.clone(),
                reason: "max_scale is 0".into(),
            });
        }
        let traffic = app.traffic();
        let Some(picked) = traffic.pick(route.tag.as_deref()) else {
            return Err(GatewayError::NoInstance {
                app: app.name.clone(),
                reason: match &route.tag {
                    Some(tag) => format!("the revision tagged {tag:?} is not available"),
                    None => "no revision is ready to take traffic".into(),
                },
            });
        };
        // The request counts on its revision from here; the split is not held across the wait.
        in_flight.route_to(picked);
        drop(traffic);

        let trusted = table
            .settings
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer_ip));
        Ok(Admission {
            route,
            host: target.original,
            trusted,
        })
    }

    /// Waits for an instance of the revision `admit` routed the request to (through a cold
    /// start if need be) and notes its address in `record`.
    ///
    /// A browser's page load (`page`) to an app with `cold_start_page` waits only
    /// `cold_start_page_after`, then gets the starting page.
    async fn lease(
        &self,
        admission: &Admission<'_>,
        record: &mut RequestRecord,
        page: bool,
    ) -> Result<Lease, GatewayError> {
        let scale = &admission.route.spec.scale;
        let revision = record
            .app
            .as_ref()
            .and_then(InFlight::revision)
            .expect("admit routed the request to a revision");
        let acquire = revision
            .activator
            .acquire(scale.queue_depth, scale.cold_start_timeout);
        let acquired = match admission.route.spec.cold_start_page.filter(|_| page) {
            Some(after) => match tokio::time::timeout(after, acquire).await {
                Ok(acquired) => acquired,
                Err(_) => {
                    return Err(GatewayError::Starting {
                        app: admission.route.app.name.clone(),
                    })
                }
            },
            None => acquire.await,
        };
        let lease = acquired.map_err(|error| {
            let timed_out = matches!(error, AcquireError::Timeout(_));
            let mut error = GatewayError::from_acquire(&admission.route.app.name, error);
            if let (true, Some(note)) = (timed_out, revision.start_note()) {
                // Say what the wait was for: an instance that does not answer where the
                // gateway looks for it is the usual reason.
                error = error.with_detail(&note.to_string());
            }
            error
        })?;
        record.upstream = Some(lease.instance().addr);
        Ok(lease)
    }

    /// Rewrites an admitted request for the hop to the instance: headers (hop-by-hop out,
    /// forwarding headers and `Via` in, the instance token gone) and an origin-form target.
    fn prepare_upstream(
        parts: &mut http::request::Parts,
        conn: ConnInfo,
        admission: &Admission<'_>,
    ) {
        // An instance's token is for the gateway only, never for the app it calls.
        parts.headers.remove(&TOKEN_HEADER);
        prepare_request_headers(
            &mut parts.headers,
            &Self::client_facts(conn, admission, parts.version),
        );
        // Origin form ("/path?query"): the instance learns the host from the Host header.
        if parts.uri.authority().is_some() || parts.uri.path_and_query().is_none() {
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = Some(
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            );
            parts.uri = Uri::from_parts(uri).expect("a path is a valid URI");
        }
        parts.version = Version::HTTP_11;
    }

    /// Who the client of an admitted request is, for the fields the instance gets.
    fn client_facts<'a>(
        conn: ConnInfo,
        admission: &'a Admission<'_>,
        version: Version,
    ) -> ClientFacts<'a> {
        ClientFacts {
            peer: conn.peer,
            scheme: conn.listener.scheme(),
            host: &admission.host,
            version,
            trusted: admission.trusted,
        }
    }

    /// `Strict-Transport-Security` for a response over HTTPS, when the app sets `hsts_max_age`.
    fn hsts(route: &Route, conn: ConnInfo) -> Option<HeaderValue> {
        match (route.spec.hsts_max_age, conn.listener) {
            (Some(max_age), ListenerKind::Https) => {
                HeaderValue::try_from(format!("max-age={}", max_age.as_secs())).ok()
            }
            _ => None,
        }
    }
}

/// What routing and admission look at in a request, whichever engine parsed it.
pub(crate) struct RequestFacts<'a> {
    pub uri: &'a Uri,
    pub version: Version,
    /// The `Host` field.
    pub host: Option<&'a HeaderValue>,
    /// The instance token field (`project` visibility).
    pub token: Option<&'a [u8]>,
}

impl<'a> RequestFacts<'a> {
    fn of(parts: &'a http::request::Parts) -> Self {
        RequestFacts {
            uri: &parts.uri,
            version: parts.version,
            host: parts.headers.get(http::header::HOST),
            token: parts.headers.get(&TOKEN_HEADER).map(HeaderValue::as_bytes),
        }
    }
}

/// A request admitted to an app by [`Proxy::admit`], counted on the revision it goes to.
struct Admission<'t> {
    route: &'t Route,
    /// The host as the client sent it, for `Host` and `X-Forwarded-Host`.
    host: HeaderValue,
    /// The client is a trusted proxy whose forwarding headers are kept and extended.
    trusted: bool,
}

/// The HTTPS URL of a plain-HTTP request: same host and path, the HTTPS listener's port
/// (omitted when it is 443).
fn https_location(host: &str, https_port: u16, uri: &Uri) -> String {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    }
}

/// The host a request is for, found where its protocol puts it.
struct RequestHost<'a> {
    /// Normal form for routing.
    name: Cow<'a, str>,
    /// As the client sent it, for `Host` and `X-Forwarded-Host`.
    original: HeaderValue,
    /// An HTTP/1 request in absolute form (`GET http://host/ HTTP/1.1`), as sent to proxies.
    absolute_form: bool,
}

impl<'a> RequestHost<'a> {
    fn of(request: &RequestFacts<'a>) -> Result<Self, GatewayError> {
        // HTTP/2 carries the host in `:authority` (the URI); HTTP/1 in Host, unless the request
        // is in absolute form, where the URI's authority wins (RFC 9112 3.2.2).
        let absolute_form = request.version < Version::HTTP_2 && request.uri.authority().is_some();
        let (raw, original) = match request.uri.authority() {
            Some(authority) => (
                authority.as_str(),
                HeaderValue::from_str(authority.as_str())
                    .map_err(|_| GatewayError::BadRequest("invalid authority"))?,
            ),
            None => {
                let value = request
                    .host
                    .ok_or(GatewayError::BadRequest("missing Host header"))?;
                (
                    value
                        .to_str()
                        .map_err(|_| GatewayError::BadRequest("Host header is not text"))?,
                    value.clone(),
                )
            }
        };
        let name = normalize_host(raw).ok_or(GatewayError::BadRequest("malformed Host"))?;
        Ok(RequestHost {
            name,
            original,
            absolute_form,
        })
    }
}
