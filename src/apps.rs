//! Live per-app state that outlives config reloads, and the registry that keeps it in line
//! with the config.
//!
//! Config snapshots are immutable and replaced whole; what an app is doing right now (its
//! revisions and traffic split, their instances and waiting requests, its controller, its
//! metric handles) must survive those swaps. The [`AppRegistry`] keeps one [`AppState`] per app name: a reload
//! updates the state's spec, and the new route table points at the same `AppState`, so a
//! request that started on the old table and one that starts on the new table count against
//! the same instances. Apps with fixed instances (`static`) get them set here; apps whose
//! instances are started on demand get a controller task (`autoscaler::controller`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Notify;

use crate::autoscaler::controller::{Controller, ControllerHandle};
use crate::config::{AppSpec, Config};
use crate::instance::Instance;
use crate::metrics::{AppMetrics, Metrics};
use crate::revision::{RevisionRequest, RevisionState, Traffic};
use crate::runtime::{Placement, RuntimeBackend};

/// The one revision of an app with fixed instances (`static`).
const FIXED_REVISION: &str = "static";

/// What `/apps` shows of an app's instances; published by whoever manages them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppStatus {
    /// The latest revision created (it may not take traffic yet).
    pub revision: String,
    /// The latest revision that became ready: where `latest` traffic goes.
    pub latest_ready: Option<String>,
    pub desired: u32,
    pub ready: usize,
    pub starting: usize,
    pub draining: usize,
    pub panic: bool,
    pub last_error: Option<String>,
    pub instances: Vec<InstanceStatus>,
    /// Running revisions first, then the rest of the history, newest first.
    pub revisions: Vec<RevisionStatus>,
}

/// One revision in `/apps`.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionStatus {
    pub name: String,
    /// `active` (instances may run), `rolling-out` (the latest, not ready yet), `failed` (the
    /// latest, whose last start failed), `retired` (draining), or `inactive` (history only).
    pub state: &'static str,
    /// Share of the app's untagged traffic, in percent.
    pub percent: u32,
    pub tags: Vec<String>,
    pub desired: u32,
    pub ready: usize,
    pub starting: usize,
    pub draining: usize,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub last_error: Option<String>,
}

/// One instance in `/apps`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub revision: String,
    pub state: &'static str,
    pub addr: Option<String>,
    pub in_flight: u32,
}

/// Everything live about one app.
pub struct AppState {
    pub name: String,
    spec: ArcSwap<AppSpec>,
    /// How requests split across revisions now.
    traffic: ArcSwap<Traffic>,
    /// Every revision with instances or waiters, for listings and limit changes.
    revisions: ArcSwap<Vec<Arc<RevisionState>>>,
    /// Wakes the app's controller: a request is waiting for an instance.
    poke: Arc<Notify>,
    status: ArcSwap<AppStatus>,
    pub metrics: AppMetrics,
}

impl AppState {
    fn new(spec: Arc<AppSpec>, metrics: &Arc<Metrics>) -> Arc<Self> {
        let app_metrics = AppMetrics::new(metrics, &spec.name);
        Arc::new(AppState {
            name: spec.name.clone(),
            metrics: app_metrics,
            spec: ArcSwap::new(spec),
            traffic: ArcSwap::from_pointee(Traffic::default()),
            revisions: ArcSwap::from_pointee(Vec::new()),
            poke: Arc::new(Notify::new()),
            status: ArcSwap::from_pointee(AppStatus::default()),
        })
    }

    /// A new revision of this app, sharing the app's queue gauge and controller wake-up.
    pub fn new_revision(&self, name: String) -> Arc<RevisionState> {
        RevisionState::new(
            name,
            self.spec().scale.concurrency,
            self.metrics.queue_depth.clone(),
            Arc::clone(&self.poke),
        )
    }

    /// The split requests follow now.
    pub fn traffic(&self) -> arc_swap::Guard<Arc<Traffic>> {
        self.traffic.load()
    }

    /// Publishes a new split, and the set of revisions that are still live (in the split,
    /// tagged, or draining).
    pub fn set_traffic(&self, traffic: Traffic, live: Vec<Arc<RevisionState>>) {
        self.traffic.store(Arc::new(traffic));
        self.revisions.store(Arc::new(live));
    }

