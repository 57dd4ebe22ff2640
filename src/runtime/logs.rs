//! Instance logs: every line an instance writes goes to the gateway's log (tagged with app,
//! revision and instance) and to a per-instance file that the admin API serves.
//!
//! Files live at `<logs_dir>/<app>/<instance>.log`. A file that passes 8 MiB is started over
//! (with a marker line), so a chatty instance cannot fill the disk.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

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
    let mut out = String::new();
    for (_, path) in files {
        let bytes = std::fs::read(&path)?;
        let start = bytes.len().saturating_sub(max_bytes as usize);
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        out.push_str(&format!("==> instance {name} <==\n"));
        out.push_str(&String::from_utf8_lossy(&bytes[start..]));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
