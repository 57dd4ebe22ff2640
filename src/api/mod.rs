//! The management API under `/api/v1` on the admin listener: the one way in for the CLI and
//! the console. JSON in and out; every request needs the bearer token (`token`) or a console
//! session with its CSRF header (`auth`, `session`).
//!
//! Apps, projects, jobs (`apps`, `projects`, `jobs`, written through `definitions`), job runs
//! (`jobruns`), what apps are doing (`live`, `follow`, `watch`), uploaded build sources
//! (`sources`). App and job files stay the source of truth. A write is checked exactly as
//! `tidegate check` checks the file (`config::check_definition_file`, in the context of every
//! other file), then written atomically into `apps_dir` or `jobs_dir`; the usual live reload
//! applies it. Reads come from the
//! files on disk, so an edit by hand shows at once. Writes are serialised, and each names
//! the version it changes (`If-Match`) if it wants to: a stale one gets 412 and changes
//! nothing, so two writers never lose an edit. See docs/api.md.

mod apps;
mod auth;
mod definitions;
pub mod document;
mod files;
mod follow;
mod jobruns;
mod jobs;
mod live;
mod projects;
mod reply;
pub mod session;
mod sources;
pub mod store;
pub mod token;
mod watch;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prometheus::IntCounterVec;

use crate::config::Config;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::stats::History;
use definitions::Kind;
use reply::{error, json, ApiResult};
use token::Token;

/// The body of an API (and admin) response: whole, or streamed (a followed log).
pub type ApiBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A whole body as an [`ApiBody`].
pub fn boxed(response: Response<Full<Bytes>>) -> Response<ApiBody> {
    response.map(|body| body.map_err(|never| match never {}).boxed())
}

/// The largest request body the API reads.
const MAX_BODY: usize = 1024 * 1024;

/// The API's state.
pub struct Api {
    token: Token,
    /// Console sessions, an alternative to the bearer token (`session`).
    sessions: session::Sessions,
    config: Arc<ArcSwap<Config>>,
    proxy: Arc<Proxy>,
    jobs: Arc<Jobs>,
    /// The apps' last 15 minutes, for the console's charts.
    history: Arc<History>,
    /// What `/api/v1/watch` sends, made once for every watcher.
    feed: watch::Feed,
    /// Writes to app files, one at a time: read, check the version, check, write.
    writes: tokio::sync::Mutex<()>,
    /// `tidegate_api_requests_total{code}`.
    requests: IntCounterVec,
    /// Asks the reload loop to apply the files now (a write does not wait for the watcher's
    /// debounce), and says when it has.
    reload: Reload,
    /// Where definitions are shared with other gateway replicas, when there are any: every
    /// write goes there first, then to the local file.
    store: std::sync::OnceLock<Arc<dyn store::DefinitionStore>>,
}

/// The reload loop's request channel: each request carries where to send the outcome.
pub type Reload = tokio::sync::mpsc::UnboundedSender<
    tokio::sync::oneshot::Sender<Result<(), crate::config::ConfigErrors>>,
>;

impl Api {
    pub fn new(
        token: Token,
        config: Arc<ArcSwap<Config>>,
        proxy: Arc<Proxy>,
        jobs: Arc<Jobs>,
        history: Arc<History>,
        metrics: &Metrics,
        reload: Reload,
    ) -> Self {
        let requests = IntCounterVec::new(
            prometheus::Opts::new(
                "tidegate_api_requests_total",
                "Management API requests by status code (401: a missing or wrong token).",
            ),
            &["code"],
        )
        .expect("valid metric");
        let _ = metrics.registry.register(Box::new(requests.clone()));
        let api = Api {
            token,
            sessions: session::Sessions::default(),
            config,
            proxy,
            jobs,
            history,
            feed: watch::Feed::default(),
            writes: tokio::sync::Mutex::new(()),
            requests,
            reload,
            store: std::sync::OnceLock::new(),
        };
        api.remove_orphaned_sources();
        api
    }

    /// Shares every definition written from now on through `store` (set once).
    pub fn share_definitions(&self, store: Arc<dyn store::DefinitionStore>) {
        let _ = self.store.set(store);
    }

