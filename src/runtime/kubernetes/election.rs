//! Leader election among gateway replicas with a `coordination.k8s.io/v1` Lease, the way
//! client-go's `leaderelection` does it: lease 15 s, renew deadline 10 s, retry 2 s,
//! optimistic updates with the Lease's resourceVersion (a 409 means another replica won).
//!
//! Expiry is judged by when this replica last saw the Lease *change* (its resourceVersion),
//! on its own monotonic clock, not by the `renewTime` written by another machine, so clock
//! skew between replicas does not matter. A leader that cannot renew for the renew deadline
//! steps down before its lease can have expired for others. On a clean stop the leader
//! releases the Lease (empty holder, 1 s duration); followers watch the Lease, so one takes
//! over at once rather than at its next retry.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::utils::StreamBackoff;
use kube::runtime::watcher::{self, watcher};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// client-go's defaults.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// A running election; [`Elector::step_down`] ends it.
pub struct Elector {
    /// Whether this replica leads now.
    pub leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Elector {
    /// Joins the election for Lease `name` as `identity` (the pod's name and admin address).
    pub fn spawn(api: Api<Lease>, name: String, identity: String) -> Elector {
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(api, name, identity, leading_tx, stopped));
        Elector {
            leading,
            stop,
            task,
        }
    }

    /// Leaves the election, releasing the Lease if this replica holds it, so a successor
    /// takes over at once.
    pub async fn step_down(mut self) {
        self.stop.send_replace(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What this replica saw of the Lease last, and when it changed.
struct Observed {
    version: String,
    at: Instant,
}

async fn run(
    api: Api<Lease>,
    name: String,
    identity: String,
    leading: watch::Sender<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = StreamBackoff::new(
        watcher(api.clone(), config),
        super::watches::QuickBackoff::default(),
    )
    .boxed();
    let mut observed: Option<Observed> = None;
    let mut renewed_at: Option<Instant> = None;
    loop {
        // The renewal counts from when it was sent, not answered: the conservative end.
        let sent = Instant::now();
        let attempt = tokio::time::timeout(
            RETRY_PERIOD,
            try_acquire_or_renew(&api, &name, &identity, &mut observed),
        )
        .await;
        let now = Instant::now();
        let leads = match attempt {
            Ok(Ok(true)) => {
                renewed_at = Some(sent);
                true
            }
            Ok(Ok(false)) => false,
            Ok(Err(error)) => {
                tracing::warn!(lease = %name, %error, "leader election: lease not updated");
                renewed_at.is_some_and(|at| now.duration_since(at) < RENEW_DEADLINE)
            }
            Err(_) => renewed_at.is_some_and(|at| now.duration_since(at) < RENEW_DEADLINE),
        };
        if !leads {
            renewed_at = None;
        }
        if *leading.borrow() != leads {
            tracing::info!(lease = %name, %identity, leading = leads, "leader election");
            leading.send_replace(leads);
        }
        // Followers also wake on any change of the Lease (a release, a new holder), and at
        // the moment the holder's lease runs out, so a dead leader is replaced within the
        // lease duration rather than up to a retry period later.
        let expiry = observed
            .as_ref()
            .map(|o| o.at + LEASE_DURATION + Duration::from_millis(10))
            .filter(|at| !leads && *at > Instant::now());
        let next = expiry.map_or(RETRY_PERIOD, |at| {
            RETRY_PERIOD.min(at.duration_since(Instant::now()))
        });
        let wait = tokio::time::sleep(next);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = stop_asked(&mut stopped) => {
                    if *leading.borrow() {
                        // Flagged first: nothing leader-only starts while it is released.
                        leading.send_replace(false);
                        let bound = Duration::from_secs(2);
                        if tokio::time::timeout(bound, release(&api, &name, &identity)).await.is_err() {
                            tracing::warn!(lease = %name, "could not release the lease in time; it expires instead");
                        }
                    }
                    return;
                }
                // A (re)list counts as a change: a release may have come before the watch.
                change = changes.next(), if !leads => match change {
                    Some(Ok(
                        watcher::Event::Apply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitDone,
                    )) => break,
                    Some(_) => {}
                    None => break,
                },
            }
        }
    }
}

async fn stop_asked(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// One round: creates the Lease, renews it, or takes it over once it has expired. Whether
/// this replica holds it afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let seconds = LEASE_DURATION.as_secs() as i32;
    let Some(lease) = api.get_opt(name).await? else {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "tidegate" } },
            "spec": {
                "holderIdentity": identity, "leaseDurationSeconds": seconds,
                "acquireTime": now_micro(), "renewTime": now_micro(), "leaseTransitions": 0,
            },
        }))
        .expect("a valid Lease");
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let now = Instant::now();
    if observed.as_ref().is_none_or(|o| o.version != version) {
        *observed = Some(Observed {
            version: version.clone(),
            at: now,
        });
    }
    let spec = lease.spec.unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let duration =
        Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(1) as u64);
    let held_by_other = !holder.is_empty() && holder != identity;
    let since = observed.as_ref().map_or(now, |o| o.at);
    if held_by_other && now.duration_since(since) < duration {
        return Ok(false);
    }
    let mut body = json!({
        "metadata": { "resourceVersion": version },
        "spec": { "holderIdentity": identity, "leaseDurationSeconds": seconds, "renewTime": now_micro() },
    });
    if holder != identity {
        body["spec"]["acquireTime"] = json!(now_micro());
        body["spec"]["leaseTransitions"] = json!(spec.lease_transitions.unwrap_or(0) + 1);
        tracing::info!(lease = %name, previous = %holder, %identity, "taking over the lease");
    }
    // A merge patch carrying the resourceVersion is an optimistic update: 409 if it moved.
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Gives the Lease up: no holder, and a duration of 1 s for anyone who still waits.
async fn release(api: &Api<Lease>, name: &str, identity: &str) {
    let Ok(Some(lease)) = api.get_opt(name).await else {
        return;
    };
    let spec = lease.spec.unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(identity) {
        return;
    }
    let body = json!({
        "metadata": { "resourceVersion": lease.metadata.resource_version },
        "spec": { "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now_micro() },
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => tracing::info!(lease = %name, "leadership released"),
        Err(error) => tracing::warn!(lease = %name, %error, "could not release the lease"),
    }
}
