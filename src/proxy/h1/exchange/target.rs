//! Where an admitted request goes: the instance, the facts for its forwarding fields, and the
//! app's settings the exchange needs.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;

use super::Failure;
use crate::http1::body::CopyError;
use crate::http1::headers::ClientFacts;
use crate::instance::Instance;
use crate::proxy::{GatewayError, RequestRecord};
use crate::upstream::UpstreamError;

/// Where a request goes, as `forward` resolved it.
pub(super) struct Target<'a> {
    pub instance: &'a Arc<Instance>,
    pub client: ClientFacts<'a>,
    pub app: &'a str,
    pub hsts: Option<HeaderValue>,
    /// The app's limit on a quiet response body.
    pub idle_timeout: Option<Duration>,
}

impl Target<'_> {
    /// Logs why a response broke off after its head went to the client, and counts an
    /// instance that went quiet for the app's `idle_timeout`.
    pub fn broke_off(&self, error: CopyError, record: &RequestRecord) {
        if let CopyError::Stalled(stalled) = error {
            tracing::warn!(
                app = %self.app,
                instance = %self.instance.addr,
                "response cut off: the instance sent nothing for {:?} (idle_timeout)",
                stalled.0
            );
            if let Some(in_flight) = &record.app {
                in_flight.app().metrics.upstream_error("idle_timeout");
            }
        } else {
            tracing::debug!(app = %self.app, ?error, "response broke off");
        }
    }

    pub fn error(&self, error: UpstreamError) -> Failure {
        Failure::Gateway(GatewayError::from_upstream(
            self.app,
            self.instance.addr,
            error,
        ))
    }
}
