//! Safe zip unpacking, shared by the executor (deployment archives) and the builder (source
//! archives).
//!
//! Unlike Fission's fetcher, [`unzip`] refuses entries that would land outside the target
//! (zip-slip, absolute paths, `..`), symbolic links, duplicate entries, and archives beyond a
//! size and entry budget. Every entry is checked before anything is written, and the byte budget
//! is enforced on what decompression actually produces, not on the sizes the archive declares.

#![deny(missing_docs)]

use std::fs;
use std::io::{self, Read as _};
use std::path::{Component, Path, PathBuf};

/// Budget for one unpacked archive.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Total bytes written.
    pub max_bytes: u64,
    /// Number of zip entries (files and directories).
    pub max_entries: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        // Generous for functions with vendored dependencies, small enough that a zip bomb cannot
        // fill the disk. Fission's storagesvc caps uploads at 256 MiB.
        Self {
            max_bytes: 1 << 30,
            max_entries: 100_000,
        }
    }
}

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry would be written outside the target or is a link.
    #[error("refusing to unpack zip entry '{name}': {reason}")]
    UnsafeEntry {
        /// Entry name as stored in the archive.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two entries with the same path.
    #[error("refusing to unpack zip: entry '{0}' appears more than once")]
    DuplicateEntry(String),
    /// Entries sharing a name (only the count is known: the reader keeps one per name).
    #[error(
        "refusing to unpack zip: it lists {listed} entries but only {distinct} distinct names; an entry appears more than once"
    )]
    DuplicateEntries {
        /// Entries in the central directory.
        listed: usize,
        /// Distinct names.
        distinct: usize,
    },
    /// Over the byte budget.
    #[error("refusing to unpack zip: it expands to more than {limit} bytes")]
    TooLarge {
        /// The budget.
        limit: u64,
    },
    /// Over the entry budget.
    #[error("refusing to unpack zip: it has {count} entries, more than the limit of {limit}")]
    TooManyEntries {
        /// Entries in the archive.
        count: usize,
        /// The budget.
        limit: usize,
    },
    /// Not a readable zip although it starts like one.
    #[error("corrupt zip archive: {0}")]
    Corrupt(String),
    /// Filesystem failure.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// The total entry count in the end-of-central-directory record, if there is a plain (non
/// zip64) one.
fn central_directory_entries(bytes: &[u8]) -> Option<usize> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const EOCD_LEN: usize = 22;
    if bytes.len() < EOCD_LEN {
        return None;
    }
    // The record sits at the end, followed by a comment of at most 65 535 bytes.
    let start = bytes.len().saturating_sub(EOCD_LEN + 65_535);
    let pos = (start..=bytes.len() - EOCD_LEN)
        .rev()
        .find(|&i| &bytes[i..i + 4] == EOCD)?;
    let total = u16::from_le_bytes([bytes[pos + 10], bytes[pos + 11]]);
    (total != u16::MAX).then_some(usize::from(total))
}

