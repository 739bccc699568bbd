//! Declarative specs end to end: the real `fission` binary saving, validating, applying and
//! destroying spec directories against a real server.

mod support;

use std::path::{Path, PathBuf};

use support::{Run, Server, http, require_functions, write};

/// A project directory with a spec directory, driven through one server.
struct Project {
    server: Server,
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        Self {
            server: Server::start(),
            dir: tempfile::tempdir().expect("project dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn specs(&self) -> PathBuf {
        self.path().join("specs")
    }

    /// `fission <args>` run inside the project directory.
    fn run(&self, args: &[&str]) -> Run {
        self.server.fission_in(args, Some(self.path()))
    }

    fn names(&self, what: &str) -> Vec<String> {
        let out = self.run(&[what, "list"]).ok().stdout;
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// GET through the router, once the route is in the router's table.
    fn get(&self, path: &str) -> String {
        support::eventually_blocking(
            std::time::Duration::from_secs(30),
            &format!("GET {path} answering 200"),
            || {
                let r = http().get(self.server.url(path)).send().ok()?;
                if r.status().as_u16() == 200 {
                    r.text().ok()
                } else {
                    None
                }
            },
        )
    }
}

fn hello_js(greeting: &str) -> String {
    format!(
        "module.exports = async function(context) {{\n  return {{ status: 200, body: \"{greeting}\\n\" }};\n}}\n"
    )
}

#[test]
fn spec_lifecycle_saves_applies_updates_prunes_and_destroys() {
    let p = Project::new();
    write(p.path(), "hello.js", &hello_js("hello from spec"));

    // --spec needs a spec directory.
    p.run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--spec",
    ])
    .fails_with("run 'fission spec init' first");

    let out = p.run(&["spec", "init"]).ok();
    assert!(
        out.stdout
            .contains("Creating fission spec directory 'specs'"),
        "{}",
        out.stdout
    );
    assert!(p.specs().join("README").is_file());
    let config =
        std::fs::read_to_string(p.specs().join("fission-deployment-config.yaml")).expect("config");
    assert!(
        config.contains("kind: DeploymentConfig") && config.contains("uid: "),
        "{config}"
    );
    p.run(&["spec", "init"]).fails_with("already exists");

