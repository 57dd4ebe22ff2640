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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::kpa::Kpa;
use super::lifecycle;
use crate::apps::{AppState, AppStatus, InstanceStatus};
use crate::config::{AppSpec, RuntimeSpec};
use crate::instance::Instance;
use crate::runtime::{Exit, RuntimeBackend, StartRequest};

const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const SAMPLES_PER_DECISION: u64 = 8;
/// An instance ready this long before it crashes resets the crash backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    Ready { id: String, instance: Arc<Instance> },
    Failed { id: String, reason: String },
    Exited { id: String, exit: Exit },
    Stopped { id: String },
}

/// The control loop of one app.
pub struct Controller {
    app: Arc<AppState>,
    backend: Arc<dyn RuntimeBackend>,
    spec: Arc<AppSpec>,
    revision: u32,
    kpa: Kpa,
    members: Vec<Member>,
    next_instance: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    desired: u32,
    panic: bool,
    crashes_in_a_row: u32,
    next_start_at: Option<Instant>,
    cold_start_since: Option<Instant>,
    last_arrivals: u64,
    last_error: Option<String>,
    /// Start-and-probe tasks still running, aborted on shutdown.
    starts: tokio::task::JoinSet<()>,
}

impl Controller {
    /// Starts the controller task for `app`.
    pub fn spawn(
        app: Arc<AppState>,
        backend: Arc<dyn RuntimeBackend>,
        spec: Arc<AppSpec>,
    ) -> ControllerHandle {
        let (spec_tx, spec_rx) = watch::channel(Arc::clone(&spec));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let backend_kind = backend.kind();
        let now = Instant::now();
        let controller = Controller {
            last_arrivals: app.arrivals(),
            app,
            backend,
            spec,
            revision: 1,
            kpa: Kpa::new(now),
            members: Vec::new(),
            next_instance: 1,
            events_tx,
            desired: 0,
            panic: false,
            crashes_in_a_row: 0,
            next_start_at: None,
            cold_start_since: None,
            last_error: None,
            starts: tokio::task::JoinSet::new(),
        };
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
        self.scale(Instant::now());
        loop {
            let backoff_until = self.next_start_at;
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
                _ = self.app.activator.poked() => {
                    let now = Instant::now();
                    if self.ready_count() == 0 && self.cold_start_since.is_none() {
                        self.cold_start_since = Some(now);
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
                    self.apply_spec(spec);
                    self.scale(Instant::now());
                }
                _ = sleep_until_some(backoff_until) => {
                    self.next_start_at = None;
                    self.reconcile(Instant::now());
                }
            }
        }
        self.shutdown(events).await;
    }

    fn sample(&mut self, now: Instant) {
        let arrivals = self.app.arrivals();
        let traffic = arrivals != self.last_arrivals;
        self.last_arrivals = arrivals;
        let concurrency = self.app.in_flight().max(0) as f64;
        self.kpa.record(now, concurrency, traffic);
    }

    fn scale(&mut self, now: Instant) {
        let decision = self
            .kpa
            .decide(now, self.ready_count() as u32, &self.spec.scale);
        if decision.panic != self.panic {
            tracing::info!(app = %self.app.name, panic = decision.panic, desired = decision.desired, "autoscaler panic mode changed");
        }
        if decision.desired != self.desired {
            tracing::info!(
                app = %self.app.name,
                from = self.desired,
                to = decision.desired,
                stable = decision.stable_concurrency,
                panic = decision.panic_concurrency,
                "scaling"
            );
        }
        self.desired = decision.desired;
        self.panic = decision.panic;
        self.reconcile(now);
    }

    fn apply_spec(&mut self, spec: Arc<AppSpec>) {
        let old_run = match &self.spec.runtime {
            RuntimeSpec::Process(run) => Some(run.clone()),
            _ => None,
        };
        let new_run = match &spec.runtime {
            RuntimeSpec::Process(run) => Some(run.clone()),
            _ => None,
        };
        if old_run != new_run {
            self.revision += 1;
            tracing::info!(app = %spec.name, revision = %self.revision_name(), "run spec changed: new revision");
            // Instances of the new revision start at once if the old one serves; the old ones
            // keep serving until the new ones are ready (see `reconcile`).
            self.crashes_in_a_row = 0;
            self.next_start_at = None;
        }
        self.spec = spec;
    }

    fn revision_name(&self) -> String {
        revision_name(&self.app.name, self.revision)
    }

