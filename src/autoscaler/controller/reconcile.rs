//! Sample -> plan -> execute: the controller's snapshot for the planner, and the execution
//! of the planner's actions (`planner::plan` decides; this only carries out).

use tokio::time::Instant;

use super::Controller;
use crate::autoscaler::planner::{self, Action, MemberView, PrepState, RevisionView, Snapshot};
use crate::autoscaler::unit::Prep;

impl Controller {
    /// What the planner looks at: every revision and instance as they are now.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            revisions: self
                .units
                .iter()
                .map(|unit| RevisionView {
                    number: unit.number,
                    role: unit.role,
                    prep: match &unit.prep {
                        Prep::Needed => PrepState::Needed,
                        Prep::Running => PrepState::Running,
                        Prep::Ready(_) => PrepState::Ready,
                        Prep::Failed(reason) => PrepState::Failed(reason.clone()),
                    },
                    desired: unit.desired,
                    floor: unit.floor,
                    queued: unit.state.activator.queued(),
                    backoff_until: unit.next_start_at,
                    cold_start_since: unit.cold_start_since,
                })
                .collect(),
            members: self
                .members
                .iter()
                .map(|member| MemberView {
                    id: member.id.clone(),
                    revision: member.revision,
                    state: member.state,
                    in_flight: member.instance.as_ref().map_or(0, |i| i.in_flight()),
                })
                .collect(),
            latest: self.latest,
            latest_ready: self.latest_ready,
        }
    }

    /// Plans (`planner::plan`) and carries the plan out, then publishes the result. A
    /// promotion changes roles and traffic, so the planner looks once more after one.
    pub(super) fn reconcile(&mut self, now: Instant) {
        for _ in 0..2 {
            let actions = planner::plan(&self.snapshot(), &self.spec.scale, now);
            if !self.execute(actions, now) {
                break;
            }
        }
        self.publish();
    }

    /// Carries out the planner's actions; returns whether a revision was promoted.
    fn execute(&mut self, actions: Vec<Action>, now: Instant) -> bool {
        let mut promoted = false;
        for action in actions {
            match action {
                Action::Prepare(number) => {
                    if let Some(index) = self.unit_index(number) {
                        self.start_prepare(index);
                    }
                }
                Action::FailWaiters { revision, reason } => {
                    if let Some(unit) = self.unit(revision) {
                        unit.state.activator.fail_waiters(&reason);
                    }
                }
                Action::ColdStartBegins(number) => {
                    if let Some(index) = self.unit_index(number) {
                        self.units[index].cold_start_since = Some(now);
                    }
                }
                Action::Start { revision, count } => {
                    if let Some(index) = self.unit_index(revision) {
                        for _ in 0..count {
                            if !self.budget.try_take() {
                                tracing::info!(
                                    app = %self.app.name,
                                    max_instances = ?self.budget.max(),
                                    "max_instances reached: the start waits for an instance to end"
                                );
                                break;
                            }
                            self.reported += 1;
                            self.start_instance(index);
                        }
                    }
                }
                Action::Drain(id) => {
                    if let Some(index) = self.members.iter().position(|m| m.id == id) {
                        self.drain(index);
                    }
                }
                Action::StopStarting(id) => self.stop_starting(&id),
                Action::Promote(number) => {
                    self.promote(number, now);
                    promoted = true;
                }
                Action::Forget(number) => self.units.retain(|unit| unit.number != number),
            }
        }
        promoted
    }

    /// The rolled-out revision takes `latest` traffic, seeded with the load of the revision
    /// it replaces (see `Unit::promote`).
    fn promote(&mut self, number: u32, now: Instant) {
        let grace = self.spec.scale.scale_to_zero_grace;
        let inherited = self.latest_ready.and_then(|n| self.unit(n)).map(|old| {
            let concurrency = old.state.in_flight().max(0) as f64;
            let recent = old
                .kpa
                .last_traffic()
                .is_some_and(|at| now.duration_since(at) < grace);
            (concurrency, concurrency > 0.0 || recent)
        });
        let Some(index) = self.unit_index(number) else {
            return;
        };
        let unit = &mut self.units[index];
        unit.promote(now, inherited);
        if self.latest_ready.is_some() {
            tracing::info!(app = %self.app.name, revision = %unit.state.name, "revision ready; latest traffic moves to it");
        }
        let message = format!(
            "revision {} is ready and takes latest traffic",
            unit.state.name
        );
        self.app.record("RevisionReady", message);
        self.latest_ready = Some(number);
        self.route(now);
    }
}