/// Whether `bytes` is a zip archive (local file header, or an empty archive).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Unzip `bytes` into the directory `dest`, which must not exist yet (its parent must).
///
/// On error `dest` may hold part of the archive; callers unpack into a temporary location and
/// remove it on failure.
pub fn unzip(bytes: &[u8], dest: &Path, limits: UnpackLimits) -> Result<(), UnpackError> {
    let corrupt = |e: zip::result::ZipError| UnpackError::Corrupt(e.to_string());
    let mut zip = zip::ZipArchive::new(io::Cursor::new(bytes)).map_err(corrupt)?;
    // The zip reader indexes entries by name, so a repeated name silently hides the earlier
    // entry; the archive's own entry count tells that one went missing.
    if let Some(declared_entries) = central_directory_entries(bytes)
        && declared_entries != zip.len()
    {
        return Err(UnpackError::DuplicateEntries {
            listed: declared_entries,
            distinct: zip.len(),
        });
    }
    if zip.len() > limits.max_entries {
        return Err(UnpackError::TooManyEntries {
            count: zip.len(),
            limit: limits.max_entries,
        });
    }
    // Check every entry before writing anything: names, kinds and declared sizes.
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(corrupt)?;
        safe_relative_path(entry.name())?;
        if entry.is_symlink() {
            return Err(UnpackError::UnsafeEntry {
                name: entry.name().to_owned(),
                reason: "symbolic links are not allowed",
            });
        }
        declared = declared.saturating_add(entry.size());
        if declared > limits.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: limits.max_bytes,
            });
        }
    }

    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| UnpackError::Io { path, source }
    };
    fs::create_dir(dest).map_err(io_err(dest))?;
    let mut written: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(corrupt)?;
        let rel = safe_relative_path(entry.name())?;
        if rel.as_os_str().is_empty() {
            continue; // "./"
        }
        let path = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(io_err(&path))?;
            continue;
        }
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(UnpackError::DuplicateEntry(entry.name().to_owned()));
            }
            Err(e) => return Err(UnpackError::Io { path, source: e }),
        };
        // Declared sizes can lie: count what decompression actually produces.
        let budget = limits.max_bytes - written;
        let n = io::copy(&mut (&mut entry).take(budget + 1), &mut file).map_err(io_err(&path))?;
        written += n;
        if n > budget {
            return Err(UnpackError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        set_mode(&path, if executable { 0o755 } else { 0o644 }).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Check that [`unzip`] would accept `bytes`, without writing anything: every name, kind and
/// duplicate, and the byte budget on what decompression really produces. Lets a package with a
/// hostile archive be refused when it is created rather than at its first call.
pub fn check_zip(bytes: &[u8], limits: UnpackLimits) -> Result<(), UnpackError> {
    let corrupt = |e: zip::result::ZipError| UnpackError::Corrupt(e.to_string());
    let mut zip = zip::ZipArchive::new(io::Cursor::new(bytes)).map_err(corrupt)?;
    if let Some(declared_entries) = central_directory_entries(bytes)
        && declared_entries != zip.len()
    {
        return Err(UnpackError::DuplicateEntries {
            listed: declared_entries,
            distinct: zip.len(),
        });
    }
    if zip.len() > limits.max_entries {
        return Err(UnpackError::TooManyEntries {
            count: zip.len(),
            limit: limits.max_entries,
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut produced: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(corrupt)?;
        let rel = safe_relative_path(entry.name())?;
        if entry.is_symlink() {
            return Err(UnpackError::UnsafeEntry {
                name: entry.name().to_owned(),
                reason: "symbolic links are not allowed",
            });
        }
        // `a//b` and `a/b` land on the same file.
        if !entry.is_dir() && !seen.insert(rel) {
            return Err(UnpackError::DuplicateEntry(entry.name().to_owned()));
        }
        let budget = limits.max_bytes - produced;
        let n = io::copy(&mut (&mut entry).take(budget + 1), &mut io::sink())
            .map_err(|e| UnpackError::Corrupt(format!("entry '{}': {e}", entry.name())))?;
        produced += n;
        if n > budget {
            return Err(UnpackError::TooLarge {
                limit: limits.max_bytes,
            });
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The relative path a zip entry name stands for, or why it is refused.
pub fn safe_relative_path(name: &str) -> Result<PathBuf, UnpackError> {
    let refuse = |reason| UnpackError::UnsafeEntry {
        name: name.to_owned(),
        reason,
    };
    if name.contains('\0') {
        return Err(refuse("the name contains a NUL byte"));
    }
    let b = name.as_bytes();
    if name.starts_with('/')
        || name.starts_with('\\')
        || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
    {
        return Err(refuse("absolute paths are not allowed"));
    }
    let mut out = PathBuf::new();
    // Zips made on Windows may use backslashes.
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(refuse("the path leaves the archive root ('..')")),
            p => {
                // A single normal component, whatever the platform thinks.
                if !matches!(Path::new(p).components().next(), Some(Component::Normal(_))) {
                    return Err(refuse("the path has an invalid component"));
                }
                out.push(p)
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use fission_test_support::zip_of;

    use super::*;

    #[test]
    fn a_zip_becomes_a_directory_with_its_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out");
        let mut buf = io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            let exe = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
            w.start_file("bin/run.sh", exe).expect("start");
            w.write_all(b"#!/bin/sh\n").expect("write");
            w.start_file("hello.py", zip::write::SimpleFileOptions::default())
                .expect("start");
            w.write_all(b"def main(): return 'hi'\n").expect("write");
            w.finish().expect("finish");
        }
        unzip(&buf.into_inner(), &dest, UnpackLimits::default()).expect("unzip");
        assert_eq!(
            fs::read_to_string(dest.join("hello.py")).expect("read"),
            "def main(): return 'hi'\n"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dest.join("bin/run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn zip_slip_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("a/b");
        fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        let z = zip_of(&[("ok.js", b"1"), ("../../evil.js", b"pwned")]);
        let err = unzip(&z, &dest, UnpackLimits::default()).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains("../../evil.js") && msg.contains("leaves the archive root"),
            "{msg}"
        );
        assert!(!dir.path().join("evil.js").exists());
        assert!(!dest.exists(), "nothing written");
    }

    #[test]
    fn absolute_and_drive_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = unzip(
            &zip_of(&[("/etc/evil", b"x")]),
            &dir.path().join("d"),
            UnpackLimits::default(),
        )
        .expect_err("must refuse");
        assert!(
            err.to_string().contains("absolute paths are not allowed"),
            "{err}"
        );
        let err = safe_relative_path("C:\\Windows\\evil").expect_err("drive path");
        assert!(err.to_string().contains("absolute"), "{err}");
        assert_eq!(
            safe_relative_path("./a\\b/c").expect("ok"),
            PathBuf::from("a/b/c")
        );
    }

    #[test]
    fn symlink_entries_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buf = io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            w.add_symlink(
                "link",
                "/etc/passwd",
                zip::write::SimpleFileOptions::default(),
            )
            .expect("symlink");
            w.finish().expect("finish");
        }
        let err = unzip(
            &buf.into_inner(),
            &dir.path().join("d"),
            UnpackLimits::default(),
        )
        .expect_err("refuse");
        assert!(
            err.to_string().contains("symbolic links are not allowed"),
            "{err}"
        );
    }

    #[test]
    fn budgets_are_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![b'a'; 64 * 1024];
        let small = UnpackLimits {
            max_bytes: 100 * 1024,
            max_entries: 10,
        };
        let err = unzip(
            &zip_of(&[("a.bin", &big), ("b.bin", &big)]),
            &dir.path().join("x"),
            small,
        )
        .expect_err("refuse");
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than 102400 bytes"), "{err}");

        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), vec![])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let err = unzip(&zip_of(&refs), &dir.path().join("y"), small).expect_err("refuse");
        assert!(
            matches!(
                err,
                UnpackError::TooManyEntries {
                    count: 20,
                    limit: 10
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn lying_declared_sizes_do_not_bypass_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![b'z'; 10_000];
        let z = zip_of(&[("z", &data)]);
        let err = unzip(
            &z,
            &dir.path().join("d"),
            UnpackLimits {
                max_bytes: 9_999,
                max_entries: 5,
            },
        )
        .expect_err("refuse");
        assert!(matches!(err, UnpackError::TooLarge { .. }));
    }

    #[test]
    fn check_zip_refuses_what_unzip_refuses_and_writes_nothing() {
        let small = UnpackLimits {
            max_bytes: 9_999,
            max_entries: 5,
        };
        check_zip(
            &zip_of(&[("main.py", b"x"), ("lib/", b""), ("lib/a.py", b"y")]),
            small,
        )
        .expect("a plain zip is fine");
        let slip = check_zip(&zip_of(&[("../../evil.js", b"x")]), small).expect_err("zip slip");
        assert!(
            slip.to_string().contains("leaves the archive root"),
            "{slip}"
        );
        let abs = check_zip(&zip_of(&[("/etc/cron.d/x", b"x")]), small).expect_err("absolute");
        assert!(abs.to_string().contains("absolute paths"), "{abs}");
        let big =
            check_zip(&zip_of(&[("z", &vec![b'z'; 10_000])]), small).expect_err("over budget");
        assert!(matches!(big, UnpackError::TooLarge { .. }), "{big}");
        let dup = check_zip(&zip_of(&[("a//b", b"1"), ("a/b", b"2")]), small)
            .expect_err("same file twice");
        assert!(matches!(dup, UnpackError::DuplicateEntry(_)), "{dup}");
        let bad = check_zip(b"PK\x03\x04 this is not really a zip", small).expect_err("corrupt");
        assert!(matches!(bad, UnpackError::Corrupt(_)), "{bad}");
    }

    #[test]
    fn recognises_zips() {
        assert!(is_zip(&zip_of(&[("a", b"1")])));
        assert!(is_zip(&zip_of(&[])));
        assert!(!is_zip(b"module.exports = 1"));
    }
}
