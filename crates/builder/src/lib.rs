//! Source package builds: Fission's *buildermgr* and *builder* for local processes.
//!
//! The [`BuildManager`] watches Packages. A package whose `status.buildstatus` is `pending` is
//! built:
//!
//! 1. its status becomes `running` (a resourceVersion-checked write, so two writers never both
//!    claim it);
//! 2. the source archive (inline literal, or an archive of this server's
//!    [`ArchiveStorage`](fission_core::ArchiveStorage), sha256-verified) is unpacked —
//!    refusing zip-slip, links and zip bombs — into a fresh `<work_dir>/<ns>/<pkg>-<rv>/src`;
//! 3. the build runs there as child processes (see below), its output streamed line by line into
//!    the [`FunctionLogs`](fission_core::FunctionLogs) under `(namespace, "pkg:<name>")` and kept
//!    (the last [`Config::max_log_bytes`]) for `status.buildlog`;
//! 4. on success the deploy directory is zipped (entries at the archive root), stored in the
//!    archive store, and the package gets `spec.deployment = {type: url, url:
//!    STORAGE_URL_PREFIX + id, checksum: sha256}` and `status.buildstatus: succeeded`; then every
//!    Function referencing it is re-pinned (`spec.package.packageref.resourceversion` := the
//!    package's new resourceVersion), so the executor retires instances running the old code;
//! 5. on failure (non-zero exit, timeout, too much output, missing tool, bad archive) the package
//!    becomes `failed` with the whole story in its log, and no function is touched.
//!
//! The work directory is removed afterwards in every case.
//!
//! ## Which build runs
//!
//! * The package's `spec.buildcmd`, else the environment's `spec.builder.command`, is a *custom
//!   command* — unless it is Fission's default `build` (or `/build`, `/usr/local/bin/build`),
//!   which means "the builder image's own build". A custom command runs in any environment, with
//!   or without a builder image.
//! * Otherwise the environment's `spec.builder.image` selects a built-in builder
//!   ([`builtin_builder`](fission_core::runtime::builtin_builder)):
//!   * **Node** (`fission/node-builder*`): `npm ci` when `package-lock.json` (or
//!     `npm-shrinkwrap.json`) exists, else `npm install`, both with `--no-audit --no-fund`; a
//!     source without `package.json` has nothing to install.
//!   * **Python** (`fission/python-builder*`): `python -m pip install -r requirements.txt -t
//!     <src>` when `requirements.txt` exists; a source without it builds fine (Fission issue
//!     #1020). pip runs with a Python that has pip: [`Config::python_bin`], else
//!     `/usr/bin/python3` if it has pip, else the first `python3` on `PATH` that has one (pyenv
//!     shims are resolved to the real interpreter). Functions run on `/usr/bin/python3`, so pure
//!     Python packages are what matter; a different interpreter version is logged as a warning.
//!
//!   The built-in builders deploy the source directory itself, dependencies included (what
//!   Fission's `cp -r $SRC_PKG $DEPLOY_PKG` produces, without the copy).
//! * An environment without a builder image and a package without a build command → `failed`,
//!   with a log saying so.
//!
//! A custom command is split on whitespace and run without a shell, like Fission's builder, in
//! the source directory with `SRC_PKG=<src>` and `DEPLOY_PKG=<deploy>` (the deploy directory
//! does not exist yet: `cp -r $SRC_PKG $DEPLOY_PKG` works as in Fission). If the first word
//! names a file inside the source directory (`build.sh`, `./scripts/build.sh`) it is run from
//! there: directly when it starts with `#!` (the exec bit is added if the zip lost it), else with
//! `/bin/sh`. A command that leaves `$DEPLOY_PKG` a single file deploys that file as is.
//!
//! ## Builder pods
//!
//! With [`Config::remote`] set ([`RemoteBuilds`], e.g. Fission's builder pods on Kubernetes),
//! packages of the environments it handles are not built here: after the claim, the remote side
//! fetches the source, builds and stores the deployment, and the manager records the result and
//! re-pins functions as above, within the same [`Config::build_timeout`].
//!
//! ## Processes
//!
//! Every build step is started by the [`Config::runner`] ([`BuildRunner`]):
//!
//! * [`SandboxRunner`] (the server's default): each step in its own `fission-sandbox` slot, as
//!   function instances run: an unprivileged uid of its own; user, pid, mount, ipc, uts and
//!   network namespaces; seccomp; no capabilities; cgroup memory/CPU/pids limits from the
//!   environment's builder resources (`spec.builder.container.resources`, else
//!   `spec.resources`, else the runner's defaults); read-only `/usr` and a minimal `/etc`; a
//!   private size-limited `/tmp` that is also `HOME`, `TMPDIR` and where the npm and pip caches
//!   go. The build directory is the only writable host path, at `/packages` (`SRC_PKG=
//!   /packages/src`, `DEPLOY_PKG=/packages/deploy`). The slot's traffic reaches the outside
//!   (package registries) through NAT, never this host (the controller, the router) or other
//!   slots. A step killed for memory fails with "out of memory" in its log.
//! * [`HostRunner`] (`--sandbox none`): plain child processes of the server with its
//!   privileges, `HOME`, `TMPDIR` and caches inside the build's work directory.
//!
//! Each step gets a clean environment: `PATH` (the directories of the configured
//! node/npm/python, then `/usr/local/bin:/usr/bin:/bin`), `HOME`, `TMPDIR`, npm/pip caches,
//! `LANG=C.UTF-8`, `SRC_PKG`, `DEPLOY_PKG`, plus the variables named in [`Config::pass_env`]
//! that are set in the server's environment (proxies, CA bundles, package index settings).
//! Everything a step started (its process group, or its whole sandbox) is killed on timeout,
//! on too much output, when the build is superseded or the package deleted, and at shutdown.
//!
//! ## Concurrency
//!
//! At most [`Config::max_concurrent_builds`] builds run at once; others wait as `pending`. One
//! build per package runs at a time: a newer `pending` version of a package (its source was
//! updated again) cancels the running build, whose result is then discarded. A package found
//! `running` when the manager (re)lists — a server that stopped mid-build — is built again.
#![deny(missing_docs)]