    // Save instead of create.
    p.run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "1",
        "--spec",
    ])
    .ok();
    p.run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js", "--spec",
    ])
    .ok();
    p.run(&[
        "route",
        "create",
        "--name",
        "hello",
        "--function",
        "hello",
        "--url",
        "/hello",
        "--spec",
    ])
    .ok();
    let fn_file =
        std::fs::read_to_string(p.specs().join("function-hello.yaml")).expect("function file");
    for needle in [
        "kind: ArchiveUploadSpec",
        "- hello.js",
        "kind: Package",
        "url: archive://hello-js-",
        "kind: Function",
    ] {
        assert!(
            fn_file.contains(needle),
            "function-hello.yaml lacks {needle:?}:\n{fn_file}"
        );
    }
    assert!(
        p.specs().join("env-nodejs.yaml").is_file() && p.specs().join("route-hello.yaml").is_file()
    );
    p.run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js", "--spec",
    ])
    .fails_with("Function 'hello' already exists in the specs");
    assert!(p.names("fn").is_empty(), "--spec must not create anything");

    let out = p.run(&["spec", "validate"]).ok();
    assert!(
        out.stdout.contains("Validation Successful"),
        "{}",
        out.stdout
    );

    // First apply creates everything, in dependency order.
    let out = p.run(&["spec", "apply", "--wait"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[0], "1 environment created: default:nodejs");
    assert!(
        lines[1].starts_with("1 package created: default:hello-"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "1 function created: default:hello");
    assert_eq!(lines[3], "1 HTTPTrigger created: default:hello");
    assert_eq!(p.names("env"), ["nodejs"]);
    assert_eq!(p.names("fn"), ["hello"]);
    assert_eq!(p.names("route"), ["hello"]);
    let meta = p.run(&["fn", "getmeta", "--name", "hello"]).ok().stdout;
    assert!(
        meta.contains("fission-uid="),
        "objects carry the deployment uid: {meta}"
    );
    if require_functions().is_some() {
        assert_eq!(p.get("/hello"), "hello from spec\n");
    }

    // Idempotent.
    assert_eq!(
        p.run(&["spec", "apply"]).ok().stdout,
        "Everything up to date.\n"
    );

    // Changed code: the package is rewritten and the function re-pinned to it.
    write(p.path(), "hello.js", &hello_js("hello again"));
    let out = p.run(&["spec", "apply"]).ok().stdout;
    assert!(out.contains("1 package updated: default:hello-"), "{out}");
    assert!(out.contains("1 function updated: default:hello"), "{out}");
    if require_functions().is_some() {
        support::eventually_blocking(
            std::time::Duration::from_secs(30),
            "the new code to answer",
            || {
                let body = http()
                    .get(p.server.url("/hello"))
                    .send()
                    .ok()?
                    .text()
                    .ok()?;
                (body == "hello again\n").then_some(())
            },
        );
    }

    // Changed spec file.
    let edited = fn_file.replace("functionTimeout: 60", "functionTimeout: 30");
    assert_ne!(edited, fn_file);
    std::fs::write(p.specs().join("function-hello.yaml"), edited).expect("edit");
    assert_eq!(
        p.run(&["spec", "apply"]).ok().stdout,
        "1 function updated: default:hello\n"
    );

    let listed = p.run(&["spec", "list"]).ok().stdout;
    for needle in [
        "Functions:",
        "Environments:",
        "Packages:",
        "HTTP Triggers:",
        "\nhello ",
        "\nnodejs ",
    ] {
        assert!(
            listed.contains(needle),
            "spec list lacks {needle:?}:\n{listed}"
        );
    }

    // A removed file is only pruned with --delete.
    std::fs::remove_file(p.specs().join("route-hello.yaml")).expect("rm");
    assert_eq!(
        p.run(&["spec", "apply"]).ok().stdout,
        "Everything up to date.\n"
    );
    assert_eq!(p.names("route"), ["hello"]);
    let out = p.run(&["spec", "apply", "--delete"]).ok().stdout;
    assert_eq!(
        out,
        "Deleted HTTPTrigger default/hello\n1 HTTPTrigger deleted: default:hello\n"
    );
    assert!(p.names("route").is_empty());

    // Destroy removes everything of the deployment, dependents first.
    let out = p.run(&["spec", "destroy"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "Deleted Function default/hello");
    assert!(
        lines[1].starts_with("Deleted Package default/hello-"),
        "{out}"
    );
    assert_eq!(lines[2], "Deleted Environment default/nodejs");
    assert!(p.names("fn").is_empty() && p.names("env").is_empty() && p.names("pkg").is_empty());
    assert_eq!(p.run(&["spec", "list"]).ok().stdout, "");
}

const ENV_YAML: &str = "apiVersion: fission.io/v1
kind: Environment
metadata:
  name: nodejs
spec:
  version: 3
  poolsize: 1
  runtime:
    image: fission/node-env
";

#[test]
fn invalid_specs_name_file_document_and_field_and_change_nothing() {
    let p = Project::new();
    p.run(&["spec", "init"]).ok();
    // One valid environment, then an invalid one in the same file.
    write(
        &p.specs(),
        "envs.yaml",
        &format!(
            "{ENV_YAML}---\napiVersion: fission.io/v1\nkind: Environment\nmetadata:\n  name: python\nspec:\n  version: \
             7\n  runtime:\n    image: fission/python-env\n"
        ),
    );
    // A route to a function that exists nowhere, and a kind Fission specs do not know.
    write(
        &p.specs(),
        "route.yaml",
        "kind: Workflow\nmetadata:\n  name: w\n---\napiVersion: fission.io/v1\nkind: HTTPTrigger\nmetadata:\n  name: \
         r\nspec:\n  relativeurl: /r\n  methods: [GET]\n  functionref:\n    type: name\n    name: nope\n",
    );

    for cmd in ["validate", "apply"] {
        let run = p.run(&["spec", cmd]);
        let err = &run.stderr;
        assert_eq!(run.code, 1, "{err}");
        assert!(
            err.starts_with(
                "Warning: Ignoring unknown type Workflow in specs/route.yaml:1 (document 1)\n"
            ),
            "{err}"
        );
        assert!(
            err.contains("\nError: ") && err.contains("the specs have 2 errors"),
            "{err}"
        );
        assert!(
            err.contains("specs/envs.yaml:11 (document 2): Environment 'python': spec.version: 7 is not supported"),
            "{err}"
        );
        assert!(
            err.contains("specs/route.yaml:5 (document 2): HTTPTrigger 'r': spec.functionref.name: references Function 'default/nope'"),
            "{err}"
        );
    }
    assert!(
        p.names("env").is_empty(),
        "a failed validation must not create the valid environment"
    );
    assert!(p.names("route").is_empty());

    // Broken YAML names the file and the line.
    std::fs::remove_file(p.specs().join("route.yaml")).expect("rm");
    write(
        &p.specs(),
        "envs.yaml",
        &format!("{ENV_YAML}---\nkind: Function\nmetadata:\n  name: f\n  labels: [\n"),
    );
    let err = p.run(&["spec", "apply"]).fails_with("invalid YAML").stderr;
    assert!(
        err.contains("specs/envs.yaml:15 (document 2): invalid YAML:"),
        "{err}"
    );
    assert!(p.names("env").is_empty());

    // A wrongly typed field names the field and its line.
    write(
        &p.specs(),
        "envs.yaml",
        &ENV_YAML.replace("poolsize: 1", "poolsize: lots"),
    );
    let err = p.run(&["spec", "apply"]).fails_with("spec.poolsize").stderr;
    assert!(
        err.contains(
            "specs/envs.yaml:7 (document 1): Environment 'nodejs': spec.poolsize: invalid type"
        ),
        "{err}"
    );
    assert!(p.names("env").is_empty());
}

#[test]
fn objects_created_outside_the_specs_are_not_taken_over() {
    let p = Project::new();
    p.run(&["spec", "init"]).ok();
    p.run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "0",
    ])
    .ok();
    write(&p.specs(), "env.yaml", ENV_YAML);
    p.run(&["spec", "apply"])
        .fails_with("already exists on the server and belongs to no spec deployment");
    let before = p
        .run(&["env", "get", "--name", "nodejs", "-o", "json"])
        .ok()
        .stdout;
    assert!(before.contains("\"poolsize\": 0"), "{before}");
    let out = p.run(&["spec", "apply", "--allowconflicts"]).ok().stdout;
    assert_eq!(out, "1 environment updated: default:nodejs\n");
    assert_eq!(
        p.run(&["spec", "apply"]).ok().stdout,
        "Everything up to date.\n"
    );
}

