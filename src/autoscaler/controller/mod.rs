//! The per-app controller: samples concurrency, asks the KPA how many instances the app
//! needs, and moves the app's instances toward that number through its runtime backend (the
//! long-running start and drain steps run as tasks, in `lifecycle`).
//!
//! One task per on-demand app owns all of the app's control state, so nothing here needs a
//! lock. It wakes on: a sample tick (every 250 ms; a decision every 2 s), a poke from the
//! activator (a request is waiting: decide now, so a cold start begins on the first request),
//! instance events (ready, failed, exited, stopped), a spec change (config reload) and stop.
//!
//! Starting: the backend starts the instance, the probe waits until it is ready, then it joins
//! the routing set and waiting requests flow to it. Scaling down: the least busy ready
//! instance leaves the routing set, its in-flight requests finish (bounded by
//! `request_timeout`), then it is stopped. A crash removes the instance at once and counts it;
//! the replacement waits an exponential backoff when crashes repeat, so a broken app does not
//! spin.
//!
//! Revisions: each live revision is a unit (`unit.rs`) with its own KPA, fed with that
//! revision's own requests. A change of the run spec makes a new revision, prepared once
//! (build, image) and rolled out: its instances start, and once as many are ready as the
//! current revision has, `latest` traffic moves to it and the old revision drains, so no
//! request fails. `traffic` resolves `[[traffic]]` into the split requests follow; `events`
//! handles what tasks report; `status` publishes `/apps`.

mod actions;
mod events;
mod reconcile;
mod status;
#[cfg(test)]
mod tests;
mod traffic;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::budget::InstanceBudget;
use super::history::HistoryStore;
use super::lifecycle;
use super::planner::State;
use super::unit::{HistoryEntry, Prep, Role, Unit};
use crate::apps::AppState;
use crate::config::{AppSpec, RuntimeSpec, TrafficTarget};
use crate::instance::Instance;
use crate::runtime::{Exit, Prepared, RuntimeBackend};

const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const SAMPLES_PER_DECISION: u64 = 8;
/// Wait before preparing a revision again after a transient failure (engine unreachable).
const PREPARE_RETRY: Duration = Duration::from_secs(2);
/// An instance ready this long before it crashes resets the crash backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The registry's handle on a controller task.
pub struct ControllerHandle {
    spec: watch::Sender<Arc<AppSpec>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    backend_kind: &'static str,
}

impl ControllerHandle {
    /// Applies a reloaded spec at the controller's next step.
    pub fn update(&self, spec: Arc<AppSpec>) {
        self.spec.send_replace(spec);
    }

    /// Asks the controller to stop every instance and end.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits for the controller to end.
    pub async fn join(self) {
        let _ = self.task.await;
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub fn backend_kind(&self) -> &'static str {
        self.backend_kind
    }
}

struct Member {
    id: String,
    revision: u32,
    state: State,
    instance: Option<Arc<Instance>>,
    ready_at: Option<Instant>,
    /// When the start was asked for (wall clock, for listings).
    started: SystemTime,
}

pub(super) enum Event {
    Ready {
        id: String,
        instance: Arc<Instance>,
    },
    Failed {
        id: String,
        reason: String,
    },
    Exited {
        id: String,
        exit: Exit,
    },
    Stopped {
        id: String,
    },
    Prepared {
        revision: u32,
        /// The error and whether it is transient (worth retrying unchanged).
        result: Result<Prepared, (String, bool)>,
        seconds: f64,
    },
}

/// The control loop of one app.
pub struct Controller {
    app: Arc<AppState>,
    backend: Arc<dyn RuntimeBackend>,
    spec: Arc<AppSpec>,
    /// Revisions that may have instances: the latest, those traffic names, retired ones
    /// still draining.
    units: Vec<Unit>,
    /// Specs of the last `revision_history` revisions (and of every one in use), oldest first.
    history: Vec<HistoryEntry>,
    /// The newest revision's number.
    latest: u32,
    /// The newest revision that became ready: where `latest` traffic goes.
    latest_ready: Option<u32>,
    members: Vec<Member>,
    next_instance: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    /// Why the `[[traffic]]` block could not be applied, while it cannot.
    traffic_error: Option<String>,
    /// The last `[[traffic]]` block whose revisions all existed.
    last_valid_traffic: Option<Vec<TrafficTarget>>,
    last_error: Option<String>,
    /// Start-and-probe tasks still running, aborted on shutdown.
    starts: tokio::task::JoinSet<()>,
    /// Where the history survives restarts, if anywhere.
    store: Option<HistoryStore>,
    /// What each revision's preparation made, so a revision is built once even if its unit
    /// is retired and later brought back by traffic.
    prepared: HashMap<u32, Arc<Prepared>>,
    /// `max_instances` across apps, and how many of its places this app holds.
    budget: Arc<InstanceBudget>,
    reported: usize,
}

