//! Several gateway replicas acting as one (`[kubernetes] leader_election = true`): every
//! replica's autoscaler decides on the load of all of them.
//!
//! Each replica announces itself with a Lease of its own (`tidegate-peer-<hash>`, label
//! `tidegate.dev/peer`, holder = its identity, annotation = its admin address), renewed every
//! 5 s and deleted at shutdown, and serves its per-revision load on `/internal/load`. Every
//! 500 ms (Knative's activators report every second, KEDA polls every 500 ms) it polls the
//! others and hands each revision the sum ([`load`]), so every replica computes the same
//! desired count from the same total; the leader applies it, followers only wake revisions
//! from zero (`runtime::kubernetes`). A peer that does not answer keeps its last report for
//! 2 s, then counts for nothing. Leases rather than the EndpointSlices of a peers Service:
//! they work for replicas outside pods (the tests' processes on loopback, whose addresses an
//! EndpointSlice refuses) and need no Service.

pub mod definitions;
pub mod load;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::autoscaler::AppRegistry;
use load::Report;

const PEER_LABEL: &str = "tidegate.dev/peer";
const ADMIN_ANNOTATION: &str = "tidegate.dev/admin";
const POLL_EVERY: Duration = Duration::from_millis(500);
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// A peer whose Lease has not changed for this long is gone.
const PEER_EXPIRY: Duration = Duration::from_secs(15);
/// A peer that does not answer keeps its last report this long.
const REPORT_KEPT: Duration = Duration::from_secs(2);

/// The running membership, polling and definition mirror; [`Replicas::leave`] ends them.
pub struct Replicas {
    task: tokio::task::JoinHandle<()>,
    mirror: tokio::task::JoinHandle<()>,
    leases: Api<Lease>,
    own: String,
}

impl Replicas {
    /// Announces this replica (reachable at `admin`) and starts polling its peers.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        identity: String,
        admin: SocketAddr,
        registry: Arc<AppRegistry>,
        (apps_dir, jobs_dir): (std::path::PathBuf, std::path::PathBuf),
    ) -> Replicas {
        let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let own = format!("tidegate-peer-{:016x}", fnv(&identity));
        let task = tokio::spawn(run(leases.clone(), own.clone(), identity, admin, registry));
        let mirror = tokio::spawn(definitions::run_mirror(
            Api::namespaced(client, namespace),
            apps_dir,
            jobs_dir,
        ));
        Replicas {
            task,
            mirror,
            leases,
            own,
        }
    }

    /// Stops polling and removes this replica's Lease, so the others stop counting it.
    pub async fn leave(self) {
        self.task.abort();
        self.mirror.abort();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.leases.delete(&self.own, &DeleteParams::default()),
        )
        .await;
    }
}

/// Joins the replicas when `[kubernetes] leader_election` is on: announces this gateway,
/// reachable at its admin listener `admin` (at `$POD_IP` in a pod), polls the others, and
/// shares app and job definitions with them (the API's writes go to the cluster, and the
/// cluster's definitions are mirrored into `apps_dir` and `jobs_dir`).
pub async fn join(
    gateway: &crate::config::GatewaySettings,
    admin: SocketAddr,
    registry: Arc<AppRegistry>,
    api: &crate::api::Api,
) -> Option<Replicas> {
    let settings = gateway.kubernetes.as_ref().filter(|s| s.leader_election)?;
    let (client, namespace) = match crate::runtime::kubernetes::client(settings).await {
        Ok(client) => client,
        Err(reason) => {
            tracing::error!(%reason, "cannot join the other gateway replicas");
            return None;
        }
    };
    let advertised = match std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()) {
        Some(ip) => SocketAddr::new(ip, admin.port()),
        None if admin.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], admin.port())),
        None => admin,
    };
    let identity = crate::runtime::kubernetes::identity(settings);
    tracing::info!(%identity, admin = %advertised, "joining the gateway replicas");
    api.share_definitions(definitions::ClusterDefinitions::new(Api::namespaced(
        client.clone(),
        &namespace,
    )));
    Some(Replicas::start(
        client,
        &namespace,
        identity,
        advertised,
        registry,
        (gateway.apps_dir.clone(), gateway.jobs_dir.clone()),
    ))
}

