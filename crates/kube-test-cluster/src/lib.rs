//! A real Kubernetes control plane (etcd + kube-apiserver, built from the Go module proxy by
//! `scripts/k8s/build-binaries.sh`) for tests, started by `scripts/k8s/control-plane.sh` on
//! loopback ports picked at random.
//!
//! [`shared`] starts one cluster per test binary and hands every test the same one; the
//! script's watchdog stops it and removes its directory when the test binary exits. Tests
//! that disturb the cluster (restarting the API server) use [`TestCluster::start`] for their
//! own.
//!
//! When a prerequisite is missing (no Go toolchain to build the binaries, no openssl) the
//! cluster is `None` and the test should return early — unless `CI` is set
//! ([`fission_test_support::ci_enforced`]), in which case [`shared`] and
//! [`TestCluster::start_or_skip`] panic, so CI never passes a test that did not run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// Why the cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A tool the harness needs is not installed.
    #[error("{tool} is not installed (needed for the Kubernetes tests)")]
    Missing {
        /// The tool.
        tool: &'static str,
    },
    /// A script or command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// What was run.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// I/O around the state directory or a free port.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The repository root (this crate lives in `crates/kube-test-cluster`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    repo_root().join("scripts/k8s/control-plane.sh")
}

fn free_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| ClusterError::Io {
        what: "find a free port".into(),
        source,
    })?;
    let port = l
        .local_addr()
        .map_err(|source| ClusterError::Io {
            what: "find a free port".into(),
            source,
        })?
        .port();
    Ok(port)
}

fn run(cmd: &mut Command) -> Result<Output, ClusterError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| ClusterError::Io {
        what: format!("run {command}"),
        source,
    })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

fn have(tool: &'static str) -> Result<(), ClusterError> {
    fission_test_support::binary_on_path(tool)
        .map(|_| ())
        .map_err(|_| ClusterError::Missing { tool })
}

/// Whether tests must fail instead of skipping (CI sets `CI`).
pub fn in_ci() -> bool {
    fission_test_support::ci_enforced()
}

/// helm from `HELM_BIN` (a directory; .ci/run sets it) or built and cached by
/// `scripts/k8s/build-helm.sh`; None outside CI when there is no Go toolchain to build it.
pub fn helm() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HELM_BIN").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("helm"));
    }
    fission_test_support::require(
        "helm",
        "scripts/k8s/build-helm.sh builds it with go (scripts/k8s/ensure-go.sh)",
        fission_test_support::binary_on_path("go").map_err(|e| e.to_string()),
    )?;
    match run(&mut Command::new(
        repo_root().join("scripts/k8s/build-helm.sh"),
    )) {
        Ok(out) => {
            let dir = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned();
            Some(PathBuf::from(dir).join("helm"))
        }
        Err(e) => panic!("cannot build helm: {e}"),
    }
}

/// A running etcd + kube-apiserver.
pub struct TestCluster {
    dir: PathBuf,
    /// Keeps the directory alive for clusters this process stops itself.
    _owned_dir: Option<tempfile::TempDir>,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// An admin (system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    /// Directory holding etcd, kube-apiserver and kubectl.
    pub bin_dir: PathBuf,
    /// Seconds the start took (certificates, etcd, API server ready).
    pub start_secs: f64,
    stop_on_drop: bool,
}

impl TestCluster {
    fn start_inner(shared: bool) -> Result<Self, ClusterError> {
        have("openssl")?;
        have("curl")?;
        if std::env::var_os("K8S_BIN").is_none() {
            have("go")?;
        }
        let tmp = tempfile::Builder::new()
            .prefix("fission-kube-")
            .tempdir()
            .map_err(|source| ClusterError::Io {
                what: "create the cluster directory".into(),
                source,
            })?;
        let (etcd, peer, api) = (free_port()?, free_port()?, free_port()?);
        let t0 = Instant::now();
        let mut cmd = Command::new(script());
        cmd.arg("start").arg(tmp.path()).args([
            etcd.to_string(),
            peer.to_string(),
            api.to_string(),
        ]);
        if shared {
            // The watchdog stops the cluster when this test binary exits.
            cmd.arg(std::process::id().to_string());
        }
        run(&mut cmd)?;
        let start_secs = t0.elapsed().as_secs_f64();
        let bin_dir = std::fs::read_to_string(tmp.path().join("bin-dir")).map_err(|source| {
            ClusterError::Io {
                what: "read bin-dir".into(),
                source,
            }
        })?;
        let dir = tmp.path().to_owned();
        // A shared cluster's directory is removed by the watchdog, not by TempDir's Drop (a
        // static is never dropped, and the watchdog must find the PID files).
        let owned = if shared {
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        Ok(Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            server: format!("https://127.0.0.1:{api}"),
            bin_dir: PathBuf::from(bin_dir.trim()),
            dir,
            _owned_dir: owned,
            start_secs,
            stop_on_drop: !shared,
        })
    }

