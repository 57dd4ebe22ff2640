//! Noticing container exits: one engine event stream for all of the gateway's containers
//! (filtered by its gateway label), which wakes the exit task of the container an event is
//! about; the task then asks the engine for the container's state.
//!
//! One stream rather than the engine's wait endpoint per container: Podman serves each wait by
//! polling the container's state, which with a few dozen containers slowed every other engine
//! call (container starts took tens of milliseconds longer). Events can be missed (the stream
//! breaks, or a container dies before the first subscription): every exit task also checks
//! its container every few seconds, and all of them check at once after a reconnect.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::Ordering;
use std::time::Instant;

use bollard::query_parameters::{EventsOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::engine::{run_state, RunState};
use super::Entry;
use crate::runtime::Exit;

/// How often an exit task checks its container without being woken.
const BACKSTOP: Duration = Duration::from_secs(5);
/// Beyond its stop timeout, how long a stopping container may still run before it is killed.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// Follows the engine's events about containers labelled `label` and wakes their entries.
pub(super) async fn follow_events(
    docker: Docker,
    label: String,
    containers: Arc<Mutex<HashMap<String, Arc<Entry>>>>,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        let opened = Instant::now();
        let filters = HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
        let mut events = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            let ending = matches!(
                event.action.as_deref(),
                Some("die" | "died" | "kill" | "stop" | "remove" | "destroy")
            );
            let instance = event
                .actor
                .and_then(|actor| actor.attributes)
                .and_then(|attributes| attributes.get("tidegate.instance").cloned());
            if let (true, Some(instance)) = (ending, instance) {
                let entry = containers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&instance)
                    .cloned();
                if let Some(entry) = entry {
                    entry.ended.notify_one();
                }
            }
        }
        // The stream broke (engine restart, network): events may have been missed.
        // While the engine is down, each attempt fails at once: back off up to 5 s.
        pause = if opened.elapsed() < Duration::from_secs(1) {
            (pause * 2).min(Duration::from_secs(5))
        } else {
            Duration::from_millis(500)
        };
        tokio::time::sleep(pause).await;
        for entry in containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            entry.ended.notify_one();
        }
    }
}

/// Waits until the container is no longer running and says why it ended.
///
/// A container the gateway asked to stop that still runs well past its stop timeout (the
/// engine was unreachable when the stop was sent) is killed then, so it cannot run on
/// unrouted.
pub(super) async fn await_exit(docker: &Docker, socket: &Path, entry: &Entry) -> Exit {
    let socket: PathBuf = socket.to_path_buf();
    let mut stopping_since: Option<Instant> = None;
    let ended = loop {
        let _ = tokio::time::timeout(BACKSTOP, entry.ended.notified()).await;
        match run_state(&socket, &entry.name).await {
            Ok(RunState::Running) => {
                if entry.stopping.load(std::sync::atomic::Ordering::Acquire) {
                    let since = *stopping_since.get_or_insert_with(Instant::now);
                    let grace = Duration::from_secs(entry.grace_secs.load(Ordering::Relaxed));
                    if since.elapsed() > grace + STOP_SLACK {
                        tracing::warn!(container = %entry.name, "container still runs long after its stop; removing it by force");
                        let _ = docker
                            .remove_container(
                                &entry.name,
                                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                            )
                            .await;
                        stopping_since = Some(Instant::now());
                    }
                }
                continue;
            }
            Ok(state) => break state,
            // The engine cannot be asked right now: keep waiting.
            Err(error) => {
                tracing::debug!(container = %entry.name, %error, "cannot check the container");
                continue;
            }
        }
    };
    if entry.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return Exit::Stopped;
    }
    match ended {
        RunState::Exited {
            out_of_memory: true,
            ..
        } => Exit::Crashed {
            description: "container killed for exceeding its memory limit (out of memory)".into(),
            code: None,
            out_of_memory: true,
        },
        RunState::Exited { code, .. } => Exit::Crashed {
            description: format!("container exited with code {code}"),
            code: i32::try_from(code).ok(),
            out_of_memory: false,
        },
        _ => Exit::Crashed {
            description: "container was removed outside the gateway".into(),
            code: None,
            out_of_memory: false,
        },
    }
}