    /// Every live revision.
    pub fn revisions(&self) -> Arc<Vec<Arc<RevisionState>>> {
        self.revisions.load_full()
    }

    /// Resolves when a request of any revision has joined a queue since the last call: the
    /// controller's signal to scale now.
    pub async fn poked(&self) {
        self.poke.notified().await;
    }

    /// Requests waiting for an instance now, over all revisions.
    pub fn queued(&self) -> usize {
        self.revisions()
            .iter()
            .map(|revision| revision.activator.queued())
            .sum()
    }

    /// Every routed instance of every live revision.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.revisions()
            .iter()
            .flat_map(|revision| {
                revision
                    .activator
                    .instances()
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The app's current spec.
    pub fn spec(&self) -> Arc<AppSpec> {
        self.spec.load_full()
    }

    /// Counts a request of this app until the returned guard drops.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.metrics.in_flight.inc();
        InFlight(Arc::clone(self), None)
    }

    /// Counts a request of this app already routed to `revision` (a WebSocket session that
    /// outlives the request that opened it).
    pub fn begin_request_on(self: &Arc<Self>, revision: &Arc<RevisionState>) -> InFlight {
        let mut in_flight = self.begin_request();
        in_flight.route_to(revision);
        in_flight
    }

    /// Requests of this app in flight now, waiting ones included.
    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// The last published status.
    pub fn status(&self) -> Arc<AppStatus> {
        self.status.load_full()
    }

    /// Publishes a new status for `/apps`.
    pub fn publish_status(&self, status: AppStatus) {
        self.metrics
            .set_instances(status.starting, status.ready, status.draining);
        self.metrics.desired.set(i64::from(status.desired));
        self.metrics.panic.set(i64::from(status.panic));
        self.status.store(Arc::new(status));
    }

    /// Routes to the instances at `addrs`, keeping the existing `Instance` (and its in-flight
    /// count) for every address that stays.
    fn set_fixed_instances(&self, addrs: &[std::net::SocketAddr]) {
        let revision = match self.revisions().first() {
            Some(revision) if revision.name == FIXED_REVISION => Arc::clone(revision),
            _ => {
                let revision = self.new_revision(FIXED_REVISION.into());
                self.set_traffic(
                    Traffic::single(Arc::clone(&revision)),
                    vec![Arc::clone(&revision)],
                );
                revision
            }
        };
        let current = revision.activator.instances();
        let next: Vec<Arc<Instance>> = addrs
            .iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|instance| instance.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| Instance::new(format!("static-{addr}"), *addr))
            })
            .collect();
        self.publish_status(AppStatus {
            revision: FIXED_REVISION.into(),
            desired: next.len() as u32,
            ready: next.len(),
            instances: next
                .iter()
                .map(|instance| InstanceStatus {
                    id: instance.id.clone(),
                    revision: "static".into(),
                    state: "ready",
                    addr: Some(instance.addr.to_string()),
                    in_flight: instance.in_flight(),
                })
                .collect(),
            ..AppStatus::default()
        });
        revision.activator.set_instances(next);
    }

    /// Takes every revision out of routing and ends every wait (the app was removed).
    fn stop_routing(&self, reason: &str) {
        for revision in self.revisions().iter() {
            revision.activator.set_instances(Vec::new());
            revision.activator.fail_waiters(reason);
        }
    }
}

/// One in-flight request of an app, and of the revision it was routed to once it is;
/// decrements both counts on drop.
pub struct InFlight(Arc<AppState>, Option<RevisionRequest>);

impl InFlight {
    pub fn app(&self) -> &Arc<AppState> {
        &self.0
    }

    /// Counts the request on `revision` too: it is traffic for that revision's autoscaler.
    /// Only requests that will be served get here (refused ones must not wake an app).
    pub fn route_to(&mut self, revision: &Arc<RevisionState>) -> &Arc<RevisionState> {
        self.1.insert(revision.begin()).revision()
    }

