//! The in-memory runtime: each instance is an HTTP server task inside the gateway's own
//! process, on a loopback port of its own, answering every request with `200` and its
//! identity (`instance=<id> revision=<name>`, as the demo app does).
//!
//! Why: the controller's behaviour (scale from zero, rollouts, scale to zero, crashes) is
//! the same whatever makes instances, and testing it with real processes costs a spawn per
//! instance and the real clock. With this backend a test runs the real controller, probe and
//! data path against real sockets, on a paused clock, in milliseconds. It claims the `kind` it
//! is given (`"process"` in tests), so app specs need no change; `crash` ends an instance as a
//! crash would. It is a backend in its own right, not a stand-in for a component that could
//! run here: nothing of the process backend is imitated.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Exit, Placement, RuntimeBackend, RuntimeError, StartRequest, StartedInstance};
use crate::config::AppSpec;

/// Instances as tasks of this process.
pub struct MemoryBackend {
    kind: &'static str,
    running: Mutex<HashMap<String, Running>>,
    starts: AtomicU64,
}

struct Running {
    server: JoinHandle<()>,
    exited: watch::Sender<Option<Exit>>,
}

impl MemoryBackend {
    /// A backend for apps whose `runtime` is `kind`.
    pub fn new(kind: &'static str) -> Arc<Self> {
        Arc::new(MemoryBackend {
            kind,
            running: Mutex::new(HashMap::new()),
            starts: AtomicU64::new(0),
        })
    }

    /// Ends a running instance as a crash would; false if it is not running.
    pub fn crash(&self, id: &str, description: &str) -> bool {
        self.end(
            id,
            Exit::Crashed {
                description: description.to_string(),
                code: None,
                out_of_memory: false,
            },
        )
    }

    /// The ids of the instances running now, sorted.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Instances started so far.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    fn end(&self, id: &str, exit: Exit) -> bool {
        let Some(running) = self.lock().remove(id) else {
            return false;
        };
        running.server.abort();
        running.exited.send_replace(Some(exit));
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RuntimeBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn placement(&self, _app: &AppSpec) -> Placement {
        Placement::OnDemand
    }

    async fn start(&self, request: StartRequest) -> Result<StartedInstance, RuntimeError> {
        let id = request.instance_id;
        let failed = |reason: String| RuntimeError::StartFailed {
            instance: id.clone(),
            reason,
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| failed(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| failed(e.to_string()))?;
        let body = Bytes::from(format!("instance={id} revision={}\n", request.revision));
        let (exited, exit_watch) = watch::channel(None);
        let server = tokio::spawn(serve(listener, body));
        self.lock().insert(id.clone(), Running { server, exited });
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(StartedInstance {
            id,
            addr,
            exited: exit_watch,
            listen_hint: addr.to_string(),
            log: None,
        })
    }

    async fn stop(&self, instance_id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        self.end(instance_id, Exit::Stopped);
        Ok(())
    }

    async fn shutdown(&self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            self.end(&id, Exit::Stopped);
        }
    }
}

/// Answers every request on every connection with `200` and `body`.
async fn serve(listener: TcpListener, body: Bytes) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let body = body.clone();
        connections.spawn(async move {
            let service = service_fn(move |_request| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}