impl Controller {
    /// Starts the controller task for `app`.
    pub fn spawn(
        app: Arc<AppState>,
        backend: Arc<dyn RuntimeBackend>,
        spec: Arc<AppSpec>,
        state_dir: Option<&Path>,
        budget: Arc<InstanceBudget>,
    ) -> ControllerHandle {
        let (spec_tx, spec_rx) = watch::channel(Arc::clone(&spec));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let backend_kind = backend.kind();
        let app_name = app.name.clone();
        let mut controller = Controller {
            app,
            backend,
            spec,
            units: Vec::new(),
            history: Vec::new(),
            latest: 0,
            latest_ready: None,
            members: Vec::new(),
            next_instance: 1,
            events_tx,
            traffic_error: None,
            last_valid_traffic: None,
            last_error: None,
            starts: tokio::task::JoinSet::new(),
            store: state_dir.map(|dir| HistoryStore::new(dir, &app_name)),
            prepared: HashMap::new(),
            budget,
            reported: 0,
        };
        if let Some(store) = &controller.store {
            (controller.history, controller.latest) = store.load();
        }
        // After a restart the stored latest revision carries on if the spec is unchanged.
        let now = Instant::now();
        match controller.history.last() {
            Some(entry)
                if entry.number == controller.latest
                    && entry.runtime == controller.spec.runtime =>
            {
                let state = controller
                    .app
                    .new_revision(revision_name(&app_name, entry.number));
                let needs_prepare = controller.backend.needs_prepare(&entry.runtime);
                let unit = Unit::new(
                    entry.number,
                    entry.runtime.clone(),
                    state,
                    Role::RollingOut,
                    needs_prepare,
                    now,
                );
                controller.units.push(unit);
                controller.prune_history();
                controller.route(now);
                controller.reconcile(now);
            }
            _ => controller.new_revision(now),
        }
        let task = tokio::spawn(controller.run(spec_rx, stop_rx, events_rx));
        ControllerHandle {
            spec: spec_tx,
            stop: stop_tx,
            task,
            backend_kind,
        }
    }

