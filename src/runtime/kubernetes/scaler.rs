//! One task per revision that applies its replica count through the scale subresource: the
//! only writer of that count in this gateway, so concurrent starts and stops never reorder
//! their patches (the latest value wins; failures are retried every 500 ms).
//!
//! A gateway that leads (always, without `leader_election`) owns the count: one that the
//! Deployment watch shows lower than wanted is raised at once; one that is higher (a
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

pub async fn run(
    deployments: Api<Deployment>,
    name: String,
    mut desired: watch::Receiver<i32>,
    mut leading: watch::Receiver<bool>,
    shared: Arc<Shared>,
    adopt_after: Duration,
) {
    let mut changes = shared.changed.subscribe();
    loop {
        let replicas = *desired.borrow_and_update();
        let leads = *leading.borrow_and_update();
        loop {
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
                Err(error) if error.is_not_found() => return,
                Err(error) => {
                    tracing::warn!(deployment = %name, replicas, message = %error.message, "scale not applied; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        changed = desired.changed() => if changed.is_err() { return },
                        _ = leading.changed() => {}
                    }
                    if desired.has_changed().unwrap_or(false)
                        || leading.has_changed().unwrap_or(false)
                    {
                        break;
                    }
                }
            }
        }
        // Until the wanted count changes, or (leading) the Deployment's drifts from it.
        let mut higher_since: Option<Instant> = None;
        loop {
            if leads {
                let observed = shared.lock().replicas.get(&name).copied();
                match observed {
                    Some(count) if count < replicas => break,
                    Some(count) if count > replicas => {
                        let since = *higher_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= adopt_after {
                            tracing::info!(deployment = %name, observed = count, replicas, "setting back a replica count raised elsewhere");
                            break;
                        }
                    }
                    _ => higher_since = None,
                }
            }
            let set_back_at = higher_since.map(|since| since + adopt_after);
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() { return }
                    break;
                }
                changed = leading.changed() => {
                    // The election ended (a shutdown): only wanted counts matter now.
                    if changed.is_err() && desired.changed().await.is_err() { return }
                    break;
                }
                _ = changes.changed() => {}
                _ = sleep_until(set_back_at) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
