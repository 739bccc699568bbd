//! The ResourceStore contract suite (fission-test-support) against KubeStore on a real API
//! server. The suite wants an empty store per case, so every case gets a cluster of its own.

use std::sync::Arc;

use fission_core::ResourceStore;
use fission_store_kube::KubeStore;
use kube_test_cluster::TestCluster;

/// Unread events after which a watcher is told it lagged (small, so the case writes little).
const LAGS_AFTER: usize = 64;

async fn fresh() -> Option<(Arc<dyn ResourceStore>, TestCluster)> {
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = TestCluster::start_or_skip()?;
        cluster.apply_crds();
        // The namespaces the suite writes to; Kubernetes refuses objects in missing ones.
        for ns in ["other", "a", "b", "a-b"] {
            cluster.kubectl_ok(["create", "namespace", ns]);
        }
        Some(cluster)
    })
    .await
    .expect("cluster setup")?;
    let store = KubeStore::connect(Some(&cluster.kubeconfig))
        .await
        .expect("connect")
        .with_feed_capacity(LAGS_AFTER);
    Some((Arc::new(store), cluster))
}

macro_rules! contract_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some((store, _cluster)) = fresh().await else { return };
            fission_test_support::contract::$case(&*store).await;
        }
    )*};
}

contract_cases!(
    create_assigns_uid_creation_timestamp_generation_and_resource_version,
    create_of_a_taken_name_is_already_exists_and_changes_nothing,
    the_same_name_may_exist_in_another_namespace_or_kind,
    reading_updating_or_deleting_a_missing_object_is_not_found,
    resource_versions_increase_store_wide_across_kinds_and_objects,
    update_with_the_current_or_an_empty_resource_version_succeeds,
    update_with_a_stale_resource_version_conflicts_and_changes_nothing,
    generation_bumps_only_when_the_spec_changes,
    update_keeps_uid_and_creation_timestamp_whatever_the_caller_sends,
    delete_returns_the_last_state_and_a_recreated_name_is_a_new_object,
    list_is_sorted_by_namespace_then_name_and_filtered_by_namespace,
    list_and_watch_returns_a_snapshot_then_every_later_change_in_revision_order,
    deleted_events_carry_the_last_state,
    refused_writes_publish_nothing,
    every_watcher_sees_the_whole_feed,
    snapshot_and_feed_together_miss_nothing_under_concurrent_writes,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_gets_lagged_and_must_relist() {
    let Some((store, _cluster)) = fresh().await else {
        return;
    };
    fission_test_support::contract::a_watcher_that_falls_behind_gets_lagged_and_must_relist(
        &*store, LAGS_AFTER,
    )
    .await;
}
