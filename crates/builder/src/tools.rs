//! Finding the programs builds need: node, npm, and a Python that has pip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `/usr/bin/<name>`, else the first `<name>` on `PATH`, canonicalized; never a pyenv-style
/// shim (a shim adds ~80 ms per start and may pick another interpreter per directory).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    candidates(name)
        .into_iter()
        .find(|p| !p.to_string_lossy().contains("/shims/"))
}

/// Every existing `<name>`: `/usr/bin` first, then `PATH` order; canonicalized, de-duplicated.
fn candidates(name: &str) -> Vec<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in std::iter::once(PathBuf::from("/usr/bin")).chain(path_dirs) {
        let p = dir.join(name);
        if !p.is_absolute() {
            continue;
        }
        if let Ok(c) = std::fs::canonicalize(&p)
            && c.is_file()
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}

/// npm: `npm` next to `node`, else on `PATH`.
pub(crate) fn find_npm(node: &Path) -> Option<PathBuf> {
    let beside = node.parent().map(|d| d.join("npm")).filter(|p| p.is_file());
    beside.or_else(|| candidates("npm").into_iter().next())
}

/// A Python interpreter that can run `-m pip`, resolved to the real executable, and its
/// `major.minor` version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipPython {
    pub(crate) exe: PathBuf,
    pub(crate) version: String,
}

const PROBE: &str = "import sys, pip; print(sys.executable); print('%d.%d' % sys.version_info[:2])";

/// Ask `python` whether it has pip; returns its real executable and version.
pub(crate) async fn probe_pip(python: &Path) -> Option<PipPython> {
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(["-c", PROBE])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // Shims (pyenv) need their own variables to find the interpreter.
    for var in ["HOME", "PYENV_ROOT", "PYENV_VERSION"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let exe = PathBuf::from(lines.next()?.trim());
    let version = lines.next()?.trim().to_owned();
    exe.is_absolute().then_some(PipPython { exe, version })
}

/// The version (`major.minor`) of `python`, if it runs.
pub(crate) async fn python_version(python: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(python)
            .args([
                "-I",
                "-S",
                "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            ])
            .env_clear()
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Find a Python with pip: `/usr/bin/python3`, then every `python3` on `PATH` (shims included:
/// the probe resolves them), preferring one with the same version as `runtime`.
pub(crate) async fn detect_pip_python(
    runtime_version: Option<&str>,
) -> Result<PipPython, Vec<PathBuf>> {
    let mut tried = Vec::new();
    let mut found: Vec<PipPython> = Vec::new();
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for dir in std::iter::once(PathBuf::from("/usr/bin")).chain(path_dirs) {
        let p = dir.join("python3");
        if !p.is_absolute() || !p.is_file() || tried.contains(&p) {
            continue;
        }
        tried.push(p.clone());
        if let Some(pp) = probe_pip(&p).await {
            if runtime_version.is_none_or(|v| v == pp.version) {
                return Ok(pp);
            }
            found.push(pp);
        }
    }
    found.into_iter().next().ok_or(tried)
}

/// The programs of this build manager, detected once.
#[derive(Debug)]
pub(crate) struct Tools {
    node: PathBuf,
    npm: Option<PathBuf>,
    python: Option<PathBuf>,
    runtime_python: PathBuf,
    pip: tokio::sync::OnceCell<Result<PipPython, String>>,
    runtime_version: tokio::sync::OnceCell<Option<String>>,
}

impl Tools {
    pub(crate) fn new(config: &crate::Config) -> Self {
        Self {
            node: config.node_bin.clone(),
            npm: config
                .npm_bin
                .clone()
                .or_else(|| find_npm(&config.node_bin)),
            python: config.python_bin.clone(),
            runtime_python: config.runtime_python_bin.clone(),
            pip: tokio::sync::OnceCell::new(),
            runtime_version: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) fn node(&self) -> &Path {
        &self.node
    }

    pub(crate) fn npm(&self) -> Result<PathBuf, String> {
        self.npm.clone().ok_or_else(|| {
            format!(
                "npm not found (looked next to {} and on PATH); install npm",
                self.node.display()
            )
        })
    }

    async fn runtime_version(&self) -> Option<String> {
        self.runtime_version
            .get_or_init(|| python_version(&self.runtime_python))
            .await
            .clone()
    }

    /// The Python that runs pip (configured, or detected on first use).
    pub(crate) async fn pip_python(&self) -> Result<PipPython, String> {
        self.pip
            .get_or_init(|| async {
                if let Some(p) = &self.python {
                    let version = python_version(p).await.unwrap_or_default();
                    return Ok(PipPython { exe: p.clone(), version });
                }
                let runtime = self.runtime_version().await;
                detect_pip_python(runtime.as_deref()).await.map_err(|tried| {
                    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                    format!(
                        "no Python with pip found (tried {}); install pip for /usr/bin/python3 (Debian: apt-get install \
                         python3-pip) or configure the builder's Python",
                        if tried.is_empty() { "no python3 on PATH".to_owned() } else { tried.join(", ") }
                    )
                })
            })
            .await
            .clone()
    }

    /// A note for the log when pip runs on another Python version than functions do.
    pub(crate) async fn python_version_warning(&self, pip: &PipPython) -> Option<String> {
        let runtime = self.runtime_version().await?;
        (!pip.version.is_empty() && pip.version != runtime).then(|| {
            format!(
                "Warning: pip runs on Python {} ({}) but functions run on Python {runtime} ({}); packages with compiled \
                 extensions may not load",
                pip.version,
                pip.exe.display(),
                self.runtime_python.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_and_canonical() {
        let sh = find_program("sh").expect("sh exists");
        assert!(sh.is_absolute());
        assert_eq!(std::fs::canonicalize(&sh).expect("canon"), sh);
        assert!(find_program("no-such-program-fission").is_none());
    }

    #[tokio::test]
    async fn a_python_with_pip_is_found_when_there_is_one() {
        let Some(py) = find_program("python3") else {
            return;
        };
        match detect_pip_python(None).await {
            Ok(pp) => {
                assert!(pp.exe.is_absolute());
                assert!(pp.version.starts_with("3."), "{}", pp.version);
            }
            Err(tried) => assert!(tried.contains(&py) || !tried.is_empty()),
        }
    }
}