    /// Answers one `/api/...` request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ApiBody> {
        let response = match self.caller(&request) {
            Err(refusal) => *refusal,
            Ok(csrf) if request.uri().path() == "/api/v1/session" => json(
                StatusCode::OK,
                &serde_json::json!({ "csrf": csrf, "via": if csrf.is_some() { "session" } else { "token" } }),
            ),
            Ok(_) => return self.authorized(request).await,
        };
        self.requests
            .with_label_values(&[response.status().as_str()])
            .inc();
        boxed(response)
    }

    async fn authorized(&self, request: Request<Incoming>) -> Response<ApiBody> {
        if request.method() == Method::GET && request.uri().path() == "/api/v1/watch" {
            self.requests.with_label_values(&["200"]).inc();
            return self.watch().map(|body| body.boxed());
        }
        let response = if let Some(follow) = self.follow(&request) {
            let response = match follow {
                Ok(streamed) => streamed.map(|body| body.boxed()),
                Err(refusal) => boxed(*refusal),
            };
            self.requests
                .with_label_values(&[response.status().as_str()])
                .inc();
            return response;
        } else {
            self.route(request).await.unwrap_or_else(|refusal| *refusal)
        };
        self.requests
            .with_label_values(&[response.status().as_str()])
            .inc();
        boxed(response)
    }

    /// `GET /api/v1/apps/{name}/logs?follow=true` (or a job run's), if that is the request.
    fn follow(
        &self,
        request: &Request<Incoming>,
    ) -> Option<Result<Response<follow::Streamed>, reply::Refusal>> {
        let query = request.uri().query().unwrap_or("");
        let wanted = matches!(query_param(query, "follow"), Some("true" | "1"));
        if request.method() != Method::GET || !wanted {
            return None;
        }
        if let Some(run) = request
            .uri()
            .path()
            .strip_prefix("/api/v1/jobruns/")
            .and_then(|rest| rest.strip_suffix("/logs"))
            .filter(|run| !run.contains('/'))
        {
            return Some(self.follow_run_logs(run, query));
        }
        let name = request
            .uri()
            .path()
            .strip_prefix("/api/v1/apps/")?
            .strip_suffix("/logs")?;
        if name.contains('/') {
            return None;
        }
        let instance = query_param(query, "instance");
        Some(self.follow_logs(name, instance, query_param(query, "tail")))
    }

    async fn route(&self, request: Request<Incoming>) -> ApiResult {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().trim_end_matches('/').to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let if_match = parts
            .headers
            .get(http::header::IF_MATCH)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let segments: Vec<&str> = path
            .strip_prefix("/api/v1")
            .unwrap_or("/")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, ["apps"]) => {
                self.list_definitions(Kind::App, query_param(&query, "project"))
            }
            (&Method::POST, ["apps"]) => self.create(Kind::App, read_json(body).await?).await,
            (&Method::GET, ["apps", name]) => self.get_definition(Kind::App, name),
            (&Method::PATCH, ["apps", name]) => {
                let patch = read_json(body).await?;
                self.update(Kind::App, name, if_match.as_deref(), patch)
                    .await
            }
            (&Method::DELETE, ["apps", name]) => self.delete_app(name, if_match.as_deref()).await,
            (&Method::GET, ["apps", name, "revisions"]) => self.revisions(name, None),
            (&Method::GET, ["apps", name, "revisions", revision]) => {
                self.revisions(name, Some(revision))
            }
            (&Method::PUT, ["apps", name, "source"]) => self.upload_source(name, body).await,
            (&Method::GET, ["apps", name, "stats"]) => self.stats(name),
            (&Method::GET, ["apps", name, "instances"]) => self.instances(name),
            (&Method::GET, ["apps", name, "events"]) => self.events(name),
            (&Method::GET, ["apps", name, "logs"]) => self.logs(
                name,
                query_param(&query, "instance"),
                query_param(&query, "tail"),
            ),
            (&Method::GET, ["jobs"]) => {
                self.list_definitions(Kind::Job, query_param(&query, "project"))
            }
            (&Method::POST, ["jobs"]) => self.create(Kind::Job, read_json(body).await?).await,
            (&Method::GET, ["jobs", name]) => self.get_definition(Kind::Job, name),
            (&Method::PATCH, ["jobs", name]) => {
                let patch = read_json(body).await?;
                self.update(Kind::Job, name, if_match.as_deref(), patch)
                    .await
            }
            (&Method::DELETE, ["jobs", name]) => self.delete_job(name, if_match.as_deref()).await,
            (&Method::GET, ["jobruns"]) => self.list_runs(query_param(&query, "job")),
            (&Method::POST, ["jobruns"]) => self.submit_run(read_json(body).await?),
            (&Method::GET, ["jobruns", name]) => self.get_run(name),
            (&Method::DELETE, ["jobruns", name]) => self.delete_run(name).await,
            (&Method::POST, ["jobruns", name, "resubmit"]) => self.resubmit_run(name),
            (&Method::GET, ["jobruns", name, "logs"]) => self.run_logs(name, &query),
            (&Method::GET, ["projects"]) => self.list_projects(),
            (&Method::POST, ["projects"]) => self.create_project(read_json(body).await?).await,
            (&Method::GET, ["projects", name]) => self.get_project(name),
            (&Method::DELETE, ["projects", name]) => self.delete_project(name).await,
            (
                _,
                ["apps"]
                | ["apps", _]
                | ["projects"]
                | ["projects", _]
                | ["jobs"]
                | ["jobs", _]
                | ["jobruns"]
                | ["jobruns", _],
            ) => Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}", parts.method),
            )),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path} (see docs/api.md)"),
            )),
        }
    }
}

/// The body as JSON, at most [`MAX_BODY`] bytes.
async fn read_json(body: Incoming) -> Result<serde_json::Value, reply::Refusal> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

impl Api {
    /// Has the gateway load the files now and waits until it has, so an answer to a write
    /// already shows the change applied (a new revision rolling out). Problems of other
    /// files are theirs; this file was checked before it was written.
    async fn apply_now(&self) {
        let (done, applied) = tokio::sync::oneshot::channel();
        if self.reload.send(done).is_ok() {
            let _ = applied.await;
        }
    }
}

pub(super) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
