//! Serving: Knative's `serving.knative.dev/v1` Service run as revisions that scale from zero and back.
//!
//! # Layout
//! - [`autoscaler`]: the KPA, a pure `decide` over metric windows and Knative's `config-autoscaler`
//!   settings, plus per-revision annotations.
//! - [`runtime`]: the `Runtime` interface and its local process implementation, which starts, probes,
//!   drains, stops and replaces a revision's instances.
//!
//! This crate knows nothing about events: a trigger reaches a function through the gateway like any
//! other HTTP client.

pub mod autoscaler;
pub mod runtime;
