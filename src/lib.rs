//! tidegate: a scale-to-zero HTTP gateway.
//!
//! Requests arrive on the listeners (`server`), are routed by host (`routes`) to an app whose
//! live state (`apps`, `instance`) outlives config reloads, and are forwarded by the proxy
//! (`proxy`) to one of the app's instances, which a runtime backend (`runtime`) provides. The
//! config (`config`) is files operators edit; it reloads live. Metrics and health are on the
//! admin listener (`admin`, `metrics`). `gateway` wires it together behind
//! [`Gateway::start`].

// Unsafe code is denied everywhere but in the one place that must set the parent-death
// signal between fork and exec (runtime::process), which has no safe API.
#![deny(unsafe_code)]

pub mod activator;
pub mod admin;
pub mod apps;
pub mod autoscaler;
pub mod config;
pub mod demo_app;
mod gateway;
pub mod identity;
pub mod instance;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod tls;

pub use gateway::{Gateway, Handle, StartError};
