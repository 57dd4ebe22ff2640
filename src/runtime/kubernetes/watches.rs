//! The two namespace-wide watches, EndpointSlices and Pods of tidegate's revisions, that keep
//! [`ClusterState`] current.
//!
//! kube's `watcher` lists, then watches from the list's resourceVersion with bookmarks; an
//! expired version (410 Gone) or a dropped connection makes it list again, which arrives here
//! as `Init` .. `InitApply` .. `InitDone` and replaces the state at once, so nothing deleted
//! while the watch was down lingers. Errors are retried with a short capped backoff (250 ms
//! doubling to 2 s, instead of kube's default 30 s cap) so serving resumes within seconds of
//! an API server coming back; meanwhile the last known endpoints keep serving. A watch on a
//! hung API server stays open and silent, so a [`pulse`] asks it for its version too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::{Backoff, StreamBackoff};
use kube::runtime::watcher::{self, watcher, Event};
use kube::Api;
use tokio::sync::watch;

use super::objects::{managed_selector, REVISION_LABEL};
use super::state::{ClusterState, Endpoint, PodInfo};

/// What the watches share with the backend.
#[derive(Debug)]
pub struct Shared {
    pub state: Mutex<ClusterState>,
    /// Bumped after every change, for starts waiting for a ready pod.
    pub changed: watch::Sender<u64>,
    /// The last error of each watch (and the pulse) that has not recovered yet, and when.
    errors: Mutex<HashMap<&'static str, (String, std::time::Instant)>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            state: Mutex::default(),
            changed: watch::channel(0).0,
            errors: Mutex::default(),
        }
    }
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change`, ends slots whose pods stopped serving, and wakes waiting starts.
    fn update(&self, change: impl FnOnce(&mut ClusterState)) {
        {
            let mut state = self.lock();
            change(&mut state);
            state.release_lost();
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn error(&self, watch: &'static str, error: impl std::fmt::Display) {
        let message = error.to_string();
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.get(watch).map(|(m, _)| m) != Some(&message) {
            tracing::warn!(watch, %message, "kubernetes watch failed; retrying");
        }
        errors.insert(watch, (message, std::time::Instant::now()));
    }

    fn recovered(&self, watch: &'static str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.remove(watch).is_some() {
            tracing::info!(watch, "kubernetes watch resumed");
        }
    }

    /// Why the watches are behind, if they are. A failing watch retries (and fails again)
    /// at least every 2 s, the pulse every 3 s; an error older than [`ERROR_FRESH`] is from
    /// one that has quietly resumed (a watch resumed from its resourceVersion sends nothing
    /// until something changes).
    pub fn problem(&self) -> Option<String> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let mut parts: Vec<String> = errors
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < ERROR_FRESH)
            .map(|(watch, (message, _))| format!("{watch}: {message}"))
            .collect();
        parts.sort();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// How long an error counts without being repeated: above a failing watch's retry period
/// (2 s) plus its connect timeout (5 s), and the pulse's period plus timeout (5 s).
const ERROR_FRESH: Duration = Duration::from_secs(10);

/// 250 ms doubling to 2 s; reset by the first event after a failure.
#[derive(Debug, Default)]
pub struct QuickBackoff {
    failures: u32,
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = Duration::from_millis(250 << self.failures.min(3));
        self.failures += 1;
        Some(delay)
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How often [`pulse`] asks the API server for its version, and how long it waits.
const PULSE_EVERY: Duration = Duration::from_secs(3);
const PULSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the API server for its version every few seconds: a watch on a hung or stopping API
/// server stays open and silent, so only asking tells that it is not answering.
pub async fn pulse(client: kube::Client, shared: Arc<Shared>) {
    loop {
        match tokio::time::timeout(PULSE_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => shared.recovered("API server"),
            Ok(Err(error)) => shared.error("API server", error),
            Err(_) => shared.error("API server", format!("no answer within {PULSE_TIMEOUT:?}")),
        }
        tokio::time::sleep(PULSE_EVERY).await;
    }
}

/// How one kind's objects go into [`ClusterState`].
struct Sink<K, V> {
    /// Name for logs and `/readyz`.
    name: &'static str,
    /// The object's name and what the state keeps of it; `None` skips it.
    parse: fn(&K) -> Option<(String, V)>,
    set: fn(&mut ClusterState, String, V),
    remove: fn(&mut ClusterState, &str),
    /// After a relist: every object at once.
    replace: fn(&mut ClusterState, HashMap<String, V>),
}

/// Watches the namespace's tidegate objects of one kind into the state until the task is
/// aborted.
async fn watch_into<K, V>(api: Api<K>, shared: Arc<Shared>, sink: Sink<K, V>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().labels(&managed_selector());
    let mut stream = StreamBackoff::new(watcher(api, config), QuickBackoff::default()).boxed();
    let mut relist: Option<HashMap<String, V>> = None;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                shared.error(sink.name, error);
                continue;
            }
        };
        shared.recovered(sink.name);
        match event {
            Event::Init => relist = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (Some(buffer), Some((name, value))) =
                    (relist.as_mut(), (sink.parse)(&object))
                {
                    buffer.insert(name, value);
                }
            }
            Event::InitDone => {
                let all = relist.take().unwrap_or_default();
                shared.update(|state| (sink.replace)(state, all));
            }
            Event::Apply(object) => {
                if let Some((name, value)) = (sink.parse)(&object) {
                    shared.update(|state| (sink.set)(state, name, value));
                }
            }
            Event::Delete(object) => {
                if let Some(name) = object.meta().name.clone() {
                    shared.update(|state| (sink.remove)(state, &name));
                }
            }
        }
    }
}

/// Watches the namespace's tidegate EndpointSlices.
pub async fn endpoint_slices(api: Api<EndpointSlice>, shared: Arc<Shared>) {
    let sink = Sink {
        name: "EndpointSlice watch",
        parse: slice_entry,
        set: |state, name, (revision, endpoints)| state.set_slice(name, revision, endpoints),
        remove: ClusterState::remove_slice,
        replace: ClusterState::replace_slices,
    };
    watch_into(api, shared, sink).await
}

/// Watches the namespace's tidegate pods (for crash loops and start-up progress).
pub async fn pods(api: Api<Pod>, shared: Arc<Shared>) {
    let sink = Sink {
        name: "Pod watch",
        parse: pod_entry,
        set: ClusterState::set_pod,
        remove: ClusterState::remove_pod,
        replace: ClusterState::replace_pods,
    };
    watch_into(api, shared, sink).await
}

/// A slice's name, and its revision (the Service's name) with its pod endpoints.
fn slice_entry(slice: &EndpointSlice) -> Option<(String, (String, Vec<Endpoint>))> {
    let name = slice.metadata.name.clone()?;
    let labels = slice.metadata.labels.as_ref()?;
    let revision = labels
        .get("kubernetes.io/service-name")
        .or_else(|| labels.get(REVISION_LABEL))?
        .clone();
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|endpoint| {
            let target = endpoint.target_ref.as_ref()?;
            if target.kind.as_deref() != Some("Pod") {
                return None;
            }
            let ip: IpAddr = endpoint.addresses.first()?.parse().ok()?;
            let conditions = endpoint.conditions.as_ref();
            Some(Endpoint {
                pod: target.name.clone()?,
                ip,
                // Unset `ready` means ready (the API's rule); unset `terminating`, not.
                ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            })
        })
        .collect();
    Some((name, (revision, endpoints)))
}

/// Watches the namespace's tidegate Deployments (their replica counts, which the leader
/// keeps as it wants them).
pub async fn deployments(api: Api<Deployment>, shared: Arc<Shared>) {
    let sink = Sink {
        name: "Deployment watch",
        parse: |deployment: &Deployment| {
            let name = deployment.metadata.name.clone()?;
            let replicas = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            Some((name, replicas))
        },
        set: ClusterState::set_replicas,
        remove: ClusterState::remove_replicas,
        replace: ClusterState::replace_replicas,
    };
    watch_into(api, shared, sink).await
}

/// Waiting reasons that mean the container will not run without a change.
const FAILING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn pod_entry(pod: &Pod) -> Option<(String, PodInfo)> {
    let name = pod.metadata.name.clone()?;
    let revision = pod.metadata.labels.as_ref()?.get(REVISION_LABEL)?.clone();
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.first());
    let waiting = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let last_exit = container
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            let reason = t.reason.as_deref().unwrap_or("Error");
            match t.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => format!("exited with code {} ({reason}): {message}", t.exit_code),
                None => format!("exited with code {} ({reason})", t.exit_code),
            }
        });
    let mut problem = waiting.and_then(|w| {
        let reason = w.reason.as_deref()?;
        FAILING_REASONS.contains(&reason).then(|| {
            let mut text = reason.to_string();
            if let Some(message) = w.message.as_deref().filter(|m| !m.is_empty()) {
                text.push_str(&format!(": {message}"));
            }
            if let Some(exit) = &last_exit {
                text.push_str(&format!("; last {exit}"));
            }
            text
        })
    });
    if phase == "Failed" && problem.is_none() {
        let reason = status.and_then(|s| s.reason.clone()).unwrap_or_default();
        problem = Some(format!("pod failed {reason}").trim_end().to_string());
    }
    let terminal = pod.metadata.deletion_timestamp.is_some()
        || matches!(phase.as_str(), "Failed" | "Succeeded");
    let summary = match waiting.and_then(|w| w.reason.as_deref()) {
        Some(reason) => format!("{phase}, {reason}"),
        None if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none() =>
        {
            format!("{phase}, not scheduled to a node")
        }
        None => phase,
    };
    Some((
        name,
        PodInfo {
            revision,
            problem,
            summary,
            terminal,
        },
    ))
}
