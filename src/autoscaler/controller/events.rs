//! The controller's reactions to what its tasks report: an instance ready, failed to start,
//! exited (a crash is counted, backed off and replaced), stopped; a revision prepared or not.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Controller, Event, Prep, Role, State, PREPARE_RETRY, STABLE_AFTER};
use crate::runtime::{Exit, Prepared};

impl Controller {
    /// Applies one event from a start, drain or preparation task.
    pub(super) fn handle(&mut self, event: Event) {
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
                let oom = matches!(
                    exit,
                    Exit::Crashed {
                        out_of_memory: true,
                        ..
                    }
                );
                if oom && member.state != State::Draining {
                    self.app.metrics.oom_kills.inc();
                }
                match (member.state, &exit) {
                    (State::Draining, _) | (_, Exit::Stopped) => {}
                    (_, Exit::Lost { description }) => {
                        let revision = member.revision;
                        tracing::warn!(app = %self.app.name, instance = %id, reason = %description, "instance lost; replacing it");
                        self.app
                            .record("InstanceLost", format!("instance {id} lost: {description}"));
                        self.members.retain(|m| m.id != id);
                        self.update_routing(revision);
                    }
                    (State::Starting, Exit::Crashed { description, .. }) => {
                        let reason = format!("exited during start-up: {description}");
                        self.member_failed(&id, &reason, now);
                    }
                    (State::Ready, Exit::Crashed { description, .. }) => {
                        let ready_for = member.ready_at.map(|at| now.duration_since(at));
                        let revision = member.revision;
                        tracing::warn!(app = %self.app.name, instance = %id, reason = %description, "instance crashed; replacing it");
                        self.app.metrics.crashes.inc();
                        let message = format!("instance {id} crashed: {description}");
                        self.app.record("InstanceExited", message.clone());
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
                self.app.record(
                    "RevisionFailed",
                    format!("revision {} failed: {message}", unit.state.name),
                );
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
        self.app.record("RevisionFailed", message.clone());
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
}
