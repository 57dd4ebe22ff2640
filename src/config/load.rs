//! Reads the gateway file and the app files from disk and hands them to [`validate`].
//!
//! This is the only part of the config module that touches the file system. App files are the
//! `*.toml` files directly in the apps directory, read in name order; hidden files (editor
//! swap and lock files) are skipped.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{ConfigErrors, ConfigIssue};
use super::model::Config;
use super::raw::{RawApp, RawGatewayFile};
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
    let apps: Vec<_> = files
        .into_iter()
        .map(|file| {
            let parsed = read_toml::<RawApp>(&file);
            (file, parsed)
        })
        .collect();
    validate_files(gateway_file, &raw, &apps, previous)
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
    toml::from_str(&text).map_err(|error| {
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
