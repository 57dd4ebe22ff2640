//! One task per revision that applies its replica count through the scale subresource: the
//! only writer of that count in this gateway, so concurrent starts and stops never reorder
//! their patches (the latest value wins; failures are retried every 500 ms).
//!
//! A gateway that leads (always, without `leader_election`) owns the count: one that the
//! Deployment watch shows lower than wanted is raised again after 2 s (its own patch shows
//! a moment later); one that is higher (a
//! follower woke the revision from zero before this gateway's autoscaler saw the load, or
//! someone scaled it by hand) is kept for `adopt_after` (the app's `scale_to_zero_grace`)
//! and then set back, by which time the followers' load has reached the autoscaler if it is
//! real. A follower only wakes a revision from zero, never lowers a count.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cluster::{set_replicas, wake};
use super::watches::Shared;

/// How long the Deployment may show fewer replicas than this gateway set before it sets
/// them again: the watch shows its own patch a moment later.
const RAISE_AFTER: Duration = Duration::from_secs(2);

pub async fn run(
    deployments: Api<Deployment>,
    name: String,
    mut desired: watch::Receiver<i32>,
    mut leading: watch::Receiver<bool>,
    shared: Arc<Shared>,
    (adopt_after, mut apply): (Duration, bool),
) {
    let mut changes = shared.changed.subscribe();
    // Closed when the election ends (a shutdown): from then on it never fires again.
    let mut leading_open = true;
    loop {
        let replicas = *desired.borrow_and_update();
        let leads = *leading.borrow_and_update();
        // An adopted revision (a new leader's) is not set at once: it drifts first.
        while std::mem::replace(&mut apply, true) {
            let applied = if leads {
                set_replicas(&deployments, &name, replicas).await
            } else if replicas > 0 {
                wake(&deployments, &name).await
            } else {
                Ok(())
            };
            match applied {
                Ok(()) => {
                    tracing::debug!(deployment = %name, replicas, leads, "scaled");
                    break;
                }
                Err(error) if error.is_not_found() => {
                    // Deleted (its app went): the next start makes it and a scaler again.
                    shared.lock().revisions.remove(&name);
                    return;
                }
                Err(error) => {
                    tracing::warn!(deployment = %name, replicas, message = %error.message, "scale not applied; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        changed = desired.changed() => if changed.is_err() { return },
                        open = leadership_changed(&mut leading, leading_open) => leading_open = open,
                    }
                    if desired.has_changed().unwrap_or(false)
                        || (leading_open && leading.has_changed().unwrap_or(false))
                    {
                        break;
                    }
                }
            }
        }
        // Until the wanted count changes, or (leading) the Deployment's drifts from it.
        let mut drifted_since: Option<(Instant, Duration)> = None;
        loop {
            if leads {
                let observed = shared.lock().replicas.get(&name).copied();
                let grace = match observed {
                    Some(count) if count < replicas => Some(RAISE_AFTER),
                    Some(count) if count > replicas => Some(adopt_after),
                    _ => None,
                };
                match grace {
                    Some(grace) => {
                        let (since, _) = *drifted_since.get_or_insert((Instant::now(), grace));
                        if since.elapsed() >= grace {
                            tracing::info!(deployment = %name, ?observed, replicas, "setting the replica count again");
                            break;
                        }
                    }
                    None => drifted_since = None,
                }
            }
            let again_at = drifted_since.map(|(since, grace)| since + grace);
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() { return }
                    break;
                }
                open = leadership_changed(&mut leading, leading_open) => {
                    leading_open = open;
                    break;
                }
                _ = changes.changed() => {}
                _ = sleep_until(again_at) => {}
            }
        }
    }
}

/// Resolves when leadership changes: with `true` while the election runs, `false` once it
/// has ended; never again after that.
async fn leadership_changed(leading: &mut watch::Receiver<bool>, open: bool) -> bool {
    if !open {
        return std::future::pending().await;
    }
    leading.changed().await.is_ok()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
