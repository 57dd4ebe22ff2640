//! The gateway under soak: the real binary in a process of its own (so its RSS and file
//! descriptors are its own), on free loopback ports, with three demo apps and a certificate
//! the clients trust.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::support::{free_port, try_send};

/// Cheap to clone: the clients each hold one.
#[derive(Clone)]
pub struct SoakGateway(Arc<Inner>);

struct Inner {
    dir: tempfile::TempDir,
    child: tokio::sync::Mutex<Option<Child>>,
    pid: u32,
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    tls_h2: tokio_rustls::TlsConnector,
    /// Every instance carries SOAK_RUN=<run>, which finds them after the gateway is gone.
    run: String,
    tidegate: String,
}

/// A process's resident memory and open file descriptors.
#[derive(Clone, Copy)]
pub struct Usage {
    rss_mib: f64,
    fds: usize,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} / {}", self.rss_mib, self.fds)
    }
}

impl SoakGateway {
    /// Writes the config, starts `tidegate serve` and waits until its admin listener is ready.
    pub async fn start(tidegate: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        let (http, https, admin) = (loopback(), loopback(), loopback());
        std::fs::write(
            dir.path().join("tidegate.toml"),
            format!("[gateway]\nhttp = \"{http}\"\nhttps = \"{https}\"\nadmin = \"{admin}\"\ndomain = \"soak\"\n\n[tls]\ncerts_dir = \"certs\"\n"),
        )
        .unwrap();
        let cert = write_cert(&dir.path().join("certs"));
        let run = format!("{}-{}", std::process::id(), fastrand::u64(..));
        let inner = Inner {
            child: tokio::sync::Mutex::new(None),
            pid: 0,
            http,
            https,
            admin,
            tls: connector(&cert, &[b"http/1.1"]),
            tls_h2: connector(&cert, &[b"h2"]),
            run,
            tidegate: tidegate.to_string(),
            dir,
        };
        inner.write_app(
            "steady",
            "min_scale = 2\nmax_scale = 4\nconcurrency = 10",
            "",
        );
        inner.write_app("burst", "max_scale = 8\nconcurrency = 4\nstable_window = \"6s\"\npanic_window = \"2s\"\nscale_to_zero_grace = \"1s\"", "");
        inner.write_app("rolling", "", "GENERATION = \"0\"");
        let log = std::fs::File::create(inner.dir.path().join("gateway.log")).unwrap();
        let child = tokio::process::Command::new(tidegate)
            .arg("serve")
            .arg("--config")
            .arg(inner.dir.path().join("tidegate.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        *inner.child.lock().await = Some(child);
        let this = SoakGateway(Arc::new(Inner { pid, ..inner }));
        let started = Instant::now();
        while try_send(admin, "admin", "/readyz").await.map(|a| a.0) != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "gateway did not start: {}",
                this.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        this
    }

    pub fn http(&self) -> SocketAddr {
        self.0.http
    }

    pub fn https(&self) -> SocketAddr {
        self.0.https
    }

    pub fn admin(&self) -> SocketAddr {
        self.0.admin
    }

    /// A TLS connector trusting the soak's certificate, offering `h2` or `http/1.1`.
    pub fn tls(&self, h2: bool) -> &tokio_rustls::TlsConnector {
        if h2 {
            &self.0.tls_h2
        } else {
            &self.0.tls
        }
    }

    /// Rewrites the rolling app with a new GENERATION: a reload and a new revision.
    pub fn write_rolling(&self, generation: u64) {
        self.0
            .write_app("rolling", "", &format!("GENERATION = \"{generation}\""));
    }

    /// Asks a steady instance for its pid and kills it with SIGKILL, as a crash would.
    pub async fn kill_one_steady_instance(&self) -> Option<i32> {
        let (status, body) = try_send(self.0.http, "steady.p.soak", "/pid").await?;
        let pid: i32 = body.trim().parse().ok().filter(|_| status == 200)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).ok()?;
        Some(pid)
    }

    /// The gateway's RSS and open file descriptors now.
    pub fn usage(&self) -> Usage {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.pid)).unwrap_or_default();
        let rss_kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.0.pid))
            .map(|dir| dir.count())
            .unwrap_or(0);
        Usage {
            rss_mib: rss_kib / 1024.0,
            fds,
        }
    }

    /// SIGTERM, waits for the gateway to exit, then counts this run's instances still alive.
    pub async fn stop(&self) -> usize {
        let pid = nix::unistd::Pid::from_raw(self.0.pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
        if let Some(mut child) = self.0.child.lock().await.take() {
            let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
            assert!(
                matches!(status, Ok(Ok(s)) if s.success()),
                "gateway exit: {status:?}\n{}",
                self.log()
            );
        }
        let marker = format!("SOAK_RUN={}", self.0.run);
        let alive: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|entry| {
                std::fs::read(entry.path().join("environ"))
                    .map(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
                    .unwrap_or(false)
            })
            .map(|entry| entry.file_name())
            .collect();
        if !alive.is_empty() {
            eprintln!("left behind: {alive:?}");
        }
        alive.len()
    }

    fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.0.dir.path().join("gateway.log")).unwrap_or_default();
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Inner {
    fn write_app(&self, name: &str, scale: &str, env: &str) {
        let text = format!(
            "project = \"p\"\n\n[run]\ncommand = [\"{}\", \"demo-app\"]\nenv = {{ SOAK_RUN = \"{}\"{}{env} }}\nreadiness_path = \"/healthz\"\n\n[scale]\n{scale}\n",
            self.tidegate,
            self.run,
            if env.is_empty() { "" } else { ", " },
        );
        let path = self.dir.path().join(format!("apps/{name}.toml"));
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A certificate for every app host of the soak, written where the gateway looks.
fn write_cert(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["*.p.soak".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("soak.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("soak.crt"), cert.pem()).unwrap();
    cert.der().clone()
}

fn connector(
    root: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
