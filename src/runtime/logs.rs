//! Instance logs: every line an instance writes goes to the gateway's log (tagged with app,
//! revision and instance) and to a per-instance file that the admin API serves.
//!
//! Files live at `<logs_dir>/<app>/<instance>.log`. A file that passes 8 MiB is started over
//! (with a marker line), so a chatty instance cannot fill the disk.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// `/apps/<app>/logs` shows the most recently written instance logs only.
const MAX_INSTANCES_SHOWN: usize = 10;

/// The last `max_bytes` of a file, without reading the rest.
fn read_tail(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::with_capacity(max_bytes.min(len) as usize);
    file.take(max_bytes).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The last `max_bytes` of a file as text (lossy), starting at a line boundary.
pub fn read_tail_text(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    let bytes = read_tail(path, max_bytes)?;
    let whole = std::fs::metadata(path)?.len() <= max_bytes;
    let text = String::from_utf8_lossy(&bytes);
    Ok(match text.find('\n') {
        Some(at) if !whole => text[at + 1..].to_string(),
        _ => text.into_owned(),
    })
}

/// Where one instance's output goes.
#[derive(Debug, Clone)]
pub struct LogTarget {
    pub app: String,
    pub revision: String,
    pub instance: String,
    pub file: PathBuf,
}

impl LogTarget {
    pub fn new(logs_dir: &Path, app: &str, revision: &str, instance: &str) -> Self {
        LogTarget {
            app: app.to_string(),
            revision: revision.to_string(),
            instance: instance.to_string(),
            file: logs_dir.join(app).join(format!("{instance}.log")),
        }
    }
}

/// Copies `stream` line by line into the file and the gateway log until it ends.
pub async fn capture(stream: impl AsyncRead + Unpin, target: LogTarget, name: &'static str) {
    if let Some(dir) = target.file.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&target.file)
        .await
        .ok();
    let mut written = match &file {
        Some(f) => f.metadata().await.map(|m| m.len()).unwrap_or(0),
        None => 0,
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(
            target: "tidegate::instance",
            app = %target.app,
            revision = %target.revision,
            instance = %target.instance,
            stream = name,
            "{text}"
        );
        if let Some(f) = file.as_mut() {
            if written > MAX_FILE_BYTES {
                let _ = f.set_len(0).await;
                let _ = f
                    .write_all(b"[tidegate: log file passed 8 MiB and was started over]\n")
                    .await;
                written = 0;
            }
            let _ = f.write_all(text.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
            written += text.len() as u64 + 1;
        }
    }
    if let Some(mut f) = file {
        let _ = f.flush().await;
    }
}

/// The last `max_bytes` of each log file of `app`, newest instance last, each under a header
/// line, for `/apps/<app>/logs`.
pub fn read_app_logs(logs_dir: &Path, app: &str, max_bytes: u64) -> std::io::Result<String> {
    let dir = logs_dir.join(app);
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .filter_map(|path| {
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                Some((modified, path))
            })
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    files.sort();
    let newest = files.len().saturating_sub(MAX_INSTANCES_SHOWN);
    let mut out = String::new();
    for (_, path) in files.into_iter().skip(newest) {
        let bytes = read_tail(&path, max_bytes)?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        out.push_str(&format!("==> instance {name} <==\n"));
        out.push_str(&String::from_utf8_lossy(&bytes));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Where a revision's build output goes: `<logs_dir>/<app>/builds/<revision>.log`.
pub fn build_log_path(logs_dir: &Path, app: &str, revision: &str) -> PathBuf {
    logs_dir
        .join(app)
        .join("builds")
        .join(format!("{revision}.log"))
}

/// A revision's build log, written line by line as the build runs.
pub struct BuildLog {
    file: std::fs::File,
}

impl BuildLog {
    /// Starts the build log of `revision` afresh.
    pub fn create(logs_dir: &Path, app: &str, revision: &str) -> std::io::Result<Self> {
        let path = build_log_path(logs_dir, app, revision);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(BuildLog {
            file: std::fs::File::create(path)?,
        })
    }

    /// Appends `text`, ending it with a newline if it has none.
    pub fn write(&mut self, text: &str) {
        use std::io::Write;
        let _ = self.file.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = self.file.write_all(b"\n");
        }
    }
}

/// The last `max_bytes` of a build log of `app`: `revision`'s, or the newest one. `None` when
/// there is none.
pub fn read_build_log(
    logs_dir: &Path,
    app: &str,
    revision: Option<&str>,
    max_bytes: u64,
) -> std::io::Result<Option<String>> {
    let path = match revision {
        Some(revision) => build_log_path(logs_dir, app, revision),
        None => {
            let dir = logs_dir.join(app).join("builds");
            let newest = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                    .max(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(error),
            };
            match newest {
                Some(path) => path,
                None => return Ok(None),
            }
        }
    };
    match read_tail(&path, max_bytes) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
