//! Test support: config directories, in-process gateways, backends and clients, all on
//! 127.0.0.1 port 0. Waiting is always on an event (a port, a metric, a status), never a bare
//! sleep.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod cli;
#[cfg(feature = "kubernetes")]
pub mod cluster;
pub mod engine;
#[cfg(feature = "kubernetes")]
pub mod node_agent;
pub mod process;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;
use tidegate::{Gateway, Handle};
use tokio::net::{TcpListener, TcpStream};

pub type TestBody = BoxBody<Bytes, hyper::Error>;

/// A config directory with a gateway file and an apps directory.
pub struct ConfigDir {
    pub dir: TempDir,
}

impl ConfigDir {
    /// A gateway file listening on port 0 for HTTP and admin, plus `extra` lines in
    /// `[gateway]`, and `defaults` lines in `[defaults]`.
    pub fn new(extra_gateway: &str, defaults: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        let this = ConfigDir { dir };
        this.write_gateway(extra_gateway, defaults);
        this
    }

    pub fn write_gateway(&self, extra_gateway: &str, defaults: &str) {
        let text = format!(
            "[gateway]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndomain = \"test.local\"\n{extra_gateway}\n\n[defaults]\n{defaults}\n"
        );
        write_atomically(&self.gateway_file(), &text);
    }

    pub fn gateway_file(&self) -> PathBuf {
        self.dir.path().join("tidegate.toml")
    }

    pub fn app_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("apps").join(format!("{name}.toml"))
    }

    /// Writes `apps/<name>.toml` the way editors do: a new file renamed over the old one.
    pub fn write_app(&self, name: &str, body: &str) {
        write_atomically(&self.app_file(name), body);
    }

    /// A static app routed to `upstreams`, with extra top-level lines and `[scale]` lines.
    pub fn static_app(&self, name: &str, upstreams: &[SocketAddr], top: &str, scale: &str) {
        let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        self.write_app(
            name,
            &format!(
                "name = \"{name}\"\nproject = \"p\"\nruntime = \"static\"\n{top}\n\n[static]\nupstreams = [{}]\n\n[scale]\n{scale}\n",
                list.join(", ")
            ),
        );
    }

    pub async fn start(&self) -> Handle {
        Gateway::start(self.gateway_file())
            .await
            .expect("gateway starts")
    }
}

/// Writes a file through a temporary name and a rename, as editors and config tools do.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A backend server on 127.0.0.1:0 answering with `handler`. Stops when the returned guard
/// drops.
pub struct Backend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, task }
}

/// A backend that answers `<name>` and echoes the request head: method, path and headers, one
/// per line as `name: value`.
pub async fn echo_backend(name: &'static str) -> Backend {
    backend(move |request: Request<Incoming>| async move {
        let mut text = format!(
            "backend={name}\nmethod={}\npath={}\n",
            request.method(),
            request.uri()
        );
        for (key, value) in request.headers() {
            text.push_str(&format!("{key}: {}\n", value.to_str().unwrap_or("?")));
        }
        text_response(StatusCode::OK, text)
    })
    .await
}

pub fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body of `total` bytes made of one repeated chunk, generated as it is read.
pub struct RepeatBody {
    chunk: Bytes,
    remaining: u64,
}

