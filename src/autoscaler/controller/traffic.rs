//! The controller's traffic side: resolving `[[traffic]]` against the revisions there are,
//! publishing the split the data plane follows, retiring revisions nothing names, and the
//! revision history those names refer to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;

use super::{revision_name, Controller, Prep, Role, Unit};
use crate::config::{RevisionRef, TrafficTarget};
use crate::revision::{RevisionState, Traffic};
use crate::runtime::PrepareRequest;

impl Controller {
    /// Resolves `[[traffic]]` against the revisions there are, publishes the split, and
    /// retires revisions that nothing points at any more. A block that names a revision not
    /// in the history keeps the previous split (or, before there was one, sends everything
    /// to the latest ready revision) and is reported.
    pub(super) fn route(&mut self, now: Instant) {
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

    pub(super) fn publish_routing(&self, traffic: Traffic) {
        let live = self
            .units
            .iter()
            .map(|unit| Arc::clone(&unit.state))
            .collect();
        self.app.set_traffic(traffic, live);
    }

    /// Keeps the newest `revision_history` specs, and every one a revision in use needs.
    pub(super) fn prune_history(&mut self) {
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
        let mut forgotten = Vec::new();
        self.history.retain(|entry| {
            position += 1;
            let kept = position > newest_kept
                || named.contains(&entry.number)
                || units.contains(&entry.number)
                || Some(entry.number) == self.latest_ready;
            if !kept {
                forgotten.push(entry.clone());
            }
            kept
        });
        if let Some(store) = &self.store {
            store.save(&self.history, self.latest);
        }
        // What the backend made for these revisions (built images) goes with them.
        for entry in forgotten {
            let prepared = self.prepared.remove(&entry.number);
            let request = PrepareRequest {
                app: self.spec_for(&entry.runtime),
                revision: revision_name(&self.app.name, entry.number),
            };
            let backend = Arc::clone(&self.backend);
            tokio::spawn(async move { backend.forget(request, prepared).await });
        }
    }
}
