//! `/api/v1/jobs`: job files read from and written to `jobs_dir`, as apps are (the same
//! checks, versions and atomic writes), with each job's runs.

use http::StatusCode;
use serde_json::{json, Value as Json};

use super::document;
use super::files::{check_version, is_file_name, project_of, DefinitionFile};
use super::reply::{error, invalid, json, versioned, ApiResult};
use super::Api;
use crate::config::check_app_file;

impl Api {
    pub(super) fn list_jobs(&self, project: Option<&str>) -> ApiResult {
        let jobs: Vec<Json> = self
            .job_files()?
            .iter()
            .filter(|file| project.is_none_or(|p| p == file.project))
            .map(|file| self.job_view(file))
            .collect();
        Ok(json(StatusCode::OK, &json!({ "jobs": jobs })))
    }

    pub(super) fn get_job(&self, name: &str) -> ApiResult {
        let file = self.find_job(name)?;
        Ok(versioned(
            StatusCode::OK,
            &self.job_view(&file),
            &document::version(&file.text),
        ))
    }

    pub(super) async fn create_job(&self, spec: Json) -> ApiResult {
        let Some(name) = spec.get("name").and_then(Json::as_str).map(str::to_string) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the job needs a \"name\" (lower-case letters, digits and '-')",
            ));
        };
        if !is_file_name(&name) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name:?} is not a job name: use lower-case letters, digits and '-', starting with a letter"),
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
        if self.find_job(&name).is_ok() {
            return Err(error(
                StatusCode::CONFLICT,
                format!("a job named {name:?} exists; update it, or delete it first"),
            ));
        }
        let dir = self.jobs_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make {}: {e}", dir.display()),
            )
        })?;
        let path = dir.join(format!("{name}.toml"));
        if path.exists() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "{} exists (a job file with another name inside)",
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
            &self.job_view(&file),
            &document::version(&file.text),
        ))
    }

    pub(super) async fn update_job(
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
                "a job cannot be renamed; create one with the new name and delete this one",
            ));
        }
        let _writing = self.writes.lock().await;
        let file = self.find_job(name)?;
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
            &self.job_view(&file),
            &document::version(&file.text),
        ))
    }

    /// Removes the job's file; its running runs are cancelled, and all its records stay
    /// until they are pruned (or deleted one by one).
    pub(super) async fn delete_job(&self, name: &str, if_match: Option<&str>) -> ApiResult {
        let _writing = self.writes.lock().await;
        let file = self.find_job(name)?;
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
        self.jobs.cancel_runs_of(name).await;
        Ok(json(StatusCode::OK, &json!({ "deleted": name })))
    }

    /// A job as the API shows it: its file (as JSON), version, whether it is served (or the
    /// problems of its file), and its runs.
    fn job_view(&self, file: &DefinitionFile) -> Json {
        let config = self.config.load();
        let rejected = config
            .rejected
            .iter()
            .find(|r| r.file == file.path)
            .map(|r| r.issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        let served = config.jobs.iter().find(|job| job.name == file.name);
        let runs: Vec<Json> = self
            .jobs
            .list(Some(&file.name))
            .iter()
            .rev()
            .map(super::jobruns::summary)
            .collect();
        json!({
            "name": file.name,
            "project": file.project,
            "file": file.path.display().to_string(),
            "version": document::version(&file.text),
            "spec": document::to_json(&file.text).unwrap_or(Json::Null),
            "served": served.is_some(),
            "schedule": served.and_then(|job| job.schedule.as_ref()).map(|s| json!({
                "cron": s.cron,
                "timezone": s.timezone.name(),
                "concurrency_policy": s.concurrency,
            })),
            "array_size": served.map(|job| job.array_indices.len()),
            "config_error": rejected,
            "runs": runs,
        })
    }
}