mod archive;
mod build;
mod log;
mod manager;
mod process;
mod recipe;
mod remote;
mod runner;
mod sys;
mod tools;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fission_unpack::UnpackLimits;

pub use crate::archive::{ZipDirError, Zipped, zip_dir};
pub use crate::manager::BuildManager;
pub use crate::remote::{RemoteBuilds, RemoteLog};
pub use crate::runner::{
    BuildResources, BuildRunner, BuildStep, DEFAULT_BUILD_LIMITS, HostRunner, SANDBOX_PACKAGES,
    SandboxRunner, StepPaths, StepProcess,
};

/// Build manager settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where builds unpack and run (`<dir>/<namespace>/<package>-<resourceVersion>/`). The
    /// directory belongs to the build manager: it is emptied when [`BuildManager::run`] starts.
    pub work_dir: PathBuf,
    /// Node.js binary; its directory comes first on the builds' `PATH` (npm runs on it).
    pub node_bin: PathBuf,
    /// npm; `None`: `npm` next to [`Config::node_bin`], else the first `npm` on `PATH`.
    pub npm_bin: Option<PathBuf>,
    /// Python that runs `pip install`; `None`: detected on the first Python build (see the
    /// crate documentation).
    pub python_bin: Option<PathBuf>,
    /// The Python functions run on, used to warn when pip runs on another version.
    pub runtime_python_bin: PathBuf,
    /// How long one build (all its steps) may take. Fission's buildermgr allows 10 minutes.
    pub build_timeout: Duration,
    /// Build output (stdout + stderr of all steps) beyond which the build is stopped and fails.
    pub max_output_bytes: u64,
    /// How much of the build log is kept in `status.buildlog` (the end of it).
    pub max_log_bytes: usize,
    /// Largest deployment archive a build may produce (Fission's storagesvc caps uploads at
    /// 256 MiB).
    pub max_deploy_bytes: u64,
    /// Budget for unpacking a source archive, and for what a build may deploy (the executor
    /// unpacks deployments with the same default budget).
    pub unpack_limits: UnpackLimits,
    /// Builds running at the same time.
    pub max_concurrent_builds: usize,
    /// Downloads of remote (http/https) source archives; their size is also capped by
    /// [`Config::unpack_limits`].
    pub archive_fetch: fission_fetch::FetchConfig,
    /// Variables passed from the server's environment to build steps when set.
    pub pass_env: Vec<OsString>,
    /// Where build steps run: [`HostRunner`] (the default here) or [`SandboxRunner`].
    pub runner: Arc<dyn BuildRunner>,
    /// Builds of the environments this handles run there instead (builder pods); `None`: all
    /// builds run here.
    pub remote: Option<Arc<dyn RemoteBuilds>>,
}

/// Default `build_timeout`: Fission's buildermgr waits 10 minutes for a build.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Variables passed through to builds by default: proxies, CA bundles and package index
/// settings, without which `pip`/`npm` cannot reach their registries on many hosts.
pub const DEFAULT_PASS_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "NPM_CONFIG_REGISTRY",
    "npm_config_registry",
    "NPM_CONFIG_CAFILE",
    "npm_config_cafile",
];

impl Config {
    /// Defaults: node and python resolved like the executor does (`/usr/bin/<name>`, else the
    /// first on `PATH` that is not a pyenv shim), npm and pip's Python detected, 10-minute
    /// timeout, 64 MiB of output, 256 KiB of log in the status, 256 MiB deployments, two builds
    /// at a time, steps run as plain processes ([`HostRunner`]).
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        let node_bin =
            tools::find_program("node").unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
        let runtime_python_bin =
            tools::find_program("python3").unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
        Self {
            work_dir: work_dir.into(),
            node_bin,
            npm_bin: None,
            python_bin: None,
            runtime_python_bin,
            build_timeout: DEFAULT_BUILD_TIMEOUT,
            max_output_bytes: 64 << 20,
            max_log_bytes: 256 << 10,
            max_deploy_bytes: 256 << 20,
            unpack_limits: UnpackLimits::default(),
            max_concurrent_builds: 2,
            archive_fetch: fission_fetch::FetchConfig::default(),
            pass_env: DEFAULT_PASS_ENV.iter().map(OsString::from).collect(),
            runner: Arc::new(HostRunner),
            remote: None,
        }
    }
}

/// Why the build manager cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The work directory cannot be prepared.
    #[error("cannot prepare the build directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