/// The shapes Fission's own CLI writes (`fission spec init` + `… create --spec`), keys sorted
/// the Go way, `creationTimestamp: null`, mixed-case archive names.
const FISSION_DEPLOYMENT: &str = "# This file is generated by the 'fission spec init' command.
# See the README in this directory for background and usage information.
# Do not edit the UID below: that will break 'fission spec apply'
apiVersion: fission.io/v1
kind: DeploymentConfig
name: demo
uid: 5f2b6a36-3d4e-4d0b-9a55-0c1f7d1c2e11
";

const FISSION_ENV: &str = "apiVersion: fission.io/v1
kind: Environment
metadata:
  creationTimestamp: null
  name: nodejs
  namespace: default
spec:
  builder: {}
  imagepullsecret: \"\"
  keeparchive: false
  poolsize: 1
  resources: {}
  runtime:
    container:
      name: nodejs
      resources: {}
    image: ghcr.io/fission/node-env-22
    podspec:
      containers:
      - name: nodejs
        resources: {}
  terminationGracePeriod: 360
  version: 3
";

const FISSION_FUNCTION: &str = "include:
- hello.js
kind: ArchiveUploadSpec
name: hello-js-Xq3Z

---
apiVersion: fission.io/v1
kind: Package
metadata:
  creationTimestamp: null
  name: hello-3c1e0a2b-1111-4222-8333-444455556666
  namespace: default
spec:
  deployment:
    checksum: {}
    type: url
    url: archive://hello-js-Xq3Z
  environment:
    name: nodejs
    namespace: default
  source:
    checksum: {}
status:
  buildstatus: none
  lastUpdateTimestamp: \"2025-01-02T03:04:05Z\"

---
apiVersion: fission.io/v1
kind: Function
metadata:
  creationTimestamp: null
  name: hello
  namespace: default
