use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether missing prerequisites fail tests: `CI` is set to anything but empty, `0` or `false`
/// (CI systems set `CI=true`).
pub fn ci_enforced() -> bool {
    enforced(std::env::var("CI").ok().as_deref())
}

fn enforced(ci: Option<&str>) -> bool {
    match ci.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// Gate a test on a prerequisite. `probe` is the check's outcome; on `Ok` its value is returned.
/// On `Err` the test cannot run: under CI ([`ci_enforced`]) this panics naming `what` is
/// missing, why, and how to `install` it; elsewhere it prints a `SKIPPED:` line to stderr and
/// returns `None`, so the caller returns early.
///
/// ```no_run
/// # fn t() {
/// let Some(_bwrap) = fission_test_support::require(
///     "bubblewrap (bwrap on PATH)",
///     "apt-get install bubblewrap",
///     fission_test_support::binary_on_path("bwrap"),
/// ) else {
///     return;
/// };
/// # }
/// ```
#[track_caller]
pub fn require<T, E: Display>(what: &str, install: &str, probe: Result<T, E>) -> Option<T> {
    // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a skip
    // must be seen.
    decide(ci_enforced(), &mut std::io::stderr(), what, install, probe)
}

#[track_caller]
fn decide<T, E: Display>(
    ci: bool,
    out: &mut dyn Write,
    what: &str,
    install: &str,
    probe: Result<T, E>,
) -> Option<T> {
    let why = match probe {
        Ok(v) => return Some(v),
        Err(why) => why,
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    if ci {
        panic!(
            "prerequisite missing: {what}: {why}\nInstall it ({install}) — CI is set, so a missing \
             prerequisite fails {test} instead of skipping it"
        );
    }
    let _ = writeln!(
        out,
        "SKIPPED: {test}: {what} is missing: {why} (install: {install}; with CI=true this fails)"
    );
    None
}

/// The first executable `name` on `PATH`, or why there is none.
pub fn binary_on_path(name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("`{name}` is not on PATH ({})", path.to_string_lossy()))
}

/// This checkout's `environments/` directory, once the runtimes' dependencies are installed
/// there (`environments/setup.sh`: Node's `node_modules`, Python's `vendor`), else what is missing.
pub fn runtime_dependencies() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../environments");
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for needed in ["nodejs/node_modules/express", "python/vendor/flask"] {
        if !dir.join(needed).is_dir() {
            return Err(format!("{} is missing", dir.join(needed).display()));
        }
    }
    Ok(dir)
}

/// [`require`] the runtimes: `/usr/bin/node`, `/usr/bin/python3` (what the runtimes run on)
/// and their dependencies ([`runtime_dependencies`]). Returns the `environments/` directory.
#[track_caller]
pub fn require_runtimes() -> Option<PathBuf> {
    for (program, package) in [("/usr/bin/node", "nodejs"), ("/usr/bin/python3", "python3")] {
        let found = if Path::new(program).is_file() {
            Ok(())
        } else {
            Err(format!("{program} does not exist"))
        };
        require(program, &format!("apt-get install {package}"), found)?;
    }
    require(
        "the runtimes' dependencies",
        "run environments/setup.sh",
        runtime_dependencies(),
    )
}

/// `Ok` when this process runs with effective uid 0, else why not.
pub fn running_as_root() -> Result<(), String> {
    // /proc/self/status instead of geteuid(): the workspace denies unsafe code.
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or("no Uid: line in /proc/self/status")?;
    match euid {
        "0" => Ok(()),
        other => Err(format!("running as uid {other}, not root")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_enforced_for_any_value_but_empty_zero_or_false() {
        for v in ["true", "1", "yes", "TRUE", "github"] {
            assert!(enforced(Some(v)), "CI={v}");
        }
        for v in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("False"),
            Some(" "),
        ] {
            assert!(!enforced(v), "CI={v:?}");
        }
    }

    #[test]
    fn a_met_prerequisite_returns_the_probes_value() {
        let mut out = Vec::new();
        assert_eq!(
            decide(true, &mut out, "x", "y", Ok::<_, String>(7)),
            Some(7)
        );
        assert_eq!(
            decide(false, &mut out, "x", "y", Ok::<_, String>(7)),
            Some(7)
        );
        assert!(out.is_empty(), "nothing printed for a met prerequisite");
    }

    #[test]
    fn a_missing_prerequisite_skips_outside_ci_with_a_skipped_line() {
        let mut out = Vec::new();
        let got = decide(
            false,
            &mut out,
            "frobnicator",
            "apt-get install frob",
            Err::<(), _>("not found"),
        );
        assert_eq!(got, None);
        let line = String::from_utf8(out).expect("utf-8");
        assert!(line.starts_with("SKIPPED: "), "{line}");
        assert!(
            line.ends_with("frobnicator is missing: not found (install: apt-get install frob; with CI=true this fails)\n"),
            "{line}"
        );
    }

    #[test]
    #[should_panic(
        expected = "prerequisite missing: frobnicator: not found\nInstall it (apt-get install frob)"
    )]
    fn a_missing_prerequisite_fails_under_ci() {
        decide(
            true,
            &mut Vec::new(),
            "frobnicator",
            "apt-get install frob",
            Err::<(), _>("not found"),
        );
    }

    #[test]
    fn finds_binaries_on_path_and_names_missing_ones() {
        assert!(binary_on_path("sh").is_ok_and(|p| p.ends_with("sh")));
        let err = binary_on_path("surely-no-such-binary-here").expect_err("missing");
        assert!(
            err.starts_with("`surely-no-such-binary-here` is not on PATH"),
            "{err}"
        );
    }
}
