//! Autoscaling: the KPA decision (`kpa`), the per-app controller that acts on it
//! (`controller`), and the registry that keeps one controller per app (`registry`).

pub mod controller;
mod history;
pub mod kpa;
mod lifecycle;
mod planner;
pub mod registry;
mod unit;

pub use registry::AppRegistry;
