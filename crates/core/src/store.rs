use std::pin::Pin;

use futures::Stream;

use crate::ErrorCode;
use crate::resources::{AnyResource, ResourceKind};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted (the object is its last state).
    Deleted,
}

/// One change in the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// What happened.
    pub event_type: WatchEventType,
    /// The object after the change (before it, for deletions).
    pub object: AnyResource,
    /// The store revision of this change; strictly increasing along the feed.
    pub revision: u64,
}

/// Change feed after a snapshot.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("{kind} '{namespace}/{name}' not found")]
    NotFound {
        /// Kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Create of an existing name.
    #[error("{kind} '{namespace}/{name}' already exists")]
    AlreadyExists {
        /// Kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Update with a resourceVersion that is no longer current.
    #[error(
        "{kind} '{namespace}/{name}' was modified since you read it (you sent resourceVersion {sent}, \
         current is {current}): get it again and retry"
    )]
    Conflict {
        /// Kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// resourceVersion the caller sent.
        sent: String,
        /// resourceVersion stored.
        current: String,
    },
    /// A watcher fell too far behind; it must list again.
    #[error("change feed consumer fell behind by {0} events; relist")]
    Lagged(u64),
    /// The storage backend failed.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

impl StoreError {
    /// Error class.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => ErrorCode::NameExists,
            Self::Lagged(_) | Self::Backend(_) => ErrorCode::Internal,
        }
    }
}

/// Durable object storage with optimistic concurrency and a change feed.
///
/// Implementations assign `uid`, `creationTimestamp`, `resourceVersion` (one store-wide counter,
/// strictly increasing) and `generation` (bumped when `spec` changes). A write is durable when the
/// call returns.
#[async_trait::async_trait]
pub trait ResourceStore: Send + Sync + 'static {
    /// Create; fails with `AlreadyExists` if the name is taken.
    async fn create(&self, obj: AnyResource) -> Result<AnyResource, StoreError>;
    /// Replace. A non-empty `metadata.resourceVersion` must equal the stored one (`Conflict`).
    async fn update(&self, obj: AnyResource) -> Result<AnyResource, StoreError>;
    /// Delete and return the last state.
    async fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError>;
    /// Read one.
    async fn get(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, StoreError>;
    /// List a kind, in one namespace or (None) all, sorted by namespace then name.
    async fn list(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
    ) -> Result<Vec<AnyResource>, StoreError>;
    /// A consistent snapshot of every object of every kind at revision R, and the feed of every
    /// change after R.
    async fn list_and_watch(&self) -> Result<(Vec<AnyResource>, u64, WatchStream), StoreError>;
}