    /// Start a cluster of this test's own, stopped on drop.
    pub fn start() -> Result<Self, ClusterError> {
        Self::start_inner(false)
    }

    /// [`TestCluster::start`], or None (after saying why) when a prerequisite is missing
    /// outside CI. Panics in CI and on any other failure.
    pub fn start_or_skip() -> Option<Self> {
        skip_or_panic(Self::start())
    }

    /// Run kubectl against this cluster.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        kubectl(&self.bin_dir, &self.kubeconfig, args)
    }

    /// Run kubectl and return stdout; panics with stderr when it fails.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        kubectl_ok(&self.bin_dir, &self.kubeconfig, args)
    }

    /// Apply the checked-in `fission.io` CRDs and wait until they are Established.
    pub fn apply_crds(&self) {
        apply_crds(&self.bin_dir, &self.kubeconfig);
    }

    /// Stop and start the API server (etcd and its data stay).
    pub fn restart_apiserver(&self) -> Result<(), ClusterError> {
        run(Command::new(script())
            .arg("restart-apiserver")
            .arg(&self.dir))
        .map(|_| ())
    }

    /// The state directory (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
        }
    }
}

fn skip_or_panic(r: Result<TestCluster, ClusterError>) -> Option<TestCluster> {
    match r {
        Ok(c) => Some(c),
        Err(ClusterError::Missing { tool }) => fission_test_support::require(
            "a Kubernetes test control plane",
            "scripts/k8s/build-binaries.sh needs go (scripts/k8s/ensure-go.sh); certificates need openssl and curl",
            Err::<TestCluster, _>(format!("{tool} is not installed")),
        ),
        Err(e) => panic!("cannot start the Kubernetes test cluster: {e}"),
    }
}

/// The cluster shared by every test in this test binary, started on first use with the
/// `fission.io` CRDs applied. None when a prerequisite is missing outside CI.
pub fn shared() -> Option<&'static TestCluster> {
    static CLUSTER: OnceLock<Option<TestCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let c = skip_or_panic(TestCluster::start_inner(true))?;
            eprintln!(
                "test cluster at {} ready in {:.1} s",
                c.server, c.start_secs
            );
            c.apply_crds();
            Some(c)
        })
        .as_ref()
}

/// A one-node cluster that runs pods (`scripts/k8s/node-cluster.sh`): etcd, kube-apiserver,
/// kube-controller-manager, kube-scheduler, containerd, a kubelet and kube-proxy (nftables
/// mode: ClusterIP Services work, NodePorts answer on [`NodeCluster::host_ip`]), with pods on
/// the bridge `fissionrs0` (10.98.0.0/24; the host is [`NodeCluster::host_ip`] on it, so a
/// server listening there is reachable from pods). No cluster DNS. One node runs on a machine at a time (the script
/// waits for another test run's node to stop). Needs root, Debian's `runc` and
/// `containernetworking-plugins`, `jq`, `gcc` and Go.
pub struct NodeCluster {
    dir: PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
    /// `https://10.98.0.1:<port>`: the API server listens on the pod bridge, so pods reach it.
    pub server: String,
    /// An admin (system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    /// Directory holding etcd, kube-apiserver and kubectl.
    pub bin_dir: PathBuf,
    /// The host's address on the pod bridge.
    pub host_ip: std::net::Ipv4Addr,
    /// The node's name.
    pub node_name: String,
    /// Seconds the start took.
    pub start_secs: f64,
    stop_on_drop: bool,
}

fn node_script() -> PathBuf {
    repo_root().join("scripts/k8s/node-cluster.sh")
}

/// Build the node's images (`scripts/k8s/build-images.sh`) into `out`, with the fetcher image
/// made from `fission` (the binary under test). Cached by content: unchanged images are kept.
pub fn build_node_images(out: &Path, fission: &Path) -> Result<(), ClusterError> {
    for tool in ["jq", "gcc", "go", "runc", "node", "python3"] {
        have(tool)?;
    }
    run(
        Command::new(repo_root().join("scripts/k8s/build-images.sh"))
            .arg(out)
            .arg(fission),
    )
    .map(|_| ())
}

