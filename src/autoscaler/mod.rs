//! Autoscaling: the KPA decision (`kpa`), the per-app controller that acts on it
//! (`controller`), the registry that keeps one controller per app (`registry`), and the
//! apps' share of `max_instances` (`budget`).

pub mod budget;
pub mod controller;
mod history;
pub mod kpa;
mod lifecycle;
mod planner;
pub mod registry;
mod unit;

pub use budget::InstanceBudget;
pub use registry::AppRegistry;
