//! Resource JSON as the controller reads it: decode, normalize, validate. Arbitrary bytes never
//! panic, and an object that validates survives a round trip through its own JSON unchanged
//! and still valid (what the store writes is what it reads back).
#![no_main]

use fission_core::resources::{AnyResource, ResourceKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let kind = ResourceKind::ALL[usize::from(selector) % ResourceKind::ALL.len()];
    let Ok(mut obj) = AnyResource::from_json(kind, json) else {
        return;
    };
    obj.normalize();
    if obj.validate().is_err() {
        return;
    }
    let bytes = obj.to_json();
    let mut again = AnyResource::from_json(kind, &bytes).expect("own JSON decodes");
    again.normalize();
    assert!(
        again.validate().is_ok(),
        "own JSON no longer validates: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(again.to_json(), bytes, "round trip changed the object");
});