impl RepeatBody {
    pub fn new(total: u64) -> Self {
        RepeatBody {
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            remaining: total,
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The value of `name: value` lines in an echo backend's answer.
    pub fn echoed(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}: ");
        self.body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole answer.
pub async fn send(addr: SocketAddr, request: Request<TestBody>) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("response");
    read_answer(response).await
}

/// Opens an HTTP/2 client session on `stream` (TCP for h2c prior knowledge, or TLS after
/// ALPN chose h2), with its connection driven by a task of its own.
pub async fn h2_session<S>(stream: S) -> hyper::client::conn::http2::SendRequest<TestBody>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// Sends one HTTP/2 (h2c prior knowledge) request.
pub async fn send_h2(addr: SocketAddr, request: Request<TestBody>) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut sender = h2_session(stream).await;
    let response = sender.send_request(request).await.expect("response");
    read_answer(response).await
}

pub async fn read_answer(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET path` with the given Host header over HTTP/1.1.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    let request = Request::get(path)
        .header("host", host)
        .body(full(Bytes::new()))
        .unwrap();
    send(addr, request).await
}

/// `GET path` on the admin listener.
pub async fn admin_get(handle: &Handle, path: &str) -> Answer {
    get(handle.admin_addr(), "admin", path).await
}

/// The value of a metric series in the gateway's `/metrics` text, e.g.
/// `tidegate_config_reload_total{result="error"}`; 0 when absent.
pub async fn metric(handle: &Handle, series: &str) -> f64 {
    let text = admin_get(handle, "/metrics").await.body;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `app` has exactly `count` requests in flight (waiting ones included).
pub async fn wait_in_flight(handle: &Handle, app: &str, count: f64) {
    let series = format!("tidegate_in_flight_requests{{app=\"{app}\"}}");
    eventually(&series, Duration::from_secs(5), || async {
        (metric(handle, &series).await == count).then_some(())
    })
    .await
}

/// Waits until the gateway has applied `count` successful config loads in total (the first
/// load at start counts as one).
pub async fn wait_reloads(handle: &Handle, result: &str, count: f64) {
    let series = format!("tidegate_config_reload_total{{result=\"{result}\"}}");
    eventually(&series, Duration::from_secs(10), || async {
        (metric(handle, &series).await >= count).then_some(())
    })
    .await
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The tidegate binary, for process apps in tests (the test binary is not tidegate).
pub const TIDEGATE: &str = env!("CARGO_BIN_EXE_tidegate");

impl ConfigDir {
    /// A process app running the demo app, with `env` entries and `[scale]` lines.
    pub fn demo_app(&self, name: &str, env: &[(&str, &str)], scale: &str) {
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
        self.write_app(
            name,
            &format!(
                "name = \"{name}\"\nproject = \"p\"\nruntime = \"process\"\n\n[run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\nenv = {{ {} }}\nreadiness_path = \"/healthz\"\n\n[scale]\n{scale}\n",
                env.join(", ")
            ),
        );
    }
}

/// The app's entry in `/apps`.
pub async fn app_status(handle: &Handle, name: &str) -> serde_json::Value {
    let apps: serde_json::Value =
        serde_json::from_str(&admin_get(handle, "/apps").await.body).expect("JSON");
    apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|app| app["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no app {name} in /apps"))
}

/// Whether a process with this id exists.
pub fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Waits until no process with this id exists.
pub async fn wait_gone(pid: i32) {
    eventually(
        &format!("process {pid} to exit"),
        Duration::from_secs(15),
        || async { (!pid_alive(pid)).then_some(()) },
    )
    .await
}

/// Writes a self-signed certificate for `names` as `<stem>.crt` + `<stem>.key` in `dir` and
/// returns it (DER), so a client can trust exactly it.
pub fn write_cert(
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> rustls::pki_types::CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    write_atomically(&dir.join(format!("{stem}.crt")), &cert.pem());
    cert.der().clone()
}

/// A TLS client trusting `roots`, offering `alpn`.
pub fn tls_client(
    roots: &[rustls::pki_types::CertificateDer<'static>],
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Opens a TLS connection to `addr` with `server_name` as SNI (an IP address sends none).
pub async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    server_name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let stream = TcpStream::connect(addr).await?;
    connector.connect(name, stream).await
}

/// The certificate the server presented on a TLS connection.
pub fn peer_cert(
    stream: &tokio_rustls::client::TlsStream<TcpStream>,
) -> rustls::pki_types::CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One HTTP/1.1 GET over an established stream.
pub async fn get_over<S>(stream: S, host: &str, path: &str) -> Answer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(full(Bytes::new()))
        .unwrap();
    read_answer(sender.send_request(request).await.unwrap()).await
}

/// Clients sending the same request in a loop until stopped, keeping every answer's status
/// and body: the steady load that scaling and rollout tests run under.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answers: Arc<std::sync::Mutex<Vec<(StatusCode, String)>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` loops of `GET path` with `host`.
    pub fn start(clients: usize, addr: SocketAddr, host: &'static str, path: &'static str) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let answer = get(addr, host, path).await;
                        answers.lock().unwrap().push((answer.status, answer.body));
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            clients,
        }
    }

    /// A copy of the answers so far, in arrival order.
    pub fn answers(&self) -> Vec<(StatusCode, String)> {
        self.answers.lock().unwrap().clone()
    }

    /// Stops every client, waits for its last request, and returns all answers.
    pub async fn stop(self) -> Vec<(StatusCode, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// The answers that were not 200, for assertions that none failed.
pub fn failed(answers: &[(StatusCode, String)]) -> Vec<&(StatusCode, String)> {
    answers
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
        .collect()
}

/// A raw instance: for every request head on a connection, writes `answer(n, head)` (n counts
/// the requests on that connection from 0); closes the connection after an answer when
/// `close(n, head)` says so. Counts its connections.
pub async fn raw_instance(
    answer: fn(usize, &str) -> Vec<u8>,
    close: fn(usize, &str) -> bool,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for n in 0.. {
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buf.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    if stream.write_all(&answer(n, &head)).await.is_err() || close(n, &head) {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}
