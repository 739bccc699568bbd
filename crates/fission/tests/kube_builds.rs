//! End-to-end on a real node: source builds run in builder pods (Fission's buildermgr), not in
//! the server. `fission server --store kubernetes --instances pods` against etcd +
//! kube-apiserver + controller-manager + scheduler + containerd + kubelet on this machine; the
//! builder pod (the `fission` binary as `/builder` beside python3 + pip, and the `fission
//! fetcher` sidecar) installs requirements from PyPI, the deployment is stored in the
//! controller, and the function runs in a pool pod with the installed dependency.
//!
//! The test node gives pods no route to the outside (its bridge network has no NAT), so pip in
//! the builder pod cannot reach PyPI itself: the test downloads the wheel from PyPI on the host
//! and serves it as a PyPI-style simple index on the pod bridge; the server hands
//! `PIP_INDEX_URL`/`PIP_TRUSTED_HOST` from its environment to builder pods, as it would a proxy.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_test_cluster::{NodeCluster, shared_node};
use support::pods::{PodServer, PodServerOptions, wait_for};
use support::{BIN, http};

const TOKEN: &str = "kube-builds-test-token-0123456789abcdef";
const NS: &str = "fission-builds-it";

/// A PyPI-style simple index (`/simple/<project>/` listing its files) with six 1.16.0 from
/// PyPI, served by `python3 -m http.server` on the pod bridge; stopped on drop.
struct WheelIndex {
    child: Child,
    url: String,
}

impl WheelIndex {
    fn start(host: std::net::Ipv4Addr) -> Self {
        let home = std::env::var_os("HOME").expect("HOME");
        let root = Path::new(&home).join(".cache/fission-rs/pypi-index/six-1.16.0");
        let project = root.join("simple/six");
        let wheel = project.join("six-1.16.0-py2.py3-none-any.whl");
        if !wheel.exists() {
            std::fs::create_dir_all(&project).expect("mkdir");
            let out = Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "six==1.16.0", "-d"])
                .arg(&project)
                .output()
                .expect("run pip download");
            assert!(
                out.status.success() && wheel.exists(),
                "cannot download six from PyPI: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                &host.to_string(),
                "0",
                "--directory",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the index server");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read");
        // "Serving HTTP on 10.98.0.1 port 41234 (http://10.98.0.1:41234/) ..."
        let port = first
            .split(" port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected http.server output: {first}"))
            .to_owned();
        Self {
            child,
            url: format!("http://{host}:{port}/simple/"),
        }
    }
}

