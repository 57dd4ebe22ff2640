//! What `/apps` (and later the management API) shows of an app: plain view types, published
//! by whoever manages the app's instances and read by the admin listener. A leaf module, so
//! the data plane, the control plane and the admin side can all name them.

use serde::Serialize;

/// What `/apps` shows of an app's instances; published by whoever manages them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppStatus {
    /// The latest revision created (it may not take traffic yet).
    pub revision: String,
    /// The latest revision that became ready: where `latest` traffic goes.
    pub latest_ready: Option<String>,
    pub desired: u32,
    pub ready: usize,
    pub starting: usize,
    pub draining: usize,
    pub panic: bool,
    pub last_error: Option<String>,
    pub instances: Vec<InstanceStatus>,
    /// Running revisions first, then the rest of the history, newest first.
    pub revisions: Vec<RevisionStatus>,
}

/// One revision in `/apps`.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionStatus {
    pub name: String,
    /// `active` (instances may run), `rolling-out` (the latest, not ready yet), `failed` (the
    /// latest, whose last start failed), `retired` (draining), or `inactive` (history only).
    pub state: &'static str,
    /// Share of the app's untagged traffic, in percent.
    pub percent: u32,
    pub tags: Vec<String>,
    pub desired: u32,
    pub ready: usize,
    pub starting: usize,
    pub draining: usize,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub last_error: Option<String>,
}

/// One instance in `/apps`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub revision: String,
    pub state: &'static str,
    pub addr: Option<String>,
    pub in_flight: u32,
    /// When the gateway started it (RFC 3339, UTC); `None` for fixed (static) instances.
    pub started_at: Option<String>,
}

/// One thing that happened to an app, for `GET /api/v1/apps/{name}/events`.
#[derive(Debug, Clone, Serialize)]
pub struct AppEvent {
    /// RFC 3339, UTC, seconds.
    pub time: String,
    /// `RevisionCreated`, `RevisionReady`, `RevisionFailed`, `Scaled`, `InstanceExited`,
    /// `ConfigRejected`.
    pub reason: &'static str,
    pub message: String,
}
