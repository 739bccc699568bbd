//! Turning `--code`, `--deploy` and `--src` arguments into package archives (§3.7a).
//!
//! * `--code FILE`: the file's bytes, never zipped.
//! * `--deploy/--src ARG…`: each argument is a path or a glob. If everything matched is exactly
//!   one file that already is a zip, it is used as is; otherwise every match is zipped and stored
//!   **at the archive root under its base name**; a matched directory is stored recursively under
//!   its own name.
//! * An `http(s)://` argument is kept as a URL archive.
//! * Bytes under 256 KiB go into the package as a literal; larger archives are uploaded to the
//!   archive store and referenced by URL with their sha256.

use std::collections::BTreeSet;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use fission_core::resources::{ARCHIVE_URL, Archive, Checksum};
use sha2::{Digest, Sha256};

use crate::api::{Api, Wrap, storage_archive_id, storage_archive_url};

/// Archives smaller than this are stored inline in the package (Fission's
/// `ArchiveLiteralSizeLimit`).
pub(crate) const LITERAL_SIZE_LIMIT: usize = 256 * 1024;

/// What the user's arguments resolved to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ArchiveSource {
    /// Local bytes (a raw file, a zip as is, or a zip we built).
    Bytes(Vec<u8>),
    /// A remote archive.
    Url(String),
}

/// Where local bytes end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    Literal,
    Upload,
}

