//! The pooled keep-alive client that carries requests to instances.
//!
//! One client serves every app: connections are pooled per instance address, kept alive, and
//! closed after `upstream_idle_timeout` (the pool only expires idle connections when it has a
//! timer, so one is set). TCP_NODELAY is on: a proxy that waits for Nagle adds 40 ms stalls to
//! small responses.

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamSettings;

/// The client type; request bodies are the client's own bodies, streamed through.
pub type UpstreamClient = Client<HttpConnector, Incoming>;

/// Builds the upstream client from the gateway's settings.
pub fn build(settings: &UpstreamSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.idle_timeout)
        .timer(TokioTimer::new())
        .build(connector)
}