spec:
  InvokeStrategy:
    ExecutionStrategy:
      ExecutorType: poolmgr
      MaxScale: 0
      MinScale: 0
      SpecializationTimeout: 120
      TargetCPUPercent: 0
    StrategyType: execution
  concurrency: 500
  environment:
    name: nodejs
    namespace: default
  functionTimeout: 60
  idletimeout: 120
  package:
    functionName: \"\"
    packageref:
      name: hello-3c1e0a2b-1111-4222-8333-444455556666
      namespace: default
  requestsPerPod: 1
  resources: {}
";

const FISSION_ROUTE: &str = "apiVersion: fission.io/v1
kind: HTTPTrigger
metadata:
  creationTimestamp: null
  name: hello-route
  namespace: default
spec:
  createingress: false
  functionref:
    functionweights: null
    name: hello
    type: name
  host: \"\"
  ingressconfig:
    annotations: null
    host: '*'
    path: /hello
    tls: \"\"
  method: \"\"
  methods:
  - GET
  prefix: \"\"
  relativeurl: /hello
";

/// Other triggers in the §2.9a shapes.
const FISSION_TRIGGERS: &str = "apiVersion: fission.io/v1
kind: TimeTrigger
metadata: {name: every-minute, namespace: default}
spec: {cron: \"@every 1m\", functionref: {type: name, name: hello}, method: POST, subpath: /}
---
apiVersion: fission.io/v1
kind: KubernetesWatchTrigger
metadata: {name: pods, namespace: default}
spec: {namespace: default, type: pod, labelselector: null, functionref: {type: name, name: hello}}
---
apiVersion: fission.io/v1
kind: MessageQueueTrigger
metadata: {name: orders, namespace: default}
spec:
  functionref: {type: name, name: hello}
  messageQueueType: kafka
  mqtkind: keda
  topic: orders
  respTopic: orders-out
  errorTopic: orders-err
  maxRetries: 3
  contentType: application/json
  pollingInterval: 30
  cooldownPeriod: 300
  minReplicaCount: 0
  maxReplicaCount: 100
  metadata: {bootstrapServers: \"kafka:9092\", consumerGroup: g1, topic: orders}
";

#[test]
fn a_spec_directory_written_by_fission_applies_unchanged() {
    let p = Project::new();
    write(p.path(), "hello.js", &hello_js("hello from a fission spec"));
    write(
        &p.specs(),
        "fission-deployment-config.yaml",
        FISSION_DEPLOYMENT,
    );
    write(&p.specs(), "README", "Fission Specs\n");
    write(&p.specs(), "env-nodejs.yaml", FISSION_ENV);
    write(&p.specs(), "function-hello.yaml", FISSION_FUNCTION);
    write(&p.specs(), "route-hello-route.yaml", FISSION_ROUTE);
    write(&p.specs(), "triggers.yaml", FISSION_TRIGGERS);

    p.run(&["spec", "validate"]).ok();
    let out = p.run(&["spec", "apply"]).ok().stdout;
    assert_eq!(
        out,
        "1 environment created: default:nodejs\n1 package created: \
         default:hello-3c1e0a2b-1111-4222-8333-444455556666\n1 function created: default:hello\n1 HTTPTrigger \
         created: default:hello-route\n1 KubernetesWatchTrigger created: default:pods\n1 TimeTrigger created: \
         default:every-minute\n1 MessageQueueTrigger created: default:orders\n"
    );
    if require_functions().is_some() {
        assert_eq!(p.get("/hello"), "hello from a fission spec\n");
    }
    assert_eq!(
        p.run(&["spec", "apply"]).ok().stdout,
        "Everything up to date.\n"
    );
    let listed = p
        .run(&[
            "spec",
            "list",
            "--deployid",
            "5f2b6a36-3d4e-4d0b-9a55-0c1f7d1c2e11",
        ])
        .ok()
        .stdout;
    assert!(listed.contains("\nhello-route "), "{listed}");
}

/// Bytes that deflate cannot shrink much (a simple LCG).
fn noise(len: usize) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect()
}

#[test]
fn large_archives_are_uploaded_once_and_reused() {
    let p = Project::new();
    p.run(&["spec", "init"]).ok();
    write(p.path(), "big/hello.js", &hello_js("big"));
    write(p.path(), "big/data.txt", &noise(400 * 1024));
    p.run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "0",
        "--spec",
    ])
    .ok();
    p.run(&[
        "pkg", "create", "--name", "bigpkg", "--env", "nodejs", "--deploy", "big/*", "--spec",
    ])
    .ok();
    let out = p.run(&["spec", "apply"]).ok().stdout;
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("uploading archive archive://big-"),
        "{out}"
    );
    assert!(out.contains("1 package created: default:bigpkg"), "{out}");
    let pkg = p
        .run(&["pkg", "info", "--name", "bigpkg", "-o", "json"])
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&pkg).expect("json");
    assert_eq!(v["spec"]["deployment"]["type"], "url");
    assert_eq!(v["spec"]["deployment"]["checksum"]["type"], "sha256");
    let out = p.run(&["spec", "apply"]).ok().stdout;
    assert!(
        out.ends_with("exists, not uploading\nEverything up to date.\n"),
        "{out}"
    );
    assert!(!out.contains("uploading archive archive://"), "{out}");
}

