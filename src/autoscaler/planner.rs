//! Where scaling is decided: a pure function from what an app's controller knows now (its
//! revisions, their instances, the KPA's decisions, waiting requests) to what it must do.
//!
//! The KPA (`kpa`) says how many instances each revision's own traffic needs; the planner
//! turns that into instance counts and actions, with every rule in one place:
//!
//! - a revision with requests waiting gets at least one instance (some may have been handed
//!   over from a retired revision and so are not in its concurrency);
//! - a rolling-out revision starts what the revision it replaces has (at least one, so it
//!   proves it can start), and takes over `latest` traffic once that many are ready;
//! - a retired revision drains everything, and its starts still under way are stopped;
//! - scaling down drains the least busy ready instances, never one in favour of an instance
//!   still starting;
//! - after repeated crashes a revision waits out its backoff before it starts another;
//! - a revision whose preparation (build) failed fails its waiting requests.
//!
//! The controller samples, asks the KPA, calls [`plan`] and executes the actions
//! (`controller`); tests call [`plan`] with hand-made snapshots and a paused clock.

use tokio::time::Instant;

use super::unit::Role;
use crate::config::ScaleSpec;

/// An instance's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Ready,
    Draining,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
        }
    }
}

/// Where a revision's preparation (build, image) stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepState {
    Needed,
    Running,
    Ready,
    Failed(String),
}

/// What the planner sees of one revision.
#[derive(Debug, Clone)]
pub struct RevisionView {
    pub number: u32,
    pub role: Role,
    pub prep: PrepState,
    /// The KPA's last decision for this revision's own traffic.
    pub desired: u32,
    /// Instances a rolling-out revision must have ready before it takes over.
    pub floor: u32,
    /// Requests waiting in the revision's activator.
    pub queued: usize,
    /// Crash (or transient preparation failure) backoff: nothing starts before this.
    pub backoff_until: Option<Instant>,
    /// A cold start is being timed since then.
    pub cold_start_since: Option<Instant>,
}

/// What the planner sees of one instance.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: String,
    pub revision: u32,
    pub state: State,
    pub in_flight: u32,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revisions: Vec<RevisionView>,
    pub members: Vec<MemberView>,
    /// The newest revision.
    pub latest: u32,
    /// The newest revision that became ready: where `latest` traffic goes.
    pub latest_ready: Option<u32>,
}

/// One thing the controller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the revision's preparation.
    Prepare(u32),
    /// Fail the requests waiting for the revision: it will never start.
    FailWaiters { revision: u32, reason: String },
    /// Requests wait for a revision with no ready instance: time the cold start from now.
    ColdStartBegins(u32),
    /// Start this many instances of the revision.
    Start { revision: u32, count: u32 },
    /// Take a ready instance out of routing, let its requests finish, stop it.
    Drain(String),
    /// Stop an instance that is still starting.
    StopStarting(String),
    /// The rolled-out revision takes `latest` traffic (then plan again).
    Promote(u32),
    /// A retired revision whose last instance has stopped leaves the controller.
    Forget(u32),
}

impl Snapshot {
    fn count(&self, revision: u32, state: State) -> u32 {
        self.members
            .iter()
            .filter(|m| m.revision == revision && m.state == state)
            .count() as u32
    }

    /// Instances of `revision` starting or ready.
    fn live(&self, revision: u32) -> u32 {
        self.count(revision, State::Starting) + self.count(revision, State::Ready)
    }

    fn revision(&self, number: u32) -> Option<&RevisionView> {
        self.revisions.iter().find(|r| r.number == number)
    }

    /// Ready instances the newest revision needs before it takes over: what the revision it
    /// replaces has ready now, and at least what that one had when the rollout began.
    fn takeover_floor(&self, scale: &ScaleSpec) -> u32 {
        let Some(latest) = self.revision(self.latest) else {
            return 0;
        };
        let current = self
            .latest_ready
            .filter(|n| *n != self.latest)
            .map_or(0, |n| self.count(n, State::Ready));
        latest.floor.max(current).min(scale.max_scale)
    }
}

/// The instance count a revision moves toward now, with every floor applied.
pub fn target(revision: &RevisionView, snapshot: &Snapshot, scale: &ScaleSpec) -> u32 {
    let mut target = match revision.role {
        Role::Retired => return 0,
        Role::RollingOut => revision.desired.max(revision.floor).min(scale.max_scale),
        Role::Serving => revision.desired,
    };
    if revision.queued > 0 && scale.max_scale > 0 {
        target = target.max(1);
    }
    if revision.role == Role::RollingOut {
        target = target.max(snapshot.takeover_floor(scale));
    }
    target
}

/// What the controller must do now, in order.
pub fn plan(snapshot: &Snapshot, scale: &ScaleSpec, now: Instant) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut drained_of_latest = 0;
    for revision in &snapshot.revisions {
        let number = revision.number;
        let backing_off = revision.backoff_until.is_some_and(|at| at > now);
        if revision.prep == PrepState::Needed && revision.role != Role::Retired && !backing_off {
            actions.push(Action::Prepare(number));
        }
        if let PrepState::Failed(reason) = &revision.prep {
            if revision.queued > 0 {
                actions.push(Action::FailWaiters {
                    revision: number,
                    reason: reason.clone(),
                });
            }
        }
        let ready = snapshot.count(number, State::Ready);
        if revision.role != Role::Retired
            && ready == 0
            && revision.queued > 0
            && revision.cold_start_since.is_none()
        {
            actions.push(Action::ColdStartBegins(number));
        }
        let target = target(revision, snapshot, scale);
        let live = snapshot.live(number);
        if target > live {
            if revision.prep == PrepState::Ready && !backing_off {
                actions.push(Action::Start {
                    revision: number,
                    count: target - live,
                });
            }
        } else if target < live {
            let mut ready: Vec<&MemberView> = snapshot
                .members
                .iter()
                .filter(|m| m.revision == number && m.state == State::Ready)
                .collect();
            ready.sort_by_key(|m| m.in_flight);
            // Never drain a serving instance in favour of one still starting: those extra
            // ones are drained once ready, if still not needed. A retired revision drains all.
            let keep = if revision.role == Role::Retired {
                0
            } else {
                target as usize
            };
            let excess = ((live - target) as usize).min(ready.len().saturating_sub(keep));
            for member in ready.into_iter().take(excess) {
                actions.push(Action::Drain(member.id.clone()));
                if number == snapshot.latest {
                    drained_of_latest += 1;
                }
            }
            if revision.role == Role::Retired {
                // Starts of a superseded revision are not needed any more.
                for member in &snapshot.members {
                    if member.revision == number && member.state == State::Starting {
                        actions.push(Action::StopStarting(member.id.clone()));
                    }
                }
            }
        }
    }
    if let Some(latest) = snapshot.revision(snapshot.latest) {
        let ready = snapshot.count(latest.number, State::Ready) - drained_of_latest;
        if latest.role == Role::RollingOut
            && latest.prep == PrepState::Ready
            && ready >= snapshot.takeover_floor(scale)
        {
            actions.push(Action::Promote(latest.number));
        }
    }
    for revision in &snapshot.revisions {
        let has_members = snapshot
            .members
            .iter()
            .any(|m| m.revision == revision.number);
        if revision.role == Role::Retired && !has_members {
            actions.push(Action::Forget(revision.number));
        }
    }
    actions
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
