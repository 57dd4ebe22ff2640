//! The admin listener: metrics, health, readiness, the apps listing, the management API
//! (`api`) and the web console (`console`).
//!
//! It runs on its own address (loopback by default) and never on a public listener, so
//! operational data is not exposed to end users. `/healthz` says the process is alive;
//! `/readyz` says it should get traffic (not shutting down, and every runtime backend in use
//! works: a container engine answers); `/apps` lists every app with its hosts, revisions,
//! traffic split, instances and in-flight counts as JSON; `/apps/<app>/logs` and
//! `/apps/<app>/builds[/<revision>]` serve instance output and build logs.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::watch;

use arc_swap::ArcSwap;

use crate::autoscaler::AppRegistry;
use crate::config::{Config, RejectedFile};
use crate::proxy::{ConnInfo, Proxy};
use crate::server::Handler;

/// State the admin endpoints read.
pub struct Admin {
    pub proxy: Arc<Proxy>,
    /// True once shutdown has begun: `/readyz` turns 503 so load balancers stop sending.
    pub shutting_down: watch::Receiver<bool>,
    /// For backend health in `/readyz`.
    pub registry: Arc<AppRegistry>,
    /// The config that serves, with the app files it rejected.
    pub config: Arc<ArcSwap<Config>>,
    /// The management API (`/api/...`).
    pub api: Arc<crate::api::Api>,
}

impl Admin {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match request.uri().path() {
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.proxy.metrics.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                let problems = self.registry.backend_problems();
                if *self.shutting_down.borrow() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else if !problems.is_empty() {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", problems.join("; ")),
                    )
                } else {
                    // Ready: every app serves, a rejected file's app at its previous spec.
                    // The body says so, for the operator who looks.
                    let rejected = &self.config.load().rejected;
                    let mut body = String::from("ready\n");
                    for note in self.registry.backend_notes() {
                        body.push_str(&format!("degraded: {note}\n"));
                    }
                    for file in rejected.iter() {
                        body.push_str(&format!(
                            "config: {} rejected ({} issue(s)); see /apps\n",
                            file.file.display(),
                            file.issues.len()
                        ));
                    }
                    text(StatusCode::OK, body)
                }
            }
            #[cfg(feature = "kubernetes")]
            "/internal/load" => {
                let report = crate::replicas::load::report(&self.registry);
                let mut response = text(
                    StatusCode::OK,
                    serde_json::to_string(&report).unwrap_or_default(),
                );
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                response
            }
            "/apps" => {
                let mut response = text(StatusCode::OK, self.apps_json());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            path => {
                let rest = path.strip_prefix("/apps/").unwrap_or_default();
                match rest.split_once('/') {
                    Some((app, "logs")) => self.logs(app),
                    Some((app, "builds")) => self.build_log(app, None),
                    Some((app, builds)) if builds.starts_with("builds/") => {
                        self.build_log(app, builds.strip_prefix("builds/"))
                    }
                    _ => text(
                        StatusCode::NOT_FOUND,
                        "not found; try /metrics, /healthz, /readyz, /apps, /apps/<app>/logs or /apps/<app>/builds[/<revision>]\n",
                    ),
                }
            }
        }
    }

    /// The tail of the build log of `app`'s `revision`, or of its newest build.
    fn build_log(&self, app: &str, revision: Option<&str>) -> Response<Full<Bytes>> {
        let table = self.proxy.routes.load();
        if !table.routes().iter().any(|route| route.spec.name == app) {
            return text(StatusCode::NOT_FOUND, format!("no app named {app:?}\n"));
        }
        if revision.is_some_and(|r| r.is_empty() || r.contains('/') || r.contains("..")) {
            return text(StatusCode::BAD_REQUEST, "not a revision name\n");
        }
        match crate::runtime::logs::read_build_log(
            &table.settings.logs_dir,
            app,
            revision,
            256 * 1024,
        ) {
            Ok(Some(log)) => text(StatusCode::OK, log),
            Ok(None) => text(
                StatusCode::NOT_FOUND,
                match revision {
                    Some(revision) => format!("no build log for {revision}\n"),
                    None => format!("{app:?} has no build log yet\n"),
                },
            ),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the build log: {error}\n"),
            ),
        }
    }

    /// The tail of each instance log of `app`.
    fn logs(&self, app: &str) -> Response<Full<Bytes>> {
        let table = self.proxy.routes.load();
        if !table.routes().iter().any(|route| route.spec.name == app) {
            return text(StatusCode::NOT_FOUND, format!("no app named {app:?}\n"));
        }
        match crate::runtime::logs::read_app_logs(&table.settings.logs_dir, app, 64 * 1024) {
            Ok(logs) if logs.is_empty() => text(
                StatusCode::OK,
                format!("no instance of {app:?} has written anything yet\n"),
            ),
            Ok(logs) => text(StatusCode::OK, logs),
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read logs: {error}\n"),
            ),
        }
    }

    fn apps_json(&self) -> String {
        let table = self.proxy.routes.load();
        let config = self.config.load();
        let rejection = |name: &str| config.rejected_app(name).map(rejected_json);
        let apps: Vec<_> = table
            .routes()
            .iter()
            .map(|route| {
                let spec = &route.spec;
                let status = route.app.status();
                json!({
                    "name": spec.name,
                    "project": spec.project,
                    "file": spec.file.display().to_string(),
                    "runtime": spec.runtime.kind(),
                    "visibility": spec.visibility,
                    // The app's hosts, then each tag's own host.
                    "hosts": spec.hosts.iter().map(ToString::to_string)
                        .chain(spec.traffic.iter().filter_map(|t| t.tag.as_ref()).map(|(_, host)| host.clone()))
                        .collect::<Vec<_>>(),
                    "in_flight": route.app.in_flight(),
                    "queued": route.app.queued(),
                    "revision": status.revision,
                    "latest_ready": status.latest_ready,
                    "traffic": route.app.traffic().shares().into_iter()
                        .map(|(revision, percent)| json!({ "revision": revision, "percent": percent }))
                        .collect::<Vec<_>>(),
                    "tags": route.app.traffic().tag_names().into_iter()
                        .map(|(tag, revision)| json!({ "tag": tag, "revision": revision }))
                        .collect::<Vec<_>>(),
                    "revisions": status.revisions,
                    "desired": status.desired,
                    "ready": status.ready,
                    "starting": status.starting,
                    "draining": status.draining,
                    "panic": status.panic,
                    "last_error": status.last_error,
                    "instances": route.app.instances_now(),
                    "config_error": rejection(&spec.name),
                })
            })
            .collect();
        let rejected: Vec<_> = config.rejected.iter().map(rejected_json).collect();
        let mut body = serde_json::to_string_pretty(&json!({ "apps": apps, "rejected": rejected }))
            .expect("JSON values always serialize");
        body.push('\n');
        body
    }
}

/// A rejected app file as `/apps` lists it.
fn rejected_json(file: &RejectedFile) -> serde_json::Value {
    json!({
        "file": file.file.display().to_string(),
        "app": file.app,
        "serving": if file.kept_previous { "previous spec" } else { "nothing" },
        "issues": file.issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Handler for Admin {
    type Body = crate::api::ApiBody;

    async fn call(
        self: Arc<Self>,
        _conn: ConnInfo,
        request: Request<Incoming>,
    ) -> Response<Self::Body> {
        if request.uri().path().starts_with("/api/") {
            return self.api.handle(request).await;
        }
        if crate::console::serves(request.uri().path()) {
            return crate::api::boxed(crate::console::handle(&self.api, request).await);
        }
        crate::api::boxed(self.respond(&request))
    }
}
