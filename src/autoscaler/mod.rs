//! Autoscaling: the KPA decision (`kpa`) and the per-app controller that acts on it
//! (`controller`).

pub mod controller;
mod history;
pub mod kpa;
mod lifecycle;
mod unit;
