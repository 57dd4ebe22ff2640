//! An app's revision history on disk, so a restarted gateway keeps its revision numbers:
//! a revision name that traffic entries, logs and dashboards refer to always means the same
//! run spec, and a number is never handed out twice.
//!
//! One JSON file per app, `<state_dir>/revisions/<app>.json`, replaced whole (write to a
//! temporary file, then rename) whenever the history changes. A file that cannot be parsed is
//! reported and moved aside (`.json.unreadable`), and numbering starts afresh.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::unit::HistoryEntry;
use crate::config::RuntimeSpec;

#[derive(Serialize, Deserialize)]
struct Stored {
    /// The highest revision number ever given out.
    latest: u32,
    revisions: Vec<StoredRevision>,
}

#[derive(Serialize, Deserialize)]
struct StoredRevision {
    number: u32,
    /// Seconds since the Unix epoch.
    created: u64,
    spec: RuntimeSpec,
}

/// Where one app's history lives.
pub(super) struct HistoryStore {
    path: PathBuf,
}

impl HistoryStore {
    pub fn new(state_dir: &Path, app: &str) -> Self {
        HistoryStore {
            path: state_dir.join("revisions").join(format!("{app}.json")),
        }
    }

    /// The stored history, oldest first, and the highest number given out; empty and 0 when
    /// there is none yet.
    pub fn load(&self) -> (Vec<HistoryEntry>, u32) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), 0),
            Err(error) => {
                tracing::error!(file = %self.path.display(), %error, "cannot read the revision history; revision numbers start afresh");
                return (Vec::new(), 0);
            }
        };
        match serde_json::from_str::<Stored>(&text) {
            Ok(stored) => {
                let entries = stored
                    .revisions
                    .into_iter()
                    .map(|revision| HistoryEntry {
                        number: revision.number,
                        runtime: revision.spec,
                        created: SystemTime::UNIX_EPOCH + Duration::from_secs(revision.created),
                    })
                    .collect();
                (entries, stored.latest)
            }
            Err(error) => {
                let aside = self.path.with_extension("json.unreadable");
                let _ = std::fs::rename(&self.path, &aside);
                tracing::error!(file = %self.path.display(), %error, moved_to = %aside.display(), "the revision history is unreadable; it was set aside");
                (Vec::new(), 0)
            }
        }
    }

    /// Replaces the stored history.
    pub fn save(&self, entries: &[HistoryEntry], latest: u32) {
        let stored = Stored {
            latest,
            revisions: entries
                .iter()
                .map(|entry| StoredRevision {
                    number: entry.number,
                    created: entry
                        .created
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    spec: entry.runtime.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&stored).expect("history serializes");
        if let Err(error) = write_atomically(&self.path, &text) {
            tracing::error!(file = %self.path.display(), %error, "cannot save the revision history");
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunSpec;

    #[test]
    fn round_trips_and_sets_an_unreadable_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::new(dir.path(), "web");
        assert_eq!(store.load().1, 0);
        let runtime = RuntimeSpec::Process(RunSpec {
            command: vec!["app".into()],
            env: [("A".to_string(), "1".to_string())].into(),
            inherit_env: vec!["LANG".into()],
            workdir: None,
            port_env: "PORT".into(),
            readiness_path: Some("/healthz".into()),
            resources: Default::default(),
            build: None,
        });
        let entry = HistoryEntry {
            number: 3,
            runtime: runtime.clone(),
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        store.save(&[entry], 4);
        let (entries, latest) = store.load();
        assert_eq!(latest, 4);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].number, 3);
        assert_eq!(entries[0].runtime, runtime);

        std::fs::write(dir.path().join("revisions/web.json"), "{ not json").unwrap();
        assert_eq!(store.load().1, 0);
        assert!(dir.path().join("revisions/web.json.unreadable").exists());
    }
}
