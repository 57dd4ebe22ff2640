//! Live per-app state that outlives config reloads: the data plane's view of an app.
//!
//! Config snapshots are immutable and replaced whole; what an app is doing right now (its
//! revisions and traffic split, their instances and waiting requests, its metric handles)
//! must survive those swaps. The registry (`autoscaler::registry`) keeps one [`AppState`] per
//! app name: a reload updates the state's spec, and the new route table points at the same
//! `AppState`, so a request that started on the old table and one that starts on the new
//! table count against the same instances. Apps with fixed instances (`static`) get them set
//! here; the instances of the others are set by their controller.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::config::AppSpec;
use crate::instance::Instance;
use crate::metrics::{AppMetrics, Metrics};
use crate::revision::{RevisionRequest, RevisionState, Traffic};
pub use crate::status::{AppEvent, AppStatus, InstanceStatus, RevisionStatus};

/// The one revision of an app with fixed instances (`static`).
const FIXED_REVISION: &str = "static";

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
    /// The last [`MAX_EVENTS`] events, oldest first.
    events: std::sync::Mutex<std::collections::VecDeque<AppEvent>>,
    pub metrics: AppMetrics,
}

/// Events kept per app; older ones are dropped.
pub const MAX_EVENTS: usize = 200;

impl AppState {
    pub(crate) fn new(spec: Arc<AppSpec>, metrics: &Arc<Metrics>) -> Arc<Self> {
        let app_metrics = AppMetrics::new(metrics, &spec.name);
        Arc::new(AppState {
            name: spec.name.clone(),
            metrics: app_metrics,
            spec: ArcSwap::new(spec),
            traffic: ArcSwap::from_pointee(Traffic::default()),
            revisions: ArcSwap::from_pointee(Vec::new()),
            poke: Arc::new(Notify::new()),
            status: ArcSwap::from_pointee(AppStatus::default()),
            events: Default::default(),
        })
    }

    /// A new revision of this app, sharing the app's queue gauge and controller wake-up.
    pub fn new_revision(&self, name: String) -> Arc<RevisionState> {
        let metrics = self.metrics.revision(&name);
        RevisionState::new(
            name,
            self.spec().scale.concurrency,
            self.metrics.queue_depth.clone(),
            Arc::clone(&self.poke),
            metrics,
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

    /// Records an event (see [`AppEvent`]); the oldest goes beyond [`MAX_EVENTS`].
    pub fn record(&self, reason: &'static str, message: impl Into<String>) {
        let event = AppEvent {
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            reason,
            message: message.into(),
        };
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The recorded events, oldest first.
    pub fn events(&self) -> Vec<AppEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }

    /// The published instance list with each routed instance's in-flight count read now
    /// (the published one is as of the controller's last step).
    pub fn instances_now(&self) -> Vec<InstanceStatus> {
        let routed = self.instances();
        let mut list = self.status().instances.clone();
        for entry in &mut list {
            if let Some(instance) = routed.iter().find(|i| i.id == entry.id) {
                entry.in_flight = instance.in_flight();
            }
        }
        list
    }

    /// Replaces the app's spec after a reload.
    pub(crate) fn set_spec(&self, spec: Arc<AppSpec>) {
        self.spec.store(spec);
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
    pub(crate) fn set_fixed_instances(&self, addrs: &[std::net::SocketAddr]) {
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
                    .unwrap_or_else(|| Instance::new(format!("{}-static-{addr}", self.name), *addr))
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
                    started_at: None,
                })
                .collect(),
            ..AppStatus::default()
        });
        revision.activator.set_instances(next);
    }

    /// Takes every revision out of routing and ends every wait (the app was removed).
    pub(crate) fn stop_routing(&self, reason: &str) {
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
