//! What the gateway knows of its pods, from the EndpointSlice and Pod watches, and which of
//! them stand for which of the controller's instances.
//!
//! The controller thinks in instances it starts and stops one at a time; Kubernetes thinks in
//! a replica count. A [`Slot`] bridges the two: each instance the controller asks for is a
//! slot, the revision's replica count is its number of slots, and a slot is bound to one ready
//! endpoint (a pod) nobody else holds. A bound pod whose endpoint goes away or stops being
//! ready ends its slot: the controller sees the instance exit and asks for another, which the
//! ReplicaSet's replacement pod then fills. Pure state, so the rules are unit-tested.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use tokio::sync::watch;

use crate::runtime::Exit;

/// One address of one pod, as an EndpointSlice lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: String,
    pub ip: IpAddr,
    /// `conditions.ready`: passing its readiness probe and not terminating.
    pub ready: bool,
    /// `conditions.terminating`: deleted, still shutting down.
    pub terminating: bool,
}

/// What the Pod watch says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub revision: String,
    /// Why the pod cannot run (crash loop, image not found), from its container status.
    pub problem: Option<String>,
    /// A one-line account of where it is (phase, waiting reason), for start time-outs.
    pub summary: String,
    /// Deleted, evicted or otherwise done: it will not run again, whatever it says.
    pub terminal: bool,
}

/// One instance the controller asked for.
#[derive(Debug)]
pub struct Slot {
    pub id: String,
    /// The pod bound to it, once one is ready.
    pub pod: Option<String>,
    pub exited: watch::Sender<Option<Exit>>,
}

/// The slots of one revision; their number is its replica count.
#[derive(Debug)]
pub struct RevisionSlots {
    pub port: u16,
    pub slots: Vec<Slot>,
    /// The replica count the revision's scaler task applies.
    pub desired: watch::Sender<i32>,
}

impl RevisionSlots {
    /// Tells the scaler the number of slots.
    pub fn publish(&self) {
        self.desired.send_replace(self.slots.len() as i32);
    }
}

/// Everything the watches saw, and the slots.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// EndpointSlice name -> (revision, its endpoints).
    slices: HashMap<String, (String, Vec<Endpoint>)>,
    pods: HashMap<String, PodInfo>,
    pub revisions: HashMap<String, RevisionSlots>,
    /// Each Deployment's replica count as the API server has it (the Deployment watch).
    pub replicas: HashMap<String, i32>,
}

impl ClusterState {
    /// Replaces what one slice says.
    pub fn set_slice(&mut self, name: String, revision: String, endpoints: Vec<Endpoint>) {
        self.slices.insert(name, (revision, endpoints));
    }

    pub fn remove_slice(&mut self, name: &str) {
        self.slices.remove(name);
    }

    /// Replaces every slice at once (after a relist).
    pub fn replace_slices(&mut self, slices: HashMap<String, (String, Vec<Endpoint>)>) {
        self.slices = slices;
    }

    pub fn set_pod(&mut self, name: String, info: PodInfo) {
        self.pods.insert(name, info);
    }

    pub fn remove_pod(&mut self, name: &str) {
        self.pods.remove(name);
    }

    pub fn replace_pods(&mut self, pods: HashMap<String, PodInfo>) {
        self.pods = pods;
    }

    pub fn set_replicas(&mut self, name: String, replicas: i32) {
        self.replicas.insert(name, replicas);
    }

    pub fn remove_replicas(&mut self, name: &str) {
        self.replicas.remove(name);
    }

    pub fn replace_replicas(&mut self, replicas: HashMap<String, i32>) {
        self.replicas = replicas;
    }

    /// The revision's pods with a ready endpoint, deduplicated across slices: a pod counts
    /// when any slice lists it ready and none lists it terminating.
    pub fn ready_pods(&self, revision: &str) -> HashMap<&str, IpAddr> {
        let mut ready: HashMap<&str, IpAddr> = HashMap::new();
        let mut terminating: Vec<&str> = Vec::new();
        for (slice_revision, endpoints) in self.slices.values() {
            if slice_revision != revision {
                continue;
            }
            for endpoint in endpoints {
                if endpoint.terminating {
                    terminating.push(&endpoint.pod);
                } else if endpoint.ready {
                    ready.insert(&endpoint.pod, endpoint.ip);
                }
            }
        }
        for pod in terminating {
            ready.remove(pod);
        }
        ready
    }