    fn ready_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state == State::Ready)
            .count()
    }

    /// Moves the instances toward `desired` and publishes the result.
    fn reconcile(&mut self, now: Instant) {
        let current = self.revision;
        let live = self
            .members
            .iter()
            .filter(|m| m.revision == current && m.state != State::Draining)
            .count() as u32;
        if self.desired > live {
            match self.next_start_at {
                Some(at) if at > now => {} // crash backoff: the loop wakes us at `at`
                _ => {
                    for _ in live..self.desired {
                        self.start_instance();
                    }
                }
            }
        } else if self.desired < live {
            let mut ready: Vec<usize> = (0..self.members.len())
                .filter(|&i| {
                    self.members[i].revision == current && self.members[i].state == State::Ready
                })
                .collect();
            ready.sort_by_key(|&i| {
                self.members[i]
                    .instance
                    .as_ref()
                    .map_or(0, |inst| inst.in_flight())
            });
            // Never drain a serving instance in favour of one still starting: those extra
            // ones are drained once ready, if still not needed.
            let excess = ((live - self.desired) as usize)
                .min(ready.len().saturating_sub(self.desired as usize));
            for index in ready.into_iter().take(excess) {
                self.drain(index);
            }
        }
        // A new revision takes over once it has as many ready instances as are wanted.
        let current_ready = self
            .members
            .iter()
            .filter(|m| m.revision == current && m.state == State::Ready)
            .count() as u32;
        if current_ready >= self.desired.max(1) || self.desired == 0 {
            let old: Vec<usize> = (0..self.members.len())
                .filter(|&i| {
                    self.members[i].revision != current && self.members[i].state == State::Ready
                })
                .collect();
            for index in old {
                self.drain(index);
            }
        }
        self.publish();
    }

    fn start_instance(&mut self) {
        let id = format!("{}-{}", self.revision_name(), self.next_instance);
        self.next_instance += 1;
        self.members.push(Member {
            id: id.clone(),
            revision: self.revision,
            state: State::Starting,
            instance: None,
            ready_at: None,
        });
        let request = StartRequest {
            app: Arc::clone(&self.spec),
            revision: self.revision_name(),
            instance_id: id.clone(),
        };
        let readiness_path = match &self.spec.runtime {
            RuntimeSpec::Process(run) => run.readiness_path.clone(),
            _ => None,
        };
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

    fn drain(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.state = State::Draining;
        let Some(instance) = member.instance.clone() else {
            return;
        };
        let id = member.id.clone();
        self.update_routing();
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
                let Some(member) = self.members.iter_mut().find(|m| m.id == id) else {
                    return;
                };
                if member.state != State::Starting {
                    return;
                }
                member.state = State::Ready;
                member.instance = Some(instance);
                member.ready_at = Some(now);
                tracing::info!(app = %self.app.name, instance = %id, "instance ready");
                if let Some(since) = self.cold_start_since.take() {
                    let seconds = now.duration_since(since).as_secs_f64();
                    self.app.metrics.cold_start.observe(seconds);
                    tracing::info!(app = %self.app.name, cold_start_ms = seconds * 1000.0, "cold start complete");
                }
                self.update_routing();
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
                    (State::Starting, Exit::Crashed { description }) => {
                        let reason = format!("exited during start-up: {description}");
                        self.member_failed(&id, &reason, now);
                    }
                    (State::Ready, Exit::Crashed { description }) => {
                        let ready_for = member.ready_at.map(|at| now.duration_since(at));
                        tracing::warn!(app = %self.app.name, instance = %id, reason = %description, "instance crashed; replacing it");
                        self.app.metrics.crashes.inc();
                        self.last_error = Some(format!("instance {id} crashed: {description}"));
                        self.members.retain(|m| m.id != id);
                        if ready_for.is_some_and(|d| d >= STABLE_AFTER) {
                            self.crashes_in_a_row = 0;
                        }
                        self.note_crash(now);
                        self.update_routing();
                    }
                }
            }
            Event::Stopped { id } => {
                self.members.retain(|m| m.id != id);
            }
        }
    }

    fn member_failed(&mut self, id: &str, reason: &str, now: Instant) {
        if !self
            .members
            .iter()
            .any(|m| m.id == id && m.state == State::Starting)
        {
            return;
        }
        self.members.retain(|m| m.id != id);
        tracing::error!(app = %self.app.name, instance = %id, %reason, "instance failed to start");
        self.app.metrics.crashes.inc();
        self.last_error = Some(format!("instance {id} failed to start: {reason}"));
        self.note_crash(now);
        let others_coming = self
            .members
            .iter()
            .any(|m| m.state == State::Ready || m.state == State::Starting);
        if !others_coming {
            self.cold_start_since = None;
            self.app.activator.fail_waiters(&format!(
                "app {:?}: instance {id} failed to start: {reason}",
                self.app.name
            ));
        }
    }

    fn note_crash(&mut self, now: Instant) {
        self.crashes_in_a_row += 1;
        if self.crashes_in_a_row > 1 {
            let backoff = Duration::from_millis(100)
                .saturating_mul(1 << (self.crashes_in_a_row - 2).min(16))
                .min(MAX_BACKOFF);
            tracing::warn!(app = %self.app.name, ?backoff, crashes = self.crashes_in_a_row, "instances keep failing; backing off");
            self.next_start_at = Some(now + backoff);
        }
    }

    /// Routes to every ready instance (of any revision) and hands waiters the new capacity.
    fn update_routing(&self) {
        let ready: Vec<Arc<Instance>> = self
            .members
            .iter()
            .filter(|m| m.state == State::Ready)
            .filter_map(|m| m.instance.clone())
            .collect();
        self.app.activator.set_instances(ready);
    }

    fn publish(&self) {
        let count = |state| self.members.iter().filter(|m| m.state == state).count();
        self.app.publish_status(AppStatus {
            revision: self.revision_name(),
            desired: self.desired,
            ready: count(State::Ready),
            starting: count(State::Starting),
            draining: count(State::Draining),
            panic: self.panic,
            last_error: self.last_error.clone(),
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
        // Leave routing, but only with this controller's instances: a static list that
        // replaced them (runtime change) stays.
        let mine: Vec<String> = self.members.iter().map(|m| m.id.clone()).collect();
        let others: Vec<Arc<Instance>> = self
            .app
            .activator
            .instances()
            .iter()
            .filter(|instance| !mine.contains(&instance.id))
            .cloned()
            .collect();
        self.app.activator.set_instances(others);

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
