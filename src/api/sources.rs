//! `PUT /api/v1/apps/{name}/source`: a build context uploaded as a tar archive, for
//! `tidegate app create|update --build-source DIR` (Code Engine's local-source builds).
//!
//! The archive is stored content-addressed in `<state_dir>/sources/<app>/<digest>/`, so
//! uploading the same tree again names the same directory and makes no new revision, while
//! a changed tree names a new directory and so a new revision. The caller then points the
//! app's `run.workdir` (process) or `build.context` (container) at the path it gets back;
//! the app file stays the one source of truth. Directories no revision of the app names
//! any more (neither its file nor its stored history) are pruned at the next upload, and all
//! of them go with the app; at start, uploads of apps that have no file are removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use super::reply::{error, json, ApiResult, Refusal};
use super::Api;

/// The largest archive accepted.
pub const MAX_SOURCE: u64 = 256 * 1024 * 1024;

impl Api {
    pub(super) async fn upload_source(&self, app: &str, body: Incoming) -> ApiResult {
        if !super::files::is_file_name(app) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{app:?} is not an app name: use lower-case letters, digits and '-', starting with a letter"),
            ));
        }
        let root = self.sources_dir().join(app);
        std::fs::create_dir_all(&root).map_err(|e| internal(&root, &e))?;
        let incoming = root.join(format!(".incoming-{}", unique()));
        let received = receive(body, &incoming.with_extension("tar")).await;
        let digest = match received {
            Ok(digest) => digest,
            Err(refusal) => {
                let _ = std::fs::remove_file(incoming.with_extension("tar"));
                return Err(refusal);
            }
        };
        let target = root.join(&digest);
        let archive = incoming.with_extension("tar");
        let unpacked = {
            let (target, incoming, archive) = (target.clone(), incoming.clone(), archive.clone());
            tokio::task::spawn_blocking(move || unpack(&archive, &incoming, &target))
                .await
                .unwrap_or_else(|e| Err(format!("the unpacking task failed: {e}")))
        };
        let _ = std::fs::remove_file(&archive);
        let _ = std::fs::remove_dir_all(&incoming);
        unpacked.map_err(|message| error(StatusCode::BAD_REQUEST, message))?;
        let path = target.canonicalize().map_err(|e| internal(&target, &e))?;
        let _writing = self.writes.lock().await;
        self.prune_sources(app, &root, &path);
        Ok(json(
            StatusCode::OK,
            &json!({ "app": app, "digest": digest, "path": path.display().to_string() }),
        ))
    }

    /// Removes every stored source of `app` (the app is gone).
    pub(super) fn remove_sources(&self, app: &str) {
        let _ = std::fs::remove_dir_all(self.sources_dir().join(app));
    }

    /// At start: removes the uploads of apps that have no file (a create refused after
    /// its upload, or a gateway stopped in between), and any half-received archive.
    pub(super) fn remove_orphaned_sources(&self) {
        let Ok(apps) = self.app_files() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(self.sources_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !apps.iter().any(|app| app.name == name) {
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            for inner in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if inner
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".incoming-")
                {
                    let path = inner.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
    }

    fn sources_dir(&self) -> PathBuf {
        self.config.load().gateway.state_dir.join("sources")
    }

    /// Removes the source directories of `app` that neither its file nor its stored
    /// revision history names, except `keep` (just uploaded, not yet named).
    fn prune_sources(&self, app: &str, root: &Path, keep: &Path) {
        let config = self.config.load();
        let mut named = String::new();
        if let Ok(file) = self.find(app) {
            named.push_str(&file.text);
        }
        let history = config
            .gateway
            .state_dir
            .join("revisions")
            .join(format!("{app}.json"));
        named.push_str(&std::fs::read_to_string(history).unwrap_or_default());
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || path == keep || named.contains(name) {
                continue;
            }
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Streams the body into `file`, at most [`MAX_SOURCE`] bytes, and returns its SHA-256
/// (first 16 bytes, hex): the directory name.
async fn receive(mut body: Incoming, file: &Path) -> Result<String, Refusal> {
    let mut out = std::fs::File::create(file).map_err(|e| internal(file, &e))?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the archive: {e}"),
            )
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        size += data.len() as u64;
        if size > MAX_SOURCE {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the source archive passes {} MiB; leave build outputs and dependencies out of the directory",
                    MAX_SOURCE / 1024 / 1024
                ),
            ));
        }
        digest.update(data);
        out.write_all(data).map_err(|e| internal(file, &e))?;
    }
    if size == 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the body is empty: send the build context as a tar archive",
        ));
    }
    Ok(crate::random::hex(&digest.finish().as_ref()[..16]))
}

/// Unpacks `archive` into `staging`, then renames it to `target` (kept if it exists: the
/// same digest is the same tree). tar refuses entries that would land outside `staging`
/// (absolute paths, `..`, through symlinks).
fn unpack(archive: &Path, staging: &Path, target: &Path) -> Result<(), String> {
    if target.is_dir() {
        return Ok(());
    }
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut tar = tar::Archive::new(file);
    tar.set_preserve_permissions(false);
    tar.set_overwrite(false);
    std::fs::create_dir_all(staging).map_err(|e| e.to_string())?;
    tar.unpack(staging)
        .map_err(|e| format!("the body is not a usable tar archive: {e}"))?;
    match std::fs::rename(staging, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(format!("cannot store the source: {e}")),
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn internal(path: &Path, e: &std::io::Error) -> Refusal {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{}: {e}", path.display()),
    )
}
