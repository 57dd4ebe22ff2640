//! `max_instances` on the apps' side: app instances across every app never exceed it.
//!
//! Each controller reports how many instances it holds (starting, ready, draining) after
//! each step; a start first takes a place, so two apps scaling at the same moment cannot
//! overshoot together. A start refused here is planned again on the next decision, and its
//! requests wait in the activator as for any cold start. Jobs come second: they start only
//! while apps and jobs together are below the limit (`jobs::capacity`), so an app's cold
//! start is never held back by a job.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The app instances now, against `max_instances`.
#[derive(Debug)]
pub struct InstanceBudget {
    max: Option<usize>,
    apps: AtomicUsize,
}

impl InstanceBudget {
    pub fn new(max: Option<u32>) -> Self {
        InstanceBudget {
            max: max.map(|m| m as usize),
            apps: AtomicUsize::new(0),
        }
    }

    /// No limit (tests, embedding).
    pub fn unlimited() -> Self {
        Self::new(None)
    }

    /// Takes a place for one more app instance, if the limit allows.
    pub fn try_take(&self) -> bool {
        self.apps
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |apps| {
                self.max.is_none_or(|max| apps < max).then_some(apps + 1)
            })
            .is_ok()
    }

    /// A controller that had reported `reported` instances holds `now`.
    pub fn report(&self, reported: &mut usize, now: usize) {
        if now > *reported {
            self.apps.fetch_add(now - *reported, Ordering::AcqRel);
        } else {
            self.apps.fetch_sub(*reported - now, Ordering::AcqRel);
        }
        *reported = now;
    }

    /// App instances now.
    pub fn apps(&self) -> usize {
        self.apps.load(Ordering::Acquire)
    }

    pub fn max(&self) -> Option<usize> {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_the_limit_and_given_back_by_reports() {
        let budget = InstanceBudget::new(Some(2));
        let (mut first, mut second) = (0, 0);
        assert!(budget.try_take());
        first += 1;
        assert!(budget.try_take());
        second += 1;
        assert!(!budget.try_take(), "two apps hold both places");
        budget.report(&mut first, 0);
        assert_eq!(budget.apps(), 1);
        assert!(budget.try_take());
        first += 1;
        budget.report(&mut second, 0);
        budget.report(&mut first, 0);
        assert_eq!(budget.apps(), 0);
        assert!(InstanceBudget::unlimited().try_take());
    }
}
