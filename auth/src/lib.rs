//! Who may send events to kinetic's brokers, with Knative's model and without Kubernetes:
//!
//! - [`issuer`]: kinetic as its own OIDC issuer (an ES256 key in the state directory), signing
//!   tokens for users (`kinetic token create`), for its sources posting to brokers, and for
//!   deliveries to destinations with an `audience`; its discovery document and JWKS.
//! - [`verify`]: JWTs of senders checked against trusted issuers (kinetic's own, and those of
//!   `--oidc-issuer ISSUER=JWKS`), cached by hash until they expire.
//! - [`policy`]: the pure decision of Knative's EventPolicy and `default-authorization-mode`.
//! - [`gate`]: the broker ingress's [`kinetic_broker::Admission`], tying the three together.
//!
//! It does not own the HTTP edge (the broker maps refusals to 401/403) or the resource types
//! (`kinetic_api::policy`). Start reading at [`gate::Gate`].

pub mod gate;
pub mod issuer;
pub mod policy;
pub mod verify;

pub use gate::Gate;
pub use issuer::Issuer;
pub use policy::Mode;
pub use verify::{IssuerSpec, Verifier};
