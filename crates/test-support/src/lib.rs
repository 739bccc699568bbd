//! Shared test support for fission-rs. Used only as a dev-dependency.
//!
//! - [`MemoryStore`]: an in-memory [`ResourceStore`](fission_core::ResourceStore) that passes
//!   the same [`contract`] suite as the durable store.
//! - [`contract`]: every documented behaviour of `ResourceStore`, as cases any backend runs via
//!   [`store_contract_tests!`].
//! - [`eventually`] / [`eventually_blocking`]: poll until a condition holds, or panic naming it.
//! - [`require`]: a missing prerequisite (a binary, root, a working sandbox) fails the test when
//!   `CI` is set and prints a loud `SKIPPED:` line otherwise, so CI cannot go green by testing
//!   nothing.
//! - [`zip_of`]: a zip archive built in memory, for the tests of what unpacks archives.

pub mod contract;
mod eventually;
mod memory_store;
mod prerequisites;
mod zips;

pub use eventually::{Settled, eventually, eventually_blocking};
pub use memory_store::{FeedCut, MemoryStore};
pub use prerequisites::{
    binary_on_path, ci_enforced, require, require_runtimes, running_as_root, runtime_dependencies,
};
pub use zips::zip_of;
