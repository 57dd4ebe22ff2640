//! Following a container's output into its instance log, across breaks of the engine's log
//! stream.

use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::engine;
use crate::runtime::logs::{capture, LogTarget};

/// Streams the container's output into its instance log. A stream that breaks while the
/// container still runs (the engine's API service restarted) is opened again from the second
/// it broke; a line from that very second may then appear twice.
pub(super) async fn follow_logs(docker: Docker, socket: PathBuf, name: String, target: LogTarget) {
    let (out_reader, mut out_writer) = tokio::io::duplex(64 * 1024);
    let (err_reader, mut err_writer) = tokio::io::duplex(64 * 1024);
    let captures = [
        tokio::spawn(capture(out_reader, target.clone(), "stdout")),
        tokio::spawn(capture(err_reader, target, "stderr")),
    ];
    let mut since = 0;
    let mut pause = Duration::from_millis(500);
    loop {
        let opened = std::time::Instant::now();
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .since(since)
            .build();
        let mut stream = docker.logs(&name, Some(options));
        while let Some(Ok(output)) = stream.next().await {
            let written = match output {
                bollard::container::LogOutput::StdErr { message } => {
                    err_writer.write_all(&message).await
                }
                other => out_writer.write_all(&other.into_bytes()).await,
            };
            if written.is_err() {
                return;
            }
        }
        // Ended because the container did: everything it wrote has been read.
        if !matches!(
            engine::run_state(&socket, &name).await,
            Ok(engine::RunState::Running) | Err(_)
        ) {
            break;
        }
        since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i32);
        // A stream that ends at once (the engine cannot follow this container's log) is not
        // reopened twice a second for the container's whole life.
        pause = if opened.elapsed() < Duration::from_secs(1) {
            (pause * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_millis(500)
        };
        // Reopen while the container runs; while the engine does not answer (its service is
        // restarting), ask again for up to two minutes.
        let unanswered_since = std::time::Instant::now();
        let reopen = loop {
            tokio::time::sleep(pause).await;
            match engine::run_state(&socket, &name).await {
                Ok(engine::RunState::Running) => break true,
                Err(_) if unanswered_since.elapsed() < Duration::from_secs(120) => {}
                _ => break false,
            }
        };
        if !reopen {
            break;
        }
    }
    // The writers go, so the captures see the end and finish their files.
    drop((out_writer, err_writer));
    for capture in captures {
        let _ = capture.await;
    }
}
