//! The `static` runtime: apps served by upstreams that run on their own.
//!
//! The gateway routes to the configured addresses and never starts, stops or scales them; an
//! edit to the list takes effect on reload like any other config change.

use std::time::Duration;

use async_trait::async_trait;

use super::{Placement, RuntimeBackend, RuntimeError, StartRequest, StartedInstance};
use crate::config::{AppSpec, RuntimeSpec};

/// Routes to a fixed list of addresses from `[static] upstreams`.
#[derive(Debug, Default)]
pub struct StaticBackend;

#[async_trait]
impl RuntimeBackend for StaticBackend {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn placement(&self, app: &AppSpec) -> Placement {
        match &app.runtime {
            RuntimeSpec::Static { upstreams } => Placement::Fixed(upstreams.clone()),
            _ => Placement::Fixed(Vec::new()),
        }
    }

    async fn start(&self, _request: StartRequest) -> Result<StartedInstance, RuntimeError> {
        Err(RuntimeError::NotOnDemand { backend: "static" })
    }

    async fn stop(&self, _instance_id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        Err(RuntimeError::NotOnDemand { backend: "static" })
    }
}
