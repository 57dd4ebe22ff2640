//! The activator: gets every request a slot on an instance, waiting if it must.
//!
//! Fast path: no request is waiting and some instance is below the hard concurrency limit, so
//! the request claims a slot at once (one atomic scan, no lock). Otherwise the request joins
//! the app's bounded FIFO queue and pokes the app's controller, so a cold start begins on the
//! first request rather than at the next autoscaler tick. Slots are handed to waiters in
//! arrival order whenever one frees up: a lease ends, an instance becomes ready, or the limit
//! is raised. A full queue, a wait past the cold-start timeout, and a failed start each end
//! the wait with their own error; a client that goes away leaves the queue at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus::IntGauge;
use tokio::sync::{oneshot, Notify};

use crate::instance::{pick, Instance};

/// Why a request got no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    #[error("{0} requests are already waiting (queue_depth)")]
    QueueFull(usize),
    #[error("no instance became available within {0:?} (cold_start_timeout)")]
    Timeout(Duration),
    #[error("{0}")]
    Unavailable(String),
}

/// Most retired revisions a request is handed through before it gives up.
const MAX_FORWARDS: usize = 8;

struct Waiter {
    id: u64,
    reply: oneshot::Sender<Result<Lease, AcquireError>>,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// The length last added to the shared depth gauge.
    published: usize,
}

/// One app's instances as the data plane sees them, and its waiting requests.
pub struct Activator {
    instances: ArcSwap<Vec<Arc<Instance>>>,
    rotation: AtomicUsize,
    /// Hard limit of in-flight requests per instance; 0 = unlimited.
    limit: AtomicU32,
    queue: Mutex<Queue>,
    /// Length of `queue`, readable without the lock so the fast path stays lock-free.
    queued: AtomicUsize,
    /// The app controller's wake-up, shared by all revisions of the app.
    poke: Arc<Notify>,
    /// The app's queue-depth gauge, shared by its revisions: each adds its own change.
    depth_gauge: IntGauge,
    /// Set once this revision is retired: requests go to that activator instead.
    forward: ArcSwapOption<Activator>,
}

impl Activator {
    pub fn new(limit: u32, depth_gauge: IntGauge, poke: Arc<Notify>) -> Arc<Self> {
        Arc::new(Activator {
            instances: ArcSwap::from_pointee(Vec::new()),
            rotation: AtomicUsize::new(0),
            limit: AtomicU32::new(limit),
            queue: Mutex::new(Queue::default()),
            queued: AtomicUsize::new(0),
            poke,
            depth_gauge,
            forward: ArcSwapOption::empty(),
        })
    }

    /// Gets a slot on an instance, waiting up to `timeout` in a queue of at most `depth`.
    pub async fn acquire(
        self: &Arc<Self>,
        depth: usize,
        timeout: Duration,
    ) -> Result<Lease, AcquireError> {
        let mut activator = Arc::clone(self);
        let mut hops = 0;
        let (id, reply) = loop {
            // A retired revision hands its requests to the one that replaced it.
            if let Some(next) = activator.forward.load_full() {
                hops += 1;
                if hops > MAX_FORWARDS {
                    return Err(AcquireError::Unavailable(
                        "the revision was retired and its successors too".into(),
                    ));
                }
                activator = next;
                continue;
            }
            if activator.queued.load(Ordering::Acquire) == 0 {
                if let Some(lease) = activator.try_claim() {
                    return Ok(lease);
                }
            }
            let mut queue = activator.lock();
            if activator.forward.load().is_some() {
                continue;
            }
            // A slot may have freed between the fast path and the lock.
            if queue.waiters.is_empty() {
                if let Some(lease) = activator.try_claim() {
                    return Ok(lease);
                }
            }
            if queue.waiters.len() >= depth {
                return Err(AcquireError::QueueFull(queue.waiters.len()));
            }
            let (tx, rx) = oneshot::channel();
            let id = queue.next_id;
            queue.next_id += 1;
            queue.waiters.push_back(Waiter { id, reply: tx });
            activator.publish_len(&mut queue);
            break (id, rx);
        };
        // A lease may have been released between our failed claim and the enqueue, seeing an
        // empty queue and so dispatching to nobody: dispatch once ourselves.
        activator.dispatch();
        activator.poke.notify_one();
        let mut guard = LeaveQueue {
            activator: &activator,
            id,
            armed: true,
        };
        let outcome = tokio::time::timeout(timeout, reply).await;
        match outcome {
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            Ok(Err(_)) => {
                guard.armed = false;
                Err(AcquireError::Unavailable("the app was removed".into()))
            }
            Err(_) => Err(AcquireError::Timeout(timeout)),
        }
    }

