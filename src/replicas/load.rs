//! The load a gateway replica reports to the others: per revision, its requests in flight
//! (waiting ones included) and its arrivals counter, as JSON on the admin listener
//! (`GET /internal/load`), like the counters Knative's activators send the autoscaler.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::autoscaler::AppRegistry;

/// One revision's load through one replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionLoad {
    pub in_flight: i64,
    pub arrivals: u64,
}

/// A replica's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub revisions: HashMap<String, RevisionLoad>,
}

/// This replica's own load (not what it heard from its peers).
pub fn report(registry: &AppRegistry) -> Report {
    let mut revisions = HashMap::new();
    for app in registry.list() {
        for revision in app.revisions().iter() {
            revisions.insert(
                revision.name.clone(),
                RevisionLoad {
                    in_flight: revision.in_flight(),
                    arrivals: revision.arrivals(),
                },
            );
        }
    }
    Report { revisions }
}

/// The peers' reports summed per revision.
pub fn sum<'a>(reports: impl Iterator<Item = &'a Report>) -> HashMap<String, RevisionLoad> {
    let mut total: HashMap<String, RevisionLoad> = HashMap::new();
    for report in reports {
        for (name, load) in &report.revisions {
            let entry = total.entry(name.clone()).or_default();
            entry.in_flight += load.in_flight;
            entry.arrivals = entry.arrivals.wrapping_add(load.arrivals);
        }
    }
    total
}

/// Gives every revision of this replica its peers' summed load (zero where they report
/// none).
pub fn apply(registry: &AppRegistry, peers: &HashMap<String, RevisionLoad>) {
    for app in registry.list() {
        for revision in app.revisions().iter() {
            let load = peers.get(&revision.name).copied().unwrap_or_default();
            revision.set_peer_load(load.in_flight, load.arrivals);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_sum_per_revision() {
        let report = |pairs: &[(&str, i64, u64)]| Report {
            revisions: pairs
                .iter()
                .map(|(name, in_flight, arrivals)| {
                    (
                        name.to_string(),
                        RevisionLoad {
                            in_flight: *in_flight,
                            arrivals: *arrivals,
                        },
                    )
                })
                .collect(),
        };
        let a = report(&[("web-00001", 3, 10), ("api-00002", 1, 5)]);
        let b = report(&[("web-00001", 2, 7)]);
        let total = sum([&a, &b].into_iter());
        assert_eq!(
            total["web-00001"],
            RevisionLoad {
                in_flight: 5,
                arrivals: 17
            }
        );
        assert_eq!(
            total["api-00002"],
            RevisionLoad {
                in_flight: 1,
                arrivals: 5
            }
        );
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), a);
    }
}
