//! The access log: one line per request, off the request's path.
//!
//! It used to be a `tracing` event, formatted by the generic machinery and written to
//! stdout with one `write` per request, which cost about as much CPU as proxying the
//! request itself (issue 17). Now a request formats its line by hand (`format`) into a
//! shared buffer, and a writer thread of the log's own writes the buffer out when it holds
//! [`FLUSH_AT`] bytes, at least every [`FLUSH_EVERY`], and at shutdown, so nothing is lost on
//! SIGTERM. The lines are the same as before: text as the tracing formatter writes them,
//! or JSON; or, for log tools, nginx's `combined` format (`combined`).
//!
//! Where the lines go (`[gateway] access_log`): `"stdout"` (the default, with the rest of the
//! log; the `tidegate::access` target of `RUST_LOG` still turns it off), `"off"`, or a file
//! of its own, opened again on SIGHUP so logrotate can move it away. A destination that
//! cannot keep up does not slow requests down: past [`MAX_PENDING`] bytes, lines are dropped
//! and counted, and the writer says how many.

pub mod combined;
pub mod format;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

pub use format::{Format, Line};

/// Bytes that make the writer write at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bytes waiting beyond which lines are dropped rather than kept.
pub const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// The process' standard output, with the rest of the log.
    Stdout,
    /// A file of its own (appended to; opened again on SIGHUP).
    File(PathBuf),
    Off,
}

/// The access log of one gateway.
pub struct AccessLog {
    format: Format,
    sink: Sink,
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    reopen: AtomicBool,
    stopping: AtomicBool,
    /// The writer was told the buffer is full and has not taken it yet: one wake-up per
    /// batch, not one system call per line.
    signalled: AtomicBool,
    dropped: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

thread_local! {
    /// Where a line is formatted before it joins the shared buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl AccessLog {
    /// An access log writing to `sink` in `format`; a file is opened (and made) now, so a
    /// path that cannot be written is an error at start rather than lost lines.
    pub fn start(sink: Sink, format: Format) -> std::io::Result<Arc<Self>> {
        let file = match &sink {
            Sink::File(path) => Some(open(path)?),
            _ => None,
        };
        let log = Arc::new(AccessLog {
            format,
            sink,
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
            wake: Condvar::new(),
            reopen: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            signalled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            writer: Mutex::new(None),
        });
        if log.sink != Sink::Off {
            let writer = Arc::clone(&log);
            let handle = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || writer.write_out(file))?;
            *log.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        Ok(log)
    }

    /// A log that writes nothing (tests, embedding).
    pub fn off() -> Arc<Self> {
        Self::start(Sink::Off, Format::Text).expect("an access log that writes nothing starts")
    }

    /// Whether lines are wanted at all: worth asking before gathering a line's fields.
    pub fn enabled(&self) -> bool {
        match self.sink {
            Sink::Off => false,
            Sink::File(_) => true,
            Sink::Stdout => tracing::enabled!(target: "tidegate::access", tracing::Level::INFO),
        }
    }

    /// The line format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Adds one line: `fields` appends its fields, `message` ends it. In the `combined`
    /// format, which has no place for other fields, such lines are not written.
    pub fn write(&self, message: Option<&str>, fields: impl FnOnce(&mut Line<'_>)) {
        if self.format == Format::Combined {
            return;
        }
        self.append(|out| {
            let mut line = Line::start(out, self.format, SystemTime::now());
            fields(&mut line);
            line.finish(message);
        });
    }

    /// Adds one request's line in nginx's `combined` format.
    pub fn write_combined(&self, request: &combined::Request<'_>) {
        self.append(|out| combined::write(out, SystemTime::now(), request));
    }

    /// Formats a line with `fill` and adds it to the buffer the writer takes.
    fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            fill(&mut scratch);
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() + scratch.len() > MAX_PENDING {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending.extend_from_slice(&scratch);
            if pending.len() >= FLUSH_AT && !self.signalled.swap(true, Ordering::AcqRel) {
                self.wake.notify_one();
            }
        });
    }

    /// Has the file opened again before the next write (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        self.wake_writer();
    }

    /// Writes out everything and stops the writer: the last step of a shutdown.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_writer();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// Wakes the writer; under the buffer's lock, so the wake-up cannot fall between its
    /// check and its wait.
    fn wake_writer(&self) {
        let _pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_one();
    }

    /// The writer thread: waits for a full buffer, a second, a reopen or the end.
    fn write_out(&self, mut file: Option<std::fs::File>) {
        let mut batch = Vec::with_capacity(FLUSH_AT * 2);
        loop {
            let stopping = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.len() < FLUSH_AT
                    && !self.stopping.load(Ordering::Acquire)
                    && !self.reopen.load(Ordering::Acquire)
                {
                    pending = self
                        .wake
                        .wait_timeout(pending, FLUSH_EVERY)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                std::mem::swap(&mut *pending, &mut batch);
                self.signalled.store(false, Ordering::Release);
                self.stopping.load(Ordering::Acquire)
            };
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "access log: lines dropped, its destination does not keep up"
                );
            }
            if !batch.is_empty() {
                let written = match &mut file {
                    Some(file) => file.write_all(&batch),
                    None => std::io::stdout().lock().write_all(&batch),
                };
                if let Err(error) = written {
                    tracing::warn!(%error, "access log: cannot write");
                }
                batch.clear();
            }
            // After the lines before it went to the file being rotated away.
            if self.reopen.swap(false, Ordering::AcqRel) {
                if let Sink::File(path) = &self.sink {
                    match open(path) {
                        Ok(reopened) => file = Some(reopened),
                        Err(error) => {
                            tracing::warn!(path = %path.display(), %error, "access log: cannot open the file again; writing on to the old one")
                        }
                    }
                }
            }
            if stopping {
                let _ = std::io::stdout().flush();
                return;
            }
        }
    }
}

fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_in_the_file_after_shutdown_and_a_reopen_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/access.log");
        let log = AccessLog::start(Sink::File(path.clone()), Format::Text).unwrap();
        assert!(log.enabled());
        for i in 0..1000 {
            log.write(None, |line| {
                line.number("i", i);
            });
        }
        // Moved away, as logrotate does, then SIGHUP: what was written goes to the old
        // file, what comes after to a new one.
        std::fs::rename(&path, dir.path().join("old.log")).unwrap();
        log.reopen();
        let started = std::time::Instant::now();
        while !path.exists() {
            assert!(started.elapsed() < Duration::from_secs(5), "never reopened");
            std::thread::sleep(Duration::from_millis(1));
        }
        log.write(None, |line| {
            line.number("i", 1000);
        });
        log.shutdown();
        let old = std::fs::read_to_string(dir.path().join("old.log")).unwrap();
        assert_eq!(old.lines().count(), 1000);
        assert!(old.lines().last().unwrap().ends_with(" i=999"));
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new.lines().count(), 1);
        assert!(new.ends_with(" i=1000\n"));
        assert!(!AccessLog::off().enabled());
    }
}