    /// Sends this activator's waiting and future requests to `next` (a retired revision
    /// handing over to the one that replaced it), so none is left waiting on instances that
    /// are going away. A moved waiter that gives up is dropped from `next`'s queue at its
    /// next dispatch.
    pub fn forward_to(self: &Arc<Self>, next: &Arc<Activator>) {
        // Forward to the end of `next`'s own chain, and never in a circle.
        let mut next = Arc::clone(next);
        for _ in 0..MAX_FORWARDS {
            if Arc::ptr_eq(&next, self) {
                return;
            }
            match next.forward.load_full() {
                Some(further) => next = further,
                None => break,
            }
        }
        if Arc::ptr_eq(&next, self) {
            return;
        }
        let next = &next;
        let waiters = {
            let mut queue = self.lock();
            self.forward.store(Some(Arc::clone(next)));
            let waiters = std::mem::take(&mut queue.waiters);
            self.publish_len(&mut queue);
            waiters
        };
        if waiters.is_empty() {
            return;
        }
        {
            let mut queue = next.lock();
            for waiter in waiters {
                let id = queue.next_id;
                queue.next_id += 1;
                queue.waiters.push_back(Waiter {
                    id,
                    reply: waiter.reply,
                });
            }
            next.publish_len(&mut queue);
        }
        next.dispatch();
        next.poke.notify_one();
    }

    fn try_claim(self: &Arc<Self>) -> Option<Lease> {
        let instances = self.instances.load();
        pick(
            &instances,
            self.limit.load(Ordering::Relaxed),
            &self.rotation,
        )
        .map(|instance| Lease {
            instance,
            activator: Arc::clone(self),
        })
    }

    /// Hands free slots to waiters in arrival order.
    pub fn dispatch(self: &Arc<Self>) {
        if self.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut undelivered = Vec::new();
        {
            let mut queue = self.lock();
            while let Some(front) = queue.waiters.front() {
                if front.reply.is_closed() {
                    queue.waiters.pop_front();
                    continue;
                }
                let Some(lease) = self.try_claim() else { break };
                let waiter = queue.waiters.pop_front().expect("front exists");
                if let Err(Ok(lease)) = waiter.reply.send(Ok(lease)) {
                    undelivered.push(lease);
                }
            }
            self.publish_len(&mut queue);
        }
        // Dropping a lease dispatches again, so only after the lock is released.
        drop(undelivered);
    }

    /// Ends every wait with `reason` (an instance failed to start and none other is coming).
    pub fn fail_waiters(&self, reason: &str) {
        let waiters = {
            let mut queue = self.lock();
            let waiters = std::mem::take(&mut queue.waiters);
            self.publish_len(&mut queue);
            waiters
        };
        for waiter in waiters {
            let _ = waiter
                .reply
                .send(Err(AcquireError::Unavailable(reason.to_string())));
        }
    }

    /// Replaces the instances that take requests and serves waiters from new capacity.
    pub fn set_instances(self: &Arc<Self>, instances: Vec<Arc<Instance>>) {
        self.instances.store(Arc::new(instances));
        self.dispatch();
    }

    /// The instances that take requests now.
    pub fn instances(&self) -> Arc<Vec<Arc<Instance>>> {
        self.instances.load_full()
    }