impl NodeCluster {
    fn start_inner(images: &Path, shared: bool) -> Result<Self, ClusterError> {
        for tool in ["openssl", "curl", "ip", "runc"] {
            have(tool)?;
        }
        if !Path::new("/usr/lib/cni/bridge").exists() {
            return Err(ClusterError::Missing {
                tool: "containernetworking-plugins",
            });
        }
        // The kubelet needs root.
        let uid = run(Command::new("id").arg("-u"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err(ClusterError::Missing {
                tool: "root (the kubelet needs it)",
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix("fission-node-")
            .tempdir()
            .map_err(|source| ClusterError::Io {
                what: "create the node directory".into(),
                source,
            })?;
        let api = free_port()?;
        let t0 = Instant::now();
        let mut cmd = Command::new(node_script());
        cmd.arg("start").arg(tmp.path());
        for (var, port) in [
            ("ETCD_PORT", free_port()?),
            ("ETCD_PEER_PORT", free_port()?),
            ("APISERVER_PORT", api),
            ("KCM_PORT", free_port()?),
            ("SCHEDULER_PORT", free_port()?),
            ("KUBELET_PORT", free_port()?),
            ("KUBELET_HEALTHZ_PORT", free_port()?),
            ("KUBE_PROXY_HEALTHZ_PORT", free_port()?),
            ("KUBE_PROXY_METRICS_PORT", free_port()?),
        ] {
            cmd.env(var, port.to_string());
        }
        cmd.env("NODE_IMAGES_DIR", images);
        if shared {
            cmd.arg(std::process::id().to_string());
        }
        run(&mut cmd)?;
        let read = |f: &str| {
            std::fs::read_to_string(tmp.path().join(f))
                .map(|s| s.trim().to_owned())
                .map_err(|source| ClusterError::Io {
                    what: format!("read {f}"),
                    source,
                })
        };
        let bin_dir = PathBuf::from(read("bin-dir")?);
        let node_name = read("node-name")?;
        let dir = tmp.path().to_owned();
        let owned = if shared {
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        Ok(Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            server: format!("https://10.98.0.1:{api}"),
            bin_dir,
            host_ip: std::net::Ipv4Addr::new(10, 98, 0, 1),
            node_name,
            dir,
            _owned_dir: owned,
            start_secs: t0.elapsed().as_secs_f64(),
            stop_on_drop: !shared,
        })
    }

    /// Start a node of this test's own (images from `images`, see [`build_node_images`]),
    /// torn down on drop.
    pub fn start(images: &Path) -> Result<Self, ClusterError> {
        Self::start_inner(images, false)
    }

    /// Run kubectl against this cluster.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        kubectl(&self.bin_dir, &self.kubeconfig, args)
    }

    /// Run kubectl and return stdout; panics with stderr when it fails.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        kubectl_ok(&self.bin_dir, &self.kubeconfig, args)
    }

    /// Apply the checked-in `fission.io` CRDs and wait until they are Established.
    pub fn apply_crds(&self) {
        apply_crds(&self.bin_dir, &self.kubeconfig);
    }

    /// The state directory (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = Command::new(node_script())
                .arg("stop")
                .arg(&self.dir)
                .status();
        }
    }
}

/// The node shared by every test in this test binary, started on first use (images built
/// from `fission` into a cache under `~/.cache/fission-rs/k8s-node/images`, or
/// `$FISSION_RS_NODE_IMAGES`) with the CRDs
/// applied. None when a prerequisite is missing outside CI; panics in CI and on failures.
pub fn shared_node(fission: &Path) -> Option<&'static NodeCluster> {
    static NODE: OnceLock<Option<NodeCluster>> = OnceLock::new();
    NODE.get_or_init(|| {
        // FISSION_RS_NODE_IMAGES lets concurrent checkouts (each with its own `fission`
        // binary) keep their own image archives instead of rebuilding one another's.
        let images = std::env::var_os("FISSION_RS_NODE_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(std::env::temp_dir)
                    .join(".cache/fission-rs/k8s-node/images")
            });
        let started = build_node_images(&images, fission)
            .and_then(|()| NodeCluster::start_inner(&images, true));
        let node = match started {
            Ok(n) => n,
            Err(ClusterError::Missing { tool }) => {
                return fission_test_support::require(
                    "a Kubernetes test node",
                    "scripts/k8s/node-cluster.sh needs root, runc and containernetworking-plugins (apt), jq, gcc and go",
                    Err::<NodeCluster, _>(format!("{tool} is not installed")),
                );
            }
            Err(e) => panic!("cannot start the Kubernetes test node: {e}"),
        };
        eprintln!(
            "test node {} at {} ready in {:.1} s",
            node.node_name, node.server, node.start_secs
        );
        node.apply_crds();
        Some(node)
    })
    .as_ref()
}

/// kubectl from `bin_dir` against the cluster of `kubeconfig` (both cluster kinds share it).
fn kubectl<I, S>(bin_dir: &Path, kubeconfig: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(bin_dir.join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run kubectl: {e}"),
    }
}

/// [`kubectl`]'s stdout; panics with stderr when it fails.
fn kubectl_ok<I, S>(bin_dir: &Path, kubeconfig: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = kubectl(bin_dir, kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Apply the checked-in `fission.io` CRDs and wait until they are Established.
fn apply_crds(bin_dir: &Path, kubeconfig: &Path) {
    let crds = repo_root().join("deploy/crds");
    kubectl_ok(
        bin_dir,
        kubeconfig,
        [
            std::ffi::OsStr::new("apply"),
            "-f".as_ref(),
            crds.as_os_str(),
        ],
    );
    kubectl_ok(
        bin_dir,
        kubeconfig,
        [
            std::ffi::OsStr::new("wait"),
            "--for=condition=Established".as_ref(),
            "--timeout=60s".as_ref(),
            "-f".as_ref(),
            crds.as_os_str(),
        ],
    );
}
