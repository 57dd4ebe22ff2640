//! The response body type of the proxy, and the per-request record that rides on it.
//!
//! A proxied response streams the instance's body frame by frame (constant memory, whatever
//! its size); a gateway-made response is one buffer. Either way the body carries the
//! [`RequestRecord`], which holds the app's in-flight guard and the instance lease: the request
//! counts as in flight until its last byte is written or the client goes away, and only then is
//! the request's access-log line handed to the `access_log` (when it is on) and the request
//! counted in the metrics.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access_log::{combined, AccessLog, Format};
use crate::activator::Lease;
use crate::apps::InFlight;
use crate::metrics::Metrics;
use crate::stall::{BodyError, BodyTimeout};
use crate::upstream::engine::EngineBody;
use crate::upstream::streaming::Driver;

/// Status recorded for a request whose client disconnected before any response.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// What the access log and the metrics need to know about one request.
pub struct RequestRecord {
    pub started: Instant,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub peer: SocketAddr,
    /// The host the client asked for, once it was read (kept only for the access log).
    pub host: Option<HeaderValue>,
    pub status: u16,
    pub bytes: u64,
    pub app: Option<InFlight>,
    pub lease: Option<Lease>,
    pub upstream: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// Where the request's line goes; `None` when the access log is off, decided once at
    /// the request's start, so a request that is not logged pays nothing for it.
    pub access_log: Option<Arc<AccessLog>>,
    /// `Referer` and `User-Agent`, kept only for the `combined` log format
    /// ([`RequestRecord::wants_client_fields`]).
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

impl RequestRecord {
    /// The record of a request that has just arrived.
    pub fn start(
        method: &Method,
        uri: &Uri,
        version: Version,
        peer: SocketAddr,
        metrics: &Arc<Metrics>,
        access_log: &Arc<AccessLog>,
    ) -> Self {
        RequestRecord {
            started: Instant::now(),
            method: method.clone(),
            uri: uri.clone(),
            version,
            peer,
            host: None,
            status: 0,
            bytes: 0,
            app: None,
            lease: None,
            upstream: None,
            metrics: Arc::clone(metrics),
            access_log: access_log.enabled().then(|| Arc::clone(access_log)),
            referer: None,
            user_agent: None,
        }
    }

    /// Whether the engine should keep the request's `Referer` and `User-Agent` for its line
    /// (the `combined` format shows them; the others do not).
    pub fn wants_client_fields(&self) -> bool {
        self.access_log
            .as_ref()
            .is_some_and(|log| log.format() == Format::Combined)
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if self.status == 0 {
            // The client went away before there was a response (nginx's 499).
            self.status = CLIENT_CLOSED_REQUEST;
        }
        let elapsed = self.started.elapsed();
        let seconds = elapsed.as_secs_f64();
        let (app, revision) = match &self.app {
            Some(in_flight) => {
                in_flight.app().metrics.observe(self.status, seconds);
                let revision = in_flight.revision().map(|revision| {
                    revision.metrics.observe(self.status, seconds);
                    revision.name.as_str()
                });
                (in_flight.app().name.as_str(), revision.unwrap_or("-"))
            }
            None => {
                self.metrics.observe_unrouted(self.status, seconds);
                ("-", "-")
            }
        };
        let Some(access_log) = &self.access_log else {
            return;
        };
        if access_log.format() == Format::Combined {
            access_log.write_combined(&combined::Request {
                peer: crate::http1::headers::canonical_ip(self.peer.ip()),
                method: self.method.as_str(),
                target: self
                    .uri
                    .path_and_query()
                    .map_or("/", |target| target.as_str()),
                version: version_name(self.version),
                status: self.status,
                bytes: self.bytes,
                referer: self.referer.as_ref().map(HeaderValue::as_bytes),
                user_agent: self.user_agent.as_ref().map(HeaderValue::as_bytes),
            });
            return;
        }
        let instance = self
            .lease
            .as_ref()
            .map_or("-", |lease| lease.instance().id.as_str());
        let host = self
            .host
            .as_ref()
            .and_then(|host| host.to_str().ok())
            .unwrap_or("-");
        access_log.write(None, |line| {
            line.quoted("app", app)
                .quoted("revision", revision)
                .quoted("instance", instance)
                .quoted("host", host)
                .bare("method", self.method.as_str())
                .bare("path", self.uri.path())
                .unsigned("status", u64::from(self.status))
                .unsigned("bytes", self.bytes)
                .millis("duration_ms", elapsed)
                .addr("upstream", self.upstream)
                .addr("peer", Some(self.peer))
                .bare("version", version_name(self.version));
        });
    }
}

/// The version as the log has always written it (`Version`'s `Debug`).
fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

enum Kind {
    Upstream(BodyTimeout<Incoming>, Option<Driver>),
    /// An instance's body on an engine connection (`upstream::engine`).
    Engine(BodyTimeout<EngineBody>),
    Full(Option<Bytes>),
}

/// A response body: streamed from an instance or made by the gateway.
pub struct ProxyBody {
    kind: Kind,
    record: Option<RequestRecord>,
}

impl ProxyBody {
    /// A body made by the gateway, sent in one piece.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(bytes)),
            record: None,
        }
    }

    /// An instance's body, streamed through; `driver`, if the connection is driven by the
    /// request, keeps it going. A body that sends nothing for `idle_timeout` is cut off.
    pub fn upstream(
        body: Incoming,
        driver: Option<Driver>,
        idle_timeout: Option<Duration>,
    ) -> Self {
        ProxyBody {
            kind: Kind::Upstream(BodyTimeout::new(body, idle_timeout), driver),
            record: None,
        }
    }

    /// An instance's body read by the engine's client; cut off after `idle_timeout` of
    /// silence.
    pub fn engine(body: EngineBody, idle_timeout: Option<Duration>) -> Self {
        ProxyBody {
            kind: Kind::Engine(BodyTimeout::new(body, idle_timeout)),
            record: None,
        }
    }

    /// Attaches the request's record; it is finished when the body ends or is dropped.
    pub fn with_record(mut self, record: RequestRecord) -> Self {
        self.record = Some(record);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(body, driver) => {
                if let Some(driver) = driver.as_mut() {
                    driver.poll_connection(cx);
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // hyper stops polling once a body says it has ended, so finish on the last
                // frame rather than waiting for a `None` that may never be asked for.
                let trailers =
                    matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_trailers());
                if matches!(polled, Poll::Ready(None)) || trailers || body.is_end_stream() {
                    if let Some(driver) = driver.as_mut() {
                        driver.finish();
                    }
                }
                polled
            }
            Kind::Engine(body) => Pin::new(body).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                    record.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(BodyError::Stalled(stalled)))) => {
                if let Some(in_flight) = this.record.as_ref().and_then(|r| r.app.as_ref()) {
                    tracing::warn!(
                        app = %in_flight.app().name,
                        "response cut off: the instance sent nothing for {:?} (idle_timeout)",
                        stalled.0
                    );
                    in_flight.app().metrics.upstream_error("idle_timeout");
                }
                this.record.take();
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                // Finish the record now rather than when hyper gets round to dropping us.
                this.record.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body, _) => body.is_end_stream(),
            Kind::Engine(body) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body, _) => body.size_hint(),
            Kind::Engine(body) => body.size_hint(),
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
        }
    }
}
