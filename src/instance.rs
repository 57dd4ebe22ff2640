//! Instances an app's requests can go to, and how one is chosen.
//!
//! An [`Instance`] is one running copy of an app at one address with an in-flight counter.
//! [`pick`] claims a slot on the least busy instance that is below the hard concurrency limit
//! (least outstanding requests, scanning from a rotating start so ties spread out); the
//! activator wraps the claim in a lease that releases it when the response ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// One running copy of an app. Its connections are not here but in `upstream`'s pools,
/// found by `id`: the control plane makes and drops instances without knowing of them.
pub struct Instance {
    /// Unique id for logs, listings and connection pools (`hello-static-127.0.0.1:9000`,
    /// `hello-00001-3`).
    pub id: String,
    pub addr: SocketAddr,
    in_flight: AtomicU32,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Instance {
    pub fn new(id: String, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Instance {
            id,
            addr,
            in_flight: AtomicU32::new(0),
        })
    }

    /// Requests on this instance now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Claims one slot, unless `limit` (0 = unlimited) slots are taken already.
    pub fn try_claim(&self, limit: u32) -> bool {
        if limit == 0 {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken with [`Instance::try_claim`] or [`pick`].
    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Claims a slot on the instance with the fewest requests in flight that is below `limit`
/// (0 = unlimited), starting the scan at a rotating position so ties spread out. The caller
/// owns the claim and must [`Instance::release`] it.
///
/// Returns `None` when there is no instance or every instance is at its limit. Small lists
/// are scanned whole; large ones try two random choices first, which is nearly as good.
pub fn pick(
    instances: &[Arc<Instance>],
    limit: u32,
    rotation: &AtomicUsize,
) -> Option<Arc<Instance>> {
    let count = instances.len();
    if count == 0 {
        return None;
    }
    let start = rotation.fetch_add(1, Ordering::Relaxed);
    if count > 16 {
        let a = &instances[start % count];
        let b = &instances[(start.wrapping_mul(7919) / 3 + 1) % count];
        let (first, second) = if a.in_flight() <= b.in_flight() {
            (a, b)
        } else {
            (b, a)
        };
        for candidate in [first, second] {
            if candidate.try_claim(limit) {
                return Some(Arc::clone(candidate));
            }
        }
        // Both random choices are full: fall through to a full scan for any free slot.
    }
    loop {
        let best = (0..count)
            .map(|offset| &instances[(start + offset) % count])
            .filter(|instance| limit == 0 || instance.in_flight() < limit)
            .min_by_key(|instance| instance.in_flight())?;
        if best.try_claim(limit) {
            return Some(Arc::clone(best));
        }
        // Another request took the last slot between the scan and the claim: scan again.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances(n: usize) -> Vec<Arc<Instance>> {
        (0..n)
            .map(|i| {
                Instance::new(
                    format!("i{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                )
            })
            .collect()
    }

    #[test]
    fn spreads_equal_load_and_prefers_the_least_busy() {
        let list = instances(3);
        let rotation = AtomicUsize::new(0);
        let claims: Vec<_> = (0..6).map(|_| pick(&list, 0, &rotation).unwrap()).collect();
        assert!(list.iter().all(|i| i.in_flight() == 2));
        claims.iter().for_each(|i| i.release());
        assert!(list.iter().all(|i| i.in_flight() == 0));

        for _ in 0..5 {
            assert!(list[0].try_claim(0));
        }
        for _ in 0..4 {
            assert_ne!(pick(&list, 0, &rotation).unwrap().id, "i0");
        }
    }

    #[test]
    fn respects_the_hard_limit() {
        let list = instances(2);
        let rotation = AtomicUsize::new(0);
        let held: Vec<_> = (0..4).map(|_| pick(&list, 2, &rotation).unwrap()).collect();
        assert!(pick(&list, 2, &rotation).is_none());
        held[0].release();
        assert!(pick(&list, 2, &rotation).is_some());
        assert!(pick(&[], 0, &rotation).is_none());
    }

    #[test]
    fn large_lists_never_exceed_the_limit() {
        let list = instances(40);
        let rotation = AtomicUsize::new(0);
        for _ in 0..80 {
            pick(&list, 2, &rotation).unwrap();
        }
        assert!(list.iter().all(|i| i.in_flight() == 2));
        assert!(pick(&list, 2, &rotation).is_none());
    }
}
