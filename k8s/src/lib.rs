//! kinetic on Kubernetes:
//!
//! - [`crds`]: the CustomResourceDefinitions of every kind kinetic implements, in Knative's
//!   groups and versions, with their schemas generated from the Rust types kinetic reads them
//!   with (`kinetic crds` prints them; `deploy/base/crds.yaml` holds them);
//! - [`controller`]: `kinetic controller`, what applying a resource does beside storing it, for
//!   resources applied to the Kubernetes API;
//! - [`webhook`]: `kinetic webhook`, validating admission with kinetic's own checks;
//! - [`feed`]: the resources of the API server as the snapshots every component reads.

pub mod controller;
pub mod crds;
pub mod feed;
pub mod webhook;

pub use kube::Client;

/// A client of the Kubernetes API: in a pod, its service account; elsewhere, `KUBECONFIG` or
/// `~/.kube/config`.
pub async fn client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}
