//! kinetic on Kubernetes:
//!
//! - [`crds`]: the CustomResourceDefinitions of every kind kinetic implements, in Knative's
//!   groups and versions, with their schemas generated from the Rust types kinetic reads them
//!   with (`kinetic crds` prints them; `deploy/base/crds.yaml` holds them);
//! - [`feed`]: the resources of the API server as the snapshots every component reads.

pub mod crds;
pub mod feed;
