//! Reads the gateway file, the app files and the job files from disk and hands them to
//! validation.
//!
//! This is the only part of the config module that touches the file system. App (job) files
//! are the `*.toml` files directly in the apps (jobs) directory, read in name order; hidden
//! files (editor swap and lock files) are skipped. The projects directory's file names say
//! which projects exist, for the job files' check.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{ConfigErrors, ConfigIssue};
use super::jobs::validate_jobs;
use super::model::Config;
use super::raw::{RawApp, RawGatewayFile, RawJob};
use super::validate::validate_files;

/// Loads and validates the whole configuration rooted at `gateway_file`, strictly: a problem
/// in any file is an error (`tidegate check`).
pub fn load(gateway_file: &Path) -> Result<Config, ConfigErrors> {
    let config = load_tolerant(gateway_file, None)?;
    if config.rejected.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(
            config.rejected.into_iter().flat_map(|r| r.issues).collect(),
        ))
    }
}

/// Loads the configuration as the gateway applies it: only a problem of the gateway file (or
/// an unreadable apps directory) is an error; a bad app file is rejected alone and its app
/// keeps its spec in `previous`, if any (see [`Config::rejected`]).
pub fn load_tolerant(
    gateway_file: &Path,
    previous: Option<&Config>,
) -> Result<Config, ConfigErrors> {
    load_with(gateway_file, previous, None)
}

/// Validates the configuration as it would be with `app_file` (an app or a job file)
/// holding `text` (`None`: the file removed), exactly as `tidegate check` would, without
/// writing anything: the problems of that file (or of the gateway file), if any. Other
/// files' problems are theirs. The management API checks every write with this first.
pub fn check_definition_file(
    gateway_file: &Path,
    current: &Config,
    app_file: &Path,
    text: Option<&str>,
) -> Result<Config, ConfigErrors> {
    let config = load_with(gateway_file, Some(current), Some((app_file, text)))?;
    match config
        .rejected
        .iter()
        .find(|rejected| rejected.file == app_file)
    {
        Some(rejected) => Err(ConfigErrors(rejected.issues.clone())),
        None => Ok(config),
    }
}

fn load_with(
    gateway_file: &Path,
    previous: Option<&Config>,
    replaced: Option<(&Path, Option<&str>)>,
) -> Result<Config, ConfigErrors> {
    let raw: RawGatewayFile = read_toml(gateway_file).map_err(|issue| ConfigErrors(vec![issue]))?;
    let base = gateway_file.parent().unwrap_or(Path::new("."));
    let apps_dir = base.join(raw.gateway.apps_dir.as_deref().unwrap_or("apps"));
    let files = app_files(&apps_dir).map_err(|error| {
        ConfigErrors::single(
            gateway_file,
            "gateway.apps_dir",
            format!("cannot read directory {}: {error}", apps_dir.display()),
        )
    })?;
    let apps = read_all::<RawApp>(files, &apps_dir, replaced);
    let mut config = validate_files(gateway_file, &raw, &apps, previous)?;
    // A missing jobs directory is no jobs (most gateways have none).
    let jobs_dir = config.gateway.jobs_dir.clone();
    let job_files = app_files(&jobs_dir).unwrap_or_default();
    let jobs = read_all::<RawJob>(job_files, &jobs_dir, replaced);
    let mut projects: std::collections::BTreeSet<String> =
        config.apps.iter().map(|app| app.project.clone()).collect();
    projects.extend(
        app_files(&config.gateway.projects_dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|file| Some(file.file_stem()?.to_str()?.to_string())),
    );
    let previous_jobs = previous.map(|p| p.jobs.as_slice()).unwrap_or_default();
    let (jobs, rejected) = validate_jobs(&jobs, &config.gateway.domain, &projects, previous_jobs);
    config.jobs = jobs;
    config.rejected.extend(rejected);
    Ok(config)
}

/// Reads and parses each file of `dir`; `replaced` stands in for one file's contents (or
/// its absence) when it is in `dir`.
fn read_all<T: DeserializeOwned>(
    mut files: Vec<PathBuf>,
    dir: &Path,
    replaced: Option<(&Path, Option<&str>)>,
) -> Vec<(PathBuf, Result<T, ConfigIssue>)> {
    if let Some((file, Some(_))) = replaced {
        if file.parent() == Some(dir) && !files.iter().any(|f| f == file) {
            files.push(file.to_path_buf());
            files.sort();
        }
    }
    files
        .into_iter()
        .filter_map(|file| {
            let parsed = match replaced {
                Some((replaced, text)) if replaced == file => parse_toml::<T>(&file, text?),
                _ => read_toml::<T>(&file),
            };
            Some((file, parsed))
        })
        .collect()
}

/// The app files in `dir`, sorted by name.
pub fn app_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_app_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a path names an app file: `*.toml`, not hidden.
pub fn is_app_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".toml")
}

fn read_toml<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigIssue> {
    let issue = |field: String, message: String| ConfigIssue {
        file: file.to_path_buf(),
        field,
        message,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|error| issue(String::new(), format!("cannot read: {error}")))?;
    parse_toml(file, &text)
}

/// Parses `text` as the contents of `file`, with the error's line, column and source line.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigIssue> {
    let issue = |field: String, message: String| ConfigIssue {
        file: file.to_path_buf(),
        field,
        message,
    };
    toml::from_str(text).map_err(|error| {
        let location = error.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            let source_line = text[line_start..].lines().next().unwrap_or("").trim();
            (
                format!("line {line}, column {column}: "),
                source_line.to_string(),
            )
        });
        let message = error.message().trim_end();
        match location {
            Some((location, source_line)) if !source_line.is_empty() => issue(
                String::new(),
                format!("{location}{message} (in `{source_line}`)"),
            ),
            Some((location, _)) => issue(String::new(), format!("{location}{message}")),
            None => issue(String::new(), message.to_string()),
        }
    })
}