    /// Changes the hard concurrency limit (a config reload).
    pub fn set_limit(self: &Arc<Self>, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
        self.dispatch();
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn publish_len(&self, queue: &mut Queue) {
        let len = queue.waiters.len();
        self.queued.store(len, Ordering::SeqCst);
        self.depth_gauge.add(len as i64 - queue.published as i64);
        queue.published = len;
    }
}

/// Takes a waiter out of the queue when its request gives up (timeout, client gone).
struct LeaveQueue<'a> {
    activator: &'a Arc<Activator>,
    id: u64,
    armed: bool,
}

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut queue = self.activator.lock();
        queue.waiters.retain(|waiter| waiter.id != self.id);
        self.activator.publish_len(&mut queue);
    }
}

/// One request's slot on an instance; released, and handed on to a waiter, on drop.
pub struct Lease {
    instance: Arc<Instance>,
    activator: Arc<Activator>,
}

impl Lease {
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("instance", &self.instance.id)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance.release();
        // Order the release before reading the queue length (store-load): with the dispatch
        // that `acquire` runs after enqueueing, either we see the waiter or it sees the slot.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.activator.dispatch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activator(limit: u32) -> Arc<Activator> {
        Activator::new(
            limit,
            IntGauge::new("q", "q").unwrap(),
            Arc::new(Notify::new()),
        )
    }

    fn one_instance() -> Vec<Arc<Instance>> {
        vec![Instance::new("i".into(), "127.0.0.1:1".parse().unwrap())]
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order_when_slots_free() {
        let a = activator(1);
        a.set_instances(one_instance());
        let first = a.acquire(10, Duration::from_secs(5)).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..3 {
            let (a2, order) = (Arc::clone(&a), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let lease = a2.acquire(10, Duration::from_secs(5)).await.unwrap();
                order.lock().unwrap().push(n);
                drop(lease);
            }));
            // Let each one queue before the next, so arrival order is defined.
            while a.queued() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(a.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_timeout_and_failure_each_end_the_wait() {
        let a = activator(1);
        let waiting = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.acquire(1, Duration::from_secs(10)).await })
        };
        while a.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.acquire(1, Duration::from_secs(10)).await.unwrap_err(),
            AcquireError::QueueFull(1)
        );
        a.fail_waiters("instance failed to start");
        assert_eq!(
            waiting.await.unwrap().unwrap_err(),
            AcquireError::Unavailable("instance failed to start".into())
        );
        assert_eq!(
            a.acquire(1, Duration::from_millis(250)).await.unwrap_err(),
            AcquireError::Timeout(Duration::from_millis(250))
        );
        assert_eq!(a.queued(), 0, "a timed-out request leaves the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let a = activator(1);
        let task = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.acquire(5, Duration::from_secs(10)).await })
        };
        while a.queued() == 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        assert_eq!(a.queued(), 0);
        a.set_instances(one_instance());
        assert!(a.acquire(5, Duration::from_secs(1)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_retired_activator_hands_waiters_and_new_requests_on() {
        let gauge = IntGauge::new("q", "q").unwrap();
        let poke = Arc::new(Notify::new());
        let old = Activator::new(1, gauge.clone(), Arc::clone(&poke));
        let next = Activator::new(1, gauge.clone(), poke);
        let waiting = {
            let old = Arc::clone(&old);
            tokio::spawn(async move { old.acquire(5, Duration::from_secs(10)).await })
        };
        while old.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gauge.get(), 1);
        old.forward_to(&next);
        assert_eq!((old.queued(), next.queued(), gauge.get()), (0, 1, 1));
        next.set_instances(one_instance());
        let lease = waiting.await.unwrap().unwrap();
        assert_eq!(lease.instance().id, "i");
        assert_eq!(gauge.get(), 0);
        drop(lease);
        // A request that picked the old revision just before it retired lands on the new one.
        let lease = old.acquire(5, Duration::from_secs(1)).await.unwrap();
        assert_eq!(next.instances()[0].in_flight(), 1);
        drop(lease);
    }
}