/// FNV-1a: a stable Lease name from any identity.
fn fnv(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A peer as last seen: its Lease's version (and when that changed), its last report.
struct Peer {
    admin: SocketAddr,
    version: String,
    changed: Instant,
    report: Option<(Report, Instant)>,
}

async fn run(
    leases: Api<Lease>,
    own: String,
    identity: String,
    admin: SocketAddr,
    registry: Arc<AppRegistry>,
) {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut announced: Option<Instant> = None;
    let mut listed: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if announced.is_none_or(|at| now.duration_since(at) >= ANNOUNCE_EVERY) {
            match announce(&leases, &own, &identity, admin).await {
                Ok(()) => announced = Some(now),
                Err(error) => tracing::warn!(%error, "could not renew this replica's lease"),
            }
        }
        if listed.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            if let Ok(Ok(list)) = tokio::time::timeout(
                Duration::from_secs(2),
                leases.list(&ListParams::default().labels(PEER_LABEL)),
            )
            .await
            {
                listed = Some(now);
                update_peers(&mut peers, list.items, &own, now);
            }
        }
        let polls = peers.iter().map(|(name, peer)| {
            let name = name.clone();
            let addr = peer.admin;
            async move { (name, poll(addr).await) }
        });
        for (name, report) in futures_util::future::join_all(polls).await {
            if let (Some(peer), Some(report)) = (peers.get_mut(&name), report) {
                peer.report = Some((report, Instant::now()));
            }
        }
        let now = Instant::now();
        let fresh = peers.values().filter_map(|peer| {
            let (report, at) = peer.report.as_ref()?;
            (now.duration_since(*at) <= REPORT_KEPT).then_some(report)
        });
        load::apply(&registry, &load::sum(fresh));
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Creates or renews this replica's Lease.
async fn announce(
    leases: &Api<Lease>,
    own: &str,
    identity: &str,
    admin: SocketAddr,
) -> Result<(), String> {
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": own,
            "labels": { PEER_LABEL: "true", "app.kubernetes.io/managed-by": "tidegate" },
            "annotations": { ADMIN_ANNOTATION: admin.to_string() },
        },
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": PEER_EXPIRY.as_secs(),
            "renewTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    });
    let params = PatchParams::apply("tidegate").force();
    match tokio::time::timeout(
        Duration::from_secs(2),
        leases.patch(own, &params, &Patch::Apply(&body)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the API server did not answer within 2 s".into()),
    }
}

/// Brings the peer list in line with the Leases: new ones join, ones not renewed for
/// [`PEER_EXPIRY`] (by this replica's clock, as the election judges) leave.
fn update_peers(peers: &mut HashMap<String, Peer>, leases: Vec<Lease>, own: &str, now: Instant) {
    let mut seen = Vec::new();
    for lease in leases {
        let Some(name) = lease.metadata.name.clone() else {
            continue;
        };
        if name == own {
            continue;
        }
        let admin = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ADMIN_ANNOTATION))
            .and_then(|a| a.parse().ok());
        let Some(admin) = admin else { continue };
        let version = lease.metadata.resource_version.unwrap_or_default();
        let peer = peers.entry(name.clone()).or_insert_with(|| Peer {
            admin,
            version: String::new(),
            changed: now,
            report: None,
        });
        if peer.version != version {
            peer.version = version;
            peer.changed = now;
            peer.admin = admin;
        }
        seen.push(name);
    }
    peers
        .retain(|name, peer| seen.contains(name) && now.duration_since(peer.changed) < PEER_EXPIRY);
}

/// A peer's report, or `None` if it does not answer within 300 ms.
async fn poll(admin: SocketAddr) -> Option<Report> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        stream
            .write_all(b"GET /internal/load HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = std::str::from_utf8(&answer).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then_some(())?;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_millis(300), fetch)
        .await
        .ok()
        .flatten()
}
