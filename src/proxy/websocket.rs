//! WebSocket proxying: an HTTP/1.1 `Upgrade: websocket` request goes to the instance on a
//! connection of its own; when the instance answers 101 the client gets the 101, and from then
//! on both sides are plain byte streams copied both ways until either closes.
//!
//! A session holds its instance lease and counts as one in-flight request of its app for its
//! whole life, so a long session keeps the app scaled up and an instance is not stopped under
//! it until the drain bound passes. A session idle (no byte either way) longer than the app's
//! `websocket_idle_timeout` is closed. When the gateway shuts down, sessions get
//! `shutdown_grace` to finish, then are closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::Request;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::activator::Lease;
use crate::apps::InFlight;
use crate::server::stopped;

/// Whether a request asks to become a WebSocket (RFC 6455 section 4.1).
pub fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_11
        && request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether a request is a WebSocket over HTTP/2: extended CONNECT with `:protocol websocket`
/// (RFC 8441).
pub fn is_h2_websocket<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_2
        && request.method() == http::Method::CONNECT
        && request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"))
}

/// Turns an RFC 8441 request head into an RFC 6455 one for the HTTP/1.1 instance: GET, a
/// fresh `Sec-WebSocket-Key` (HTTP/2 has none), and version 13 unless the client gave one.
pub fn h2_to_h1_handshake(parts: &mut http::request::Parts) {
    parts.method = http::Method::GET;
    parts.extensions.remove::<hyper::ext::Protocol>();
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    if let Ok(key) = HeaderValue::from_str(&key) {
        parts.headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    if !parts.headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        parts.headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
}

/// The instance's 101 as the 200 an RFC 8441 client expects: the handshake headers of
/// HTTP/1.1 do not exist in HTTP/2.
pub fn h1_to_h2_response(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
    ] {
        headers.remove(name);
    }
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub fn restore_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Open sessions, and the signal that tells them the gateway is stopping.
pub struct Sessions {
    open: AtomicUsize,
    all_closed: Notify,
    closing: watch::Sender<bool>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
            closing: watch::channel(false).0,
        }
    }
}

