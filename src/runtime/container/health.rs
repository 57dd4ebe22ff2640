//! The container engine's health: checked at start and every few seconds, for `/readyz`
//! and the log; the first good check also removes what an earlier run left behind.

use std::sync::Arc;

use super::calls::{connect, remove_leftovers};
use super::{ContainerBackend, HEALTH_EVERY};

impl ContainerBackend {
    /// Starts the engine checks: one now (logged either way), then every few seconds, with
    /// a log line whenever the engine goes away or comes back.
    pub(super) fn watch_engine(&self) {
        let socket = self.socket.clone();
        let problem = Arc::clone(&self.problem);
        let cleaned = Arc::clone(&self.cleaned);
        let gateway_id = self.gateway_id.clone();
        let run = self.run.clone();
        let list_socket = socket.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                // The version on the first check and after an outage (it is slow on Podman),
                // a ping in between.
                let quiet = !first && problem.load().is_none();
                let now = match connect(&socket) {
                    Ok(docker) if quiet => match docker.ping().await {
                        Ok(_) => None,
                        Err(error) => Some(error.to_string()),
                    },
                    Ok(docker) => match docker.version().await {
                        Ok(version) => {
                            let _ = cleaned
                                .get_or_try_init(|| {
                                    remove_leftovers(&docker, &list_socket, &gateway_id, &run)
                                })
                                .await;
                            if first || problem.load().is_some() {
                                tracing::info!(
                                    socket = %socket.display(),
                                    engine = version.version.as_deref().unwrap_or("?"),
                                    api = version.api_version.as_deref().unwrap_or("?"),
                                    "container engine reachable"
                                );
                            }
                            None
                        }
                        Err(error) => Some(error.to_string()),
                    },
                    Err(reason) => Some(reason),
                };
                if let Some(reason) = &now {
                    if first || problem.load().is_none() {
                        tracing::error!(socket = %socket.display(), %reason, "container engine unreachable: container apps answer 503 until it is back");
                    }
                }
                problem.store(now.map(|reason| {
                    Arc::new(format!(
                        "container engine at {} is unreachable: {reason}",
                        socket.display()
                    ))
                }));
                first = false;
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        });
    }
}
