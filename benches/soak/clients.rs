//! The soak's clients: one loop per protocol, each sending idempotent GETs (or WebSocket
//! echoes) back to back and recording every answer, and the burst loop that takes an app
//! from zero to several instances and waits for it to return to zero.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::gateway::SoakGateway;
use crate::support::try_send;

/// Longest any one request may take before it counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub enum Client {
    Http1,
    H2c,
    TlsHttp1,
    TlsH2,
    WebSocket,
}

pub struct Failure {
    pub at: Instant,
    pub kind: &'static str,
    pub host: &'static str,
    pub what: String,
}

/// Every answer of the soak: counts of good ones by kind, and each failure.
#[derive(Default)]
pub struct Tally {
    ok: Mutex<BTreeMap<&'static str, u64>>,
    failed: Mutex<Vec<Failure>>,
    cut: AtomicU64,
}

impl Tally {
    fn ok(&self, kind: &'static str) {
        *self.ok.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn fail(&self, kind: &'static str, host: &'static str, what: String) {
        let at = Instant::now();
        self.failed.lock().unwrap().push(Failure {
            at,
            kind,
            host,
            what,
        });
    }

    pub fn successes(&self) -> Vec<(&'static str, u64)> {
        self.ok
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    pub fn failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failed.lock().unwrap())
    }

    pub fn sessions_cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }
}

type Sender = Box<dyn FnMut(http::Request<Empty<Bytes>>) -> Pending + Send>;
type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u16, String), String>> + Send>>;

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Http1 => "http/1.1",
            Client::H2c => "h2c",
            Client::TlsHttp1 => "https/1.1",
            Client::TlsH2 => "h2 (TLS)",
            Client::WebSocket => "websocket",
        }
    }

    /// Sends until `stop`, on one connection at a time, opening a new one when it breaks.
    pub async fn run(
        self,
        gateway: &SoakGateway,
        host: &'static str,
        tally: &Tally,
        stop: &AtomicBool,
    ) {
        if let Client::WebSocket = self {
            return websocket(gateway, host, tally, stop).await;
        }
        while !stop.load(Ordering::Relaxed) {
            let mut send = match self.connect(gateway, host).await {
                Ok(send) => send,
                Err(error) => {
                    tally.fail(self.name(), host, format!("connect: {error}"));
                    continue;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let request = http::Request::get("/?delay_ms=5")
                    .header("host", host)
                    .body(Empty::new())
                    .unwrap();
                match tokio::time::timeout(ANSWER_TIMEOUT, send(request)).await {
                    Ok(Ok((200, _))) => tally.ok(self.name()),
                    Ok(Ok((status, body))) => {
                        tally.fail(self.name(), host, format!("{status} {}", body.trim()))
                    }
                    Ok(Err(error)) => {
                        tally.fail(self.name(), host, error);
                        break;
                    }
                    Err(_) => {
                        tally.fail(self.name(), host, "no answer in 30 s".into());
                        break;
                    }
                }
            }
        }
    }

    async fn connect(self, gateway: &SoakGateway, host: &'static str) -> Result<Sender, String> {
        let tls = matches!(self, Client::TlsHttp1 | Client::TlsH2);
        let h2 = matches!(self, Client::H2c | Client::TlsH2);
        let addr = if tls { gateway.https() } else { gateway.http() };
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        if tls {
            let name = rustls::pki_types::ServerName::try_from(host).unwrap();
            let stream = gateway
                .tls(h2)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            session(stream, h2).await
        } else {
            session(tcp, h2).await
        }
    }
}

/// An HTTP/1.1 or HTTP/2 client session on `stream`, as a function that sends one request.
async fn session<S>(stream: S, h2: bool) -> Result<Sender, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    if h2 {
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Box::new(move |request| {
            let mut sender = sender.clone();
            Box::pin(async move { answer(sender.send_request(request).await).await })
        }))
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
        Ok(Box::new(move |request| {
            let sender = sender.clone();
            Box::pin(async move { answer(sender.lock().await.send_request(request).await).await })
        }))
    }
}

