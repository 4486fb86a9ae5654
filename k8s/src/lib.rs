//! kinetic on Kubernetes. Today: the CustomResourceDefinitions of every kind kinetic implements
//! ([`crds`]), in Knative's groups and versions, with their schemas generated from the Rust types
//! kinetic reads them with (`kinetic crds` prints them; `deploy/base/crds.yaml` holds them).

pub mod crds;
