//! Resource types of kinetic, with Knative's field names: `eventing.knative.dev/v1` Broker and
//! Trigger, their `DeliverySpec`, `Destination` and filter dialects, and `serving.knative.dev/v1`
//! Service and Revision, and the source kinds (`sources.kinetic.dev/v1alpha1` S3Source and
//! WebhookSource, Knative's `sources.knative.dev/v1` PingSource).
//!
//! This crate parses multi-document YAML ([`parse_documents`]), fills in defaults and validates, and
//! every [`Error`] names the file, document, field path and a hint. It does no I/O, but for
//! reading the secrets a resource names ([`secret`], the one place they are read). Start reading at
//! [`resource`]; the kinds live in [`eventing`], shared metadata in [`meta`].

pub mod cloudevent;
pub mod config;
pub mod core;
pub mod duration;
pub mod error;
pub mod event;
pub mod eventing;
pub mod kind;
pub mod meta;
pub mod policy;
pub mod quantity;
pub mod reconcile;
pub mod resource;
pub mod secret;
pub mod serving;
pub mod sources;

pub use error::{Error, Result};
pub use eventing::{Broker, DeliverySpec, Trigger};
pub use kind::Kind;
pub use meta::{Destination, KReference, ObjectMeta};
pub use resource::{Resource, ResourceKey, parse_documents};
pub use serving::{Revision, Service};
