//! fission-rs on a Kubernetes cluster's state: a [`fission_core::ResourceStore`] backed by the
//! Kubernetes API ([`KubeStore`]), and the `fission.io/v1` CustomResourceDefinitions generated
//! from the core types ([`crd`]).

pub mod crd;
mod store;

pub use store::{KubeStore, KubeStoreError, SYSTEM_NAMESPACES, WRITE_ANNOTATION};
