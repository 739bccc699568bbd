//! Zip archives built in memory, for tests of what unpacks them.

use std::io::{Cursor, Write as _};

/// A zip of `entries` (name, content), stored in order with default options; a name ending in
/// `/` is a directory entry and its content is ignored.
///
/// # Panics
/// If the zip writer fails (it writes to memory, so only on a bug).
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, opts).expect("zip: add directory");
        } else {
            w.start_file(*name, opts).expect("zip: start file");
            w.write_all(data).expect("zip: write");
        }
    }
    w.finish().expect("zip: finish").into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_with_their_content() {
        let bytes = zip_of(&[("dir/", b""), ("dir/a.txt", b"alpha")]);
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a zip");
        assert_eq!(archive.len(), 2);
        assert!(archive.by_index(0).expect("entry").is_dir());
        let mut file = archive.by_name("dir/a.txt").expect("file entry");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).expect("read");
        assert_eq!(text, "alpha");
    }
}
