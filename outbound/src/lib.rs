//! Outbound delivery: how kinetic reaches an HTTP endpoint it does not own, with the same rules
//! for the dispatcher's deliveries (`kinetic-triggers`) and the sources' posts to their sinks
//! (`kinetic-sources`).
//!
//! - [`destination`]: a Destination to a URL (the broker ingress, a Service behind the gateway,
//!   or the URL as written).
//! - [`egress`]: the guard that keeps kinetic off internal addresses unless the process allows
//!   them, checked on every name resolution.
//! - [`sender`]: the HTTP clients (kinetic's own destinations directly, every other URL through
//!   the guard) and one delivery attempt.
//! - [`limit`]: adaptive concurrency per subscriber origin, learned from its answers' latency
//!   and overload signals.
//! - [`retry`]: which answers are retried, `Retry-After`, and the backoff schedules.
//! - [`signing`]: Standard Webhooks: the headers, the `whsec_` secrets, signing and verifying.
//!
//! Secrets are read by `kinetic_api::secret`, the one reader of every `SecretRef`.

pub mod destination;
pub mod egress;
pub mod limit;
pub mod retry;
pub mod sender;
pub mod signing;
