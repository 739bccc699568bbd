//! The install artifacts: the Helm chart `charts/fission-rs` lints and renders, the plain
//! manifests checked in as `deploy/fission-rs.yaml` are exactly what it renders (and its CRDs
//! exactly `deploy/crds/`), and those manifests apply to a real API server with RBAC that
//! gives each role what it needs and no more.

use std::process::Command;

use kube_test_cluster::{TestCluster, helm, repo_root};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_chart_lints_and_renders_exactly_the_checked_in_manifests_and_crds() {
    let Some(helm) = helm() else { return };
    let root = repo_root();
    let chart = root.join("charts/fission-rs");
    let lint = run_ok(Command::new(&helm).arg("lint").arg(&chart));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    // The chart's CRDs are the generated ones.
    for entry in std::fs::read_dir(root.join("deploy/crds")).expect("deploy/crds") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        assert_eq!(
            std::fs::read_to_string(&path).expect("crd"),
            std::fs::read_to_string(chart.join("crds").join(name)).unwrap_or_default(),
            "charts/fission-rs/crds/{} differs from deploy/crds; run scripts/k8s/render-manifests.sh",
            name.to_string_lossy()
        );
    }

    // deploy/fission-rs.yaml is the render, byte for byte.
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(
        Command::new(root.join("scripts/k8s/render-manifests.sh"))
            .env("HELM_BIN", helm.parent().expect("dir"))
            .env("FISSION_RENDER_TO", dir.path()),
    );
    let rendered = std::fs::read_to_string(dir.path().join("fission-rs.yaml")).expect("render");
    let checked_in =
        std::fs::read_to_string(root.join("deploy/fission-rs.yaml")).unwrap_or_default();
    assert!(
        rendered == checked_in,
        "deploy/fission-rs.yaml is not what the chart renders; run scripts/k8s/render-manifests.sh"
    );
    for kind in [
        "kind: Namespace",
        "kind: CustomResourceDefinition",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
        "kind: Deployment",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "nodePort: 31313",
        "nodePort: 31314",
        "--role=controller",
        "--role=router",
        "--role=executor",
    ] {
        assert!(rendered.contains(kind), "the render has no {kind}");
    }

    // Values change what is rendered: a standalone executor Deployment and Service, no PDB.
    let custom = run_ok(
        Command::new(&helm)
            .args([
                "template",
                "f",
                "--namespace",
                "fx",
                "--set",
                "executor.mode=deployment",
            ])
            .args([
                "--set",
                "router.podDisruptionBudget.enabled=false",
                "--set",
                "router.replicas=5",
            ])
            .args(["--set", "image.tag=9.9.9"])
            .arg(&chart),
    );
    assert!(
        custom.contains("name: executor\n  namespace: fx"),
        "{custom}"
    );
    // Components find each other through the variables Kubernetes gives every container,
    // which works without cluster DNS.
    assert!(
        custom.contains("--executor-url=http://$(EXECUTOR_SERVICE_HOST):$(EXECUTOR_SERVICE_PORT)"),
        "{custom}"
    );
    assert!(custom.contains("replicas: 5"), "{custom}");
    // helm install makes the API token Secret every component reads; the plain manifests
    // leave it to the user (a random token would make every render differ).
    assert!(custom.contains("  FISSION_AUTH_TOKEN: "), "{custom}");
    assert!(!rendered.contains("kind: Secret\n"), "{rendered}");
    assert!(
        rendered.matches("key: FISSION_AUTH_TOKEN").count() >= 3,
        "every component reads the token: {rendered}"
    );
    assert!(custom.contains("fission-rs/fission:9.9.9"), "{custom}");
    assert!(!custom.contains("PodDisruptionBudget"), "{custom}");
    let bad = Command::new(&helm)
        .args(["template", "f", "--set", "executor.mode=elsewhere"])
        .arg(&chart)
        .output()
        .expect("helm");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("executor.mode must be sidecar or deployment")
    );
    // Function pods are reached through the executor Service, never a router's loopback.
    let bad = Command::new(&helm)
        .args(["template", "f", "--set", "executor.mode=sidecar"])
        .arg(&chart)
        .output()
        .expect("helm");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("executor.instances: pods needs executor.mode: deployment")
    );
}

