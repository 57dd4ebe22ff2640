//! `/api/v1/projects`: a project is a group of apps and jobs that share a host suffix
//! and `project` visibility. It exists while it has a file in `projects_dir` (made by a
//! create) or while an app file names it, so configs written by hand need no project files.
//! A delete refuses while apps or jobs remain.

use std::collections::BTreeMap;
use std::path::PathBuf;

use http::StatusCode;
use serde_json::{json, Value as Json};

use super::reply::{error, json, ApiResult, Refusal};
use super::Api;
use crate::config::is_dns_label;

/// One project as listed.
#[derive(Default)]
struct Project {
    /// Made by a create (it has a file), not only named by an app or job.
    created: bool,
    apps: Vec<String>,
    jobs: Vec<String>,
}

impl Project {
    fn view(&self, name: &str) -> Json {
        json!({ "name": name, "created": self.created, "apps": self.apps, "jobs": self.jobs })
    }
}

impl Api {
    pub(super) fn list_projects(&self) -> ApiResult {
        let list: Vec<Json> = self
            .projects()?
            .into_iter()
            .map(|(name, project)| project.view(&name))
            .collect();
        Ok(json(StatusCode::OK, &json!({ "projects": list })))
    }

    pub(super) fn get_project(&self, name: &str) -> ApiResult {
        match self.projects()?.remove(name) {
            Some(project) => Ok(json(StatusCode::OK, &project.view(name))),
            None => Err(error(
                StatusCode::NOT_FOUND,
                format!("no project named {name:?}"),
            )),
        }
    }

    pub(super) async fn create_project(&self, body: Json) -> ApiResult {
        let Some(name) = body.get("name").and_then(Json::as_str).map(str::to_string) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the project needs a \"name\"",
            ));
        };
        if !is_dns_label(&name) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name:?} is not a project name: 1-63 lower-case letters, digits or '-', not starting or ending with '-'"),
            ));
        }
        let _writing = self.writes.lock().await;
        if self.projects()?.contains_key(&name) {
            return Err(error(
                StatusCode::CONFLICT,
                format!("project {name:?} exists"),
            ));
        }
        let file = self.project_file(&name);
        let dir = file.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::secret_file::write(&file, b"# made by the management API\n"))
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot write {}: {e}", file.display()),
                )
            })?;
        Ok(json(
            StatusCode::CREATED,
            &json!({ "name": name, "created": true, "apps": [], "jobs": [] }),
        ))
    }

    pub(super) async fn delete_project(&self, name: &str) -> ApiResult {
        let _writing = self.writes.lock().await;
        let Some(Project { apps, jobs, .. }) = self.projects()?.remove(name) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no project named {name:?}"),
            ));
        };
        if !apps.is_empty() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "project {name:?} still has apps ({}); delete them first",
                    apps.join(", ")
                ),
            ));
        }
        if !jobs.is_empty() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "project {name:?} still has jobs ({}); delete them first",
                    jobs.join(", ")
                ),
            ));
        }
        let file = self.project_file(name);
        std::fs::remove_file(&file).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot remove {}: {e}", file.display()),
            )
        })?;
        Ok(json(StatusCode::OK, &json!({ "deleted": name })))
    }

    /// Whether project `name` exists (a file, or an app naming it).
    pub(super) fn project_exists(&self, name: &str) -> Result<bool, Refusal> {
        Ok(self.projects()?.contains_key(name))
    }

    /// Every project: whether it was created (has a file), its apps and jobs.
    fn projects(&self) -> Result<BTreeMap<String, Project>, Refusal> {
        let mut projects: BTreeMap<String, Project> = BTreeMap::new();
        let dir = self.config.load().gateway.projects_dir.clone();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for path in entries.flatten().map(|entry| entry.path()) {
                if crate::config::is_app_file(&path) {
                    if let Some(stem) = path.file_stem() {
                        projects
                            .entry(stem.to_string_lossy().into_owned())
                            .or_default()
                            .created = true;
                    }
                }
            }
        }
        for app in self.app_files()? {
            projects.entry(app.project).or_default().apps.push(app.name);
        }
        for job in self.job_files()? {
            projects.entry(job.project).or_default().jobs.push(job.name);
        }
        Ok(projects)
    }

    fn project_file(&self, name: &str) -> PathBuf {
        self.config
            .load()
            .gateway
            .projects_dir
            .join(format!("{name}.toml"))
    }
}
