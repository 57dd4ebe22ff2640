//! Instance logs: every line an instance writes goes to the gateway's log (tagged with app,
//! revision and instance) and to a per-instance file that the admin API serves.
//!
//! Files live at `<logs_dir>/<app>/<instance>.log`. A file that passes 8 MiB is rotated to
//! `<instance>.log.1` (one generation is kept), so a chatty instance cannot fill the disk;
//! `log_retention` deletes what has not been written for a while.

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
    /// Where a started instance's output goes: its app's directory under `logs_dir`, or
    /// the job run's own file.
    pub fn of(logs_dir: &Path, request: &super::StartRequest) -> Self {
        let mut target = Self::new(
            logs_dir,
            &request.app.name,
            &request.revision,
            &request.instance_id,
        );
        if let Some(job) = &request.job {
            target.file = job.log.clone();
        }
        target
    }

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
    let mut file = open_append(&target.file).await;
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
        if written > MAX_FILE_BYTES && file.is_some() {
            // Rotate: the full file becomes `<instance>.log.1` (replacing an older one), and
            // a new file starts, so an instance keeps at most twice the cap on disk.
            if let Some(mut f) = file.take() {
                let _ = f.flush().await;
            }
            let rotated = rotated_path(&target.file);
            let _ = tokio::fs::rename(&target.file, &rotated).await;
            file = open_append(&target.file).await;
            if let Some(f) = file.as_mut() {
                let _ = f
                    .write_all(
                        b"[tidegate: log rotated; the previous 8 MiB are in the .log.1 file]\n",
                    )
                    .await;
            }
            written = 0;
        }
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(text.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
            written += text.len() as u64 + 1;
        }
    }
    if let Some(mut f) = file {
        let _ = f.flush().await;
    }
}

async fn open_append(path: &Path) -> Option<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .ok()
}

/// Where a log file's previous part goes when it is rotated: `<file>.1`.
pub fn rotated_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_log_past_the_cap_is_rotated_once_and_both_parts_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let target = LogTarget::new(dir.path(), "app", "app-00001", "app-00001-1");
        // 20 MiB of output in 64 KiB lines: two rotations.
        let line = format!("{}\n", "x".repeat(64 * 1024 - 1));
        let output = line.repeat(320);
        capture(output.as_bytes(), target.clone(), "stdout").await;
        let current = std::fs::metadata(&target.file).unwrap().len();
        let rotated = std::fs::metadata(rotated_path(&target.file)).unwrap().len();
        assert!(current <= MAX_FILE_BYTES + 128 * 1024, "{current}");
        assert!(
            (MAX_FILE_BYTES..=MAX_FILE_BYTES + 128 * 1024).contains(&rotated),
            "{rotated}"
        );
        let text = std::fs::read_to_string(&target.file).unwrap();
        assert!(text.starts_with("[tidegate: log rotated"));
        assert_eq!(
            std::fs::read_dir(dir.path().join("app")).unwrap().count(),
            2
        );
    }
}