    async fn run(
        mut self,
        mut spec_rx: watch::Receiver<Arc<AppSpec>>,
        mut stop_rx: watch::Receiver<bool>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut sampler = tokio::time::interval(SAMPLE_EVERY);
        sampler.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut samples = 0u64;
        let app = Arc::clone(&self.app);
        self.scale(Instant::now());
        loop {
            let backoff_until = self.units.iter().filter_map(|u| u.next_start_at).min();
            tokio::select! {
                _ = stop_rx.wait_for(|stop| *stop) => break,
                _ = sampler.tick() => {
                    let now = Instant::now();
                    self.sample(now);
                    samples += 1;
                    if samples % SAMPLES_PER_DECISION == 0 {
                        self.scale(now);
                    }
                }
                _ = app.poked() => {
                    // A request waits: decide now, so a cold start begins on the first one.
                    let now = Instant::now();
                    self.sample(now);
                    self.scale(now);
                }
                Some(event) = events.recv() => {
                    self.handle(event);
                    self.reconcile(Instant::now());
                }
                changed = spec_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let spec = spec_rx.borrow_and_update().clone();
                    self.apply_spec(spec, Instant::now());
                    self.scale(Instant::now());
                }
                _ = sleep_until_some(backoff_until) => {
                    let now = Instant::now();
                    for unit in &mut self.units {
                        if unit.next_start_at.is_some_and(|at| at <= now) {
                            unit.next_start_at = None;
                        }
                    }
                    self.reconcile(now);
                }
            }
            self.budget.report(&mut self.reported, self.members.len());
        }
        self.shutdown(events).await;
    }

    fn sample(&mut self, now: Instant) {
        for unit in &mut self.units {
            unit.sample(now);
        }
    }

    fn scale(&mut self, now: Instant) {
        for index in 0..self.units.len() {
            let ready = self.ready_count(self.units[index].number) as u32;
            let unit = &mut self.units[index];
            let before = unit.desired;
            unit.decide(&self.app.name, now, ready, &self.spec.scale);
            if unit.desired != before {
                let message = format!(
                    "revision {} scaled from {before} to {} instances",
                    unit.state.name, unit.desired
                );
                self.app.record("Scaled", message);
            }
        }
        self.reconcile(now);
    }

    fn apply_spec(&mut self, spec: Arc<AppSpec>, now: Instant) {
        let runtime_changed = self
            .history
            .last()
            .is_none_or(|entry| entry.runtime != spec.runtime);
        self.spec = spec;
        if runtime_changed {
            self.new_revision(now);
        } else {
            self.prune_history();
        }
        // A traffic edit made together with a `[run]` edit applies now, not at promotion.
        self.route(now);
    }

    /// Creates the next revision from the current spec. It starts as many instances as the
    /// revision it replaces serves (at least one if that one has traffic, none if it is at
    /// zero) and takes over `latest` traffic once those are ready.
    fn new_revision(&mut self, now: Instant) {
        self.latest += 1;
        let number = self.latest;
        let name = revision_name(&self.app.name, number);
        self.history.push(HistoryEntry {
            number,
            runtime: self.spec.runtime.clone(),
            created: SystemTime::now(),
        });
        // A revision proves it can start before it takes traffic from a ready one, whatever
        // the scale: at least one instance, even when the app is at zero (else a broken edit
        // to an idle app would become `latest` and fail every request). The first revision
        // has nothing to fall back to and takes traffic at once.
        let floor = match self.latest_ready.and_then(|n| self.unit(n)) {
            Some(current) => (self.live_count(current.number) as u32).max(1),
            None => 0,
        };
        if self.latest > 1 {
            tracing::info!(app = %self.app.name, revision = %name, instances = floor, "run spec changed: new revision");
        }
        self.app
            .record("RevisionCreated", format!("revision {name} created"));
        // The unfinished rollout of an earlier revision is superseded by this one: it serves
        // on if traffic names it, else `route` retires it.
        for unit in &mut self.units {
            if unit.role == Role::RollingOut {
                unit.role = Role::Serving;
            }
        }
        let state = self.app.new_revision(name);
        let needs_prepare = self.backend.needs_prepare(&self.spec.runtime);
        let mut unit = Unit::new(
            number,
            self.spec.runtime.clone(),
            state,
            Role::RollingOut,
            needs_prepare,
            now,
        );
        unit.floor = floor;
        self.units.push(unit);
        self.prune_history();
        if self.latest_ready.is_none() {
            // The first revision takes traffic at once: requests wait for its cold start.
            self.route(now);
        }
        self.reconcile(now);
    }

    fn unit(&self, number: u32) -> Option<&Unit> {
        self.units.iter().find(|unit| unit.number == number)
    }

    fn unit_index(&self, number: u32) -> Option<usize> {
        self.units.iter().position(|unit| unit.number == number)
    }

    fn ready_count(&self, revision: u32) -> usize {
        self.members
            .iter()
            .filter(|m| m.revision == revision && m.state == State::Ready)
            .count()
    }

    /// Instances of `revision` that are starting or ready.
    fn live_count(&self, revision: u32) -> usize {
        self.members
            .iter()
            .filter(|m| m.revision == revision && m.state != State::Draining)
            .count()
    }

    /// Spec of the app with the run spec `runtime` of one of its revisions, for the backend.
    pub(super) fn spec_for(&self, runtime: &RuntimeSpec) -> Arc<AppSpec> {
        if *runtime == self.spec.runtime {
            Arc::clone(&self.spec)
        } else {
            Arc::new(AppSpec {
                runtime: runtime.clone(),
                ..(*self.spec).clone()
            })
        }
    }

    /// Stops every instance of the app: each leaves routing, its in-flight requests finish
    /// (bounded by `request_timeout`), then it gets SIGTERM and, after `stop_grace`, SIGKILL.
    /// Used when the app is removed, changes runtime, or the gateway shuts down.
    async fn shutdown(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        // Starts still under way: abort them; an instance they already spawned is stopped
        // below by id (the backend registers a child before its start returns).
        self.starts.abort_all();
        while self.starts.join_next().await.is_some() {}
        while let Ok(event) = events.try_recv() {
            if let Event::Ready { id, instance } = event {
                if let Some(member) = self.members.iter_mut().find(|m| m.id == id) {
                    member.instance = Some(instance);
                }
            }
        }
        // Leave routing. Requests still waiting go to whatever replaced these revisions (a
        // static list after a runtime change), if anything did.
        let replacement = self.app.traffic().primary().cloned().filter(|primary| {
            !self
                .units
                .iter()
                .any(|unit| Arc::ptr_eq(&unit.state, primary))
        });
        for unit in &self.units {
            unit.state.activator.set_instances(Vec::new());
            if let Some(replacement) = &replacement {
                unit.state.activator.forward_to(&replacement.activator);
            }
        }

        let bound = self.spec.scale.request_timeout;
        let grace = self.spec.scale.stop_grace;
        let mut stops = tokio::task::JoinSet::new();
        for member in self.members.drain(..) {
            let backend = Arc::clone(&self.backend);
            stops.spawn(async move {
                lifecycle::drain_then_stop(
                    member.instance,
                    backend.as_ref(),
                    &member.id,
                    bound,
                    grace,
                )
                .await;
            });
        }
        while stops.join_next().await.is_some() {}
        self.budget.report(&mut self.reported, 0);
    }
}

/// `hello-00001`: the app name and a five-digit revision number, as Knative names them.
pub fn revision_name(app: &str, revision: u32) -> String {
    format!("{app}-{revision:05}")
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