    /// Binds slot `id` of `revision` to a ready pod no other slot holds; its address.
    pub fn bind(&mut self, revision: &str, id: &str) -> Option<(String, SocketAddr)> {
        let ready = self.ready_pods(revision);
        let entry = self.revisions.get(revision)?;
        let mut free: Vec<(&str, IpAddr)> = ready
            .into_iter()
            .filter(|(pod, _)| !entry.slots.iter().any(|s| s.pod.as_deref() == Some(*pod)))
            .collect();
        free.sort();
        let (pod, ip) = free.first().map(|(pod, ip)| (pod.to_string(), *ip))?;
        let addr = SocketAddr::new(ip, entry.port);
        let entry = self.revisions.get_mut(revision)?;
        let slot = entry.slots.iter_mut().find(|s| s.id == id)?;
        slot.pod = Some(pod.clone());
        Some((pod, addr))
    }

    /// Ends every bound slot whose pod is no longer ready: removes it, tells the controller
    /// why through its exit, and republishes the replica count.
    pub fn release_lost(&mut self) {
        let names: Vec<String> = self.revisions.keys().cloned().collect();
        for revision in names {
            let ready: Vec<String> = self
                .ready_pods(&revision)
                .into_keys()
                .map(str::to_string)
                .collect();
            let Some(entry) = self.revisions.get(&revision) else {
                continue;
            };
            let lost: Vec<(String, String)> = entry
                .slots
                .iter()
                .filter_map(|slot| {
                    let pod = slot.pod.as_ref()?;
                    (!ready.contains(pod)).then(|| (slot.id.clone(), pod.clone()))
                })
                .collect();
            for (id, pod) in lost {
                let exit = self.exit_of(&revision, &pod);
                let Some(entry) = self.revisions.get_mut(&revision) else {
                    continue;
                };
                if let Some(index) = entry.slots.iter().position(|s| s.id == id) {
                    let slot = entry.slots.remove(index);
                    slot.exited.send_replace(Some(exit));
                }
                entry.publish();
            }
        }
    }

    /// Why a bound pod stopped serving: its own failure (a crash), or it went away.
    fn exit_of(&self, revision: &str, pod: &str) -> Exit {
        let terminating = self.slices.values().any(|(r, endpoints)| {
            r == revision && endpoints.iter().any(|e| e.pod == pod && e.terminating)
        });
        match self.pods.get(pod) {
            Some(PodInfo { terminal: true, .. }) => Exit::Lost {
                description: format!("pod {pod} was deleted or evicted"),
            },
            Some(PodInfo {
                problem: Some(problem),
                ..
            }) => Exit::Crashed {
                description: format!("pod {pod}: {problem}"),
                code: None,
                out_of_memory: problem.contains("OOMKilled"),
            },
            _ if terminating => Exit::Lost {
                description: format!("pod {pod} is terminating"),
            },
            Some(info) => Exit::Lost {
                description: format!("pod {pod} is no longer ready ({})", info.summary),
            },
            None => Exit::Lost {
                description: format!("pod {pod} is gone"),
            },
        }
    }

    /// Why no pod of `revision` can become ready: every live pod of it says why (a crash
    /// loop, an image that cannot be pulled). One failing pod among others that run, or a
    /// deleted or evicted one, is no verdict on the revision.
    pub fn problem(&self, revision: &str) -> Option<String> {
        let live: Vec<(&String, &PodInfo)> = self
            .pods
            .iter()
            .filter(|(_, info)| info.revision == revision && !info.terminal)
            .collect();
        let mut problems: Vec<(&String, &String)> = live
            .iter()
            .filter_map(|(pod, info)| Some((*pod, info.problem.as_ref()?)))
            .collect();
        if problems.is_empty() || problems.len() < live.len() {
            return None;
        }
        problems.sort();
        problems
            .first()
            .map(|(pod, problem)| format!("pod {pod}: {problem}"))
    }

