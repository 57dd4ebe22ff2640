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
use super::validate::validate;

/// Loads and validates the whole configuration rooted at `gateway_file`.
pub fn load(gateway_file: &Path) -> Result<Config, ConfigErrors> {
    let raw: RawGatewayFile = read_toml(gateway_file).map_err(|issue| ConfigErrors(vec![issue]))?;
    let base = gateway_file.parent().unwrap_or(Path::new("."));
    let apps_dir = base.join(raw.gateway.apps_dir.as_deref().unwrap_or("apps"));

    let mut issues = Vec::new();
    let mut apps = Vec::new();
    match app_files(&apps_dir) {
        Ok(files) => {
            for file in files {
                match read_toml::<RawApp>(&file) {
                    Ok(app) => apps.push((file, app)),
                    Err(issue) => issues.push(issue),
                }
            }
        }
        Err(error) => issues.push(ConfigIssue {
            file: gateway_file.to_path_buf(),
            field: "gateway.apps_dir".into(),
            message: format!("cannot read directory {}: {error}", apps_dir.display()),
        }),
    }

    match validate(gateway_file, &raw, &apps) {
        Ok(config) if issues.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(issues)),
        Err(ConfigErrors(more)) => {
            issues.extend(more);
            Err(ConfigErrors(issues))
        }
    }
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
