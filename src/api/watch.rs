//! What the console watches: each app's last 15 minutes (`GET /api/v1/apps/{name}/stats`)
//! and a Server-Sent Events stream (`GET /api/v1/watch`) that sends every app's state and
//! newest chart point, and the recent job runs, once a second, so pages move without
//! reloading.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, watch};

use super::follow::Streamed;
use super::reply::{json, ApiResult};
use super::Api;
use crate::config::Config;
use crate::jobs::Jobs;
use crate::proxy::Proxy;
use crate::stats::History;

/// How many job runs the stream carries (the newest).
const RUNS: usize = 50;

impl Api {
    pub(super) fn stats(&self, name: &str) -> ApiResult {
        self.live(name)?;
        Ok(json(
            StatusCode::OK,
            &json!({
                "every_ms": crate::stats::EVERY.as_millis() as u64,
                "points": self.history.points(name),
            }),
        ))
    }

    /// `GET /api/v1/watch`: an `event: state` with the whole picture now, then again every
    /// second while it changes, until the client goes away. The picture is made once a
    /// second for every watcher together (`Feed`), not once per watcher.
    pub(super) fn watch(&self) -> Response<Streamed> {
        let mut states = self.feed.subscribe(|| Sources {
            proxy: Arc::clone(&self.proxy),
            history: Arc::clone(&self.history),
            jobs: Arc::clone(&self.jobs),
            config: Arc::clone(&self.config),
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let state = Arc::clone(&states.borrow_and_update());
                if !state.is_empty() {
                    let event = format!("event: state\ndata: {state}\n\n");
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                // Between changes a comment every second keeps proxies from closing an idle
                // stream, and shows us a client that left.
                loop {
                    tokio::select! {
                        changed = states.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            if tx.send(Bytes::from_static(b": idle\n\n")).await.is_err() {
                                return;
                            }
                        }
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        let mut response = Response::new(Streamed::new(rx));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The state every watcher is sent: made once a second by one task, started by the first
/// watcher, while anyone watches; watchers see only changed states.
#[derive(Default)]
pub(super) struct Feed {
    states: std::sync::OnceLock<watch::Sender<Arc<String>>>,
}

impl Feed {
    fn subscribe(&self, sources: impl FnOnce() -> Sources) -> watch::Receiver<Arc<String>> {
        self.states
            .get_or_init(|| {
                let (tx, _) = watch::channel(Arc::new(String::new()));
                let producer = tx.clone();
                let sources = sources();
                tokio::spawn(async move {
                    loop {
                        if producer.receiver_count() > 0 {
                            let state = sources.snapshot().to_string();
                            producer.send_if_modified(|current| {
                                let changed = **current != state;
                                if changed {
                                    *current = Arc::new(state);
                                }
                                changed
                            });
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
                tx
            })
            .subscribe()
    }
}

/// What a snapshot is made of.
struct Sources {
    proxy: Arc<Proxy>,
    history: Arc<History>,
    jobs: Arc<Jobs>,
    config: Arc<ArcSwap<Config>>,
}

impl Sources {
    fn snapshot(&self) -> Json {
        let table = self.proxy.routes.load();
        let points = self.history.latest();
        let config = self.config.load();
        let apps: Vec<Json> = table
            .apps()
            .iter()
            .map(|app| {
                let spec = app.spec();
                let status = app.status();
                json!({
                    "name": app.name,
                    "project": spec.project,
                    "revision": status.revision,
                    "latest_ready": status.latest_ready,
                    "desired": status.desired,
                    "ready": status.ready,
                    "starting": status.starting,
                    "draining": status.draining,
                    "in_flight": app.in_flight(),
                    "last_error": status.last_error,
                    "instances": app.instances_now(),
                    "revisions": status.revisions,
                    "config_error": config.rejected_app(&app.name).is_some(),
                    "point": points.get(&app.name),
                })
            })
            .collect();
        let runs: Vec<_> = self.jobs.list(None).into_iter().rev().take(RUNS).collect();
        json!({ "apps": apps, "jobruns": runs })
    }
}
