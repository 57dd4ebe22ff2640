//! The two long-running steps of an instance's life that the controller hands to tasks of
//! their own: start-and-probe, and drain-then-stop. They report back as controller events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::controller::Event;
use crate::instance::Instance;
use crate::revision::{RevisionState, StartNote};
use crate::runtime::probe::{self, Attempt, ProbeFailure};
use crate::runtime::{RuntimeBackend, StartRequest};

/// Starts an instance, probes it until ready, and reports `Ready` or `Failed`; its exit,
/// whenever it comes, is reported as `Exited`. An instance that never gets ready within
/// `timeout` is stopped.
pub(super) async fn start_and_probe(
    backend: Arc<dyn RuntimeBackend>,
    revision: Arc<RevisionState>,
    request: StartRequest,
    readiness_path: Option<String>,
    timeout: Duration,
    grace: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let id = request.instance_id.clone();
    let started = match backend.start(request).await {
        Ok(started) => started,
        Err(error) => {
            let _ = events.send(Event::Failed {
                id,
                reason: error.to_string(),
            });
            return;
        }
    };
    revision.note_start(
        &id,
        Some(StartNote {
            instance: id.clone(),
            addr: started.addr,
            listen_hint: started.listen_hint.clone(),
            since: Instant::now(),
        }),
    );
    let mut exited = started.exited.clone();
    let ready = probe::wait_ready(
        started.addr,
        readiness_path.as_deref(),
        timeout,
        &mut exited,
    )
    .await;
    revision.note_start(&id, None);
    let addr = started.addr;
    let exit_events = events.clone();
    let exit_id = id.clone();
    let mut exit_watch = started.exited;
    tokio::spawn(async move {
        if let Ok(exit) = exit_watch.wait_for(Option::is_some).await {
            let exit = exit.clone().expect("checked by wait_for");
            let _ = exit_events.send(Event::Exited { id: exit_id, exit });
        }
    });
    match ready {
        Ok(_) => {
            let instance = Instance::new(id.clone(), addr);
            let _ = events.send(Event::Ready { id, instance });
        }
        Err(ProbeFailure::Exited(_)) => {} // the exit watcher reports it
        Err(failure @ ProbeFailure::Timeout { .. }) => {
            let mut reason = failure.to_string();
            if matches!(
                failure,
                ProbeFailure::Timeout {
                    seen: Attempt::Refused,
                    ..
                }
            ) {
                reason.push_str(&format!(" ({})", started.listen_hint));
            }
            if let Some(output) = started.log.as_deref().and_then(last_output) {
                reason.push_str(&format!("; its last output: {output}"));
            }
            let _ = events.send(Event::Failed {
                id: id.clone(),
                reason,
            });
            let _ = backend.stop(&id, grace).await;
        }
    }
}

/// Waits for an instance's in-flight requests (WebSocket sessions included) to finish, at
/// most `bound`, then stops it: SIGTERM, and SIGKILL after `grace`.
pub(super) async fn drain_then_stop(
    instance: Option<Arc<Instance>>,
    backend: &dyn RuntimeBackend,
    id: &str,
    bound: Duration,
    grace: Duration,
) {
    if let Some(instance) = instance {
        let deadline = Instant::now() + bound;
        while instance.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = backend.stop(id, grace).await;
}

/// The last lines an instance wrote (at most 5, and 500 bytes), joined with " | ", for the
/// message of a failed start; `None` if it wrote nothing.
fn last_output(log: &std::path::Path) -> Option<String> {
    let text = crate::runtime::logs::read_tail_text(log, 500).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let last = lines[lines.len().saturating_sub(5)..].join(" | ");
    (!last.is_empty()).then_some(last)
}
