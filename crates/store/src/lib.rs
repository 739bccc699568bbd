//! Persistence for the all-in-one server: a durable embedded object store ([`RedbStore`], an
//! implementation of [`fission_core::ResourceStore`] on redb), the content-addressed
//! [`archive::ArchiveStore`] for large package archives, and the per-function
//! [`logs::LogStore`].
//!
//! Everything lives in one data directory, guarded by a lock file so two servers never share
//! it. A Kubernetes-backed `ResourceStore` is a separate implementation of the same trait.

pub mod archive;
pub mod cipher;
mod data_dir;
pub mod logs;
pub mod prune;
mod redb_store;

pub use data_dir::{DataDir, DataDirError};
pub use redb_store::RedbStore;