impl Sessions {
    /// Counts a session from before its task is spawned, so `close_all` cannot miss it; the
    /// count drops with the guard however the session ends (panics included).
    pub fn begin(self: &Arc<Self>) -> SessionGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        SessionGuard(Arc::clone(self))
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Tells every session the gateway is stopping and waits until they have all ended
    /// (each closes itself `grace` after the signal at the latest).
    pub async fn close_all(&self) {
        self.closing.send_replace(true);
        loop {
            let notified = self.all_closed.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open session in [`Sessions`]; dropping it ends the count.
pub struct SessionGuard(Arc<Sessions>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// What a session needs besides its two streams.
pub struct Session {
    app: InFlight,
    lease: Lease,
    idle_timeout: Option<Duration>,
    shutdown_grace: Duration,
    access_log: Arc<AccessLog>,
    _open: GaugeGuard,
}

impl Session {
    /// A session that has just been accepted (the 101 is on its way): it counts in the
    /// session metrics from now on, however its task later ends.
    pub fn new(
        app: InFlight,
        lease: Lease,
        idle_timeout: Option<Duration>,
        shutdown_grace: Duration,
        access_log: Arc<AccessLog>,
    ) -> Self {
        let metrics = &app.app().metrics;
        metrics.websocket_total.inc();
        metrics.websocket_open.inc();
        let open = GaugeGuard(metrics.websocket_open.clone());
        Session {
            app,
            lease,
            idle_timeout,
            shutdown_grace,
            access_log,
            _open: open,
        }
    }
}

/// Copies bytes between the upgraded client and instance connections until either side
/// closes, the session idles out, or the gateway's shutdown grace runs out.
pub async fn run(
    sessions: Arc<Sessions>,
    counted: SessionGuard,
    session: Session,
    client: OnUpgrade,
    upstream: OnUpgrade,
) {
    let metrics = &session.app.app().metrics;
    let started = Instant::now();
    let activity = Arc::new(Activity::new(started));
    let outcome = match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let client = Counted {
                inner: TokioIo::new(client),
                activity: Arc::clone(&activity),
            };
            let upstream = TokioIo::new(upstream);
            let mut closing = sessions.closing.subscribe();
            tokio::select! {
                outcome = relay(client, upstream) => outcome,
                _ = idle(&activity, session.idle_timeout) => "idle timeout",
                _ = async {
                    stopped(&mut closing).await;
                    tokio::time::sleep(session.shutdown_grace).await;
                } => "gateway shutdown",
            }
        }
        Err(_) => "upgrade failed",
    };
    let from_client = activity.from_client.load(Ordering::Relaxed);
    let to_client = activity.to_client.load(Ordering::Relaxed);
    metrics.websocket_bytes[0].inc_by(from_client);
    metrics.websocket_bytes[1].inc_by(to_client);
    if session.access_log.enabled() {
        session
            .access_log
            .write(Some("websocket session ended"), |line| {
                line.display("app", &session.app.app().name)
                    .display("upstream", session.lease.instance().addr)
                    .quoted("websocket", outcome)
                    .number("bytes_from_client", from_client)
                    .number("bytes_to_client", to_client)
                    .number("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
            });
    }
    drop(session);
    drop(counted);
}

/// Lowers the open-sessions gauge however the session ends.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long the other direction may go on once one side has closed: a WebSocket is over when
/// either end closes its connection, but bytes already on the way should still arrive.
const LINGER: Duration = Duration::from_secs(1);

/// Copies both ways; when one direction ends, its write side is shut down and the other gets
/// `LINGER` to finish.
async fn relay<C, U>(client: C, upstream: U) -> &'static str
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let from_client = pump(&mut client_read, &mut upstream_write);
    let to_client = pump(&mut upstream_read, &mut client_write);
    tokio::pin!(from_client, to_client);
    let first = tokio::select! {
        result = &mut from_client => {
            let _ = tokio::time::timeout(LINGER, &mut to_client).await;
            result
        }
        result = &mut to_client => {
            let _ = tokio::time::timeout(LINGER, &mut from_client).await;
            result
        }
    };
    if first.is_ok() {
        "closed"
    } else {
        "reset"
    }
}

/// Bytes read into the small buffer that lives with the session; a read that fills it
/// switches to a large buffer for the burst, dropped again once reads are small.
const SMALL: usize = 512;
const LARGE: usize = 16 * 1024;

/// Copies `from` to `to` until `from` ends, then shuts `to`'s write side. Unlike
/// `tokio::io::copy` (an 8 KiB buffer per direction for the session's whole life) an idle
/// session holds only the small inline buffer: most sessions are idle most of the time.
async fn pump<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut small = [0u8; SMALL];
    let mut large: Option<Box<[u8]>> = None;
    loop {
        let (read, capacity) = match large.as_mut() {
            Some(buffer) => (from.read(buffer).await?, buffer.len()),
            None => (from.read(&mut small).await?, SMALL),
        };
        if read == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let data = match &large {
            Some(buffer) => &buffer[..read],
            None => &small[..read],
        };
        to.write_all(data).await?;
        to.flush().await?;
        if read == capacity && large.is_none() {
            large = Some(vec![0u8; LARGE].into_boxed_slice());
        } else if read < SMALL && large.is_some() {
            large = None;
        }
    }
}

async fn idle(activity: &Activity, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let deadline = activity.last() + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Bytes each way and the time of the last one.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    from_client: AtomicU64,
    to_client: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        Activity {
            epoch,
            last_ms: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The client side of a session, counting what passes through it.
struct Counted<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity
                .from_client
                .fetch_add(read as u64, Ordering::Relaxed);
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            self.activity
                .to_client
                .fetch_add(written as u64, Ordering::Relaxed);
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
