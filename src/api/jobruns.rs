//! `/api/v1/jobruns`: submit, list, read, cancel or delete, and resubmit job runs, and read
//! (or follow) the output of their indices and attempts.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value as Json};

use super::follow::{follow_files, Streamed};
use super::reply::{error, json, ApiResult, Refusal};
use super::Api;
use crate::jobs::record::JobRun;
use crate::jobs::{Overrides, SubmitError};

/// A logs request: the run, and `index`, `attempt`, `tail` if given.
type LogRequest = (JobRun, Option<u32>, Option<u32>, Option<usize>);

/// The most of one attempt's log returned whole.
const MAX_LOG: u64 = 1024 * 1024;

/// A run with every index and attempt.
fn detail(run: &JobRun) -> Json {
    let mut view = json!(run.summary());
    view["settings"] = json!(run.settings);
    view["indices"] = json!(run.indices);
    view
}

impl Api {
    pub(super) fn submit_run(&self, body: Json) -> ApiResult {
        let Some(job) = body.get("job").and_then(Json::as_str).map(str::to_string) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the run needs a \"job\" to run",
            ));
        };
        let mut fields = body;
        if let Some(fields) = fields.as_object_mut() {
            fields.remove("job");
        }
        let overrides: Overrides = serde_json::from_value(fields).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{e} (known fields: job, array_indices, env, retry_limit, max_execution_time, max_parallel)"),
            )
        })?;
        if self.jobs.job(&job).is_none() {
            if let Ok(file) = self.find_job(&job) {
                let config = self.config.load();
                let issues: Vec<String> = config
                    .rejected
                    .iter()
                    .filter(|r| r.file == file.path)
                    .flat_map(|r| r.issues.iter().map(ToString::to_string))
                    .collect();
                return Err(error(
                    StatusCode::CONFLICT,
                    format!("job {job:?} is not served: {}", issues.join("; ")),
                ));
            }
        }
        let run = self
            .jobs
            .submit(&job, &overrides, false)
            .map_err(submit_refusal)?;
        Ok(json(StatusCode::CREATED, &detail(&run)))
    }

    pub(super) fn resubmit_run(&self, name: &str) -> ApiResult {
        let run = self.jobs.resubmit(name).map_err(submit_refusal)?;
        Ok(json(StatusCode::CREATED, &detail(&run)))
    }

    pub(super) fn list_runs(&self, job: Option<&str>) -> ApiResult {
        let runs: Vec<_> = self.jobs.list(job).into_iter().rev().collect();
        Ok(json(StatusCode::OK, &json!({ "jobruns": runs })))
    }

    pub(super) fn get_run(&self, name: &str) -> ApiResult {
        let live = self.jobs.get(name).ok_or_else(|| no_run(name))?;
        Ok(json(StatusCode::OK, &detail(&live.snapshot())))
    }

    /// A running run is cancelled (its instances stop) and kept; a finished one is deleted
    /// with its logs.
    pub(super) async fn delete_run(&self, name: &str) -> ApiResult {
        let finished = self
            .jobs
            .get(name)
            .ok_or_else(|| no_run(name))?
            .snapshot()
            .state
            .is_finished();
        let run = self.jobs.delete(name).await.ok_or_else(|| no_run(name))?;
        if finished {
            Ok(json(StatusCode::OK, &json!({ "deleted": name })))
        } else {
            Ok(json(StatusCode::OK, &detail(&run)))
        }
    }

    /// The output of one index (its last attempt, or `attempt`), or of every index's last
    /// attempt under `==> index I attempt N <==` headers; `tail` keeps the last lines.
    pub(super) fn run_logs(&self, name: &str, query: &str) -> ApiResult {
        let (run, index, attempt, tail) = self.log_request(name, query)?;
        let mut out = String::new();
        for record in &run.indices {
            if index.is_some_and(|i| i != record.index) {
                continue;
            }
            let number = match attempt {
                Some(n) => n,
                None => match record.attempts.last() {
                    Some(last) => last.number,
                    None => continue,
                },
            };
            let path = self.jobs.log_path(&run.name, record.index, number);
            let text = crate::runtime::logs::read_tail_text(&path, MAX_LOG).unwrap_or_default();
            let text = keep_tail(&text, tail);
            if index.is_none() {
                out.push_str(&format!(
                    "==> index {} attempt {number} <==\n",
                    record.index
                ));
            }
            out.push_str(&text);
        }
        let mut response = Response::new(http_body_util::Full::new(Bytes::from(out)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(response)
    }

    /// `logs?follow=true`: what the run's instances (of one index) write, until the run ends.
    pub(super) fn follow_run_logs(
        &self,
        name: &str,
        query: &str,
    ) -> Result<Response<Streamed>, Refusal> {
        let (run, index, _, _) = self.log_request(name, query)?;
        let live = self.jobs.get(name).ok_or_else(|| no_run(name))?;
        let dir = self
            .jobs
            .log_path(&run.name, 0, 0)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let wanted: super::follow::Filter = Box::new(move |stem: &str| {
            index.is_none_or(|index| stem.split('-').next() == Some(&index.to_string()))
        });
        let done = Box::new(move || live.snapshot().state.is_finished());
        // From the start: a run's output is short-lived, and a follower wants all of it.
        Ok(follow_files(
            dir,
            wanted,
            index.is_none(),
            Bytes::new(),
            true,
            Some(done),
        ))
    }

    fn log_request(&self, name: &str, query: &str) -> Result<LogRequest, Refusal> {
        let run = self.jobs.get(name).ok_or_else(|| no_run(name))?.snapshot();
        let number = |key: &str| -> Result<Option<u32>, Refusal> {
            match super::query_param(query, key) {
                None => Ok(None),
                Some(text) => text.parse().map(Some).map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("{key}={text} is not a number"),
                    )
                }),
            }
        };
        let (index, attempt, tail) = (number("index")?, number("attempt")?, number("tail")?);
        if let Some(index) = index {
            if !run.indices.iter().any(|i| i.index == index) {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "run {name} has no index {index} (its indices: {})",
                        run.settings.array_indices
                    ),
                ));
            }
        }
        Ok((run, index, attempt, tail.map(|t| t as usize)))
    }
}

fn keep_tail(text: &str, tail: Option<usize>) -> String {
    match tail {
        None => text.to_string(),
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut kept = lines[lines.len().saturating_sub(n)..].join("\n");
            if !kept.is_empty() {
                kept.push('\n');
            }
            kept
        }
    }
}

fn no_run(name: &str) -> Refusal {
    error(StatusCode::NOT_FOUND, format!("no job run named {name:?}"))
}

fn submit_refusal(refused: SubmitError) -> Refusal {
    match &refused {
        SubmitError::UnknownJob(_) | SubmitError::UnknownRun(_) => {
            error(StatusCode::NOT_FOUND, refused.to_string())
        }
        SubmitError::Invalid(problems) => {
            let issues: Vec<Json> = problems
                .iter()
                .map(|(field, message)| json!({ "field": field, "message": message }))
                .collect();
            Box::new(json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "error": format!("refused, nothing was started: {refused}"), "issues": issues }),
            ))
        }
        SubmitError::Unavailable(_) => error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string()),
    }
}