    /// The revision the request was routed to.
    pub fn revision(&self) -> Option<&Arc<RevisionState>> {
        self.1.as_ref().map(RevisionRequest::revision)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

struct Entry {
    state: Arc<AppState>,
    controller: Option<ControllerHandle>,
}

/// All apps' live state, keyed by app name.
pub struct AppRegistry {
    apps: Mutex<HashMap<String, Entry>>,
    /// Controllers of removed apps, still draining their instances.
    retiring: Mutex<Vec<ControllerHandle>>,
    metrics: Arc<Metrics>,
    backends: Vec<Arc<dyn RuntimeBackend>>,
    /// Where controllers keep revision history; fixed at start (a change needs a restart).
    state_dir: Option<std::path::PathBuf>,
}

impl AppRegistry {
    pub fn new(
        metrics: Arc<Metrics>,
        backends: Vec<Arc<dyn RuntimeBackend>>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Self {
        AppRegistry {
            state_dir,
            apps: Mutex::new(HashMap::new()),
            retiring: Mutex::new(Vec::new()),
            metrics,
            backends,
        }
    }

    /// Brings the live state in line with `config`: creates state for new apps, updates specs,
    /// instances and controllers of existing ones, and retires removed ones (their instances
    /// drain and stop in the background). Returns the state of every app in `config`.
    pub fn apply(&self, config: &Config) -> HashMap<String, Arc<AppState>> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut previous = std::mem::take(&mut *apps);
        let mut states = HashMap::with_capacity(config.apps.len());
        for spec in &config.apps {
            let mut entry = match previous.remove(&spec.name) {
                Some(entry) => {
                    entry.state.spec.store(Arc::clone(spec));
                    for revision in entry.state.revisions().iter() {
                        revision.activator.set_limit(spec.scale.concurrency);
                    }
                    entry
                }
                None => Entry {
                    state: AppState::new(Arc::clone(spec), &self.metrics),
                    controller: None,
                },
            };
            match self.backend_for(spec) {
                Some(backend) => match backend.placement(spec) {
                    Placement::Fixed(addrs) => {
                        if let Some(controller) = entry.controller.take() {
                            self.retire(controller);
                        }
                        entry.state.set_fixed_instances(&addrs);
                    }
                    Placement::OnDemand => match &entry.controller {
                        Some(controller) if controller.backend_kind() == backend.kind() => {
                            controller.update(Arc::clone(spec));
                        }
                        _ => {
                            if let Some(old) = entry.controller.take() {
                                self.retire(old);
                            }
                            entry.controller = Some(Controller::spawn(
                                Arc::clone(&entry.state),
                                Arc::clone(backend),
                                Arc::clone(spec),
                                self.state_dir.as_deref(),
                            ));
                        }
                    },
                },
                None => {
                    tracing::warn!(app = %spec.name, runtime = spec.runtime.kind(), "no backend for this runtime; the app answers 503");
                    entry.state.set_fixed_instances(&[]);
                }
            }
            states.insert(spec.name.clone(), Arc::clone(&entry.state));
            apps.insert(spec.name.clone(), entry);
        }
        for (name, entry) in previous {
            tracing::info!(app = %name, "app removed from config; its instances drain and stop");
            entry
                .state
                .stop_routing("the app was removed from the config");
            entry.state.metrics.remove();
            if let Some(controller) = entry.controller {
                self.retire(controller);
            }
        }
        states
    }

    /// Every app's state, sorted by name.
    pub fn list(&self) -> Vec<Arc<AppState>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = apps
            .values()
            .map(|entry| Arc::clone(&entry.state))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Stops every controller (their instances get SIGTERM, then SIGKILL after `stop_grace`),
    /// waits for them, then has every backend end whatever is left.
    pub async fn shutdown(&self) {
        let mut controllers: Vec<ControllerHandle> = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            apps.values_mut()
                .filter_map(|entry| entry.controller.take())
                .collect()
        };
        controllers.append(&mut self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        for controller in &controllers {
            controller.stop();
        }
        for controller in controllers {
            controller.join().await;
        }
        for backend in &self.backends {
            backend.shutdown().await;
        }
    }

    /// Problems of the runtime backends that keep apps from working (an unreachable
    /// container engine), for `/readyz`.
    pub fn backend_problems(&self) -> Vec<String> {
        self.backends
            .iter()
            .filter_map(|backend| backend.health())
            .collect()
    }

    fn retire(&self, controller: ControllerHandle) {
        controller.stop();
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|handle| !handle.is_finished());
        retiring.push(controller);
    }

    fn backend_for(&self, spec: &AppSpec) -> Option<&Arc<dyn RuntimeBackend>> {
        let kind = spec.runtime.kind();
        self.backends.iter().find(|backend| backend.kind() == kind)
    }
}
