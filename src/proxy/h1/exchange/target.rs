//! Where an admitted request goes: the instance, the facts for its forwarding fields, and the
//! app's settings the exchange needs; and the instance connection it is sent on.

use std::time::Duration;

use http::header::HeaderValue;

use super::super::body::CopyError;
use super::super::pool::Connection;
use super::Failure;
use crate::instance::Instance;
use crate::proxy::headers::ClientFacts;
use crate::proxy::upstream::UpstreamError;
use crate::proxy::{GatewayError, Proxy, RequestRecord};

/// Where a request goes, as `forward` resolved it.
pub(super) struct Target<'a> {
    pub instance: &'a Instance,
    pub client: ClientFacts<'a>,
    pub app: &'a str,
    pub hsts: Option<HeaderValue>,
    /// The app's limit on a quiet response body.
    pub idle_timeout: Option<Duration>,
}

impl Target<'_> {
    /// A connection to the instance: the most recently used idle one if `pooled` allows and
    /// there is one (then `true`), else a new one.
    pub async fn connection(
        &self,
        proxy: &Proxy,
        pooled: bool,
    ) -> Result<(Box<Connection>, bool), Failure> {
        let idle = pooled
            .then(|| {
                let max_idle = proxy.upstream.idle_timeout();
                self.instance
                    .h1_idle
                    .take(max_idle, Connection::is_reusable)
            })
            .flatten();
        match idle {
            Some(connection) => Ok((connection, true)),
            None => {
                let stream = proxy.upstream.connect_stream(self.instance).await;
                Ok((
                    Connection::new(stream.map_err(|error| self.error(error))?),
                    false,
                ))
            }
        }
    }

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
