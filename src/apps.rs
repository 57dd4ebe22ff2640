//! Live per-app state that outlives config reloads.
//!
//! Config snapshots are immutable and replaced whole; what an app is doing right now (its
//! instances, their in-flight counts, its metric handles) must survive those swaps. The
//! [`AppRegistry`] keeps one [`AppState`] per app name: a reload updates the state's spec and
//! reconciles its instances, and the new route table points at the same `AppState`, so a
//! request that started on the old table and one that starts on the new table count against the
//! same instances.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{AppSpec, Config};
use crate::instance::{pick, Instance, Lease};
use crate::metrics::{AppMetrics, Metrics};
use crate::runtime::{Placement, RuntimeBackend};

/// Everything live about one app.
pub struct AppState {
    pub name: String,
    spec: ArcSwap<AppSpec>,
    instances: ArcSwap<Vec<Arc<Instance>>>,
    rotation: AtomicUsize,
    pub metrics: AppMetrics,
}

impl AppState {
    fn new(spec: Arc<AppSpec>, metrics: &Arc<Metrics>) -> Arc<Self> {
        Arc::new(AppState {
            name: spec.name.clone(),
            metrics: AppMetrics::new(metrics, &spec.name),
            spec: ArcSwap::new(spec),
            instances: ArcSwap::from_pointee(Vec::new()),
            rotation: AtomicUsize::new(0),
        })
    }

    /// The app's current spec.
    pub fn spec(&self) -> Arc<AppSpec> {
        self.spec.load_full()
    }

    /// The instances that may take requests now.
    pub fn instances(&self) -> Arc<Vec<Arc<Instance>>> {
        self.instances.load_full()
    }

    /// Claims the least busy instance, or `None` if there is none.
    pub fn acquire(&self) -> Option<Lease> {
        let instances = self.instances.load();
        pick(&instances, 0, &self.rotation)
    }

    /// Counts a request of this app until the returned guard drops.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.metrics.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    /// Requests of this app in flight now.
    pub fn in_flight(&self) -> i64 {
        self.metrics.in_flight.get()
    }

    /// Replaces the routable instances with the ones at `addrs`, keeping the existing
    /// `Instance` (and its in-flight count) for every address that stays.
    fn set_fixed_instances(&self, addrs: &[std::net::SocketAddr]) {
        let current = self.instances.load();
        let next: Vec<Arc<Instance>> = addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                current
                    .iter()
                    .find(|instance| instance.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| Instance::new(format!("static-{index}"), *addr))
            })
            .collect();
        self.instances.store(Arc::new(next));
    }
}

/// One in-flight request of an app; decrements the app's count on drop.
pub struct InFlight(Arc<AppState>);

impl InFlight {
    pub fn app(&self) -> &Arc<AppState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// All apps' live state, keyed by app name.
pub struct AppRegistry {
    apps: Mutex<HashMap<String, Arc<AppState>>>,
    metrics: Arc<Metrics>,
    backends: Vec<Arc<dyn RuntimeBackend>>,
}

impl AppRegistry {
    pub fn new(metrics: Arc<Metrics>, backends: Vec<Arc<dyn RuntimeBackend>>) -> Self {
        AppRegistry {
            apps: Mutex::new(HashMap::new()),
            metrics,
            backends,
        }
    }

    /// Brings the live state in line with `config`: creates state for new apps, updates specs
    /// and fixed instances of existing ones, and retires removed ones. Returns the state of
    /// every app in `config`, for the route table.
    pub fn apply(&self, config: &Config) -> HashMap<String, Arc<AppState>> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(config.apps.len());
        for spec in &config.apps {
            let state = match apps.remove(&spec.name) {
                Some(state) => {
                    state.spec.store(Arc::clone(spec));
                    state
                }
                None => AppState::new(Arc::clone(spec), &self.metrics),
            };
            match self
                .backend_for(spec)
                .map(|backend| backend.placement(spec))
            {
                Some(Placement::Fixed(addrs)) => state.set_fixed_instances(&addrs),
                Some(Placement::OnDemand) => {}
                None => {
                    tracing::warn!(
                        app = %spec.name,
                        runtime = spec.runtime.kind(),
                        "no backend for this runtime in this build; the app answers 503"
                    );
                    state.set_fixed_instances(&[]);
                }
            }
            next.insert(spec.name.clone(), state);
        }
        for (name, removed) in apps.drain() {
            tracing::info!(app = %name, "app removed from config");
            removed.instances.store(Arc::new(Vec::new()));
            removed.metrics.remove();
        }
        apps.clone_from(&next);
        next
    }

    /// Every app's state, sorted by name.
    pub fn list(&self) -> Vec<Arc<AppState>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = apps.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn backend_for(&self, spec: &AppSpec) -> Option<&Arc<dyn RuntimeBackend>> {
        let kind = spec.runtime.kind();
        self.backends.iter().find(|backend| backend.kind() == kind)
    }
}
