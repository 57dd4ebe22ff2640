//! Revisions as the data plane sees them: each revision of an app has its own activator (its
//! own instances and queue) and its own concurrency count, so each is autoscaled on its own
//! traffic; the app's [`Traffic`] splits requests across them.
//!
//! The controller owns the revisions' lifecycle and publishes a new `Traffic` whenever the
//! split changes (a new revision became ready, the `[[traffic]]` block was edited). A request
//! reads the split once, picks its revision and counts against it until it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::IntGauge;
use tokio::sync::Notify;

use crate::activator::Activator;
use crate::metrics::RevisionMetrics;

/// One revision's live request-side state.
pub struct RevisionState {
    /// `hello-00002`.
    pub name: String,
    pub activator: Arc<Activator>,
    /// `tidegate_revision_*` of this revision.
    pub metrics: RevisionMetrics,
    in_flight: AtomicI64,
    arrivals: AtomicU64,
    /// The other gateway replicas' requests in flight on this revision, and their arrivals
    /// (summed counters), as last polled: the autoscaler decides on the load of all.
    peer_in_flight: AtomicI64,
    peer_arrivals: AtomicU64,
    /// The instance starting now, if any: what a request that waited in vain is told.
    starting: ArcSwapOption<StartNote>,
}

/// An instance that has been started and is not ready yet.
#[derive(Debug, Clone)]
pub struct StartNote {
    pub instance: String,
    pub addr: std::net::SocketAddr,
    /// Where the app must listen, in its own terms (`$PORT`).
    pub listen_hint: String,
    pub since: tokio::time::Instant,
}

impl std::fmt::Display for StartNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "instance {} has been starting for {:.1}s, waiting for {} to answer ({})",
            self.instance,
            self.since.elapsed().as_secs_f64(),
            self.addr,
            self.listen_hint
        )
    }
}

impl RevisionState {
    /// A revision whose activator pokes `poke` (the app controller's wake-up) when a request
    /// has to wait, and adds its queue length to the app's `depth_gauge`.
    pub fn new(
        name: String,
        limit: u32,
        depth_gauge: IntGauge,
        poke: Arc<Notify>,
        metrics: RevisionMetrics,
    ) -> Arc<Self> {
        Arc::new(RevisionState {
            name,
            metrics,
            activator: Activator::new(limit, depth_gauge, poke),
            in_flight: AtomicI64::new(0),
            arrivals: AtomicU64::new(0),
            peer_in_flight: AtomicI64::new(0),
            peer_arrivals: AtomicU64::new(0),
            starting: ArcSwapOption::empty(),
        })
    }

    /// Notes an instance that has started and is being probed (`None` clears the note of
    /// `instance` once it is ready or failed; a later start's note stays).
    pub fn note_start(&self, instance: &str, note: Option<StartNote>) {
        match note {
            Some(note) => self.starting.store(Some(Arc::new(note))),
            None => {
                let current = self.starting.load();
                if current
                    .as_ref()
                    .is_some_and(|note| note.instance == instance)
                {
                    self.starting.compare_and_swap(&*current, None);
                }
            }
        }
    }

    /// The instance starting now, if any.
    pub fn start_note(&self) -> Option<Arc<StartNote>> {
        self.starting.load_full()
    }

    /// Counts a request on this revision until the guard drops.
    pub fn begin(self: &Arc<Self>) -> RevisionRequest {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        RevisionRequest(Arc::clone(self))
    }

    /// Requests of this revision in flight now, waiting ones included.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests routed to this revision since it was created.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
    }

    /// Sets what the other gateway replicas report for this revision.
    pub fn set_peer_load(&self, in_flight: i64, arrivals: u64) {
        self.peer_in_flight.store(in_flight, Ordering::Relaxed);
        self.peer_arrivals.store(arrivals, Ordering::Relaxed);
    }

    /// Requests in flight on this revision through every gateway replica (this one alone
    /// without replicas).
    pub fn total_in_flight(&self) -> i64 {
        self.in_flight() + self.peer_in_flight.load(Ordering::Relaxed)
    }

    /// Arrivals through every replica: it changes whenever any replica saw a request.
    pub fn total_arrivals(&self) -> u64 {
        self.arrivals()
            .wrapping_add(self.peer_arrivals.load(Ordering::Relaxed))
    }
}

/// One request counted on a revision.
pub struct RevisionRequest(Arc<RevisionState>);

