//! Deleting old instance and build logs, so `logs_dir` does not grow without end.
//!
//! Logs used to live in a temporary directory per gateway process: lost at a restart and never
//! removed. Now they live under the state directory and are pruned at start-up and every hour:
//! a file not written for `log_retention` (default 7 days) is deleted, and so is every file of
//! an app beyond its [`MAX_FILES_PER_APP`] newest (an app that starts thousands of instances
//! would otherwise keep thousands of files), except files written in the last hour, which may
//! belong to running instances. App directories left empty are removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Log files kept per app (instance logs, their rotated parts and build logs together).
pub const MAX_FILES_PER_APP: usize = 200;

/// Files younger than this are never deleted by the count limit.
const RECENT: Duration = Duration::from_secs(3600);

/// How often the gateway prunes.
pub const EVERY: Duration = Duration::from_secs(3600);

/// One log file and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub modified: SystemTime,
}

/// Which of one app's files to delete (pure: the rules of the module header).
pub fn expired(mut files: Vec<LogFile>, retention: Duration, now: SystemTime) -> Vec<PathBuf> {
    let age = |file: &LogFile| now.duration_since(file.modified).unwrap_or_default();
    files.sort_by_key(|file| std::cmp::Reverse(file.modified));
    files
        .into_iter()
        .enumerate()
        .filter(|(rank, file)| {
            age(file) >= retention || (*rank >= MAX_FILES_PER_APP && age(file) >= RECENT)
        })
        .map(|(_, file)| file.path)
        .collect()
}

/// Prunes `logs_dir` at start-up and then every [`EVERY`] until `stop` turns true.
pub async fn run(
    logs_dir: PathBuf,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let dir = logs_dir.clone();
        let pruned = tokio::task::spawn_blocking(move || prune(&dir, retention, SystemTime::now()));
        if let Ok(deleted @ 1..) = pruned.await {
            tracing::info!(deleted, logs_dir = %logs_dir.display(), "old instance logs deleted (log_retention)");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Prunes `logs_dir`; returns how many files were deleted.
pub fn prune(logs_dir: &Path, retention: Duration, now: SystemTime) -> usize {
    let Ok(apps) = std::fs::read_dir(logs_dir) else {
        return 0;
    };
    let mut deleted = 0;
    for app in apps.filter_map(Result::ok).map(|entry| entry.path()) {
        if !app.is_dir() {
            continue;
        }
        let files: Vec<LogFile> = [app.clone(), app.join("builds")]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let metadata = entry.metadata().ok()?;
                metadata.is_file().then_some(LogFile {
                    path: entry.path(),
                    modified: metadata.modified().ok()?,
                })
            })
            .collect();
        for path in expired(files, retention, now) {
            if std::fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
        }
        // Only empty directories go (remove_dir refuses the others).
        let _ = std::fs::remove_dir(app.join("builds"));
        let _ = std::fs::remove_dir(&app);
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, hours_ago: u64, now: SystemTime) -> LogFile {
        LogFile {
            path: PathBuf::from(name),
            modified: now - Duration::from_secs(hours_ago * 3600),
        }
    }

    #[test]
    fn old_files_and_files_beyond_the_count_go_but_recent_ones_stay() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let week = Duration::from_secs(7 * 24 * 3600);
        let mut files = vec![file("fresh", 0, now), file("old", 24 * 8, now)];
        // Far more than the limit, all two hours old, plus as many written just now.
        for n in 0..MAX_FILES_PER_APP {
            files.push(file(&format!("busy-{n}"), 2, now));
            files.push(file(&format!("live-{n}"), 0, now));
        }
        let deleted = expired(files, week, now);
        assert!(deleted.contains(&PathBuf::from("old")));
        assert!(!deleted
            .iter()
            .any(|p| p.starts_with("live-") || p == Path::new("fresh")));
        // The 201 files written now stay, though one is beyond the count; every two-hour-old
        // one is beyond it and goes.
        assert_eq!(deleted.len(), 1 + MAX_FILES_PER_APP);
    }

    #[test]
    fn prune_deletes_files_and_leaves_no_empty_app_directory() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("gone");
        std::fs::create_dir_all(app.join("builds")).unwrap();
        std::fs::write(app.join("gone-00001-1.log"), "x").unwrap();
        std::fs::write(app.join("builds/gone-00001.log"), "x").unwrap();
        let kept = dir.path().join("kept");
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::write(kept.join("kept-00001-1.log"), "x").unwrap();
        // Three hours from now, with a retention of one hour: every file has expired.
        let later = SystemTime::now() + Duration::from_secs(3 * 3600);
        assert_eq!(prune(dir.path(), Duration::from_secs(3600), later), 3);
        assert!(!app.exists() && !kept.exists());
        assert_eq!(prune(dir.path(), Duration::from_secs(3600), later), 0);
    }
}
