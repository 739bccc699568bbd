//! The `fission spec` file reader on arbitrary text: every document becomes an object, an
//! archive spec, an error or nothing — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (objects, archives, errors) = fission_cli::fuzzing::parse_spec_file(text);
    // Each document yields at most one outcome.
    let documents = text.lines().count() + 1;
    assert!(objects + archives + errors <= documents);
});
