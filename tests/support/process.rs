//! The gateway binary in a process of its own, for tests that must signal it (SIGKILL,
//! SIGTERM, SIGHUP) or read its output: its listeners on free ports chosen in advance,
//! since the test has to know where to wait for it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use super::{eventually, write_atomically, ConfigDir, TIDEGATE};

/// A free loopback port (free now; the gateway binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a gateway process listens.
pub struct Listeners {
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl ConfigDir {
    /// Puts the gateway file's `http` and `admin` listeners on free ports instead of 0, and
    /// `extra` lines in `[gateway]`.
    pub fn fixed_ports(&self, extra: &str) -> Listeners {
        let (http, admin) = (free_port(), free_port());
        let text = std::fs::read_to_string(self.gateway_file())
            .unwrap()
            .replace(
                "http = \"127.0.0.1:0\"",
                &format!("http = \"127.0.0.1:{http}\""),
            )
            .replace(
                "admin = \"127.0.0.1:0\"",
                &format!("admin = \"127.0.0.1:{admin}\"\n{extra}"),
            );
        write_atomically(&self.gateway_file(), &text);
        Listeners {
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        }
    }
}

/// Starts `tidegate <args> serve --config <gateway file>` (killed when dropped) and waits
/// until `ready` accepts connections.
pub async fn spawn_gateway(
    config: &ConfigDir,
    args: &[&str],
    stdout: Stdio,
    ready: SocketAddr,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(TIDEGATE)
        .args(args)
        .args(["serve", "--config"])
        .arg(config.gateway_file())
        .env("RUST_LOG", "info")
        .stdout(stdout)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the gateway to listen", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(ready).await.ok().map(|_| ())
    })
    .await;
    child
}
