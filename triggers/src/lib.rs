//! Triggers: which events a trigger selects and how they reach its subscriber.
//!
//! - [`filter`]: Knative's filter dialects (`filter.attributes`; `filters`: exact, prefix, suffix,
//!   all, any, not, and `cesql` through the `kinetic-cesql` crate), compiled once per trigger,
//!   evaluated per event.
//! - [`policy`]: the effective delivery spec of a trigger and when its retries are due.
//! - [`dispatcher`]: at-least-once delivery; start reading there. It runs [`cursor`] workers (first
//!   attempts straight from the store's log), [`kafka`] consumers (first attempts from a Kafka-class
//!   broker's topic) and the [`retry`] worker (retries, ordered lanes, dead-letter sinks), using
//!   [`dead_letter`] for the error extensions and [`disable`] (a `410 Gone` disables the trigger
//!   until it is applied again).
//! - How a subscriber is reached (destinations, the egress guard, the HTTP clients, which answers
//!   are retried and the backoff schedules, Standard Webhooks signatures) is `kinetic-outbound`,
//!   which the sources share.
//!
//! This crate does not know what a revision is: subscribers are URLs.
pub mod attempt;
pub mod cursor;
pub mod dead_letter;
pub mod disable;
pub mod dispatcher;
pub mod filter;
pub mod kafka;
pub mod lifecycle;
pub mod log_cache;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod retry;

pub use dispatcher::{Config, Dispatcher};
pub use filter::Filter;
