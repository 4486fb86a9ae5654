//! Serving: Knative's `serving.knative.dev/v1` Service run as revisions that scale from zero and back.
//!
//! # Layout
//! - [`autoscaler`]: the KPA, a pure `decide` over metric windows and Knative's `config-autoscaler`
//!   settings, plus per-revision annotations.
//! - [`runtime`]: the `Runtime` interface and its local process implementation, which starts, probes,
//!   drains, stops and replaces a revision's instances.
//! - [`gateway`] (Host routing, [`route`] for the traffic split) → [`activator`] (holds requests
//!   until an instance has capacity, picks the instance) → [`queue_proxy`] pieces (breaker, stats,
//!   timeout, drain) → the instance. [`refusal`] turns every failure on that path into an answer.
//! - [`controller`]: reads Services and [`revision`]s from the store, keeps the gateway's routes and
//!   runs one scaling loop per served revision. Start reading at [`Serving`].
//!
//! This crate knows nothing about events: a trigger reaches a function through the gateway like any
//! other HTTP client.

pub mod activator;
pub mod autoscaler;
pub mod controller;
pub mod datapath;
pub mod gateway;
pub mod metrics;
pub mod queue_proxy;
pub mod refusal;
pub mod revision;
pub mod route;
pub mod runtime;
pub mod split;

pub use controller::{Serving, ServingConfig};
pub use gateway::Gateway;
