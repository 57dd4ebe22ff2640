//! The idle list of keep-alive connections to one instance, shared by every upstream client:
//! the engine's, and hyper's, which drives a connection from it for one exchange.
//!
//! The most recently used connection is taken first (the least likely to have been closed
//! by the instance); the oldest expire from the front.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Idle connections kept per instance at most; more are closed when they come back.
const MAX_IDLE_PER_INSTANCE: usize = 512;

/// Idle connections of one kind to one instance.
pub struct IdleList<T> {
    idle: Mutex<VecDeque<(Instant, Box<T>)>>,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        IdleList {
            idle: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T> IdleList<T> {
    /// The most recently used connection idle for less than `max_idle` that `usable` accepts;
    /// the others met on the way are closed.
    pub fn take(&self, max_idle: Duration, usable: impl Fn(&T) -> bool) -> Option<Box<T>> {
        let now = Instant::now();
        loop {
            let (since, connection) = self.lock().pop_back()?;
            if now.duration_since(since) < max_idle && usable(&connection) {
                return Some(connection);
            }
        }
    }

    /// Keeps a connection for the next request, dropping those idle for `max_idle` already.
    pub fn put(&self, connection: Box<T>, max_idle: Duration) {
        let now = Instant::now();
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(since, _)| now.duration_since(*since) >= max_idle)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE_PER_INSTANCE {
            idle.push_back((now, connection));
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(Instant, Box<T>)>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
