//! The controller's actions on instances and revisions: preparing a revision, starting an
//! instance (start and probe run as a task that reports back), stopping one still starting,
//! draining one, and publishing a revision's ready instances to its activator.

use std::sync::Arc;

use tokio::time::Instant;

use super::{lifecycle, Controller, Event, Member, State};
use crate::autoscaler::unit::Prep;
use crate::instance::Instance;
use crate::runtime::{PrepareRequest, StartRequest};

impl Controller {
    /// Runs the revision's preparation (build, image) as a task; it reports `Prepared`.
    pub(super) fn start_prepare(&mut self, index: usize) {
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

    pub(super) fn start_instance(&mut self, index: usize) {
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
            started: std::time::SystemTime::now(),
        });
        // The revision's own run spec with the app's current name, project and scale.
        let request = StartRequest {
            app: self.spec_for(&unit.runtime),
            revision: unit.state.name.clone(),
            instance_id: id.clone(),
            prepared,
            job: None,
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
            Arc::clone(&unit.state),
            request,
            readiness_path,
            timeout,
            grace,
            events,
        ));
    }

    /// Stops an instance that is still starting (its revision was superseded).
    pub(super) fn stop_starting(&mut self, id: &str) {
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

    pub(super) fn drain(&mut self, index: usize) {
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

    /// Routes `revision`'s ready instances and hands its waiters the new capacity.
    pub(super) fn update_routing(&self, revision: u32) {
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
}
