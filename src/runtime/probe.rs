//! Readiness probing of a starting instance: TCP connect, or an HTTP GET of a path.
//!
//! A cold start waits on this, so it must not add a coarse delay: it polls every millisecond
//! for the first 100 ms (a refused loopback connect costs microseconds), then backs off by half
//! again each time up to 50 ms. It gives up when the instance exits or `startup_timeout`
//! passes, whichever comes first.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Exit;

/// Why an instance never became ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("{}", timeout_text(*.timeout, .addr, .seen))]
    Timeout {
        timeout: Duration,
        addr: SocketAddr,
        /// What the last attempt found.
        seen: Attempt,
    },
    #[error("exited during start-up: {0}")]
    Exited(String),
}

/// What one readiness attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Nothing accepted a connection.
    Refused,
    /// The readiness path answered this, or (`None`) no valid status line in time.
    NotReady {
        path: String,
        status: Option<u16>,
    },
    Ready,
}

fn timeout_text(timeout: Duration, addr: &SocketAddr, seen: &Attempt) -> String {
    match seen {
        Attempt::NotReady { path, status } => {
            let answer = match status {
                Some(status) => format!("its last answer was {status}"),
                None => "it sent no status line".to_string(),
            };
            format!("GET {path} on {addr} did not answer 2xx or 3xx within {timeout:?} (startup_timeout): {answer}")
        }
        _ => format!("nothing listened on {addr} within {timeout:?} (startup_timeout)"),
    }
}

/// Polls `addr` until it is ready; returns how long that took.
pub async fn wait_ready(
    addr: SocketAddr,
    path: Option<&str>,
    timeout: Duration,
    exited: &mut watch::Receiver<Option<Exit>>,
) -> Result<Duration, ProbeFailure> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(exit) = exited.borrow().clone() {
            return Err(ProbeFailure::Exited(exit.to_string()));
        }
        let seen = probe_once(addr, path).await;
        if seen == Attempt::Ready {
            return Ok(started.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ProbeFailure::Timeout {
                timeout,
                addr,
                seen,
            });
        }
        if now.duration_since(started) > Duration::from_millis(100) {
            delay = (delay * 3 / 2).min(Duration::from_millis(50));
        }
        tokio::select! {
            _ = tokio::time::sleep(delay.min(deadline - now)) => {}
            _ = exited.changed() => {}
        }
    }
}

async fn probe_once(addr: SocketAddr, path: Option<&str>) -> Attempt {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Attempt::Refused;
    };
    let Some(path) = path else {
        return Attempt::Ready;
    };
    let not_ready = |status| Attempt::NotReady {
        path: path.to_string(),
        status,
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tidegate-probe\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return not_ready(None);
    }
    let mut head = Vec::with_capacity(64);
    let mut buffer = [0u8; 256];
    let read = async {
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .is_err()
    {
        return not_ready(None);
    }
    // "HTTP/1.1 200 OK": ready on 2xx and 3xx.
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=399) => Attempt::Ready,
        status => not_ready(status),
    }
}