async fn answer(
    response: hyper::Result<http::Response<hyper::body::Incoming>>,
) -> Result<(u16, String), String> {
    let response = response.map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// WebSocket sessions echoing a message every few milliseconds. A session that breaks after
/// it was established counts as cut (its instance was killed or drained), not as failed; a
/// session that cannot be opened, or a wrong echo, is a failure.
async fn websocket(gateway: &SoakGateway, host: &'static str, tally: &Tally, stop: &AtomicBool) {
    let kind = Client::WebSocket.name();
    while !stop.load(Ordering::Relaxed) {
        let request = http::Request::get(format!("ws://{host}/ws"))
            .header("host", host)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .unwrap();
        let opened = async {
            let tcp = TcpStream::connect(gateway.http())
                .await
                .map_err(|e| e.to_string())?;
            tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| e.to_string())
        };
        let mut socket = match tokio::time::timeout(ANSWER_TIMEOUT, opened).await {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(error)) => {
                tally.fail(kind, host, format!("open: {error}"));
                continue;
            }
            Err(_) => {
                tally.fail(kind, host, "open: no answer in 30 s".into());
                continue;
            }
        };
        let mut sequence = 0u64;
        while !stop.load(Ordering::Relaxed) {
            sequence += 1;
            let text = format!("soak {sequence}");
            if socket.send(Message::text(text.clone())).await.is_err() {
                tally.cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
            match tokio::time::timeout(ANSWER_TIMEOUT, socket.next()).await {
                Ok(Some(Ok(Message::Text(echo)))) if echo.as_str() == text => tally.ok(kind),
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                    tally.cut.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Some(Ok(other))) => {
                    tally.fail(kind, host, format!("echo of {text:?} was {other:?}"));
                    break;
                }
                Err(_) => {
                    tally.fail(kind, host, "no echo in 30 s".into());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = socket.close(None).await;
    }
}

/// Bursts of 24 clients for 3 s on the burst app, each followed by a wait until it has no
/// instances again. Returns, per completed cycle, how long the return to zero took.
pub async fn burst_cycles(
    gateway: &SoakGateway,
    tally: &Tally,
    stop: &AtomicBool,
) -> Vec<Duration> {
    const HOST: &str = "burst.p.soak";
    let mut cycles = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let until = Instant::now() + Duration::from_secs(3);
        let clients: Vec<_> = (0..24)
            .map(|_| {
                let http = gateway.http();
                async move {
                    let mut answers = Vec::new();
                    while Instant::now() < until {
                        answers.push(try_send(http, HOST, "/?delay_ms=20").await);
                    }
                    answers
                }
            })
            .collect();
        for answer in futures_util::future::join_all(clients)
            .await
            .into_iter()
            .flatten()
        {
            match answer {
                Some((200, _)) => tally.ok("burst"),
                Some((status, body)) => {
                    tally.fail("burst", HOST, format!("{status} {}", body.trim()))
                }
                None => tally.fail("burst", HOST, "no answer".into()),
            }
        }
        let idle_since = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return cycles;
            }
            if instances(gateway, "burst").await == Some(0) {
                cycles.push(idle_since.elapsed());
                break;
            }
            assert!(
                idle_since.elapsed() < Duration::from_secs(120),
                "burst app never returned to zero"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cycles
}

/// How many instances `/apps` lists for the app.
async fn instances(gateway: &SoakGateway, app: &str) -> Option<usize> {
    let (_, body) = try_send(gateway.admin(), "admin", "/apps").await?;
    let apps: serde_json::Value = serde_json::from_str(&body).ok()?;
    apps["apps"]
        .as_array()?
        .iter()
        .find(|entry| entry["name"] == app)?["instances"]
        .as_array()
        .map(Vec::len)
}
