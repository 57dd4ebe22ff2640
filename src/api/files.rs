//! Definition files (apps in `apps_dir`, jobs in `jobs_dir`) as the API reads and writes
//! them: listed from disk, checked as `tidegate check` checks them, written atomically.

use std::path::{Path, PathBuf};

use http::StatusCode;

use super::document;
use super::reply::{error, invalid, Refusal};
use super::Api;
use crate::config::{app_files, check_definition_file};

/// An app or job file on disk.
pub(super) struct DefinitionFile {
    pub path: PathBuf,
    pub text: String,
    pub name: String,
    pub project: String,
}

impl Api {
    /// Checks `text` as `path`'s new contents (`None`: its removal) in the context of every
    /// other file, as `tidegate check` would.
    pub(super) fn check(&self, path: &Path, text: Option<&str>) -> Result<(), Refusal> {
        let current = self.config.load_full();
        check_definition_file(&current.source, &current, path, text)
            .map(|_| ())
            .map_err(|e| invalid(&e))
    }

    /// Writes a checked `text` to `path` atomically (mode 0600: env values may be secrets).
    pub(super) fn write(&self, path: &Path, text: &str) -> Result<(), Refusal> {
        crate::secret_file::write(path, text.as_bytes()).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", path.display()),
            )
        })
    }

    pub(super) fn apps_dir(&self) -> PathBuf {
        self.config.load().gateway.apps_dir.clone()
    }

    pub(super) fn jobs_dir(&self) -> PathBuf {
        self.config.load().gateway.jobs_dir.clone()
    }

    pub(super) fn app_files(&self) -> Result<Vec<DefinitionFile>, Refusal> {
        self.files_in(&self.apps_dir())
    }

    /// The job files; a jobs directory that does not exist yet holds none.
    pub(super) fn job_files(&self) -> Result<Vec<DefinitionFile>, Refusal> {
        let dir = self.jobs_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        self.files_in(&dir)
    }

    /// The definition files in `dir`, each with its name (`name`, else the file's stem)
    /// and project.
    fn files_in(&self, dir: &Path) -> Result<Vec<DefinitionFile>, Refusal> {
        let paths = app_files(dir).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", dir.display()),
            )
        })?;
        Ok(paths
            .into_iter()
            .filter_map(|path| {
                let text = std::fs::read_to_string(&path).ok()?;
                let table: Option<toml::Table> = toml::from_str(&text).ok();
                let stem = path.file_stem()?.to_string_lossy().into_owned();
                let name = table
                    .as_ref()
                    .and_then(|t| t.get("name"))
                    .and_then(|n| n.as_str())
                    .map_or(stem, str::to_string);
                Some(DefinitionFile {
                    project: project_of(&text),
                    path,
                    text,
                    name,
                })
            })
            .collect())
    }

    pub(super) fn find(&self, name: &str) -> Result<DefinitionFile, Refusal> {
        self.app_files()?
            .into_iter()
            .find(|file| file.name == name)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no app named {name:?}")))
    }

    pub(super) fn find_job(&self, name: &str) -> Result<DefinitionFile, Refusal> {
        self.job_files()?
            .into_iter()
            .find(|file| file.name == name)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no job named {name:?}")))
    }
}

pub(super) fn check_version(file: &DefinitionFile, if_match: Option<&str>) -> Result<(), Refusal> {
    match if_match {
        Some(tag) if !document::matches(tag, &document::version(&file.text)) => Err(error(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "{} changed since version {tag} (now {}); read it again and retry",
                file.name,
                document::version(&file.text)
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) fn project_of(text: &str) -> String {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            t.get("project")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".into())
}

/// A name that is safe as a file name and could be an app name (validation says the rest).
pub(super) fn is_file_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