    /// Where the revision's pods are, for the message of a start that timed out.
    pub fn summary(&self, revision: &str) -> String {
        let mut pods: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, info)| info.revision == revision)
            .map(|(pod, info)| format!("{pod}: {}", info.summary))
            .collect();
        pods.sort();
        if pods.is_empty() {
            "no pod was created (check the Deployment's events and the namespace's quota)".into()
        } else {
            pods.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(pod: &str, last: u8, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            pod: pod.into(),
            ip: IpAddr::from([10, 244, 0, last]),
            ready,
            terminating,
        }
    }

    fn with_slots(ids: &[&str]) -> (ClusterState, Vec<watch::Receiver<Option<Exit>>>) {
        let mut state = ClusterState::default();
        let mut receivers = Vec::new();
        let slots = ids
            .iter()
            .map(|id| {
                let (exited, rx) = watch::channel(None);
                receivers.push(rx);
                Slot {
                    id: id.to_string(),
                    pod: None,
                    exited,
                }
            })
            .collect();
        state.revisions.insert(
            "r1".into(),
            RevisionSlots {
                port: 8080,
                slots,
                desired: watch::channel(0).0,
            },
        );
        (state, receivers)
    }

    #[test]
    fn slots_bind_distinct_ready_pods_deduplicated_across_slices() {
        let (mut state, _rx) = with_slots(&["a", "b", "c"]);
        state.set_slice(
            "s1".into(),
            "r1".into(),
            vec![endpoint("p1", 2, true, false)],
        );
        // The same pod in a second slice, and a pod that is not ready yet.
        state.set_slice(
            "s2".into(),
            "r1".into(),
            vec![
                endpoint("p1", 2, true, false),
                endpoint("p2", 3, false, false),
            ],
        );
        state.set_slice(
            "other".into(),
            "r2".into(),
            vec![endpoint("q", 9, true, false)],
        );
        let (pod, addr) = state.bind("r1", "a").unwrap();
        assert_eq!(
            (pod.as_str(), addr.to_string().as_str()),
            ("p1", "10.244.0.2:8080")
        );
        assert_eq!(state.bind("r1", "b"), None, "p1 is taken, p2 not ready");
        state.set_slice(
            "s2".into(),
            "r1".into(),
            vec![endpoint("p2", 3, true, false)],
        );
        assert_eq!(state.bind("r1", "b").unwrap().0, "p2");
        assert_eq!(state.bind("r1", "c"), None);
    }

    #[test]
    fn a_terminating_pod_is_never_bound_and_ends_its_slot_as_lost() {
        let (mut state, rx) = with_slots(&["a", "b"]);
        state.set_slice(
            "s1".into(),
            "r1".into(),
            vec![endpoint("p1", 2, true, false)],
        );
        state.bind("r1", "a").unwrap();
        // Terminating in one slice wins over ready in another.
        state.set_slice(
            "s1".into(),
            "r1".into(),
            vec![endpoint("p1", 2, false, true)],
        );
        state.set_slice(
            "s2".into(),
            "r1".into(),
            vec![endpoint("p1", 2, true, false)],
        );
        assert_eq!(state.bind("r1", "b"), None);
        state.release_lost();
        assert_eq!(
            *rx[0].borrow(),
            Some(Exit::Lost {
                description: "pod p1 is terminating".into()
            })
        );
        assert_eq!(state.revisions["r1"].slots.len(), 1);
        assert_eq!(*state.revisions["r1"].desired.borrow(), 1);
        assert_eq!(*rx[1].borrow(), None, "an unbound slot stays");
    }

    #[test]
    fn a_crashed_pod_ends_its_slot_as_a_crash_with_the_pods_reason() {
        let (mut state, rx) = with_slots(&["a"]);
        state.set_slice(
            "s1".into(),
            "r1".into(),
            vec![endpoint("p1", 2, true, false)],
        );
        state.bind("r1", "a").unwrap();
        state.set_pod(
            "p1".into(),
            PodInfo {
                revision: "r1".into(),
                problem: Some("CrashLoopBackOff: exited with code 3".into()),
                summary: "Running".into(),
                terminal: false,
            },
        );
        state.set_slice(
            "s1".into(),
            "r1".into(),
            vec![endpoint("p1", 2, false, false)],
        );
        state.release_lost();
        let exit = rx[0].borrow().clone().unwrap();
        assert!(
            matches!(&exit, Exit::Crashed { description, .. } if description == "pod p1: CrashLoopBackOff: exited with code 3"),
            "{exit:?}"
        );
        assert_eq!(
            state.problem("r1").as_deref(),
            Some("pod p1: CrashLoopBackOff: exited with code 3")
        );
        assert_eq!(state.problem("r2"), None);
    }

    #[test]
    fn one_failing_pod_among_running_ones_or_an_evicted_one_fails_nothing() {
        let (mut state, _rx) = with_slots(&[]);
        let pod = |problem: Option<&str>, terminal| PodInfo {
            revision: "r1".into(),
            problem: problem.map(str::to_string),
            summary: String::new(),
            terminal,
        };
        state.set_pod("bad".into(), pod(Some("CrashLoopBackOff"), false));
        state.set_pod("good".into(), pod(None, false));
        assert_eq!(state.problem("r1"), None);
        state.set_pod("good".into(), pod(Some("Error"), true));
        assert_eq!(
            state.problem("r1").as_deref(),
            Some("pod bad: CrashLoopBackOff")
        );
        state.set_pod("bad".into(), pod(Some("Evicted"), true));
        assert_eq!(state.problem("r1"), None, "only terminal pods left");
    }

    #[test]
    fn a_relist_that_drops_a_slice_ends_the_slots_on_it() {
        let (mut state, rx) = with_slots(&["a"]);
        state.set_slice(
            "s1".into(),
            "r1".into(),
            vec![endpoint("p1", 2, true, false)],
        );
        state.bind("r1", "a").unwrap();
        state.replace_slices(HashMap::new());
        state.release_lost();
        assert_eq!(
            *rx[0].borrow(),
            Some(Exit::Lost {
                description: "pod p1 is gone".into()
            })
        );
        assert!(state.summary("r1").starts_with("no pod was created"));
    }
}
