//! tidegate: a scale-to-zero HTTP gateway.
//!
//! Requests arrive on the listeners (`server`, with TLS from `tls`), are routed by host
//! (`routes`) to an app whose live state (`apps`, `instance`) outlives config reloads, wait in
//! the app's `activator` for a slot on an instance, and are forwarded by the proxy (`proxy`,
//! WebSockets included). Instances come from a runtime backend (`runtime`); the per-app
//! controller (`autoscaler`) decides how many and starts and stops them; `identity` tells
//! instances apart for `project` visibility. The config (`config`) is files operators edit;
//! it reloads live. Jobs (`jobs`) run to completion through the same backends. Metrics,
//! health, the management API (`api`, with its CLI in `cli`) and the web console (`console`,
//! charts from `stats`) are on the admin listener (`admin`, `metrics`); each request's line
//! goes to the `access_log`. Several gateways on one cluster share their load (`replicas`).
//! `gateway` wires it together behind [`Gateway::start`].

// Unsafe code is denied everywhere but in the one place that must set the parent-death
// signal between fork and exec (runtime::process), which has no safe API.
#![deny(unsafe_code)]

pub mod access_log;
pub mod activator;
pub mod admin;
pub mod api;
pub mod apps;
pub mod ascii;
pub mod autoscaler;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo_app;
mod gateway;
pub mod http1;
pub mod identity;
pub mod instance;
pub mod jobs;
pub mod metrics;
pub mod proxy;
pub mod random;
#[cfg(feature = "kubernetes")]
pub mod replicas;
pub mod revision;
pub mod routes;
pub mod runtime;
pub mod secret_file;
pub mod server;
pub mod stall;
pub mod stats;
pub mod status;
pub mod tls;
pub mod upstream;

pub use gateway::{Gateway, GatewayBuilder, Handle, StartError};
