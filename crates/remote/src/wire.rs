//! What travels between router and executor: Fission's paths and bodies, plus the lease id
//! fission-rs adds so a release names the exact lease it ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Lease a specialized instance: body = the Function object, answer = `text/plain` `ip:port`.
pub(crate) const GET_SERVICE: &str = "/v2/getServiceForFunction";
/// Release a lease (Fission: poolmgr's request slot).
pub(crate) const UNTAP: &str = "/v2/unTapService";
/// Keep leases alive (Fission: refresh idle timers), a JSON array of [`TapRequest`].
pub(crate) const TAP_SERVICES: &str = "/v2/tapServices";
/// Fission's single-service tap, kept as a no-op for compatibility.
pub(crate) const TAP_SERVICE: &str = "/v2/tapService";

/// The lease a `getServiceForFunction` answer holds (fission-rs).
pub(crate) const LEASE_HEADER: &str = "x-fission-lease-id";
/// The instance behind the answer (for logs and metrics).
pub(crate) const INSTANCE_HEADER: &str = "x-fission-instance-id";
/// `true` when the answer needed a specialization.
pub(crate) const COLD_HEADER: &str = "x-fission-cold-start";

/// A lease neither released nor tapped for this long is dropped by the executor: the router
/// that held it is gone (a router taps the leases it holds every [`TAP_INTERVAL`]).
pub const LEASE_TTL: Duration = Duration::from_secs(120);
/// How often a router renews the leases it holds.
pub const TAP_INTERVAL: Duration = Duration::from_secs(30);

/// The function a tap names (Fission sends the whole ObjectMeta; these fields are read).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FnMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

/// Fission's `tapServiceRequest`, with fission-rs' lease id and broken flag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TapRequest {
    #[serde(rename = "FnMetadata", default)]
    pub fn_metadata: FnMeta,
    #[serde(rename = "FnExecutorType", default)]
    pub fn_executor_type: String,
    #[serde(rename = "ServiceURL", default)]
    pub service_url: String,
    /// The lease to end (without it: any lease of this function on `ServiceURL`).
    #[serde(rename = "LeaseId", default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<u64>,
    /// The instance misbehaved (timed out, refused the connection): retire it.
    #[serde(rename = "Broken", default, skip_serializing_if = "std::ops::Not::not")]
    pub broken: bool,
}
