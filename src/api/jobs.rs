//! `/api/v1/jobs`: job files read from and written to `jobs_dir` as app files are
//! (`definitions`), shown with each job's runs.

use http::StatusCode;
use serde_json::{json, Value as Json};

use super::definitions::Kind;
use super::document;
use super::files::DefinitionFile;
use super::reply::{json, ApiResult};
use super::Api;

impl Api {
    /// Removes the job's file; its running runs are cancelled, and all its records stay
    /// until they are pruned (or deleted one by one).
    pub(super) async fn delete_job(&self, name: &str, if_match: Option<&str>) -> ApiResult {
        self.delete_definition(Kind::Job, name, if_match).await?;
        self.jobs.cancel_runs_of(name).await;
        Ok(json(StatusCode::OK, &json!({ "deleted": name })))
    }

    /// A job as the API shows it: its file (as JSON), version, whether it is served (or the
    /// problems of its file), and its runs.
    pub(super) fn job_view(&self, file: &DefinitionFile) -> Json {
        let config = self.config.load();
        let rejected = config
            .rejected
            .iter()
            .find(|r| r.file == file.path)
            .map(|r| r.issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        let served = config.jobs.iter().find(|job| job.name == file.name);
        let runs: Vec<_> = self.jobs.list(Some(&file.name)).into_iter().rev().collect();
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
