//! Zipping a build's deploy directory: entries at the archive root, sorted, with fixed
//! timestamps (the same tree gives the same bytes, so identical builds share one stored
//! archive), executable bits kept.
//!
//! Symbolic links cannot be deployed (the executor refuses them in archives): a link to a file
//! inside the directory is stored as a copy of that file; any other link (to a directory, out of
//! the tree, dangling) is left out and reported.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use fission_unpack::UnpackLimits;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// A zipped directory.
#[derive(Debug)]
pub struct Zipped {
    /// The zip.
    pub bytes: Vec<u8>,
    /// Regular files in it.
    pub files: usize,
    /// Links left out, with why.
    pub skipped_links: Vec<String>,
}

/// Why a directory could not be zipped.
#[derive(Debug, thiserror::Error)]
pub enum ZipDirError {
    /// Filesystem failure.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Zip writer failure.
    #[error("cannot write the deployment archive: {0}")]
    Zip(zip::result::ZipError),
    /// Over a limit.
    #[error("the deployment is too large: {0}")]
    TooLarge(String),
}

/// Zip the contents of `root`: at most `limits` unpacked, at most `max_archive` bytes of zip.
pub fn zip_dir(root: &Path, limits: UnpackLimits, max_archive: u64) -> Result<Zipped, ZipDirError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ZipDirError::Io { path, source }
    };
    let canonical_root = fs::canonicalize(root).map_err(io_err(root))?;
    let mut w = zip::ZipWriter::new(Sink {
        buf: io::Cursor::new(Vec::new()),
        max: max_archive,
    });
    let mut out = Zipped {
        bytes: Vec::new(),
        files: 0,
        skipped_links: Vec::new(),
    };
    let mut entries = 0usize;
    let mut total: u64 = 0;
    // Depth-first, sorted; directories get their own entries so empty ones survive.
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(&dir))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel_dir.join(&name);
            let path = root.join(&rel);
            let name_in_zip = rel.to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let file_source = if meta.file_type().is_symlink() {
                match link_target_inside(&path, &canonical_root) {
                    Ok(target) => Some(target),
                    Err(why) => {
                        let to = fs::read_link(&path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        out.skipped_links
                            .push(format!("{name_in_zip} -> {to} ({why})"));
                        continue;
                    }
                }
            } else if meta.is_dir() {
                entries += 1;
                w.add_directory(format!("{name_in_zip}/"), options(0o755))?;
                subdirs.push(rel);
                None
            } else if meta.is_file() {
                Some(path.clone())
            } else {
                out.skipped_links
                    .push(format!("{name_in_zip} (not a regular file)"));
                continue;
            };
            if let Some(src) = file_source {
                let m = fs::metadata(&src).map_err(io_err(&src))?;
                entries += 1;
                total = total.saturating_add(m.len());
                if entries > limits.max_entries {
                    return Err(ZipDirError::TooLarge(format!(
                        "more than {} files and directories",
                        limits.max_entries
                    )));
                }
                if total > limits.max_bytes {
                    return Err(ZipDirError::TooLarge(format!(
                        "more than {} bytes unpacked",
                        limits.max_bytes
                    )));
                }
                let mode = if m.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                w.start_file(name_in_zip, options(mode))?;
                let mut f = fs::File::open(&src).map_err(io_err(&src))?;
                io::copy(&mut f, &mut w).map_err(|e| match e.kind() {
                    io::ErrorKind::FileTooLarge => too_large(max_archive),
                    _ => ZipDirError::Io {
                        path: src.clone(),
                        source: e,
                    },
                })?;
                out.files += 1;
            }
        }
        // Reverse so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    out.bytes = w.finish()?.buf.into_inner();
    Ok(out)
}

fn too_large(max: u64) -> ZipDirError {
    ZipDirError::TooLarge(format!("the archive is larger than {max} bytes"))
}

/// The archive being written, refusing to grow past `max`.
struct Sink {
    buf: io::Cursor<Vec<u8>>,
    max: u64,
}

impl io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let end = self.buf.position() + data.len() as u64;
        if end > self.max {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the archive is larger than {} bytes", self.max),
            ));
        }
        self.buf.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Seek for Sink {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.buf.seek(pos)
    }
}

impl From<zip::result::ZipError> for ZipDirError {
    fn from(e: zip::result::ZipError) -> Self {
        match e {
            zip::result::ZipError::Io(io) if io.kind() == io::ErrorKind::FileTooLarge => {
                ZipDirError::TooLarge(io.to_string())
            }
            e => ZipDirError::Zip(e),
        }
    }
}

fn options(mode: u32) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(mode)
        .large_file(false)
}

/// The file a link points to, if it is a regular file inside `root`.
fn link_target_inside(link: &Path, root: &Path) -> Result<PathBuf, &'static str> {
    let target = fs::canonicalize(link).map_err(|_| "dangling link")?;
    if !target.starts_with(root) {
        return Err("points outside the deployment");
    }
    if !target.is_file() {
        return Err("links to directories are not deployed");
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
        fs::write(path, bytes)
    }

    #[test]
    fn zips_a_tree_at_the_root_deterministically_and_unzips_safely() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("deploy");
        fs::create_dir_all(root.join("lib/empty")).expect("mkdir");
        write_file(&root.join("main.py"), b"def main(): return 'x'\n").expect("write");
        write_file(&root.join("lib/util.py"), b"X = 1\n").expect("write");
        write_file(&root.join("run.sh"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
        symlink("main.py", root.join("alias.py")).expect("link");
        symlink("/etc/passwd", root.join("passwd")).expect("link");
        symlink("lib", root.join("lib2")).expect("link");

        let z = zip_dir(&root, UnpackLimits::default(), 1 << 20).expect("zip");
        assert_eq!(
            z.files, 4,
            "main.py, lib/util.py, run.sh and the copy behind alias.py"
        );
        assert_eq!(z.skipped_links.len(), 2, "{:?}", z.skipped_links);
        assert!(
            z.skipped_links
                .iter()
                .any(|s| s.contains("passwd") && s.contains("outside"))
        );
        let again = zip_dir(&root, UnpackLimits::default(), 1 << 20).expect("zip");
        assert_eq!(z.bytes, again.bytes, "same tree, same bytes");

        let out = dir.path().join("out");
        fission_unpack::unzip(&z.bytes, &out, UnpackLimits::default()).expect("unzip");
        assert_eq!(
            fs::read_to_string(out.join("alias.py")).expect("read"),
            "def main(): return 'x'\n"
        );
        assert!(out.join("lib/empty").is_dir());
        assert_eq!(
            fs::metadata(out.join("run.sh"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(!out.join("passwd").exists());
    }

    #[test]
    fn limits_are_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            write_file(&dir.path().join(format!("f{i}")), &[b'a'; 1000]).expect("write");
        }
        let err = zip_dir(
            dir.path(),
            UnpackLimits {
                max_bytes: 1 << 20,
                max_entries: 3,
            },
            1 << 20,
        )
        .expect_err("entries");
        assert!(err.to_string().contains("more than 3 files"), "{err}");
        let err = zip_dir(
            dir.path(),
            UnpackLimits {
                max_bytes: 2500,
                max_entries: 100,
            },
            1 << 20,
        )
        .expect_err("bytes");
        assert!(err.to_string().contains("more than 2500 bytes"), "{err}");
    }
}
