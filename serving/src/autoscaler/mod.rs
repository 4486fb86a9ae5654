//! The KPA autoscaler: Knative's Pod Autoscaler semantics as pure functions of their inputs and
//! `now`. It owns the `config-autoscaler` settings and the `autoscaling.knative.dev/*` annotations
//! ([`config`], [`revision`]), the per-second metric windows ([`window`]) and the decision of how
//! many instances a revision runs and whether the activator is in its path ([`kpa`], built on the
//! per-tick autoscaler in [`scaler`] and the reconciler's scale-to-zero timing in `reconciler`).
//! It does no I/O and reads no clock: the loop that records samples, ticks every [`TICK`] and
//! tells the runtime and router what to do lives elsewhere.
//!
//! Start reading at [`decide`]; its module doc maps each step to the Knative code it follows.

pub mod config;
pub mod duration;
pub mod kpa;
mod reconciler;
pub mod revision;
pub mod scaler;
pub mod window;

#[cfg(test)]
mod scenarios;

pub use config::{Config, Defaults, Metric, revision_config};
pub use kpa::{Activity, Decision, Observation, State, TICK, activator_in_path, decide};
pub use scaler::{ScaleResult, Scaler};
pub use window::MetricWindow;
