//! Which executors are alive: each holds a `coordination.k8s.io/v1` Lease named after its id
//! in the pods' namespace and renews it every [`RENEW_EVERY`]. An executor whose Lease is
//! missing, or has not been renewed for [`LEASE_DURATION`], is gone, and the pods it claimed
//! may be adopted (see `adopt.rs`).
//!
//! "Not renewed" is judged as Kubernetes' leader election judges it: by this executor's own
//! clock, from when it first saw the Lease's current resourceVersion, so clocks of different
//! machines never have to agree. Only a Lease whose `renewTime` is older than its duration
//! plus [`MAX_CLOCK_SKEW`] is taken as gone at first sight (an executor stopped long ago).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio::time::Instant;

use crate::api_code;

/// How long an executor's Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often an executor renews its Lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How far apart two machines' clocks may be before a stale `renewTime` misleads.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Label on executors' Leases (so they can be listed).
pub const LABEL_LEASE: &str = "fission-rs.io/executor-lease";

/// The Lease name of executor `id`.
pub fn lease_name(id: &str) -> String {
    let name: String = format!("fission-rs-executor-{id}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(253)
        .collect();
    name.trim_end_matches('-').to_owned()
}

/// What one look at an executor's Lease says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Renewed while we watched: its pods are its own.
    Alive,
    /// No Lease, or not renewed for its duration: its pods may be adopted.
    Gone,
    /// Not decided yet: look again after the given instant.
    Unknown(Instant),
}

/// A Lease as the liveness check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder (an executor id).
    pub holder: String,
    /// Changes on every renewal.
    pub resource_version: String,
    /// When the holder last renewed it, by its clock.
    pub renew_time: Option<DateTime<Utc>>,
    /// How long it stays valid without renewal.
    pub duration: Duration,
}

impl LeaseView {
    /// The parts of `lease` the check needs; `None` for a Lease without a holder.
    pub fn of(lease: &Lease) -> Option<Self> {
        let spec = lease.spec.as_ref()?;
        let holder = spec.holder_identity.clone()?;
        // MicroTime serializes as RFC 3339; read it back without a second time library.
        let renew_time = spec
            .renew_time
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc));
        Some(Self {
            holder,
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
            renew_time,
            duration: Duration::from_secs(
                spec.lease_duration_seconds
                    .map_or(LEASE_DURATION.as_secs(), |s| s.max(1) as u64),
            ),
        })
    }
}

/// When a Lease's resourceVersion was first seen, by this executor's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    resource_version: String,
    since: Instant,
}

/// Judge one owner from its Lease (`None`: there is none) and what was seen of it before;
/// returns the verdict and what to remember for next time.
pub fn judge(
    lease: Option<&LeaseView>,
    seen: Option<&Seen>,
    now: Instant,
    wall: DateTime<Utc>,
) -> (Owner, Option<Seen>) {
    let Some(lease) = lease else {
        return (Owner::Gone, None);
    };
    let stale_at_first_sight = lease.renew_time.is_some_and(|t| {
        let limit = chrono::Duration::from_std(lease.duration + MAX_CLOCK_SKEW)
            .unwrap_or(chrono::Duration::MAX);
        t + limit < wall
    });
    if stale_at_first_sight {
        return (Owner::Gone, None);
    }
    match seen {
        Some(s) if s.resource_version == lease.resource_version => {
            if now.saturating_duration_since(s.since) >= lease.duration {
                (Owner::Gone, Some(s.clone()))
            } else {
                (Owner::Unknown(s.since + lease.duration), Some(s.clone()))
            }
        }
        // Renewed since we last looked.
        Some(_) => (
            Owner::Alive,
            Some(Seen {
                resource_version: lease.resource_version.clone(),
                since: now,
            }),
        ),
        None => (
            Owner::Unknown(now + lease.duration),
            Some(Seen {
                resource_version: lease.resource_version.clone(),
                since: now,
            }),
        ),
    }
}

/// This executor's Lease and its view of the others'.
pub struct Leases {
    api: Api<Lease>,
    me: String,
    seen: std::sync::Mutex<HashMap<String, Seen>>,
}

