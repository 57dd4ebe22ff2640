//! `GET /api/v1/apps/{name}/logs?follow=true` (and a job run's logs): output as it is
//! written, streamed (chunked) until the client goes away (or the job run ends). Lines are
//! prefixed with their instance's id when several instances are followed; instances that
//! start later join the stream.
//!
//! The instance log files are polled every [`POLL`]: cheap for the few files of one app, and
//! it sees rotation (a file that shrank is read again from its start).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// How often the log files are looked at.
const POLL: Duration = Duration::from_millis(200);
/// Bytes sent from one file per poll at most, so one chatty instance cannot stall the rest.
const MAX_CHUNK: u64 = 256 * 1024;

/// A streamed response body fed by a task; dropping it (the client left) ends the task.
pub struct Streamed(mpsc::Receiver<Bytes>);

impl Streamed {
    /// A body of what `chunks` receives, until its sender goes.
    pub fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Streamed(chunks)
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// Streams what the log files of `app` in `logs_dir` (only `instance`'s, if given) gain from
/// now on, after `backlog` (what the client asked to see first).
pub fn follow(
    logs_dir: &Path,
    app: &str,
    instance: Option<String>,
    backlog: Bytes,
) -> Response<Streamed> {
    let prefix = instance.is_none();
    let wanted: Filter = Box::new(move |stem| instance.as_deref().is_none_or(|id| stem == id));
    follow_files(logs_dir.join(app), wanted, prefix, backlog, false, None)
}

/// Which log files (by file stem) a stream follows.
pub type Filter = Box<dyn Fn(&str) -> bool + Send>;

/// Streams what the `*.log` files in `dir` that `wanted` names gain from now on (or all of
/// them, `from_start`), after `backlog`; lines are prefixed with their file's stem if
/// `prefix`. The stream ends when the client goes away, or once `done` says nothing more
/// will be written and all of it was sent.
pub fn follow_files(
    dir: PathBuf,
    wanted: Filter,
    prefix: bool,
    backlog: Bytes,
    from_start: bool,
    done: Option<Box<dyn Fn() -> bool + Send>>,
) -> Response<Streamed> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if !backlog.is_empty() && tx.send(backlog).await.is_err() {
            return;
        }
        // Files there now are followed from their end (unless `from_start`); files that
        // appear later from their start.
        let mut offsets: HashMap<PathBuf, u64> = if from_start {
            HashMap::new()
        } else {
            log_files(&dir, &wanted).into_iter().collect()
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = tx.closed() => return,
            }
            // Asked before reading, so what was written before it finished is still sent.
            let finished = done.as_ref().is_some_and(|done| done());
            let mut sent_all = true;
            for (path, len) in log_files(&dir, &wanted) {
                let offset = offsets.entry(path.clone()).or_insert(0);
                if len < *offset {
                    *offset = 0; // rotated: the file starts again
                }
                if len == *offset {
                    continue;
                }
                let Ok(text) = read_range(&path, *offset, len.min(*offset + MAX_CHUNK)) else {
                    continue;
                };
                // Whole lines only (while it is written); the rest comes with the next poll.
                let end = match text.iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None if finished => text.len(),
                    None => continue,
                };
                *offset += end as u64;
                sent_all &= *offset >= len;
                let chunk = if prefix {
                    prefixed(&path, &text[..end])
                } else {
                    Bytes::copy_from_slice(&text[..end])
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            if finished && sent_all {
                return;
            }
        }
    });
    let mut response = Response::new(Streamed(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The log files in `dir` that `wanted` names, with their lengths.
fn log_files(dir: &Path, wanted: &Filter) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .filter(|path| {
            path.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(wanted)
        })
        .filter_map(|path| {
            let len = std::fs::metadata(&path).ok()?.len();
            Some((path, len))
        })
        .collect()
}

fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut buffer = Vec::with_capacity((to - from) as usize);
    file.take(to - from).read_to_end(&mut buffer)?;
    Ok(buffer)
}

/// Every line of `text` prefixed with `[<instance>] `.
fn prefixed(path: &Path, text: &[u8]) -> Bytes {
    let id = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let mut out = Vec::with_capacity(text.len() + 32);
    for line in text.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(format!("[{id}] ").as_bytes());
        out.extend_from_slice(line);
    }
    Bytes::from(out)
}
