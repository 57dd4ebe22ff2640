//! Notices edits to the config files and turns them into reload signals.
//!
//! Directories are watched, not files: editors save by writing a new file and renaming it over
//! the old one, which would silently end a watch on the file itself. Events are filtered to the
//! gateway file and `*.toml` files in the apps and jobs directories (and a mounted
//! ConfigMap's `..data` symlink, swapped on every update); the caller debounces,
//! because one save arrives as several events (create, modify, rename). After every reload the
//! caller calls [`ConfigWatcher::rewatch`] so a replaced or newly created directory is watched
//! again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::load::is_app_file;

/// Quiet time after the last file event before acting on it: one editor save is several
/// events (create, modify, rename).
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(150);

/// Waits until `changes` has been quiet for [`DEBOUNCE`]; returns false if the channel
/// closed. Shared by the config and the certificate watchers.
pub async fn settle(changes: &mut tokio::sync::mpsc::UnboundedReceiver<()>) -> bool {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEBOUNCE) => return true,
            more = changes.recv() => if more.is_none() { return false },
        }
    }
}

/// Paths whose changes matter, shared with notify's callback thread.
#[derive(Debug, Clone)]
struct Interest {
    gateway_file: PathBuf,
    /// `apps_dir` and `jobs_dir`.
    dirs: Vec<PathBuf>,
}

impl Interest {
    fn matches(&self, path: &Path) -> bool {
        path == self.gateway_file
            || self.dirs.iter().any(|dir| {
                path == dir
                    || (path.parent() == Some(dir.as_path())
                        && (is_app_file(path) || is_configmap_swap(path)))
            })
    }
}

/// A directory mounted from a Kubernetes ConfigMap changes all at once: the kubelet writes
/// the new version into a directory of its own and renames a new `..data` symlink over the
/// old one, while the `*.toml` entries stay symlinks through `..data`. So a change of
/// `..data` is a change of every file.
fn is_configmap_swap(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "..data")
}

/// A running file watcher; dropping it stops watching.
pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    interest: Arc<RwLock<Interest>>,
}

impl ConfigWatcher {
    /// Starts watching the gateway file's directory and `dirs` (`apps_dir`, `jobs_dir`);
    /// each relevant change sends one `()` on `changes`.
    pub fn start(
        gateway_file: &Path,
        dirs: &[&Path],
        changes: UnboundedSender<()>,
    ) -> notify::Result<Self> {
        let interest = Arc::new(RwLock::new(Interest {
            gateway_file: absolute(gateway_file),
            dirs: Vec::new(),
        }));
        let shared = Arc::clone(&interest);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let interest = shared.read().unwrap_or_else(|poison| poison.into_inner());
            if event.paths.iter().any(|path| interest.matches(path)) {
                let _ = changes.send(());
            }
        })?;
        let mut this = ConfigWatcher { watcher, interest };
        let gateway_dir = this.gateway_dir();
        this.watcher
            .watch(&gateway_dir, RecursiveMode::NonRecursive)?;
        this.rewatch(dirs);
        Ok(this)
    }

    /// Watches `dirs` (again): after a reload that moved them, or after a directory was
    /// replaced or made. A directory that does not exist yet is picked up through the
    /// parent's watch when it is inside the gateway file's directory, and by the next
    /// reload's rewatch otherwise.
    pub fn rewatch(&mut self, dirs: &[&Path]) {
        let dirs: Vec<PathBuf> = dirs.iter().map(|dir| absolute(dir)).collect();
        let old = {
            let mut interest = self.interest.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut interest.dirs, dirs.clone())
        };
        let gateway_dir = self.gateway_dir();
        for dir in old {
            if dir != gateway_dir {
                let _ = self.watcher.unwatch(&dir);
            }
        }
        for dir in dirs.iter().filter(|dir| **dir != gateway_dir) {
            if !dir.exists() {
                continue;
            }
            if let Err(error) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch the directory; edits there need SIGHUP");
            }
        }
    }

    fn gateway_dir(&self) -> PathBuf {
        let interest = self.interest.read().unwrap_or_else(|p| p.into_inner());
        interest
            .gateway_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Makes a path absolute without resolving symlinks, so it compares equal to notify's paths.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // Normalise `dir/./x` and `dir/../x` the way notify reports them.
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
