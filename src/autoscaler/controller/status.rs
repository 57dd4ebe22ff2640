//! What the controller publishes for `/apps` and the instance metrics: every revision in the
//! history with its state, share and instances.

use std::time::SystemTime;

use super::{revision_name, Controller, State, Unit};
use crate::autoscaler::planner;
use crate::status::{AppStatus, InstanceStatus, RevisionStatus};

impl Controller {
    /// Publishes the app's status: revisions newest first, instances, counts.
    pub(super) fn publish(&self) {
        let count = |state| self.members.iter().filter(|m| m.state == state).count();
        // What the controller moves each revision toward, with every floor (`planner::target`).
        let snapshot = self.snapshot();
        let target = |number: u32| {
            snapshot
                .revisions
                .iter()
                .find(|r| r.number == number)
                .map_or(0, |r| planner::target(r, &snapshot, &self.spec.scale))
        };
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
                desired: unit.map_or(0, |u| target(u.number)),
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
            desired: self.units.iter().map(|u| target(u.number)).sum(),
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
                    started_at: Some(humantime::format_rfc3339_seconds(m.started).to_string()),
                })
                .collect(),
            revisions,
        });
    }
}