impl Leases {
    pub fn new(api: Api<Lease>, me: String) -> Self {
        Self {
            api,
            me,
            seen: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn now_micro() -> String {
        Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Create (or take back) this executor's Lease.
    pub async fn hold(&self) -> Result<(), kube::Error> {
        let name = lease_name(&self.me);
        let now = Self::now_micro();
        let lease: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "labels": {LABEL_LEASE: "true"}},
            "spec": {
                "holderIdentity": self.me,
                "leaseDurationSeconds": LEASE_DURATION.as_secs(),
                "acquireTime": now,
                "renewTime": now,
            },
        }))
        .map_err(kube::Error::SerdeError)?;
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => self.renew().await,
            Err(e) => Err(e),
        }
    }

    /// Renew this executor's Lease; re-create it if someone deleted it.
    pub async fn renew(&self) -> Result<(), kube::Error> {
        let name = lease_name(&self.me);
        let patch = json!({"spec": {"renewTime": Self::now_micro()}});
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => {
                // Another executor took this one for gone (a long stall) and may have adopted
                // its pods: say so, and hold the Lease again.
                tracing::warn!(lease = %name, "this executor's lease had been deleted; re-creating it");
                Box::pin(self.hold()).await
            }
            Err(e) => Err(e),
        }
    }

    /// Renew every [`RENEW_EVERY`] until the process ends.
    pub async fn renew_forever(&self) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            if let Err(error) = self.renew().await {
                tracing::warn!(%error, "cannot renew this executor's lease");
            }
        }
    }

    /// Give this executor's Lease up (it stopped, its pods deleted).
    pub async fn release(&self) {
        match self
            .api
            .delete(&lease_name(&self.me), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(404) => {}
            Err(error) => tracing::warn!(%error, "cannot delete this executor's lease"),
        }
    }

    /// Judge every executor other than this one that holds a Lease (one without is gone).
    pub async fn owners(&self) -> Result<HashMap<String, (Owner, Option<LeaseView>)>, kube::Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{LABEL_LEASE}=true")))
            .await?;
        let views: HashMap<String, LeaseView> = list
            .items
            .iter()
            .filter_map(LeaseView::of)
            .filter(|v| v.holder != self.me)
            .map(|v| (v.holder.clone(), v))
            .collect();
        let now = Instant::now();
        let wall = Utc::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|holder, _| views.contains_key(holder));
        let mut out = HashMap::new();
        for (holder, view) in views {
            let (owner, next) = judge(Some(&view), seen.get(&holder), now, wall);
            match next {
                Some(s) => {
                    seen.insert(holder.clone(), s);
                }
                None => {
                    seen.remove(&holder);
                }
            }
            out.insert(holder, (owner, Some(view)));
        }
        Ok(out)
    }

    /// Delete the Lease of an executor found gone (unless it was renewed meanwhile).
    pub async fn forget(&self, view: &LeaseView) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(view.resource_version.clone()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&lease_name(&view.holder), &dp).await {
            Ok(_) => {
                tracing::info!(executor = %view.holder, "deleted the lease of a gone executor");
            }
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
            Err(error) => tracing::debug!(%error, "cannot delete a gone executor's lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(rv: &str, renewed: DateTime<Utc>) -> LeaseView {
        LeaseView {
            holder: "a".into(),
            resource_version: rv.into(),
            renew_time: Some(renewed),
            duration: LEASE_DURATION,
        }
    }

    #[test]
    fn an_executor_without_a_lease_is_gone() {
        let (owner, _) = judge(None, None, Instant::now(), Utc::now());
        assert_eq!(owner, Owner::Gone);
    }

    #[test]
    fn a_fresh_lease_is_undecided_until_it_is_renewed_or_its_duration_passes() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let lease = view("5", wall);
        let (owner, seen) = judge(Some(&lease), None, t0, wall);
        assert_eq!(owner, Owner::Unknown(t0 + LEASE_DURATION));
        // Same resourceVersion a little later: still undecided.
        let (owner, seen) = judge(Some(&lease), seen.as_ref(), t0 + RENEW_EVERY, wall);
        assert!(matches!(owner, Owner::Unknown(_)));
        // Renewed: alive.
        let renewed = view("6", wall);
        let (owner, _) = judge(Some(&renewed), seen.as_ref(), t0 + RENEW_EVERY, wall);
        assert_eq!(owner, Owner::Alive);
        // Not renewed for the lease's duration, by our clock: gone.
        let (owner, _) = judge(Some(&lease), seen.as_ref(), t0 + LEASE_DURATION, wall);
        assert_eq!(owner, Owner::Gone);
    }

    #[test]
    fn a_lease_renewed_long_ago_is_gone_at_first_sight_but_a_skewed_clock_is_tolerated() {
        let wall = Utc::now();
        let long_ago = wall - chrono::Duration::minutes(10);
        let (owner, _) = judge(Some(&view("5", long_ago)), None, Instant::now(), wall);
        assert_eq!(owner, Owner::Gone);
        // A holder whose clock runs 20 s behind ours is not taken for gone.
        let behind = wall - chrono::Duration::seconds(20);
        let (owner, _) = judge(Some(&view("5", behind)), None, Instant::now(), wall);
        assert!(matches!(owner, Owner::Unknown(_)));
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(lease_name("123-456"), "fission-rs-executor-123-456");
        assert_eq!(lease_name("Pod_1"), "fission-rs-executor-pod-1");
    }
}
