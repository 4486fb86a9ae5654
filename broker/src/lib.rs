//! The broker's ingress: `POST /{namespace}/{broker}` accepts CloudEvents (HTTP binding: binary,
//! structured and batch modes), applies the acceptance rules (attribute checks, reply-loop TTL,
//! arrival time, size limit) and answers 202 only once the event is committed to the store's log.
//!
//! Concurrent requests are committed together (`kinetic_log::Committer`, group commit), so a
//! transaction carries many events. This crate does not deliver: the dispatcher (`kinetic-triggers`)
//! reads the log. Start reading at [`ingress::router`].

pub mod admission;
pub mod directory;
pub mod ingress;
pub mod metrics;

pub use admission::{Admission, Denied};
pub use directory::BrokerDirectory;
pub use ingress::{Committers, IngressConfig, router};
