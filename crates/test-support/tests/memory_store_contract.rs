//! The `ResourceStore` contract suite against [`MemoryStore`], so tests that use it test
//! against the same semantics as the durable store.

use std::sync::Arc;

use fission_core::ResourceStore;
use fission_test_support::MemoryStore;

fission_test_support::store_contract_tests! {
    store: async { (MemoryStore::with_feed_capacity(64) as Arc<dyn ResourceStore>, ()) },
    lags_after: 64,
}