pub(crate) fn placement(len: usize) -> Placement {
    if len < LITERAL_SIZE_LIMIT {
        Placement::Literal
    } else {
        Placement::Upload
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// `--code FILE|URL`: the file as is.
pub(crate) fn from_code(arg: &str) -> anyhow::Result<ArchiveSource> {
    if is_url(arg) {
        return Ok(ArchiveSource::Url(arg.to_owned()));
    }
    let path = Path::new(arg);
    if !path.exists() {
        bail!("file '{arg}' does not exist");
    }
    if path.is_dir() {
        bail!("'{arg}' is a directory: --code takes a single file (use --deploy for directories)");
    }
    let bytes = std::fs::read(path).with_context(|| format!("error reading file '{arg}'"))?;
    Ok(ArchiveSource::Bytes(bytes))
}

/// `--deploy/--src ARG…`: a URL, a single zip as is, or a zip of everything matched.
pub(crate) fn from_files(args: &[String]) -> anyhow::Result<ArchiveSource> {
    let urls: Vec<&String> = args.iter().filter(|a| is_url(a)).collect();
    if !urls.is_empty() {
        if args.len() > 1 {
            bail!("only one URL can be given as an archive, and not together with local files");
        }
        return Ok(ArchiveSource::Url(urls[0].clone()));
    }
    let paths = expand(args)?;
    let single_zip = match paths.as_slice() {
        [p] if p.is_file() && is_zip_file(p) => Some(p),
        _ => None,
    };
    if let Some(p) = single_zip {
        let bytes =
            std::fs::read(p).with_context(|| format!("error reading file '{}'", p.display()))?;
        return Ok(ArchiveSource::Bytes(bytes));
    }
    Ok(ArchiveSource::Bytes(zip_paths(&paths)?))
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand paths and globs, in argument order (glob matches sorted); every argument must match.
pub(crate) fn expand(args: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        if has_glob_chars(arg) {
            let mut matched: Vec<PathBuf> = glob::glob(arg)
                .with_context(|| format!("invalid file pattern '{arg}'"))?
                .filter_map(Result::ok)
                .collect();
            if matched.is_empty() {
                bail!("no files match '{arg}'");
            }
            matched.sort();
            out.extend(matched);
        } else {
            let p = PathBuf::from(arg);
            if !p.exists() {
                bail!("file '{arg}' does not exist");
            }
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("no files given");
    }
    Ok(out)
}

/// Whether the file starts with a zip signature.
pub(crate) fn is_zip_file(path: &Path) -> bool {
    let mut head = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)) {
        Ok(()) => head == *b"PK\x03\x04" || head == *b"PK\x05\x06",
        Err(_) => false,
    }
}

fn base_name(p: &Path) -> anyhow::Result<String> {
    // `dir/.` and `dir/..` have no usable file name; resolve them first.
    let resolved = if p.file_name().is_none() {
        p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
    } else {
        p.to_path_buf()
    };
    resolved
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("cannot archive '{}': it has no file name", p.display()))
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

/// Zip `paths`: files at the root under their base name, directories recursively under theirs.
pub(crate) fn zip_paths(paths: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut names = BTreeSet::new();
    for p in paths {
        let name = base_name(p)?;
        add_path(&mut zip, p, &name, &mut names)?;
    }
    let cursor = zip.finish().context("error writing zip archive")?;
    Ok(cursor.into_inner())
}

fn add_path(
    zip: &mut zip::ZipWriter<Cursor<Vec<u8>>>,
    path: &Path,
    entry: &str,
    names: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("error reading '{}'", path.display()))?;
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(mode_of(&meta));
    if meta.is_dir() {
        let dir_entry = format!("{entry}/");
        if !names.insert(dir_entry.clone()) {
            bail!("two inputs would be stored as '{entry}' in the archive; rename one of them");
        }
        zip.add_directory(dir_entry, opts)
            .context("error writing zip archive")?;
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("error reading directory '{}'", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        for child in children {
            let child_name = base_name(&child)?;
            add_path(zip, &child, &format!("{entry}/{child_name}"), names)?;
        }
    } else {
        if !names.insert(entry.to_owned()) {
            bail!("two inputs would be stored as '{entry}' in the archive; rename one of them");
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("error reading file '{}'", path.display()))?;
        zip.start_file(entry, opts)
            .context("error writing zip archive")?;
        zip.write_all(&bytes).context("error writing zip archive")?;
    }
    Ok(())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn url_archive(url: String, sum: Option<String>) -> Archive {
    Archive {
        archive_type: ARCHIVE_URL.to_owned(),
        url,
        checksum: sum
            .map(|s| Checksum {
                checksum_type: "sha256".into(),
                sum: s,
            })
            .unwrap_or_default(),
        ..Archive::default()
    }
}

fn checked_sum(sum: &str) -> anyhow::Result<String> {
    let s = sum.trim().to_ascii_lowercase();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("checksum '{sum}' is not a sha256 hex digest (64 hexadecimal digits)");
    }
    Ok(s)
}

/// Turn a source into the package's archive, uploading large local archives.
pub(crate) async fn into_archive(
    api: &Api,
    src: ArchiveSource,
    checksum: Option<&str>,
    insecure: bool,
) -> anyhow::Result<Archive> {
    match src {
        ArchiveSource::Bytes(bytes) => match placement(bytes.len()) {
            Placement::Literal => Ok(Archive::literal(bytes)),
            Placement::Upload => {
                let sum = sha256_hex(&bytes);
                let id = api
                    .upload_archive(bytes)
                    .await
                    .wrap("error uploading archive")?;
                Ok(url_archive(storage_archive_url(&id), Some(sum)))
            }
        },
        ArchiveSource::Url(url) => {
            let sum = if let Some(s) = checksum {
                Some(checked_sum(s)?)
            } else if insecure {
                None
            } else {
                let what = format!(
                    "error downloading '{url}' to compute its checksum (use --insecure to skip)"
                );
                let bytes = if storage_archive_id(&url).is_some() {
                    api.download_archive(&url).await.wrap(&what)?
                } else {
                    // Anywhere else: with the limits and CA settings the server fetches it with
                    // (FISSION_ARCHIVE_CA_CERT names extra trusted CAs).
                    // Fetch errors name their cause in their message: no context chain,
                    // which would repeat it.
                    let fetched = match fission_fetch::Fetcher::new(
                        &fission_fetch::FetchConfig::default(),
                        None,
                    ) {
                        Ok(f) => f.fetch(&url, "").await,
                        Err(e) => Err(e),
                    };
                    fetched.map_err(|e| anyhow::anyhow!("{what}: {e}"))?
                };
                Some(sha256_hex(&bytes))
            };
            Ok(url_archive(url, sum))
        }
    }
}

/// The archive as `--dry` shows it, without touching the network: literal when small, else a
/// placeholder URL carrying the checksum.
pub(crate) fn dry_archive(src: ArchiveSource, checksum: Option<&str>) -> anyhow::Result<Archive> {
    match src {
        ArchiveSource::Bytes(bytes) => match placement(bytes.len()) {
            Placement::Literal => Ok(Archive::literal(bytes)),
            Placement::Upload => {
                let sum = sha256_hex(&bytes);
                Ok(url_archive(format!("archive://{sum}"), Some(sum)))
            }
        },
        ArchiveSource::Url(url) => Ok(url_archive(url, checksum.map(checked_sum).transpose()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn entries(bytes: &[u8]) -> Vec<String> {
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip");
        let mut names: Vec<String> = (0..z.len())
            .map(|i| z.by_index(i).expect("entry").name().to_owned())
            .collect();
        names.sort();
        names
    }

    fn write(p: &Path, s: &str) {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, s).expect("write");
    }

    #[test]
    fn deploy_glob_puts_matched_files_at_the_archive_root() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("multifile/main.py"), "def main(): pass");
        write(&dir.path().join("multifile/helper.py"), "X = 1");
        let pattern = format!("{}/multifile/*", dir.path().display());
        let ArchiveSource::Bytes(bytes) = from_files(&[pattern]).expect("archive") else {
            panic!("not bytes")
        };
        assert_eq!(entries(&bytes), ["helper.py", "main.py"]);
    }

    #[test]
    fn matched_directory_is_stored_recursively_under_its_own_name() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("app/lib/util.js"), "u");
        write(&dir.path().join("app/index.js"), "i");
        write(&dir.path().join("top.js"), "t");
        let args = [
            dir.path().join("app").display().to_string(),
            dir.path().join("top.js").display().to_string(),
        ];
        let ArchiveSource::Bytes(bytes) = from_files(&args).expect("archive") else {
            panic!("not bytes")
        };
        assert_eq!(
            entries(&bytes),
            [
                "app/",
                "app/index.js",
                "app/lib/",
                "app/lib/util.js",
                "top.js"
            ]
        );
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip");
        let mut s = String::new();
        z.by_name("app/lib/util.js")
            .expect("entry")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "u");
    }

    #[test]
    fn single_zip_argument_is_used_as_is() {
        let dir = tempfile::tempdir().expect("tmp");
        let inner = dir.path().join("a.txt");
        write(&inner, "hi");
        let zipped = zip_paths(&[inner]).expect("zip");
        let zpath = dir.path().join("code.zip");
        std::fs::write(&zpath, &zipped).expect("write");
        let got = from_files(&[zpath.display().to_string()]).expect("archive");
        assert_eq!(got, ArchiveSource::Bytes(zipped));
    }

    #[test]
    fn single_plain_file_for_deploy_is_zipped() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("hello.js");
        write(&f, "module.exports = 1");
        let ArchiveSource::Bytes(bytes) = from_files(&[f.display().to_string()]).expect("archive")
        else {
            panic!()
        };
        assert_eq!(entries(&bytes), ["hello.js"]);
    }

    #[test]
    fn code_file_is_stored_raw_not_zipped() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("hello.js");
        write(&f, "module.exports = 1");
        assert_eq!(
            from_code(&f.display().to_string()).expect("code"),
            ArchiveSource::Bytes(b"module.exports = 1".to_vec())
        );
    }

    #[test]
    fn missing_files_and_empty_globs_are_clear_errors() {
        let e = from_code("/nonexistent/hello.js")
            .expect_err("must fail")
            .to_string();
        assert_eq!(e, "file '/nonexistent/hello.js' does not exist");
        let e = from_files(&["/nonexistent/*.py".to_owned()])
            .expect_err("must fail")
            .to_string();
        assert_eq!(e, "no files match '/nonexistent/*.py'");
    }

    #[test]
    fn duplicate_base_names_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        write(&dir.path().join("a/x.py"), "1");
        write(&dir.path().join("b/x.py"), "2");
        let args = [
            dir.path().join("a/x.py").display().to_string(),
            dir.path().join("b/x.py").display().to_string(),
        ];
        assert!(
            from_files(&args)
                .expect_err("must fail")
                .to_string()
                .contains("'x.py'")
        );
    }

    #[test]
    fn archives_under_256_kib_are_literal_and_larger_ones_uploaded() {
        assert_eq!(placement(0), Placement::Literal);
        assert_eq!(placement(LITERAL_SIZE_LIMIT - 1), Placement::Literal);
        assert_eq!(placement(LITERAL_SIZE_LIMIT), Placement::Upload);
        assert_eq!(placement(10 * LITERAL_SIZE_LIMIT), Placement::Upload);
    }

    #[test]
    fn url_arguments_are_kept_as_url_archives() {
        assert_eq!(
            from_files(&["http://example.com/a.zip".to_owned()]).expect("url"),
            ArchiveSource::Url("http://example.com/a.zip".into())
        );
        assert!(from_files(&["http://example.com/a.zip".to_owned(), "b".to_owned()]).is_err());
        let a = dry_archive(
            ArchiveSource::Url("http://e/a.zip".into()),
            Some(&"A".repeat(64)),
        )
        .expect("dry");
        assert_eq!(a.archive_type, "url");
        assert_eq!(a.checksum.sum, "a".repeat(64));
    }

    #[test]
    fn large_archive_in_dry_mode_carries_its_checksum() {
        let bytes = vec![7u8; LITERAL_SIZE_LIMIT];
        let a = dry_archive(ArchiveSource::Bytes(bytes.clone()), None).expect("dry");
        assert_eq!(a.archive_type, "url");
        assert_eq!(a.checksum.sum, sha256_hex(&bytes));
        assert!(a.literal.is_empty());
    }
}
