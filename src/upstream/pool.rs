//! The keep-alive connections to each instance, kept here rather than on the instance, so
//! that what runs instances (the control plane) knows nothing of connections.
//!
//! An instance's pool is found by its id. It holds a weak reference to the instance: when the
//! instance is gone (stopped, crashed, removed from a static app) the pool is dropped at the
//! next sweep, and its connections are closed with it. Sweeps run when a new instance's pool
//! is made, at most every [`SWEEP_EVERY`], so the map stays as large as the live instances.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::connection::Connection;
use super::idle::IdleList;
use crate::instance::Instance;

/// How often pools of instances that are gone are dropped, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One instance's idle connections. Every client uses them: the engine directly, hyper's
/// client (for streamed request bodies) by driving one for an exchange and giving it back.
pub struct InstancePool {
    instance: Weak<Instance>,
    pub(super) idle: IdleList<Connection>,
}

/// Every instance's pool, by instance id (foldhash: looked up for every request).
pub struct Pools {
    pools: DashMap<String, Arc<InstancePool>, foldhash::fast::RandomState>,
    last_sweep: Mutex<Instant>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            pools: DashMap::default(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }
}

impl Pools {
    /// The pool of `instance`, made on first use.
    pub fn of(&self, instance: &Arc<Instance>) -> Arc<InstancePool> {
        if let Some(pool) = self.pools.get(&instance.id) {
            // A pointer comparison: no weak count touched on the request path.
            if std::ptr::eq(pool.instance.as_ptr(), Arc::as_ptr(instance)) {
                return Arc::clone(&pool);
            }
        }
        let pool = Arc::new(InstancePool {
            instance: Arc::downgrade(instance),
            idle: IdleList::default(),
        });
        // An entry of another instance with the same id is one that is gone: replace it.
        self.pools.insert(instance.id.clone(), Arc::clone(&pool));
        self.sweep();
        pool
    }

    /// Drops the pools of instances that are gone, if the last sweep is old enough.
    fn sweep(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < SWEEP_EVERY {
                return;
            }
            *last = Instant::now();
        }
        self.pools
            .retain(|_, pool| pool.instance.strong_count() > 0);
    }

    /// Pools kept now (live instances, and gone ones not swept yet).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pools.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pools_of_instances_that_are_gone_are_swept() {
        let pools = Pools::default();
        let first = Instance::new("a-00001-1".into(), "127.0.0.1:1".parse().unwrap());
        let pool = pools.of(&first);
        assert!(
            Arc::ptr_eq(&pool, &pools.of(&first)),
            "one pool per instance"
        );
        drop((first, pool));
        tokio::time::advance(SWEEP_EVERY).await;
        let second = Instance::new("a-00001-2".into(), "127.0.0.1:1".parse().unwrap());
        pools.of(&second);
        assert_eq!(pools.len(), 1, "the pool of the gone instance was dropped");
        // An instance with the id of a gone one gets a pool of its own.
        let again = Instance::new("a-00001-2".into(), "127.0.0.1:2".parse().unwrap());
        drop(second);
        assert!(Weak::ptr_eq(
            &pools.of(&again).instance,
            &Arc::downgrade(&again)
        ));
    }
}
