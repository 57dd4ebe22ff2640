//! The one task that deletes the objects of apps no longer configured (and takes over the
//! replica counts of Deployments this gateway does not run yet).

use std::sync::Arc;
use std::time::Duration;

use super::{revision_entry, Connection};

/// How often the leader of several replicas sweeps again (a follower's deletion may come
/// while it is not leading yet).
const SWEEP_AGAIN: Duration = Duration::from_secs(60);

/// The one task that deletes the objects of apps no longer configured, always with the
/// latest set of apps (a newer set supersedes one still waiting), retrying while the API
/// server is away; with several replicas only while leading. It scales to zero the
/// Deployments a previous gateway left running (a single gateway), or adopts them (a new
/// leader: set back after the default grace unless this gateway's autoscaler wants them).
pub(super) async fn sweeper(connection: Arc<Connection>) {
    let mut sets = connection.sweeps.subscribe();
    let cluster = loop {
        match connection.get().await {
            Ok(cluster) => break cluster,
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    };
    let replica = cluster.is_replica();
    let mut leading = cluster.leading.clone();
    loop {
        if leading.wait_for(|leads| *leads).await.is_err() {
            return;
        }
        let apps = sets.borrow_and_update().clone().unwrap_or_default();
        match cluster.sweep(&apps).await {
            Ok(sweep) => {
                if !sweep.deleted.is_empty() {
                    tracing::info!(deleted = ?sweep.deleted, "deleted the objects of apps that no longer exist");
                }
                let mut state = cluster.shared.lock();
                for (name, port) in sweep.running {
                    if state.revisions.contains_key(&name) {
                        continue;
                    }
                    let grace = if replica {
                        crate::config::ScaleSpec::default().scale_to_zero_grace
                    } else {
                        Duration::ZERO
                    };
                    tracing::info!(deployment = %name, "taking over the replica count of a revision this gateway has not run");
                    revision_entry(&cluster, &mut state, &name, (port, grace), !replica);
                }
            }
            Err(error) => {
                tracing::warn!(message = %error.message, "could not sweep old revisions; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        }
        let again = async {
            if replica {
                tokio::time::sleep(SWEEP_AGAIN).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            changed = sets.changed() => if changed.is_err() { return },
            _ = again => {}
            changed = leading.changed() => if changed.is_err() { return },
        }
    }
}