impl Drop for WheelIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names of the builder Deployments of environment `env`.
fn builder_deployments(node: &NodeCluster, env: &str) -> Vec<String> {
    node.kubectl_ok([
        "get",
        "deployments",
        "-n",
        NS,
        "-l",
        &format!("envName={env},owner=buildermgr"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(str::to_owned)
    .collect()
}

fn files(dir: &Path, name: &str, files: &[(&str, &str)]) -> String {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    for (f, body) in files {
        std::fs::write(d.join(f), body).expect("write");
    }
    format!("{}/*", d.display())
}

/// `pkg info` once the package left pending/running.
fn finished_info(node: &NodeCluster, server: &PodServer, pkg: &str) -> String {
    wait_for(
        node,
        server,
        Duration::from_secs(300),
        &format!("package {pkg} to finish building"),
        || {
            let info = server.fission_ok(&["pkg", "info", "--name", pkg]);
            (info.contains("succeeded") || info.contains("failed")).then_some(info)
        },
    )
}

const PY_SIX: &str =
    "import six\n\ndef main():\n    return 'six %s in a pod\\n' % six.__version__\n";

#[test]
fn source_packages_build_in_the_environments_builder_pod_on_a_real_kubelet() {
    let Some(node) = shared_node(Path::new(BIN)) else {
        return;
    };
    node.kubectl_ok(["create", "namespace", NS]);
    let index = WheelIndex::start(node.host_ip);
    let trusted_host = node.host_ip.to_string();
    let server = PodServer::start(
        node,
        PodServerOptions {
            rust_log: "info,fission_builder_kube=debug",
            args: &["--pod-builder-ready-timeout", "20"],
            // Handed on to builder pods (see the module docs).
            env: &[
                ("PIP_INDEX_URL", &index.url),
                ("PIP_TRUSTED_HOST", &trusted_host),
            ],
            ..PodServerOptions::new(NS, TOKEN)
        },
    );
    let code = tempfile::tempdir().expect("tempdir");

    server.fission_ok(&[
        "env",
        "create",
        "--name",
        "python",
        "--image",
        "fission/python-env",
        "--builder",
        "fission/python-builder",
        "--poolsize",
        "1",
    ]);
    // The environment gets a builder Deployment `<env>-<resourceVersion>` whose pod gets Ready.
    let first = wait_for(
        node,
        &server,
        Duration::from_secs(60),
        "the builder deployment",
        || builder_deployments(node, "python").into_iter().next(),
    );
    assert!(first.starts_with("python-"), "{first}");
    wait_for(
        node,
        &server,
        Duration::from_secs(120),
        "a ready builder pod",
        || {
            let ready = node.kubectl_ok([
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "envName=python,owner=buildermgr",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            ready.contains("True").then_some(())
        },
    );

    // A source package with requirements: built in the pod by pip, from PyPI.
    let src = files(
        code.path(),
        "pysix",
        &[("main.py", PY_SIX), ("requirements.txt", "six==1.16.0\n")],
    );
    let t0 = Instant::now();
    server.fission_ok(&[
        "pkg",
        "create",
        "--name",
        "pysix-pkg",
        "--env",
        "python",
        "--src",
        &src,
        "--nowait",
    ]);
    let info = finished_info(node, &server, "pysix-pkg");
    eprintln!("builder-pod build of six: {:?}", t0.elapsed());
    assert!(info.contains("succeeded"), "{info}\n{}", server.log_text());
    assert!(
        info.contains("Building in pod python-")
            && info.contains("Successfully installed six-1.16.0"),
        "the build log shows the pod and pip's output: {info}"
    );
    // It ran in the builder pod, not in the server: the builder container's log has pip.
    let pod = node
        .kubectl_ok([
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "envName=python,owner=buildermgr",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .trim()
        .to_owned();
    let builder_log = node.kubectl_ok(["logs", "-n", NS, &pod, "-c", "builder"]);
    assert!(
        builder_log.contains("Successfully installed six-1.16.0"),
        "{builder_log}"
    );
    server.fission_ok(&[
        "fn",
        "create",
        "--name",
        "pysix",
        "--env",
        "python",
        "--pkg",
        "pysix-pkg",
        "--entrypoint",
        "main.main",
    ]);
    server.fission_ok(&[
        "route",
        "create",
        "--function",
        "pysix",
        "--url",
        "/pysix",
        "--method",
        "GET",
    ]);
    let body = wait_for(
        node,
        &server,
        Duration::from_secs(120),
        "the function to answer",
        || {
            let r = http().get(format!("{}/pysix", server.router)).send().ok()?;
            (r.status().as_u16() == 200)
                .then(|| r.text().ok())
                .flatten()
        },
    );
    assert_eq!(body, "six 1.16.0 in a pod\n");

    // A requirement pip cannot resolve fails the package with pip's error.
    let bad = files(
        code.path(),
        "bad",
        &[
            ("main.py", "def main():\n    return 'x'\n"),
            (
                "requirements.txt",
                "fission-rs-no-such-package-0xdead==0.0.1\n",
            ),
        ],
    );
    server.fission_ok(&[
        "pkg", "create", "--name", "bad-pkg", "--env", "python", "--src", &bad, "--nowait",
    ]);
    let info = finished_info(node, &server, "bad-pkg");
    assert!(info.contains("failed"), "{info}");
    assert!(
        info.contains("No matching distribution found for fission-rs-no-such-package-0xdead")
            && info.contains("error building source package"),
        "{info}"
    );

    // The Node.js builder image: npm in the builder pod, then the function in a pool pod.
    server.fission_ok(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--builder",
        "fission/node-builder",
        "--poolsize",
        "1",
    ]);
    let hello = files(
        code.path(),
        "nodehello",
        &[
            (
                "package.json",
                r#"{"name": "nodehello", "version": "1.0.0"}"#,
            ),
            (
                "hello.js",
                "module.exports = async () => ({ status: 200, body: 'built by npm in a pod\\n' });\n",
            ),
        ],
    );
    server.fission_ok(&[
        "pkg", "create", "--name", "node-pkg", "--env", "nodejs", "--src", &hello, "--nowait",
    ]);
    let info = finished_info(node, &server, "node-pkg");
    assert!(info.contains("succeeded"), "{info}");
    assert!(
        info.contains("up to date") || info.contains("added"),
        "npm ran: {info}"
    );
    server.fission_ok(&[
        "fn",
        "create",
        "--name",
        "nodehello",
        "--env",
        "nodejs",
        "--pkg",
        "node-pkg",
        "--entrypoint",
        "hello",
    ]);
    server.fission_ok(&[
        "route",
        "create",
        "--function",
        "nodehello",
        "--url",
        "/nodehello",
        "--method",
        "GET",
    ]);
    let body = wait_for(
        node,
        &server,
        Duration::from_secs(120),
        "the node function to answer",
        || {
            let r = http()
                .get(format!("{}/nodehello", server.router))
                .send()
                .ok()?;
            (r.status().as_u16() == 200)
                .then(|| r.text().ok())
                .flatten()
        },
    );
    assert_eq!(body, "built by npm in a pod\n");

    // A builder that never gets Ready (its image does not exist) fails the package after the
    // ready timeout, as Fission's buildermgr does. The controller accepts only builder images
    // it knows, so the Environment is applied as Fission YAML straight to the API server.
    let yaml = code.path().join("broken.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: fission.io/v1\nkind: Environment\nmetadata:\n  name: broken\n  namespace: default\n\
         spec:\n  version: 2\n  runtime:\n    image: fission/python-env\n\
         \x20 builder:\n    image: localhost/fission-rs-no-such-builder:local\n",
    )
    .expect("write yaml");
    node.kubectl_ok([
        std::ffi::OsStr::new("apply"),
        "-f".as_ref(),
        yaml.as_os_str(),
    ]);
    server.fission_ok(&[
        "pkg",
        "create",
        "--name",
        "stuck-pkg",
        "--env",
        "broken",
        "--src",
        &bad,
        "--nowait",
    ]);
    let info = finished_info(node, &server, "stuck-pkg");
    assert!(info.contains("failed"), "{info}");
    assert!(
        info.contains("Build timeout due to environment builder not ready"),
        "{info}"
    );
    // …saying why the pod is not Ready.
    assert!(
        info.contains("builder: ") && info.contains("ImagePull"),
        "{info}"
    );

    // A changed environment gets a builder of its new version; the old one is deleted. A
    // deleted environment takes its builder with it.
    server.fission_ok(&[
        "env",
        "update",
        "--name",
        "python",
        "--builder",
        "fission/python-builder",
        "--poolsize",
        "2",
    ]);
    let second = wait_for(
        node,
        &server,
        Duration::from_secs(60),
        "the old builder to be replaced",
        || {
            let now = builder_deployments(node, "python");
            (now.len() == 1 && now[0] != first).then(|| now[0].clone())
        },
    );
    assert!(second.starts_with("python-"), "{second}");
    server.fission_ok(&["fn", "delete", "--name", "pysix"]);
    server.fission_ok(&["env", "delete", "--name", "python"]);
    wait_for(
        node,
        &server,
        Duration::from_secs(60),
        "the builder of the deleted environment to go",
        || builder_deployments(node, "python").is_empty().then_some(()),
    );
}
