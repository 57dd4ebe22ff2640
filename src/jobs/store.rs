//! Job run records and logs in the state directory, so they outlive the gateway:
//!
//! ```text
//! <state_dir>/jobruns/<run>/record.json        the record (JobRun), replaced atomically
//! <state_dir>/jobruns/<run>/logs/<index>-<attempt>.log
//! <state_dir>/jobruns/.next-<job>              the last run number given to <job>
//! ```
//!
//! A run's directory goes when its record is pruned or deleted, logs included. Run numbers
//! are never reused for a job, even after its old runs are pruned.

use std::path::{Path, PathBuf};

use super::record::JobRun;

/// The records' directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            dir: state_dir.join("jobruns"),
        }
    }

    /// Where the output of `index`'s attempt `attempt` of `run` goes.
    pub fn log_path(&self, run: &str, index: u32, attempt: u32) -> PathBuf {
        self.dir
            .join(run)
            .join("logs")
            .join(format!("{index}-{attempt}.log"))
    }

    /// Writes the record whole (mode 0600: it holds the submit's env values).
    pub fn save(&self, run: &JobRun) -> std::io::Result<()> {
        let dir = self.dir.join(&run.name);
        std::fs::create_dir_all(&dir)?;
        let text = serde_json::to_vec(run).map_err(std::io::Error::other)?;
        crate::secret_file::write(&dir.join("record.json"), &text)
    }

    /// Every record on disk; unreadable ones are logged and skipped.
    pub fn load_all(&self) -> Vec<JobRun> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut runs = Vec::new();
        for entry in entries.flatten() {
            let file = entry.path().join("record.json");
            if !file.is_file() {
                continue;
            }
            match std::fs::read(&file).map(|bytes| serde_json::from_slice::<JobRun>(&bytes)) {
                Ok(Ok(run)) => runs.push(run),
                Ok(Err(error)) => {
                    tracing::warn!(file = %file.display(), %error, "skipping an unreadable job run record")
                }
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "skipping an unreadable job run record")
                }
            }
        }
        runs.sort_by_key(|run| run.submitted_at);
        runs
    }

    /// Removes a run's record and logs.
    pub fn remove(&self, run: &str) {
        if run.is_empty() || run.contains('/') || run.starts_with('.') {
            return;
        }
        let _ = std::fs::remove_dir_all(self.dir.join(run));
    }

    /// The next run number of `job`: one more than the last one given, kept in a file so
    /// numbers are not reused after old runs are pruned.
    pub fn next_number(&self, job: &str) -> std::io::Result<u64> {
        std::fs::create_dir_all(&self.dir)?;
        let file = self.dir.join(format!(".next-{job}"));
        let last: u64 = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        let next = last + 1;
        crate::secret_file::write(&file, next.to_string().as_bytes())?;
        Ok(next)
    }
}
