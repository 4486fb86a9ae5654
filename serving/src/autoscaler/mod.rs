//! The KPA autoscaler: Knative's Pod Autoscaler semantics as pure functions of their inputs and
//! `now`. It owns the `config-autoscaler` settings and the `autoscaling.knative.dev/*` annotations
//! ([`config`], [`revision`]).
//!
//! Start reading at [`revision_config`], which resolves a revision's effective settings.

pub mod config;
pub mod duration;
pub mod revision;

pub use config::{Config, Defaults, Metric, revision_config};
