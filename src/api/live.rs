//! What an app is doing, as opposed to what its file says: its revisions, instances, events
//! and output (`/api/v1/apps/{name}/revisions|instances|events|logs`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::reply::{error, json, ApiResult, Refusal};
use super::Api;
use crate::apps::AppState;

/// Bytes of an instance's log read at most per request.
const LOG_BYTES: u64 = 1024 * 1024;

impl Api {
    pub(super) fn revisions(&self, name: &str, revision: Option<&str>) -> ApiResult {
        let app = self.live(name)?;
        let status = app.status();
        match revision {
            None => Ok(json(
                StatusCode::OK,
                &json!({ "revisions": status.revisions }),
            )),
            Some(wanted) => match status.revisions.iter().find(|r| r.name == wanted) {
                Some(found) => Ok(json(StatusCode::OK, &json!(found))),
                None => Err(error(
                    StatusCode::NOT_FOUND,
                    format!("app {name:?} has no revision {wanted:?}"),
                )),
            },
        }
    }

    pub(super) fn instances(&self, name: &str) -> ApiResult {
        let app = self.live(name)?;
        Ok(json(
            StatusCode::OK,
            &json!({ "instances": app.instances_now() }),
        ))
    }

    pub(super) fn events(&self, name: &str) -> ApiResult {
        let app = self.live(name)?;
        Ok(json(StatusCode::OK, &json!({ "events": app.events() })))
    }

    /// The app's output: every instance's log (newest instances last), or one instance's,
    /// its last `tail` lines if asked.
    pub(super) fn logs(&self, name: &str, instance: Option<&str>, tail: Option<&str>) -> ApiResult {
        self.live(name)?;
        let tail = match tail.map(str::parse::<usize>) {
            None => None,
            Some(Ok(lines)) => Some(lines),
            Some(Err(_)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "tail must be a number of lines",
                ))
            }
        };
        let logs_dir = self.config.load().gateway.logs_dir.clone();
        let text = match instance {
            Some(id) => {
                let file = instance_log(&logs_dir, name, id)?;
                crate::runtime::logs::read_tail_text(&file, LOG_BYTES).map_err(|e| {
                    error(
                        StatusCode::NOT_FOUND,
                        format!("no log for instance {id:?}: {e}"),
                    )
                })?
            }
            None => {
                crate::runtime::logs::read_app_logs(&logs_dir, name, LOG_BYTES).map_err(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot read logs: {e}"),
                    )
                })?
            }
        };
        let text = match tail {
            Some(lines) => last_lines(&text, lines),
            None => text,
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok(response)
    }

    /// `logs?follow=true`: the tail asked for (default none), then the output as it comes.
    pub(super) fn follow_logs(
        &self,
        name: &str,
        instance: Option<&str>,
        tail: Option<&str>,
    ) -> Result<Response<super::follow::Streamed>, Refusal> {
        self.live(name)?;
        let logs_dir = self.config.load().gateway.logs_dir.clone();
        if let Some(id) = instance {
            instance_log(&logs_dir, name, id)?;
        }
        let backlog = match tail {
            Some(_) => {
                let response = self.logs(name, instance, tail)?;
                futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                    response.into_body(),
                ))
                .and_then(Result::ok)
                .map(|collected| collected.to_bytes())
                .unwrap_or_default()
            }
            None => Bytes::new(),
        };
        Ok(super::follow::follow(
            &logs_dir,
            name,
            instance.map(str::to_string),
            backlog,
        ))
    }

    /// The live state of an app the gateway serves.
    pub(super) fn live(&self, name: &str) -> Result<Arc<AppState>, Refusal> {
        let table = self.proxy.routes.load();
        table
            .routes()
            .iter()
            .find(|route| route.spec.name == name)
            .map(|route| Arc::clone(&route.app))
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no app named {name:?} is served (a new file takes a moment to load)"),
                )
            })
    }
}

/// The log file of instance `id` of `app`; the id must be one of the app's.
fn instance_log(logs_dir: &std::path::Path, app: &str, id: &str) -> Result<PathBuf, Refusal> {
    let valid = id.starts_with(&format!("{app}-"))
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
    if !valid {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an instance of {app:?}"),
        ));
    }
    Ok(logs_dir.join(app).join(format!("{id}.log")))
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}
