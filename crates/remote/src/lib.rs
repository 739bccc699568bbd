//! The network implementations of `fission-core`'s ports, for a server split into roles
//! (`fission server --role controller|router|executor`):
//!
//! * [`ExecutorApi`] serves an executor's [`FunctionInstances`](fission_core::FunctionInstances)
//!   as Fission's executor API (`POST /v2/getServiceForFunction`, `/v2/unTapService`,
//!   `/v2/tapServices`), holding each lease until the router releases it.
//! * [`RemoteInstances`] is the router's side: `FunctionInstances` over that API, serving a
//!   function from the last instance it was given while the executor is unreachable.
//! * [`RemoteArchives`] reads package archives from the controller's storagesvc endpoint
//!   (`GET /v1/archive?id=`), verified against their sha256 id.
//!
//! * [`ClusterReports`] and [`Reporter`]: routers' call counts and executors' instance counts
//!   sent to the controller, which sums them (canary rollouts, `fission fn list`).
//!
//! The all-in-one server uses none of this: its router calls the executor in-process.
#![deny(missing_docs)]

mod archives;
mod client;
mod reports;
mod server;
mod wire;

pub use archives::RemoteArchives;
pub use client::{RemoteInstances, RemoteInstancesError};
pub use reports::{ClusterReports, REPORT_INTERVAL, REPORT_TTL, Reporter, ReporterError};
pub use server::ExecutorApi;
pub use wire::{LEASE_TTL, TAP_INTERVAL};
