//! `fission_unpack::unzip` on arbitrary bytes: never panics, and never writes outside the target
//! directory, whatever the archive says.
#![no_main]

use std::path::Path;

use fission_unpack::{UnpackLimits, unzip};
use libfuzzer_sys::fuzz_target;

/// Every path under `dir`, recursively (without following links).
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("tempdir");
    // The target sits in a sandbox directory next to a sibling: anything the archive writes
    // outside `target` shows up as an extra entry of the sandbox.
    let sandbox = root.path().join("sandbox");
    std::fs::create_dir(&sandbox).expect("mkdir");
    let target = sandbox.join("target");
    let limits = UnpackLimits {
        max_bytes: 8 << 20,
        max_entries: 1_000,
    };
    let result = unzip(data, &target, limits);
    let mut all = Vec::new();
    walk(root.path(), &mut all);
    for p in &all {
        assert!(
            p == &sandbox || p.starts_with(&target),
            "unzip wrote outside its target: {} (result {result:?})",
            p.display()
        );
        let meta = std::fs::symlink_metadata(p).expect("stat");
        assert!(
            !meta.file_type().is_symlink(),
            "unzip made a symlink: {}",
            p.display()
        );
    }
    if result.is_ok() {
        assert!(
            target.is_dir(),
            "a successful unzip leaves the target directory"
        );
    }
});
