//! The KPA autoscaler: Knative's Pod Autoscaler semantics as pure functions of their inputs and
//! `now`. It owns the `config-autoscaler` settings and the `autoscaling.knative.dev/*` annotations
//! ([`config`], [`revision`]) and the per-second metric windows ([`window`]).
//!
//! Start reading at [`revision_config`], which resolves a revision's effective settings, then
//! [`MetricWindow`], which averages a revision's traffic over them.

pub mod config;
pub mod duration;
pub mod revision;
pub mod window;

pub use config::{Config, Defaults, Metric, revision_config};
pub use window::MetricWindow;
