//! The resource model of fission-rs and the ports its components talk through.
//!
//! This crate owns the `fission.io/v1` object shapes (byte-compatible with Fission's CRDs,
//! including their odd key casing), the defaults Fission applies, validation with messages a
//! user can act on, the error classification shared by every server, and the traits that
//! decouple components: [`ResourceStore`] (the controller's persistence and the change feed the
//! router and executor consume), [`FunctionInstances`] (the router's in-process hand-off to
//! the executor), [`ArchiveStorage`] (package archives) and [`FunctionLogs`] (what instances
//! print).
//!
//! It deliberately does no I/O: no sockets, no files, no runtime.
#![deny(missing_docs)]

pub mod archive;
pub mod async_calls;
mod calls;
pub mod decode;
mod error;
mod executor;
mod logs;
mod meta;
mod names;
pub mod resources;
pub mod runtime;
pub mod stats;
mod store;
pub mod validation;

pub use archive::{ArchiveError, ArchiveInfo, ArchiveStorage};
pub use async_calls::{AsyncCallError, AsyncCalls, AsyncRequest};
pub use calls::{CallCounter, CallCounts};
pub use decode::{Decoded, decode_object};
pub use error::{ErrorBody, ErrorCode};
pub use executor::{ExecutorError, FunctionInstances, InstanceLease, InstanceReport, LeaseRelease};
pub use logs::{FunctionLogs, LineSink, LogError, LogRecord, LogRecordStream, OutputStream};
pub use meta::{API_VERSION, ObjectMeta, ObjectReference};
pub use names::{is_dns1123_label, is_dns1123_subdomain};
pub use resources::{AnyResource, Object, ResourceKind, Spec};
pub use stats::CallStats;
pub use store::{ResourceStore, StoreError, WatchEvent, WatchEventType, WatchStream};
pub use validation::ValidationError;

/// The namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";
