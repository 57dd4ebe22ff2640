//! `max_instances`: app and job instances share the machine.
//!
//! The rule (docs/jobs.md): a job index starts only while the instances of apps and jobs
//! together are below `max_instances`; otherwise it stays pending until one ends. Apps are
//! never held back by jobs: a cold start does not wait for a job slot, because a user is
//! waiting on it and a job is not. So apps keep priority, and jobs fill what apps leave.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How many app instances run now.
pub type AppCount = Arc<dyn Fn() -> usize + Send + Sync>;

/// The shared instance budget of the jobs.
pub struct Capacity {
    max: Option<usize>,
    jobs: AtomicUsize,
    apps: AppCount,
    freed: Notify,
}

/// A job instance's place in the budget, given back when dropped.
pub struct Slot {
    capacity: Arc<Capacity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.capacity.jobs.fetch_sub(1, Ordering::AcqRel);
        self.capacity.freed.notify_waiters();
    }
}

impl Capacity {
    pub fn new(max: Option<u32>, apps: AppCount) -> Arc<Self> {
        Arc::new(Capacity {
            max: max.map(|m| m as usize),
            jobs: AtomicUsize::new(0),
            apps,
            freed: Notify::new(),
        })
    }

    /// Waits for room for one more job instance. App instances are counted at each try:
    /// they come and go without telling, so a waiting index also looks again every 200 ms.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            if self.try_take() {
                return Slot {
                    capacity: Arc::clone(self),
                };
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), freed).await;
        }
    }

    fn try_take(&self) -> bool {
        let Some(max) = self.max else {
            self.jobs.fetch_add(1, Ordering::AcqRel);
            return true;
        };
        let apps = (self.apps)();
        self.jobs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |jobs| {
                (apps + jobs < max).then_some(jobs + 1)
            })
            .is_ok()
    }

    /// Job instances now.
    pub fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn jobs_take_only_what_apps_leave() {
        let apps = Arc::new(AtomicUsize::new(2));
        let seen = Arc::clone(&apps);
        let capacity = Capacity::new(Some(3), Arc::new(move || seen.load(Ordering::Acquire)));
        let first = capacity.acquire().await;
        assert_eq!(capacity.jobs(), 1);
        let waiting = tokio::spawn({
            let capacity = Arc::clone(&capacity);
            async move { capacity.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "2 apps + 1 job is the limit");
        apps.store(1, Ordering::Release);
        let second = waiting.await.unwrap();
        assert_eq!(capacity.jobs(), 2);
        drop((first, second));
        assert_eq!(capacity.jobs(), 0);
        let unlimited = Capacity::new(None, Arc::new(|| 1000));
        let _slot = unlimited.acquire().await;
    }
}
