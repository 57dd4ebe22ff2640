//! `/api/v1/apps` and `/api/v1/projects`: app files read from and written to `apps_dir`,
//! with the live status of each app.

use std::path::{Path, PathBuf};

use http::StatusCode;
use serde_json::{json, Value as Json};

use super::document;
use super::reply::{error, invalid, json, versioned, ApiResult, Refusal};
use super::Api;
use crate::config::{app_files, check_app_file};

/// An app file on disk.
pub(super) struct AppFile {
    path: PathBuf,
    pub text: String,
    pub name: String,
    pub project: String,
}

impl Api {
    pub(super) fn list_apps(&self, project: Option<&str>) -> ApiResult {
        let apps: Vec<Json> = self
            .app_files()?
            .iter()
            .filter(|file| project.is_none_or(|p| p == file.project))
            .map(|file| self.view(file))
            .collect();
        Ok(json(StatusCode::OK, &json!({ "apps": apps })))
    }

    pub(super) fn get_app(&self, name: &str) -> ApiResult {
        let file = self.find(name)?;
        Ok(versioned(
            StatusCode::OK,
            &self.view(&file),
            &document::version(&file.text),
        ))
    }

    pub(super) async fn create_app(&self, spec: Json) -> ApiResult {
        let Some(name) = spec.get("name").and_then(Json::as_str).map(str::to_string) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the app needs a \"name\" (lower-case letters, digits and '-')",
            ));
        };
        if !is_file_name(&name) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name:?} is not an app name: use lower-case letters, digits and '-', starting with a letter"),
            ));
        }
        let text = document::from_json(&spec).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let _writing = self.writes.lock().await;
        let project = project_of(&text);
        if !self.project_exists(&project)? {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown project {project:?}: create it first (tidegate project create {project})"),
            ));
        }
        if self.find(&name).is_ok() {
            return Err(error(
                StatusCode::CONFLICT,
                format!("an app named {name:?} exists; update it, or delete it first"),
            ));
        }
        let path = self.apps_dir().join(format!("{name}.toml"));
        if path.exists() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "{} exists (an app file with another name inside)",
                    path.display()
                ),
            ));
        }
        self.write(&path, &text)?;
        self.apply_now().await;
        let file = AppFile {
            path,
            project,
            name,
            text,
        };
        Ok(versioned(
            StatusCode::CREATED,
            &self.view(&file),
            &document::version(&file.text),
        ))
    }

    pub(super) async fn update_app(
        &self,
        name: &str,
        if_match: Option<&str>,
        patch: Json,
    ) -> ApiResult {
        if patch
            .get("name")
            .is_some_and(|new| new.as_str() != Some(name))
        {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "an app cannot be renamed; create one with the new name and delete this one",
            ));
        }
        let _writing = self.writes.lock().await;
        let file = self.find(name)?;
        check_version(&file, if_match)?;
        let text =
            document::patch(&file.text, &patch).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        self.write(&file.path, &text)?;
        self.apply_now().await;
        let file = AppFile {
            project: project_of(&text),
            text,
            ..file
        };
        Ok(versioned(
            StatusCode::OK,
            &self.view(&file),
            &document::version(&file.text),
        ))
    }

    pub(super) async fn delete_app(&self, name: &str, if_match: Option<&str>) -> ApiResult {
        let _writing = self.writes.lock().await;
        let file = self.find(name)?;
        check_version(&file, if_match)?;
        let current = self.config.load_full();
        if let Err(errors) = check_app_file(&current.source, &current, &file.path, None) {
            return Err(invalid(&errors));
        }
        std::fs::remove_file(&file.path).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot remove {}: {e}", file.path.display()),
            )
        })?;
        self.apply_now().await;
        self.remove_sources(name);
        Ok(json(StatusCode::OK, &json!({ "deleted": name })))
    }

    /// Checks `text` as `path`'s new contents in the context of every other file, then
    /// writes it atomically (mode 0600: env values may be secrets).
    fn write(&self, path: &Path, text: &str) -> Result<(), Refusal> {
        let current = self.config.load_full();
        check_app_file(&current.source, &current, path, Some(text)).map_err(|e| invalid(&e))?;
        crate::secret_file::write(path, text.as_bytes()).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", path.display()),
            )
        })
    }

    fn apps_dir(&self) -> PathBuf {
        self.config.load().gateway.apps_dir.clone()
    }

    pub(super) fn app_files(&self) -> Result<Vec<AppFile>, Refusal> {
        let dir = self.apps_dir();
        let paths = app_files(&dir).map_err(|e| {
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
                Some(AppFile {
                    project: project_of(&text),
                    path,
                    text,
                    name,
                })
            })
            .collect())
    }

    pub(super) fn find(&self, name: &str) -> Result<AppFile, Refusal> {
        self.app_files()?
            .into_iter()
            .find(|file| file.name == name)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no app named {name:?}")))
    }

    /// An app as the API shows it: its file (as JSON), version, URL and live status.
    fn view(&self, file: &AppFile) -> Json {
        let config = self.config.load();
        let domain = &config.gateway.domain;
        let host = format!("{}.{}.{domain}", file.name, file.project);
        let url = match self.proxy.http_port.get() {
            Some(80) => format!("http://{host}/"),
            Some(port) => format!("http://{host}:{port}/"),
            None => format!("https://{host}/"),
        };
        let table = self.proxy.routes.load();
        let status = table
            .routes()
            .iter()
            .find(|route| route.spec.name == file.name)
            .map(|route| {
                let mut status = serde_json::to_value(&*route.app.status()).unwrap_or_default();
                status["traffic"] = json!(route
                    .app
                    .traffic()
                    .shares()
                    .into_iter()
                    .map(|(revision, percent)| json!({ "revision": revision, "percent": percent }))
                    .collect::<Vec<_>>());
                status
            });
        let rejected = config
            .rejected
            .iter()
            .find(|r| r.file == file.path)
            .map(|r| r.issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        json!({
            "name": file.name,
            "project": file.project,
            "file": file.path.display().to_string(),
            "version": document::version(&file.text),
            "url": url,
            "spec": document::to_json(&file.text).unwrap_or(Json::Null),
            "status": status,
            "config_error": rejected,
        })
    }
}

fn check_version(file: &AppFile, if_match: Option<&str>) -> Result<(), Refusal> {
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

fn project_of(text: &str) -> String {
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
