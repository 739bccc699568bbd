//! The `ResourceStore` contract suite (shared with every other backend) against [`RedbStore`].

use std::sync::Arc;

use fission_core::ResourceStore;
use fission_store::RedbStore;

fission_test_support::store_contract_tests! {
    store: async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("db.redb")).expect("open store");
        (Arc::new(store) as Arc<dyn ResourceStore>, dir)
    },
    // RedbStore's per-watcher feed buffer.
    lags_after: 4096,
}
