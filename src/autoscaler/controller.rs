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
//! spin. A change of the run spec starts a new revision: its instances start, and once they
//! are ready the old revision's instances drain and stop, so no request fails.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::history::HistoryStore;
use super::lifecycle;
use super::unit::{HistoryEntry, Prep, Role, Unit};
use crate::apps::{AppState, AppStatus, InstanceStatus, RevisionStatus};
use crate::config::{AppSpec, RevisionRef, RuntimeSpec, TrafficTarget};
use crate::instance::Instance;
use crate::revision::{RevisionState, Traffic};
use crate::runtime::{Exit, PrepareRequest, Prepared, RuntimeBackend, StartRequest};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Draining,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
        }
    }
}

struct Member {
    id: String,
    revision: u32,
    state: State,
    instance: Option<Arc<Instance>>,
    ready_at: Option<Instant>,
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
}

impl Controller {
    /// Starts the controller task for `app`.
    pub fn spawn(
        app: Arc<AppState>,
        backend: Arc<dyn RuntimeBackend>,
        spec: Arc<AppSpec>,
        state_dir: Option<&Path>,
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
                    let now = Instant::now();
                    for unit in &mut self.units {
                        let ready = self
                            .members
                            .iter()
                            .any(|m| m.revision == unit.number && m.state == State::Ready);
                        if !ready && unit.cold_start_since.is_none() && unit.state.activator.queued() > 0 {
                            unit.cold_start_since = Some(now);
                        }
                    }
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
            unit.decide(&self.app.name, now, ready, &self.spec.scale);
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
        let floor = match self.latest_ready.and_then(|n| self.unit(n)) {
            Some(current) => {
                let live = self.live_count(current.number) as u32;
                let busy = current.state.in_flight() > 0;
                if live == 0 && busy {
                    1
                } else {
                    live
                }
            }
            None => 0,
        };
        if self.latest > 1 {
            tracing::info!(app = %self.app.name, revision = %name, instances = floor, "run spec changed: new revision");
        }
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

    /// Moves every revision's instances toward its target, promotes a rolled-out revision
    /// that is ready, and publishes the result.
    fn reconcile(&mut self, now: Instant) {
        for index in 0..self.units.len() {
            self.reconcile_unit(index, now);
        }
        if let Some(index) = self.unit_index(self.latest) {
            let unit = &self.units[index];
            if unit.role == Role::RollingOut
                && unit.prepared().is_some()
                && self.ready_count(unit.number) as u32 >= self.takeover_floor()
            {
                let grace = self.spec.scale.scale_to_zero_grace;
                let inherited = self.latest_ready.and_then(|n| self.unit(n)).map(|old| {
                    let concurrency = old.state.in_flight().max(0) as f64;
                    let recent = old
                        .kpa
                        .last_traffic()
                        .is_some_and(|at| now.duration_since(at) < grace);
                    (concurrency, concurrency > 0.0 || recent)
                });
                let unit = &mut self.units[index];
                unit.promote(now, inherited);
                if self.latest_ready.is_some() {
                    tracing::info!(app = %self.app.name, revision = %unit.state.name, "revision ready; latest traffic moves to it");
                }
                self.latest_ready = Some(self.latest);
                self.route(now);
                for index in 0..self.units.len() {
                    self.reconcile_unit(index, now);
                }
            }
        }
        // Retired revisions leave once their last instance has stopped.
        let members = &self.members;
        self.units.retain(|unit| {
            unit.role != Role::Retired || members.iter().any(|m| m.revision == unit.number)
        });
        self.publish();
    }

    /// Ready instances the newest revision needs before it takes over: what the revision it
    /// replaces has ready now, and at least what that one had when the rollout began.
    fn takeover_floor(&self) -> u32 {
        let Some(latest) = self.unit(self.latest) else {
            return 0;
        };
        let current = self
            .latest_ready
            .filter(|n| *n != self.latest)
            .map_or(0, |n| self.ready_count(n) as u32);
        latest.floor.max(current).min(self.spec.scale.max_scale)
    }

    fn reconcile_unit(&mut self, index: usize, now: Instant) {
        let number = self.units[index].number;
        if matches!(self.units[index].prep, Prep::Needed)
            && self.units[index].role != Role::Retired
            && self.units[index].next_start_at.is_none_or(|at| at <= now)
        {
            self.start_prepare(index);
        }
        if let Prep::Failed(reason) = &self.units[index].prep {
            // Nothing will start: requests that reached this revision get the build's error.
            if self.units[index].state.activator.queued() > 0 {
                self.units[index].state.activator.fail_waiters(reason);
            }
        }
        let mut target = self.units[index].target(&self.spec.scale);
        if self.units[index].role != Role::Retired
            && self.units[index].state.activator.queued() > 0
            && self.spec.scale.max_scale > 0
        {
            // Requests wait here (some may have been handed over from a retired revision and
            // so are not counted in this revision's concurrency): at least one instance.
            target = target.max(1);
        }
        if self.units[index].role == Role::RollingOut {
            target = target.max(self.takeover_floor());
        }
        let live = self.live_count(number) as u32;
        if live == 0
            && target > 0
            && self.units[index].cold_start_since.is_none()
            && self.units[index].state.activator.queued() > 0
        {
            // Requests wait for a revision at zero: a cold start, timed from now.
            self.units[index].cold_start_since = Some(now);
        }
        if target > live && self.units[index].prepared().is_some() {
            match self.units[index].next_start_at {
                Some(at) if at > now => {} // crash backoff: the loop wakes us at `at`
                _ => {
                    for _ in live..target {
                        self.start_instance(index);
                    }
                }
            }
        } else if target < live {
            let mut ready: Vec<usize> = (0..self.members.len())
                .filter(|&i| {
                    self.members[i].revision == number && self.members[i].state == State::Ready
                })
                .collect();
            ready.sort_by_key(|&i| {
                self.members[i]
                    .instance
                    .as_ref()
                    .map_or(0, |inst| inst.in_flight())
            });
            // Never drain a serving instance in favour of one still starting: those extra
            // ones are drained once ready, if still not needed. A retired revision drains all.
            let keep = if self.units[index].role == Role::Retired {
                0
            } else {
                target as usize
            };
            let excess = ((live - target) as usize).min(ready.len().saturating_sub(keep));
            for member in ready.into_iter().take(excess) {
                self.drain(member);
            }
            if self.units[index].role == Role::Retired {
                // Starts of a superseded revision are not needed any more.
                let starting: Vec<String> = self
                    .members
                    .iter()
                    .filter(|m| m.revision == number && m.state == State::Starting)
                    .map(|m| m.id.clone())
                    .collect();
                for id in starting {
                    self.stop_starting(&id);
                }
            }
        }
    }

    /// Resolves `[[traffic]]` against the revisions there are, publishes the split, and
    /// retires revisions that nothing points at any more. A block that names a revision not
    /// in the history keeps the previous split (or, before there was one, sends everything
    /// to the latest ready revision) and is reported.
    fn route(&mut self, now: Instant) {
        // Before any revision was ready, `latest` is the first one, still starting.
        let latest_ready = self.latest_ready.unwrap_or(self.latest);
        let resolve = |targets: &[TrafficTarget]| {
            let mut resolved: Vec<(u32, u32, Option<String>)> = Vec::new();
            let mut unknown = Vec::new();
            for target in targets {
                let number = match target.revision {
                    RevisionRef::Latest => latest_ready,
                    RevisionRef::Number(n) => n,
                };
                if !self.history.iter().any(|entry| entry.number == number) {
                    unknown.push(revision_name(&self.app.name, number));
                    continue;
                }
                let tag = target.tag.as_ref().map(|(tag, _)| tag.clone());
                resolved.push((number, target.percent, tag));
            }
            (resolved, unknown)
        };
        let (mut resolved, unknown) = resolve(&self.spec.traffic);
        if !unknown.is_empty() {
            let known: Vec<String> = self
                .history
                .iter()
                .map(|entry| revision_name(&self.app.name, entry.number))
                .collect();
            let message = format!(
                "{}: [[traffic]] names {} which this gateway does not know (known: {}); the previous traffic split stays",
                self.spec.file.display(),
                unknown.join(", "),
                known.join(", ")
            );
            if self.traffic_error.as_ref() != Some(&message) {
                tracing::error!(app = %self.app.name, "{message}");
            }
            self.traffic_error = Some(message);
            // The last block that applied, re-resolved (so `latest` still follows new
            // revisions), else everything to the latest.
            resolved = match self.last_valid_traffic.as_deref().map(resolve) {
                Some((previous, missing)) if missing.is_empty() => previous,
                _ => vec![(latest_ready, 100, None)],
            };
        } else {
            self.traffic_error = None;
            self.last_valid_traffic = Some(self.spec.traffic.clone());
        }

        // Every revision the split names needs a unit (an older one scales from zero).
        let wanted: HashSet<u32> = resolved.iter().map(|(n, _, _)| *n).collect();
        for &number in &wanted {
            match self.unit_index(number) {
                Some(index) => {
                    if self.units[index].role == Role::Retired {
                        // Revived: a fresh request side, since the old one forwards its
                        // requests elsewhere; its draining instances drain on.
                        let name = self.units[index].state.name.clone();
                        self.units[index].state = self.app.new_revision(name);
                        self.units[index].role = Role::Serving;
                    }
                }
                None => {
                    let runtime = self
                        .history
                        .iter()
                        .find(|entry| entry.number == number)
                        .map(|entry| entry.runtime.clone())
                        .expect("checked above");
                    let state = self.app.new_revision(revision_name(&self.app.name, number));
                    let needs_prepare = self.backend.needs_prepare(&runtime);
                    let mut unit =
                        Unit::new(number, runtime, state, Role::Serving, needs_prepare, now);
                    if let Some(prepared) = self.prepared.get(&number) {
                        unit.prep = Prep::Ready(Arc::clone(prepared));
                    }
                    self.units.push(unit);
                }
            }
        }
        let state_of = |number: u32| -> Arc<RevisionState> {
            Arc::clone(&self.unit(number).expect("created above").state)
        };
        let mut shares = Vec::new();
        let mut tags = HashMap::new();
        for (number, percent, tag) in &resolved {
            shares.push((*percent, state_of(*number)));
            if let Some(tag) = tag {
                tags.insert(tag.clone(), state_of(*number));
            }
        }
        let traffic = Traffic::new(shares, tags);
        let primary = traffic.primary().cloned();
        for unit in &mut self.units {
            let in_use = wanted.contains(&unit.number) || unit.number == self.latest;
            if !in_use && unit.role != Role::Retired {
                tracing::info!(app = %self.app.name, revision = %unit.state.name, "revision takes no traffic any more; draining it");
                unit.role = Role::Retired;
            }
            if unit.role == Role::Retired {
                if let Some(primary) = &primary {
                    unit.state.activator.forward_to(&primary.activator);
                }
            }
        }
        self.publish_routing(traffic);
    }

    fn publish_routing(&self, traffic: Traffic) {
        let live = self
            .units
            .iter()
            .map(|unit| Arc::clone(&unit.state))
            .collect();
        self.app.set_traffic(traffic, live);
    }

    /// Keeps the newest `revision_history` specs, and every one a revision in use needs.
    fn prune_history(&mut self) {
        let keep = self.spec.revision_history;
        let named: HashSet<u32> = self
            .spec
            .traffic
            .iter()
            .filter_map(|target| match target.revision {
                RevisionRef::Number(n) => Some(n),
                RevisionRef::Latest => None,
            })
            .collect();
        let newest_kept = self.history.len().saturating_sub(keep);
        let units: HashSet<u32> = self.units.iter().map(|unit| unit.number).collect();
        let mut position = 0;
        self.history.retain(|entry| {
            position += 1;
            position > newest_kept
                || named.contains(&entry.number)
                || units.contains(&entry.number)
                || Some(entry.number) == self.latest_ready
        });
        if let Some(store) = &self.store {
            store.save(&self.history, self.latest);
        }
    }

    /// Spec of the app with the run spec `runtime` of one of its revisions, for the backend.
    fn spec_for(&self, runtime: &RuntimeSpec) -> Arc<AppSpec> {
        if *runtime == self.spec.runtime {
            Arc::clone(&self.spec)
        } else {
            Arc::new(AppSpec {
                runtime: runtime.clone(),
                ..(*self.spec).clone()
            })
        }
    }

    /// Runs the revision's preparation (build, image) as a task; it reports `Prepared`.
    fn start_prepare(&mut self, index: usize) {
        self.units[index].prep = Prep::Running;
        let revision = self.units[index].number;
        let request = PrepareRequest {
            app: self.spec_for(&self.units[index].runtime),
            revision: self.units[index].state.name.clone(),
        };
        tracing::info!(app = %self.app.name, revision = %request.revision, "preparing revision (build, image)");
        let backend = Arc::clone(&self.backend);
        let events = self.events_tx.clone();
        self.starts.spawn(async move {
            let started = Instant::now();
            let result = backend
                .prepare(request)
                .await
                .map_err(|e| (e.to_string(), e.is_transient()));
            let _ = events.send(Event::Prepared {
                revision,
                result,
                seconds: started.elapsed().as_secs_f64(),
            });
        });
    }

    fn start_instance(&mut self, index: usize) {
        let unit = &self.units[index];
        let prepared = unit.prepared().cloned().unwrap_or_default();
        let id = format!("{}-{}", unit.state.name, self.next_instance);
        self.next_instance += 1;
        self.members.push(Member {
            id: id.clone(),
            revision: unit.number,
            state: State::Starting,
            instance: None,
            ready_at: None,
        });
        // The revision's own run spec with the app's current name, project and scale.
        let request = StartRequest {
            app: self.spec_for(&unit.runtime),
            revision: unit.state.name.clone(),
            instance_id: id.clone(),
            prepared,
        };
        let readiness_path = unit.runtime.readiness_path().map(str::to_string);
        let timeout = self.spec.scale.startup_timeout;
        let grace = self.spec.scale.stop_grace;
        let backend = Arc::clone(&self.backend);
        let events = self.events_tx.clone();
        tracing::debug!(app = %self.app.name, instance = %id, "starting instance");
        while self.starts.try_join_next().is_some() {}
        self.starts.spawn(lifecycle::start_and_probe(
            backend,
            request,
            readiness_path,
            timeout,
            grace,
            events,
        ));
    }

    /// Stops an instance that is still starting (its revision was superseded).
    fn stop_starting(&mut self, id: &str) {
        let Some(member) = self.members.iter_mut().find(|m| m.id == id) else {
            return;
        };
        member.state = State::Draining;
        let id = id.to_string();
        let grace = self.spec.scale.stop_grace;
        let backend = Arc::clone(&self.backend);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let _ = backend.stop(&id, grace).await;
            let _ = events.send(Event::Stopped { id });
        });
    }

    fn drain(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.state = State::Draining;
        let Some(instance) = member.instance.clone() else {
            return;
        };
        let id = member.id.clone();
        let revision = member.revision;
        self.update_routing(revision);
        let bound = self.spec.scale.request_timeout;
        let grace = self.spec.scale.stop_grace;
        let backend = Arc::clone(&self.backend);
        let events = self.events_tx.clone();
        tracing::info!(app = %self.app.name, instance = %id, in_flight = instance.in_flight(), "draining instance");
        tokio::spawn(async move {
            lifecycle::drain_then_stop(Some(instance), backend.as_ref(), &id, bound, grace).await;
            let _ = events.send(Event::Stopped { id });
        });
    }

    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Ready { id, instance } => {
                let Some(member) = self
                    .members
                    .iter_mut()
                    .find(|m| m.id == id && m.state == State::Starting)
                else {
                    // Its start was given up (a superseded revision) while it came up: the
                    // stop may have run before the instance existed, so stop it now.
                    let backend = Arc::clone(&self.backend);
                    let grace = self.spec.scale.stop_grace;
                    tokio::spawn(async move {
                        let _ = backend.stop(&id, grace).await;
                    });
                    return;
                };
                member.state = State::Ready;
                member.instance = Some(instance);
                member.ready_at = Some(now);
                let revision = member.revision;
                tracing::info!(app = %self.app.name, instance = %id, "instance ready");
                if let Some(index) = self.unit_index(revision) {
                    let unit = &mut self.units[index];
                    unit.failing = false;
                    if let Some(since) = unit.cold_start_since.take() {
                        let seconds = now.duration_since(since).as_secs_f64();
                        self.app.metrics.cold_start.observe(seconds);
                        tracing::info!(app = %self.app.name, cold_start_ms = seconds * 1000.0, "cold start complete");
                    }
                }
                self.update_routing(revision);
            }
            Event::Failed { id, reason } => {
                self.member_failed(&id, &reason, now);
            }
            Event::Exited { id, exit } => {
                let Some(member) = self.members.iter().find(|m| m.id == id) else {
                    return;
                };
                match (member.state, &exit) {
                    (State::Draining, _) | (_, Exit::Stopped) => {}
                    (
                        State::Starting,
                        Exit::Crashed {
                            description,
                            out_of_memory,
                        },
                    ) => {
                        if *out_of_memory {
                            self.app.metrics.oom_kills.inc();
                        }
                        let reason = format!("exited during start-up: {description}");
                        self.member_failed(&id, &reason, now);
                    }
                    (
                        State::Ready,
                        Exit::Crashed {
                            description,
                            out_of_memory,
                        },
                    ) => {
                        if *out_of_memory {
                            self.app.metrics.oom_kills.inc();
                        }
                        let ready_for = member.ready_at.map(|at| now.duration_since(at));
                        let revision = member.revision;
                        tracing::warn!(app = %self.app.name, instance = %id, reason = %description, "instance crashed; replacing it");
                        self.app.metrics.crashes.inc();
                        let message = format!("instance {id} crashed: {description}");
                        self.last_error = Some(message.clone());
                        self.members.retain(|m| m.id != id);
                        if let Some(index) = self.unit_index(revision) {
                            let unit = &mut self.units[index];
                            unit.last_error = Some(message);
                            if ready_for.is_some_and(|d| d >= STABLE_AFTER) {
                                unit.crashes_in_a_row = 0;
                            }
                            unit.note_crash(&self.app.name, now);
                        }
                        self.update_routing(revision);
                    }
                }
            }
            Event::Stopped { id } => {
                self.members.retain(|m| m.id != id);
            }
            Event::Prepared {
                revision,
                result,
                seconds,
            } => self.prepared(revision, result, seconds),
        }
    }

    fn prepared(&mut self, revision: u32, result: Result<Prepared, (String, bool)>, seconds: f64) {
        let current = self.latest_ready.filter(|n| *n != revision);
        let Some(index) = self.unit_index(revision) else {
            return;
        };
        let app = self.app.name.clone();
        let unit = &mut self.units[index];
        match result {
            Ok(prepared) => {
                tracing::info!(app, revision = %unit.state.name, seconds, "revision prepared");
                if unit.runtime.has_build() {
                    self.app.metrics.build(true, seconds);
                }
                let prepared = Arc::new(prepared);
                self.prepared.insert(revision, Arc::clone(&prepared));
                unit.prep = Prep::Ready(prepared);
            }
            Err((reason, true)) => {
                // Nothing wrong with the revision: try again shortly; requests waiting for it
                // learn why it cannot start now.
                tracing::warn!(app, revision = %unit.state.name, %reason, "revision cannot be prepared yet; retrying");
                unit.prep = Prep::Needed;
                unit.next_start_at = Some(Instant::now() + PREPARE_RETRY);
                unit.state.activator.fail_waiters(&reason);
                unit.last_error = Some(reason.clone());
                self.last_error = Some(reason);
            }
            Err((reason, false)) => {
                let message = format!("{reason} (log: /apps/{app}/builds/{})", unit.state.name);
                tracing::error!(app, revision = %unit.state.name, %message, "revision cannot be prepared; it takes no traffic");
                if unit.role == Role::RollingOut && current.is_some() {
                    tracing::error!(app, revision = %unit.state.name, "traffic stays on the current revision");
                }
                if unit.runtime.has_build() {
                    self.app.metrics.build(false, seconds);
                }
                unit.last_error = Some(message.clone());
                unit.prep = Prep::Failed(message.clone());
                self.last_error = Some(message);
            }
        }
    }

    fn member_failed(&mut self, id: &str, reason: &str, now: Instant) {
        let Some(revision) = self
            .members
            .iter()
            .find(|m| m.id == id && m.state == State::Starting)
            .map(|m| m.revision)
        else {
            return;
        };
        self.members.retain(|m| m.id != id);
        tracing::error!(app = %self.app.name, instance = %id, %reason, "instance failed to start");
        self.app.metrics.crashes.inc();
        let message = format!("instance {id} failed to start: {reason}");
        self.last_error = Some(message.clone());
        let others_coming = self.members.iter().any(|m| {
            m.revision == revision && (m.state == State::Ready || m.state == State::Starting)
        });
        let Some(index) = self.unit_index(revision) else {
            return;
        };
        let unit = &mut self.units[index];
        unit.last_error = Some(message);
        unit.failing = true;
        unit.note_crash(&self.app.name, now);
        if unit.role == Role::RollingOut && self.latest_ready.is_some() {
            tracing::error!(app = %self.app.name, revision = %unit.state.name, "the new revision cannot become ready; traffic stays on the current one");
        }
        if !others_coming {
            unit.cold_start_since = None;
            unit.state.activator.fail_waiters(&format!(
                "app {:?}: instance {id} failed to start: {reason}",
                self.app.name
            ));
        }
    }

    /// Routes `revision`'s ready instances and hands its waiters the new capacity.
    fn update_routing(&self, revision: u32) {
        let Some(unit) = self.unit(revision) else {
            return;
        };
        let ready: Vec<Arc<Instance>> = self
            .members
            .iter()
            .filter(|m| m.revision == revision && m.state == State::Ready)
            .filter_map(|m| m.instance.clone())
            .collect();
        unit.state.activator.set_instances(ready);
    }

    fn publish(&self) {
        let count = |state| self.members.iter().filter(|m| m.state == state).count();
        let shares = self.app.traffic().shares();
        let tags = self.app.traffic().tag_names();
        let mut revisions: Vec<RevisionStatus> = Vec::new();
        for entry in self.history.iter().rev() {
            let name = revision_name(&self.app.name, entry.number);
            let unit = self.unit(entry.number);
            let of = |state| {
                self.members
                    .iter()
                    .filter(|m| m.revision == entry.number && m.state == state)
                    .count()
            };
            revisions.push(RevisionStatus {
                percent: shares
                    .iter()
                    .find(|(revision, _)| *revision == name)
                    .map_or(0, |(_, percent)| *percent),
                tags: tags
                    .iter()
                    .filter(|(_, revision)| *revision == name)
                    .map(|(tag, _)| tag.clone())
                    .collect(),
                state: unit.map_or("inactive", Unit::state_name),
                desired: unit.map_or(0, |u| u.target(&self.spec.scale)),
                ready: of(State::Ready),
                starting: of(State::Starting),
                draining: of(State::Draining),
                created: entry
                    .created
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                last_error: unit.and_then(|u| u.last_error.clone()),
                name,
            });
        }
        self.app.publish_status(AppStatus {
            revision: revision_name(&self.app.name, self.latest),
            latest_ready: self.latest_ready.map(|n| revision_name(&self.app.name, n)),
            desired: self.units.iter().map(|u| u.target(&self.spec.scale)).sum(),
            ready: count(State::Ready),
            starting: count(State::Starting),
            draining: count(State::Draining),
            panic: self.units.iter().any(|u| u.panic),
            last_error: self
                .traffic_error
                .clone()
                .or_else(|| self.last_error.clone()),
            instances: self
                .members
                .iter()
                .map(|m| InstanceStatus {
                    id: m.id.clone(),
                    revision: revision_name(&self.app.name, m.revision),
                    state: m.state.name(),
                    addr: m.instance.as_ref().map(|i| i.addr.to_string()),
                    in_flight: m.instance.as_ref().map_or(0, |i| i.in_flight()),
                })
                .collect(),
            revisions,
        });
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