#[test]
fn apply_watch_reapplies_when_code_changes_and_stops_on_ctrl_c() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    let p = Project::new();
    write(p.path(), "hello.js", &hello_js("v1"));
    p.run(&["spec", "init"]).ok();
    p.run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "1",
        "--spec",
    ])
    .ok();
    p.run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js", "--spec",
    ])
    .ok();
    p.run(&[
        "route",
        "create",
        "--name",
        "hello",
        "--function",
        "hello",
        "--url",
        "/hello",
        "--spec",
    ])
    .ok();

    let mut child = Command::new(support::BIN)
        .args(["spec", "apply", "--watch"])
        .current_dir(p.path())
        .env("FISSION_URL", &p.server.controller)
        .env_remove("FISSION_DEFAULT_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn apply --watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return;
                }
                seen.push(line);
            }
        }
        panic!("no line containing {needle:?}; got {seen:?}");
    };

    wait_for("1 function created: default:hello");
    wait_for("Watching files for changes...");
    if require_functions().is_some() {
        assert_eq!(p.get("/hello"), "v1\n");
    }
    write(p.path(), "hello.js", &hello_js("v2"));
    wait_for("Noticed a file change, reapplying specs...");
    wait_for("1 function updated: default:hello");
    wait_for("Watching files for changes...");
    if require_functions().is_some() {
        support::eventually_blocking(
            std::time::Duration::from_secs(30),
            "the new code to answer",
            || {
                let body = http()
                    .get(p.server.url("/hello"))
                    .send()
                    .ok()?
                    .text()
                    .ok()?;
                (body == "v2\n").then_some(())
            },
        );
    }

    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("apply --watch did not stop on Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "apply --watch ended with {status}");
}

#[test]
fn source_packages_in_specs_are_built_and_waited_for() {
    let Some(()) = require_functions() else {
        return;
    };
    let p = Project::new();
    write(
        p.path(),
        "src/main.py",
        "def main():\n    return 'built from spec'\n",
    );
    p.run(&["spec", "init"]).ok();
    p.run(&[
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
        "--spec",
    ])
    .ok();
    p.run(&[
        "fn",
        "create",
        "--name",
        "pyb",
        "--env",
        "python",
        "--src",
        "src/*",
        "--entrypoint",
        "main.main",
        "--spec",
    ])
    .ok();
    p.run(&[
        "route",
        "create",
        "--name",
        "pyb",
        "--function",
        "pyb",
        "--url",
        "/pyb",
        "--spec",
    ])
    .ok();

    let out = p.run(&["spec", "apply", "--wait"]).ok().stdout;
    assert!(out.contains("1 package created: default:pyb-"), "{out}");
    assert!(
        out.contains("Status:      succeeded"),
        "--wait prints the finished build: {out}"
    );
    let info = p.run(&["pkg", "list"]).ok().stdout;
    assert!(info.contains(" succeeded "), "{info}");
    assert_eq!(p.get("/pyb"), "built from spec");
    // The builder filled in the deployment archive and re-pinned the function: nothing to do.
    let out = p.run(&["spec", "apply"]).ok().stdout;
    assert_eq!(out, "Everything up to date.\n");
}
