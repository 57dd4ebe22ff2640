//! One revision's scaling unit inside an app's controller: its run spec, its own KPA fed with
//! its own traffic, its crash backoff and its place in a rollout.
//!
//! Knative scales every revision on its own: a 90/10 split gives the 10% revision the
//! instances its 10% needs, and a tagged revision that only testers reach scales from zero on
//! their requests alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::kpa::Kpa;
use crate::config::{RuntimeSpec, ScaleSpec};
use crate::revision::RevisionState;
use crate::runtime::Prepared;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a unit stands in the app's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The newest revision, not yet ready: it starts `floor` instances and takes no `latest`
    /// traffic until they are ready.
    RollingOut,
    /// Takes traffic (`latest`, named, or tagged), autoscaled on it.
    Serving,
    /// No longer referenced: its requests went to another revision and its instances drain.
    Retired,
}

/// A revision's one-time preparation (its build, its image) before any instance starts.
pub(super) enum Prep {
    /// Not begun yet.
    Needed,
    Running,
    Ready(Arc<Prepared>),
    /// Failed: the revision never starts an instance (until its spec changes, which makes
    /// another revision).
    Failed(String),
}

/// One revision's control state.
pub(super) struct Unit {
    pub number: u32,
    pub runtime: RuntimeSpec,
    pub state: Arc<RevisionState>,
    pub role: Role,
    /// Instances a rolling-out revision must have ready before it takes over.
    pub floor: u32,
    pub kpa: Kpa,
    pub desired: u32,
    pub panic: bool,
    pub crashes_in_a_row: u32,
    pub next_start_at: Option<Instant>,
    pub cold_start_since: Option<Instant>,
    last_arrivals: u64,
    pub last_error: Option<String>,
    /// The last instance of this revision failed to start, and none has been ready since.
    pub failing: bool,
    pub prep: Prep,
}

impl Unit {
    pub fn new(
        number: u32,
        runtime: RuntimeSpec,
        state: Arc<RevisionState>,
        role: Role,
        needs_prepare: bool,
        now: Instant,
    ) -> Self {
        Unit {
            number,
            runtime,
            last_arrivals: state.arrivals(),
            state,
            role,
            floor: 0,
            kpa: Kpa::new(now),
            desired: 0,
            panic: false,
            crashes_in_a_row: 0,
            next_start_at: None,
            cold_start_since: None,
            last_error: None,
            failing: false,
            prep: if needs_prepare {
                Prep::Needed
            } else {
                Prep::Ready(Arc::default())
            },
        }
    }

    /// Feeds the KPA one concurrency sample of this revision's own requests.
    pub fn sample(&mut self, now: Instant) {
        let arrivals = self.state.total_arrivals();
        let traffic = arrivals != self.last_arrivals;
        self.last_arrivals = arrivals;
        let concurrency = self.state.total_in_flight().max(0) as f64;
        self.kpa.record(now, concurrency, traffic);
    }

    /// Lets the KPA decide; logs changes of panic mode and of the decision.
    pub fn decide(&mut self, app: &str, now: Instant, ready: u32, policy: &ScaleSpec) {
        let decision = self.kpa.decide(now, ready, policy);
        if decision.panic != self.panic {
            tracing::info!(app, revision = %self.state.name, panic = decision.panic, desired = decision.desired, "autoscaler panic mode changed");
        }
        if decision.desired != self.desired {
            tracing::info!(
                app,
                revision = %self.state.name,
                from = self.desired,
                to = decision.desired,
                stable = decision.stable_concurrency,
                panic = decision.panic_concurrency,
                "scaling"
            );
        }
        self.desired = decision.desired;
        self.panic = decision.panic;
    }

    /// The preparation's result once it succeeded.
    pub fn prepared(&self) -> Option<&Arc<Prepared>> {
        match &self.prep {
            Prep::Ready(prepared) => Some(prepared),
            _ => None,
        }
    }

    /// Takes `latest` traffic from now on. Replacing a revision, the KPA starts afresh,
    /// seeded with the load it inherits (`concurrency`, and whether the old one had traffic
    /// within the grace period), so samples from the rollout (when it had no traffic) do not
    /// drag its first decisions down. The first revision of an app keeps its samples: it
    /// took the app's traffic all along.
    pub fn promote(&mut self, now: Instant, inherited: Option<(f64, bool)>) {
        self.role = Role::Serving;
        self.floor = 0;
        if let Some((concurrency, traffic)) = inherited {
            self.kpa = Kpa::new(now);
            self.kpa.record(now, concurrency, traffic);
            self.last_arrivals = self.state.arrivals();
        }
    }

    /// Counts a failed or crashed instance; repeated failures back off exponentially.
    pub fn note_crash(&mut self, app: &str, now: Instant) {
        self.crashes_in_a_row += 1;
        if self.crashes_in_a_row > 1 {
            let backoff = Duration::from_millis(100)
                .saturating_mul(1 << (self.crashes_in_a_row - 2).min(16))
                .min(MAX_BACKOFF);
            tracing::warn!(app, revision = %self.state.name, ?backoff, crashes = self.crashes_in_a_row, "instances keep failing; backing off");
            self.next_start_at = Some(now + backoff);
        }
    }

    /// The state `/apps` shows.
    pub fn state_name(&self) -> &'static str {
        match (self.role, self.failing) {
            (Role::Retired, _) => "retired",
            (_, true) => "failed",
            _ if matches!(self.prep, Prep::Failed(_)) => "build-failed",
            _ if matches!(self.prep, Prep::Needed | Prep::Running) => "building",
            (Role::RollingOut, false) => "rolling-out",
            (Role::Serving, false) => "active",
        }
    }
}

/// A revision's spec kept after its instances are gone, so traffic can name it again.
#[derive(Debug, Clone)]
pub(super) struct HistoryEntry {
    pub number: u32,
    pub runtime: RuntimeSpec,
    pub created: SystemTime,
}
