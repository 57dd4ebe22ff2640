//! The registry of every app's live state: it keeps one [`AppState`] per app name in line
//! with the config, sets the addresses of apps with fixed instances, and spawns, updates and
//! retires the controllers of apps whose instances start on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::budget::InstanceBudget;
use super::controller::{Controller, ControllerHandle};
use crate::apps::AppState;
use crate::config::{AppSpec, Config};
use crate::metrics::Metrics;
use crate::runtime::{Placement, RuntimeBackend};

struct Entry {
    state: Arc<AppState>,
    controller: Option<ControllerHandle>,
}

/// All apps' live state, keyed by app name.
pub struct AppRegistry {
    apps: Mutex<HashMap<String, Entry>>,
    /// Controllers of removed apps, still draining their instances.
    retiring: Mutex<Vec<ControllerHandle>>,
    metrics: Arc<Metrics>,
    backends: Vec<Arc<dyn RuntimeBackend>>,
    /// Where controllers keep revision history; fixed at start (a change needs a restart).
    state_dir: Option<std::path::PathBuf>,
    /// `max_instances` across apps; fixed at start.
    budget: Arc<InstanceBudget>,
}

impl AppRegistry {
    pub fn new(
        metrics: Arc<Metrics>,
        backends: Vec<Arc<dyn RuntimeBackend>>,
        state_dir: Option<std::path::PathBuf>,
        budget: InstanceBudget,
    ) -> Self {
        AppRegistry {
            budget: Arc::new(budget),
            state_dir,
            apps: Mutex::new(HashMap::new()),
            retiring: Mutex::new(Vec::new()),
            metrics,
            backends,
        }
    }

    /// Brings the live state in line with `config`: creates state for new apps, updates specs,
    /// instances and controllers of existing ones, and retires removed ones (their instances
    /// drain and stop in the background). Returns the state of every app in `config`.
    pub fn apply(&self, config: &Config) -> HashMap<String, Arc<AppState>> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut previous = std::mem::take(&mut *apps);
        let mut states = HashMap::with_capacity(config.apps.len());
        for spec in &config.apps {
            let mut entry = match previous.remove(&spec.name) {
                Some(entry) => {
                    entry.state.set_spec(Arc::clone(spec));
                    for revision in entry.state.revisions().iter() {
                        revision.activator.set_limit(spec.scale.concurrency);
                    }
                    entry
                }
                None => Entry {
                    state: AppState::new(Arc::clone(spec), &self.metrics),
                    controller: None,
                },
            };
            match self.backend_for(spec) {
                Some(backend) => match backend.placement(spec) {
                    Placement::Fixed(addrs) => {
                        if let Some(controller) = entry.controller.take() {
                            self.retire(controller);
                        }
                        entry.state.set_fixed_instances(&addrs);
                    }
                    Placement::OnDemand => match &entry.controller {
                        Some(controller) if controller.backend_kind() == backend.kind() => {
                            controller.update(Arc::clone(spec));
                        }
                        _ => {
                            if let Some(old) = entry.controller.take() {
                                self.retire(old);
                            }
                            entry.controller = Some(Controller::spawn(
                                Arc::clone(&entry.state),
                                Arc::clone(backend),
                                Arc::clone(spec),
                                self.state_dir.as_deref(),
                                Arc::clone(&self.budget),
                            ));
                        }
                    },
                },
                None => {
                    tracing::warn!(app = %spec.name, runtime = spec.runtime.kind(), "no backend for this runtime; the app answers 503");
                    entry.state.set_fixed_instances(&[]);
                }
            }
            states.insert(spec.name.clone(), Arc::clone(&entry.state));
            apps.insert(spec.name.clone(), entry);
        }
        for backend in &self.backends {
            let apps = config
                .apps
                .iter()
                .filter(|spec| spec.runtime.kind() == backend.kind())
                .map(|spec| spec.name.clone())
                .collect();
            backend.apps_configured(apps);
        }
        for (name, entry) in previous {
            tracing::info!(app = %name, "app removed from config; its instances drain and stop");
            entry
                .state
                .stop_routing("the app was removed from the config");
            entry.state.metrics.remove();
            if let Some(controller) = entry.controller {
                self.retire(controller);
            }
        }
        states
    }

    /// Every app's state, sorted by name.
    pub fn list(&self) -> Vec<Arc<AppState>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = apps
            .values()
            .map(|entry| Arc::clone(&entry.state))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Stops every controller (their instances get SIGTERM, then SIGKILL after `stop_grace`),
    /// waits for them, then has every backend end whatever is left.
    pub async fn shutdown(&self) {
        let mut controllers: Vec<ControllerHandle> = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            apps.values_mut()
                .filter_map(|entry| entry.controller.take())
                .collect()
        };
        controllers.append(&mut self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        for controller in &controllers {
            controller.stop();
        }
        for controller in controllers {
            controller.join().await;
        }
        for backend in &self.backends {
            backend.shutdown().await;
        }
    }

    /// Tells the backends a shutdown begins (a leader hands its Lease over).
    pub async fn shutting_down(&self) {
        for backend in &self.backends {
            backend.shutting_down().await;
        }
    }

    /// Problems of the runtime backends that keep apps from working (an unreachable
    /// container engine), for `/readyz`.
    pub fn backend_problems(&self) -> Vec<String> {
        self.backends
            .iter()
            .filter_map(|backend| backend.health())
            .collect()
    }

    /// Partial problems of the backends (a cluster's API server away), for `/readyz`'s
    /// body: the gateway still serves.
    pub fn backend_notes(&self) -> Vec<String> {
        self.backends
            .iter()
            .filter_map(|backend| backend.degraded())
            .collect()
    }

    /// App instances that exist now (starting, ready or draining), for `max_instances`.
    pub fn instance_count(&self) -> usize {
        self.budget.apps()
    }

    /// The backends, which the jobs share.
    pub fn backends(&self) -> &[Arc<dyn RuntimeBackend>] {
        &self.backends
    }

    fn retire(&self, controller: ControllerHandle) {
        controller.stop();
        let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        retiring.retain(|handle| !handle.is_finished());
        retiring.push(controller);
    }

    fn backend_for(&self, spec: &AppSpec) -> Option<&Arc<dyn RuntimeBackend>> {
        let kind = spec.runtime.kind();
        self.backends.iter().find(|backend| backend.kind() == kind)
    }
}
