//! Turning an `ArchiveUploadSpec` into archive bytes, with the CLI's rules (§3.7a): the include
//! globs are resolved against `rootdir` (default: the parent of the spec directory), excludes
//! are removed, a single non-directory file is used as is, anything else is zipped with every
//! match stored under its base name at the archive root.

use std::path::{Path, PathBuf};

use super::read::{ArchiveUploadSpec, SpecArchive, SpecError, normalize_path, project_root};
use crate::archive;

/// A resolved archive: what went into it and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuiltArchive {
    pub(crate) name: String,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) bytes: Vec<u8>,
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The directory an archive's globs are relative to.
pub(crate) fn root_dir(aus: &ArchiveUploadSpec, spec_dir: &Path) -> PathBuf {
    if aus.root_dir.is_empty() {
        project_root(spec_dir)
    } else {
        let r = Path::new(&aus.root_dir);
        if r.is_absolute() {
            r.to_path_buf()
        } else {
            normalize_path(&project_root(spec_dir).join(r))
        }
    }
}

/// The files an archive spec matches, in include order (glob matches sorted). Errors name the
/// offending `include[i]`/`exclude[i]` entry.
pub(crate) fn resolve_files(
    a: &SpecArchive,
    spec_dir: &Path,
) -> Result<Vec<PathBuf>, Vec<SpecError>> {
    let aus = &a.aus;
    let err = |field: String, msg: String| {
        SpecError::at(&a.loc, msg)
            .object("ArchiveUploadSpec", &aus.name)
            .field(field)
    };
    let root = root_dir(aus, spec_dir);
    let mut errors = Vec::new();
    if aus.include.is_empty() {
        errors.push(err(
            "include".into(),
            "needs at least one file, directory or glob".into(),
        ));
        return Err(errors);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, inc) in aus.include.iter().enumerate() {
        let full = normalize_path(&root.join(inc));
        if has_glob_chars(inc) {
            match glob::glob(&full.to_string_lossy()) {
                Ok(paths) => {
                    let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                    matched.sort();
                    if matched.is_empty() {
                        errors.push(err(
                            format!("include[{i}]"),
                            format!(
                                "'{inc}' matches no files (relative to '{}')",
                                root.display()
                            ),
                        ));
                    }
                    files.extend(matched);
                }
                Err(e) => errors.push(err(
                    format!("include[{i}]"),
                    format!("'{inc}' is not a valid glob: {e}"),
                )),
            }
        } else if full.exists() {
            files.push(full);
        } else {
            errors.push(err(
                format!("include[{i}]"),
                format!("'{inc}' does not exist (relative to '{}')", root.display()),
            ));
        }
    }
    let mut excludes = Vec::new();
    for (i, exc) in aus.exclude.iter().enumerate() {
        let full = normalize_path(&root.join(exc));
        match glob::Pattern::new(&full.to_string_lossy()) {
            Ok(p) => excludes.push(p),
            Err(e) => errors.push(err(
                format!("exclude[{i}]"),
                format!("'{exc}' is not a valid glob: {e}"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|f| !excludes.iter().any(|p| p.matches_path(f)) && seen.insert(f.clone()));
    if files.is_empty() {
        return Err(vec![err(
            "include".into(),
            format!("archive '{}' is empty: every match is excluded", aus.name),
        )]);
    }
    Ok(files)
}

/// Build the archive bytes: one plain file as is, anything else zipped. A source archive
/// (`for_source`) is zipped even when it is one plain file, since builds work on a directory;
/// a single file that already is a zip is used as is either way.
pub(crate) fn build(
    a: &SpecArchive,
    spec_dir: &Path,
    for_source: bool,
) -> Result<BuiltArchive, Vec<SpecError>> {
    let files = resolve_files(a, spec_dir)?;
    let fail = |msg: String| {
        vec![
            SpecError::at(&a.loc, msg)
                .object("ArchiveUploadSpec", &a.aus.name)
                .field("include"),
        ]
    };
    let bytes = match files.as_slice() {
        [one] if one.is_file() && (!for_source || archive::is_zip_file(one)) => {
            std::fs::read(one).map_err(|e| fail(format!("cannot read '{}': {e}", one.display())))?
        }
        _ => archive::zip_paths(&files).map_err(|e| fail(format!("{e:#}")))?,
    };
    Ok(BuiltArchive {
        name: a.aus.name.clone(),
        files,
        bytes,
    })
}

/// Every file an archive spec currently draws from (directories walked), for `--watch`.
pub(crate) fn watched_files(a: &SpecArchive, spec_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for f in resolve_files(a, spec_dir).unwrap_or_default() {
        walk(&f, &mut out);
    }
    out
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        let mut children: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            walk(&c, out);
        }
    }
    out.push(p.to_path_buf());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::spec::read::Location;
    use std::io::Cursor;

    fn spec(include: &[&str], exclude: &[&str]) -> SpecArchive {
        SpecArchive {
            loc: Location {
                file: "specs/f.yaml".into(),
                line: 1,
                doc: 1,
            },
            aus: ArchiveUploadSpec {
                kind: "ArchiveUploadSpec".into(),
                name: "arc".into(),
                include: include.iter().map(|s| (*s).to_owned()).collect(),
                exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
                ..ArchiveUploadSpec::default()
            },
        }
    }

    fn project() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let specs = dir.path().join("specs");
        std::fs::create_dir_all(&specs).expect("mkdir");
        std::fs::write(dir.path().join("hello.js"), "module.exports = 1").expect("w");
        std::fs::create_dir_all(dir.path().join("multi")).expect("mkdir");
        std::fs::write(dir.path().join("multi/main.py"), "def main(): pass").expect("w");
        std::fs::write(dir.path().join("multi/util.py"), "X = 1").expect("w");
        std::fs::write(dir.path().join("multi/notes.txt"), "n").expect("w");
        (dir, specs)
    }

    fn entries(bytes: &[u8]) -> Vec<String> {
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip");
        let mut names: Vec<String> = (0..z.len())
            .map(|i| z.by_index(i).expect("e").name().to_owned())
            .collect();
        names.sort();
        names
    }

    fn build_deploy(a: &SpecArchive, specs: &Path) -> Result<BuiltArchive, Vec<SpecError>> {
        build(a, specs, false)
    }

    #[test]
    fn a_single_file_is_used_raw_relative_to_the_project_root() {
        let (_d, specs) = project();
        let b = build_deploy(&spec(&["hello.js"], &[]), &specs).expect("build");
        assert_eq!(b.bytes, b"module.exports = 1");
    }

    #[test]
    fn a_single_source_file_is_zipped_for_the_builder() {
        let (_d, specs) = project();
        let b = build(&spec(&["multi/main.py"], &[]), &specs, true).expect("build");
        assert_eq!(entries(&b.bytes), ["main.py"]);
    }

    #[test]
    fn globs_are_zipped_with_entries_at_the_root_and_excludes_removed() {
        let (_d, specs) = project();
        let b = build_deploy(&spec(&["multi/*"], &["multi/*.txt"]), &specs).expect("build");
        assert_eq!(entries(&b.bytes), ["main.py", "util.py"]);
    }

    #[test]
    fn a_directory_is_zipped_under_its_own_name() {
        let (_d, specs) = project();
        let b = build_deploy(&spec(&["multi"], &[]), &specs).expect("build");
        assert_eq!(
            entries(&b.bytes),
            [
                "multi/",
                "multi/main.py",
                "multi/notes.txt",
                "multi/util.py"
            ]
        );
    }

    #[test]
    fn building_twice_gives_identical_bytes_so_unchanged_specs_stay_unchanged() {
        let (_d, specs) = project();
        let a = build_deploy(&spec(&["multi/*"], &[]), &specs).expect("build");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = build_deploy(&spec(&["multi/*"], &[]), &specs).expect("build");
        assert_eq!(a.bytes, b.bytes);
    }

    #[test]
    fn unmatched_includes_are_errors_naming_the_entry() {
        let (_d, specs) = project();
        let errs = build_deploy(&spec(&["hello.js", "nope/*.py", "missing.js"], &[]), &specs)
            .expect_err("must fail");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with(
                "specs/f.yaml:1 (document 1): ArchiveUploadSpec 'arc': include[1]: 'nope/*.py' matches no files"
            ),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("include[2]: 'missing.js' does not exist"),
            "{}",
            text[1]
        );
    }

    #[test]
    fn includes_may_climb_out_of_the_project_root() {
        let (d, _) = project();
        let specs = d.path().join("deploy/specs");
        std::fs::create_dir_all(&specs).expect("mkdir");
        let b = build_deploy(&spec(&["../multi/*.py"], &[]), &specs).expect("build");
        assert_eq!(entries(&b.bytes), ["main.py", "util.py"]);
    }

    #[test]
    fn rootdir_relative_to_the_project_root_is_honoured() {
        let (_d, specs) = project();
        let mut s = spec(&["main.py"], &[]);
        s.aus.root_dir = "multi".into();
        assert_eq!(
            build_deploy(&s, &specs).expect("build").bytes,
            b"def main(): pass"
        );
    }
}