#[test]
fn the_rendered_manifests_apply_to_a_real_api_server_with_least_privilege_rbac() {
    // A cluster of its own: the manifests create cluster-wide objects.
    let Some(cluster) = TestCluster::start_or_skip() else {
        return;
    };
    let manifests = repo_root().join("deploy/fission-rs.yaml");
    let applied = cluster.kubectl_ok([
        std::ffi::OsStr::new("apply"),
        "-f".as_ref(),
        manifests.as_os_str(),
    ]);
    assert!(
        applied.contains("deployment.apps/router created"),
        "{applied}"
    );
    cluster.kubectl_ok([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/functions.fission.io",
        "crd/httptriggers.fission.io",
        "crd/environments.fission.io",
        "crd/packages.fission.io",
    ]);
    let services = cluster.kubectl_ok([
        "get",
        "services",
        "-n",
        "fission",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.ports[0].nodePort}{\"\\n\"}{end}",
    ]);
    assert!(
        services.lines().any(|l| l == "controller=31313"),
        "{services}"
    );
    assert!(services.lines().any(|l| l == "router=31314"), "{services}");

    let can_in = |ns: &str, sa: &str, verb: &str, resource: &str| -> bool {
        let out = cluster.kubectl([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
            &format!("--as=system:serviceaccount:fission:fission-{sa}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let can = |sa: &str, verb: &str, resource: &str| can_in("default", sa, verb, resource);
    // Every role follows the store; only the controller writes to it.
    for sa in ["controller", "router", "executor"] {
        for r in [
            "httptriggers.fission.io",
            "functions.fission.io",
            "secrets",
            "configmaps",
        ] {
            assert!(can(sa, "list", r), "{sa} should list {r}");
            assert!(can(sa, "watch", r), "{sa} should watch {r}");
        }
    }
    for r in [
        "functions.fission.io",
        "packages.fission.io",
        "secrets",
        "configmaps",
    ] {
        assert!(
            can("controller", "create", r),
            "controller should create {r}"
        );
        assert!(
            can("controller", "update", r),
            "controller should update {r}"
        );
    }
    for sa in ["router", "executor"] {
        for (verb, r) in [
            ("create", "secrets"),
            ("update", "secrets"),
            ("delete", "configmaps"),
            ("create", "functions.fission.io"),
            ("update", "httptriggers.fission.io"),
        ] {
            assert!(!can(sa, verb, r), "{sa} must not {verb} {r}");
        }
    }
    // Executors hold Leases (adoption of a gone executor's pods); nobody else does.
    for verb in ["create", "patch", "delete", "list"] {
        assert!(
            can("executor", verb, "leases.coordination.k8s.io"),
            "executor should {verb} leases"
        );
    }
    for sa in ["controller", "router"] {
        assert!(
            !can(sa, "create", "leases.coordination.k8s.io"),
            "{sa} must not create leases"
        );
    }
    // Nothing beyond the store: no pods, no RBAC, no other groups.
    for sa in ["controller", "router", "executor"] {
        for (verb, r) in [
            ("create", "pods"),
            ("list", "nodes"),
            ("create", "clusterrolebindings"),
            ("list", "deployments.apps"),
        ] {
            assert!(!can(sa, verb, r), "{sa} must not {verb} {r}");
        }
    }
    // In the function namespace the controller runs builder pods (Fission's buildermgr): a
    // Deployment and a Service per environment with a builder, found Ready through their
    // pods; it never makes or changes pods itself.
    let functions = "fission-function";
    for (verb, r) in [
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("list", "deployments.apps"),
        ("create", "services"),
        ("delete", "services"),
        ("list", "pods"),
    ] {
        assert!(
            can_in(functions, "controller", verb, r),
            "controller should {verb} {r} in {functions}"
        );
    }
    for (verb, r) in [("create", "pods"), ("update", "deployments.apps")] {
        assert!(
            !can_in(functions, "controller", verb, r),
            "controller must not {verb} {r} in {functions}"
        );
    }
    assert!(
        !can_in(functions, "router", "create", "deployments.apps"),
        "router must not create deployments in {functions}"
    );
    // newdeploy: in the function namespace (only) the executor writes each function's
    // Deployment, Service and HPA, scales the Deployment, and watches EndpointSlices.
    let can_in = |ns: &str, sa: &str, verb: &str, resource: &str, sub: &str| -> bool {
        let mut args = vec![
            "auth".to_owned(),
            "can-i".to_owned(),
            verb.to_owned(),
            resource.to_owned(),
            "-n".to_owned(),
            ns.to_owned(),
            format!("--as=system:serviceaccount:fission:fission-{sa}"),
        ];
        if !sub.is_empty() {
            args.push(format!("--subresource={sub}"));
        }
        let out = cluster.kubectl(&args);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for (verb, r, sub) in [
        ("create", "deployments.apps", ""),
        ("patch", "deployments.apps", "scale"),
        ("delete", "services", ""),
        ("update", "horizontalpodautoscalers.autoscaling", ""),
        ("watch", "endpointslices.discovery.k8s.io", ""),
    ] {
        assert!(
            can_in("fission-function", "executor", verb, r, sub),
            "executor should {verb} {r} {sub} in fission-function"
        );
        assert!(
            !can_in("default", "executor", verb, r, sub),
            "executor must not {verb} {r} {sub} outside fission-function"
        );
        assert!(
            !can_in("fission-function", "router", verb, r, sub),
            "router must not {verb} {r} {sub}"
        );
    }
    assert!(!can_in(
        "fission-function",
        "executor",
        "create",
        "endpointslices.discovery.k8s.io",
        ""
    ));
}