impl RevisionRequest {
    pub fn revision(&self) -> &Arc<RevisionState> {
        &self.0
    }
}

impl Drop for RevisionRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.in_flight.dec();
    }
}

/// How an app's requests split across its revisions right now.
#[derive(Default)]
pub struct Traffic {
    /// Revisions with a share above 0 and the running total of the shares, in percent.
    split: Vec<(u32, Arc<RevisionState>)>,
    tags: HashMap<String, Arc<RevisionState>>,
}

impl Traffic {
    /// A split from `(percent, revision)` shares adding up to 100, and tagged revisions.
    pub fn new(
        shares: Vec<(u32, Arc<RevisionState>)>,
        tags: HashMap<String, Arc<RevisionState>>,
    ) -> Self {
        let mut total = 0;
        let split = shares
            .into_iter()
            .filter(|(percent, _)| *percent > 0)
            .map(|(percent, revision)| {
                total += percent;
                (total, revision)
            })
            .collect();
        Traffic { split, tags }
    }

    /// All traffic to one revision.
    pub fn single(revision: Arc<RevisionState>) -> Self {
        Traffic::new(vec![(100, revision)], HashMap::new())
    }

    /// The revision for a request: the tagged one for a tag host, else a weighted random pick.
    pub fn pick(&self, tag: Option<&str>) -> Option<&Arc<RevisionState>> {
        if let Some(tag) = tag {
            return self.tags.get(tag);
        }
        match self.split.as_slice() {
            [] => None,
            [(_, only)] => Some(only),
            split => {
                let total = split.last().map_or(100, |(total, _)| *total);
                let roll = fastrand::u32(0..total);
                split
                    .iter()
                    .find(|(upto, _)| roll < *upto)
                    .map(|(_, revision)| revision)
            }
        }
    }

    /// The revision with the largest share: where waiters of a retired revision go.
    pub fn primary(&self) -> Option<&Arc<RevisionState>> {
        let mut previous = 0;
        self.split
            .iter()
            .map(|(upto, revision)| {
                let share = upto - previous;
                previous = *upto;
                (share, revision)
            })
            .max_by_key(|(share, _)| *share)
            .map(|(_, revision)| revision)
    }

    /// Every revision in the split or behind a tag, once, with its share in percent.
    pub fn shares(&self) -> Vec<(String, u32)> {
        let mut previous = 0;
        let mut shares: Vec<(String, u32)> = Vec::new();
        for (upto, revision) in &self.split {
            let share = upto - previous;
            previous = *upto;
            match shares.iter_mut().find(|(name, _)| *name == revision.name) {
                Some(entry) => entry.1 += share,
                None => shares.push((revision.name.clone(), share)),
            }
        }
        shares
    }

    /// Tag -> revision name.
    pub fn tag_names(&self) -> Vec<(String, String)> {
        let mut tags: Vec<_> = self
            .tags
            .iter()
            .map(|(tag, revision)| (tag.clone(), revision.name.clone()))
            .collect();
        tags.sort();
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(name: &str) -> Arc<RevisionState> {
        RevisionState::new(
            name.into(),
            0,
            IntGauge::new("q", "q").unwrap(),
            Arc::new(Notify::new()),
            RevisionMetrics::detached(),
        )
    }

    #[test]
    fn a_split_lands_near_its_weights() {
        let (a, b) = (revision("a"), revision("b"));
        let traffic = Traffic::new(vec![(90, a), (10, Arc::clone(&b))], HashMap::new());
        let to_b = (0..100_000)
            .filter(|_| traffic.pick(None).unwrap().name == "b")
            .count();
        assert!(
            (9_000..11_000).contains(&to_b),
            "{to_b} of 100,000 went to b"
        );
        assert_eq!(traffic.primary().unwrap().name, "a");
        assert_eq!(traffic.shares(), vec![("a".into(), 90), ("b".into(), 10)]);
    }

    #[test]
    fn tags_pick_their_revision_and_zero_shares_get_nothing() {
        let (a, b) = (revision("a"), revision("b"));
        let tags = HashMap::from([("next".to_string(), Arc::clone(&b))]);
        let traffic = Traffic::new(vec![(100, a), (0, b)], tags);
        assert!((0..1000).all(|_| traffic.pick(None).unwrap().name == "a"));
        assert_eq!(traffic.pick(Some("next")).unwrap().name, "b");
        assert!(traffic.pick(Some("other")).is_none());
    }
}
