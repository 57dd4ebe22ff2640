//! `/api/v1/apps` and `/api/v1/projects`: app files read from and written to `apps_dir`,
//! with the live status of each app.

use http::StatusCode;
use serde_json::{json, Value as Json};

use super::document;
use super::files::{check_version, is_file_name, project_of, DefinitionFile};
use super::reply::{error, invalid, json, versioned, ApiResult};
use super::Api;
use crate::config::check_app_file;

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
        let file = DefinitionFile {
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
        let file = DefinitionFile {
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

    /// An app as the API shows it: its file (as JSON), version, URL and live status.
    fn view(&self, file: &DefinitionFile) -> Json {
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
