//! Fission users' specs and workflows run unchanged: the real `fission` binary against a real
//! server, fed what Fission's own CLI writes.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, eventually_blocking, http, require_functions};

/// Whether functions can be called here (runtimes and sandbox); under CI their absence fails.
fn can_call_functions() -> bool {
    require_functions().is_some()
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fission-corpus")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

fn get_ok(server: &Server, path: &str) -> String {
    eventually_blocking(
        Duration::from_secs(60),
        &format!("GET {path} answering 200"),
        || {
            let r = http().get(server.url(path)).send().ok()?;
            if r.status().as_u16() == 200 {
                r.text().ok()
            } else {
                None
            }
        },
    )
}

#[test]
fn a_spec_directory_exactly_as_fission_writes_it_applies_and_serves() {
    let server = Server::start();
    let project = tempfile::tempdir().expect("project");
    copy_dir(&corpus(), project.path());
    let run = |args: &[&str]| server.fission_in(args, Some(project.path()));

    run(&["spec", "validate"]).ok();
    // --wait: the source package's build settles (and re-pins its function) before re-applying.
    let out = run(&["spec", "apply", "--wait"]).ok();
    for needle in [
        "2 environments created: default:nodejs, default:python",
        "3 functions created: default:hello, default:pyhello, default:pysrc",
        "2 HTTPTriggers created: default:hello, default:pyhello",
        "1 TimeTrigger created: default:hello-every-minute",
        "1 MessageQueueTrigger created: default:orders",
        "1 KubernetesWatchTrigger created: default:pods",
    ] {
        assert!(
            out.stdout.contains(needle),
            "apply output lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stderr.contains("does not fire TimeTriggers"),
        "time triggers fire: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("does not fire KubernetesWatchTriggers"),
        "watch triggers fire: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("unknown field"),
        "Fission's own output has no unknown keys: {}",
        out.stderr
    );
    assert_eq!(
        run(&["spec", "apply"]).ok().stdout,
        "Everything up to date.\n",
        "re-applying changes nothing"
    );

    let f = run(&["fn", "getmeta", "--name", "pyhello"]).ok().stdout;
    assert!(f.contains("Environment: python"), "{f}");
    if can_call_functions() {
        assert_eq!(
            get_ok(&server, "/corpus/hello"),
            "hello from a fission spec\n"
        );
        assert_eq!(
            get_ok(&server, "/corpus/py/anything"),
            "hello from python\n"
        );
        // Built from its source archive by the Python builder.
        assert_eq!(
            get_ok(&server, "/fission-function/pysrc"),
            "built from source\n"
        );
    }
}

#[test]
fn a_misspelt_key_in_a_spec_is_a_warning_naming_it_not_an_error() {
    let server = Server::start();
    let project = tempfile::tempdir().expect("project");
    copy_dir(&corpus(), project.path());
    let env = project.path().join("specs/env-nodejs.yaml");
    let text = std::fs::read_to_string(&env)
        .expect("env spec")
        .replace("  poolsize: 3\n", "  poolsize: 3\n  poolSise: 1\n");
    std::fs::write(&env, text).expect("write");
    let out = server
        .fission_in(&["spec", "apply"], Some(project.path()))
        .ok();
    assert!(
        out.stderr.contains("Warning: ")
            && out
                .stderr
                .contains("Environment 'nodejs': unknown field \"spec.poolSise\" ignored"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("default:nodejs"), "{}", out.stdout);
}

/// Where `scripts/test.sh` installs Python's `prometheus_client` (the reference OpenMetrics
/// parser) for this test.
fn test_tools_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/python")
}

/// Parse a scrape with `prometheus_client`'s strict OpenMetrics parser: the metric family
/// names, or the parser's complaint. `None` when the parser is not installed (outside CI).
fn parse_openmetrics(text: &str) -> Option<Result<Vec<String>, String>> {
    use std::io::Write as _;
    const SCRIPT: &str = "import sys\n\
try:\n    from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
except ImportError:\n    sys.exit(3)\n\
try:\n    names = [f.name for f in text_string_to_metric_families(sys.stdin.read())]\n\
except Exception as e:\n    print(e, file=sys.stderr)\n    sys.exit(1)\n\
print('\\n'.join(names))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .env("PYTHONPATH", test_tools_python())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write scrape");
    let out = child.wait_with_output().expect("python3 finishes");
    match out.status.code() {
        Some(0) => Some(Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())),
        Some(3) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: prometheus_client is not installed in {} (scripts/test.sh installs it)",
                test_tools_python().display()
            );
            None
        }
        _ => Some(Err(String::from_utf8_lossy(&out.stderr).into_owned())),
    }
}

#[test]
fn router_and_controller_metrics_parse_with_a_real_openmetrics_parser() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    support::write(
        dir.path(),
        "hello.js",
        "module.exports = async () => ({ status: 200, body: \"hi\\n\" });\n",
    );
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "1",
    ])
    .ok();
    run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js",
    ])
    .ok();
    run(&[
        "route",
        "create",
        "--name",
        "hello",
        "--function",
        "hello",
        "--url",
        "/hello",
    ])
    .ok();
    if can_call_functions() {
        assert_eq!(get_ok(&server, "/hello"), "hi\n");
    }
    let router = http()
        .get(server.url("/metrics"))
        .send()
        .expect("router metrics")
        .text()
        .expect("text");
    let controller = http()
        .get(format!("{}/metrics", server.controller))
        .send()
        .expect("controller metrics");
    assert_eq!(
        controller.status().as_u16(),
        200,
        "the controller serves /metrics"
    );
    let controller = controller.text().expect("text");
    for (who, text) in [("router", &router), ("controller", &controller)] {
        let Some(parsed) = parse_openmetrics(text) else {
            return;
        };
        let families =
            parsed.unwrap_or_else(|e| panic!("the {who}'s /metrics does not parse: {e}\n{text}"));
        for family in [
            "fission_function_calls",
            "fission_function_cold_starts",
            "fission_function_cold_start_requests",
        ] {
            assert!(
                families.iter().any(|f| f == family),
                "{who}: no {family} family in {families:?}"
            );
        }
    }
}

/// A zip with one entry that would land outside the unpack directory.
fn zip_slip() -> Vec<u8> {
    use std::io::Write as _;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default();
    w.start_file("index.js", opts).expect("entry");
    w.write_all(b"module.exports = async () => ({status: 200});")
        .expect("write");
    w.start_file("../../../etc/cron.d/evil", opts)
        .expect("entry");
    w.write_all(b"* * * * * root true").expect("write");
    w.finish().expect("finish");
    buf.into_inner()
}

fn names(server: &Server, what: &str) -> Vec<String> {
    let out = server.fission(&[what, "list"]).ok().stdout;
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_create_that_fails_creates_nothing() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    support::write(dir.path(), "src/main.py", "def main():\n    return 'x'\n");
    std::fs::write(dir.path().join("evil.zip"), zip_slip()).expect("zip");
    run(&[
        "env",
        "create",
        "--name",
        "python",
        "--image",
        "fission/python-env",
        "--poolsize",
        "0",
    ])
    .ok();

    run(&[
        "fn",
        "create",
        "--name",
        "built",
        "--env",
        "python",
        "--src",
        "src/*",
        "--entrypoint",
        "main.main",
    ])
    .fails_with("environment 'python' has no builder image");
    run(&[
        "fn", "create", "--name", "evil", "--env", "python", "--deploy", "evil.zip",
    ])
    .fails_with("leaves the archive root");
    run(&[
        "pkg", "create", "--name", "evil", "--env", "python", "--deploy", "evil.zip",
    ])
    .fails_with("the deployment archive is refused");
    assert!(
        names(&server, "fn").is_empty(),
        "no function was left behind"
    );
    assert!(
        names(&server, "pkg").is_empty(),
        "no package was left behind"
    );
}

#[test]
fn values_in_use_are_not_deleted_silently_and_missing_ones_are_warned_about() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    support::write(
        dir.path(),
        "hello.js",
        "module.exports = async () => ({ status: 200, body: 'hi' });\n",
    );
    run(&[
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
    run(&[
        "secret",
        "create",
        "--name",
        "db",
        "--from-literal",
        "password=s3cret",
    ])
    .ok();
    run(&[
        "configmap",
        "create",
        "--name",
        "cfg",
        "--from-literal",
        "mode=fast",
    ])
    .ok();

    let out = run(&[
        "fn",
        "create",
        "--name",
        "hello",
        "--env",
        "nodejs",
        "--code",
        "hello.js",
        "--secret",
        "db",
        "--secret",
        "nope",
        "--configmap",
        "cfg",
    ])
    .ok();
    assert!(
        out.stderr.contains("Warning: Secret nope not found in Namespace: default. Secret needs to be present in the same namespace as function"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Secret db not found") && !out.stderr.contains("ConfigMap cfg"),
        "{}",
        out.stderr
    );

    run(&["secret", "delete", "--name", "db"])
        .fails_with("Secret is used by at least one function (default/hello)");
    run(&["configmap", "delete", "--name", "cfg"])
        .fails_with("ConfigMap is used by at least one function (default/hello)");
    run(&["secret", "delete", "--name", "db", "-f"]).ok();
    run(&["env", "delete", "--name", "nodejs"])
        .fails_with("Environment is used by at least one function (default/hello); delete those first or use --force (-f)");
}

#[test]
fn an_impossible_cron_is_refused_when_the_trigger_is_created() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    support::write(
        dir.path(),
        "hello.js",
        "module.exports = async () => ({ status: 200, body: 'hi' });\n",
    );
    run(&[
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
    run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js",
    ])
    .ok();
    run(&[
        "tt",
        "create",
        "--name",
        "bad",
        "--function",
        "hello",
        "--cron",
        "61 * * * *",
    ])
    .fails_with("spec.cron");
    run(&[
        "tt",
        "create",
        "--name",
        "every",
        "--function",
        "hello",
        "--cron",
        "@every 1h30m",
    ])
    .ok();
    run(&[
        "tt",
        "create",
        "--name",
        "secs",
        "--function",
        "hello",
        "--cron",
        "*/10 * * * * *",
    ])
    .ok();
    assert_eq!(names(&server, "tt"), ["every", "secs"]);
}

#[test]
fn help_lists_commands_first_and_global_flags_last() {
    let server = Server::start();
    let top = server.fission(&["--help"]).ok().stdout;
    assert!(
        top.starts_with("Fission: serverless functions"),
        "help opens with what fission is: {top}"
    );
    assert!(
        !top.contains("argument structs"),
        "no code comments in help: {top}"
    );
    let serve = server.fission(&["server", "--help"]).ok().stdout;
    assert!(
        !serve.contains("no sandbox yet") && serve.contains("--sandbox none"),
        "{serve}"
    );
    let del = server.fission(&["fn", "delete", "--help"]).ok().stdout;
    let own = del.find("--ignorenotfound").expect("own flag");
    let global = del.find("Global options:").expect("global heading");
    assert!(
        own < global && del[global..].contains("--namespace"),
        "{del}"
    );
}

#[test]
fn listings_show_what_routes_match_and_where_triggers_live() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    support::write(
        dir.path(),
        "hello.js",
        "module.exports = async () => ({ status: 200, body: 'hi' });\n",
    );
    run(&[
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
    run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js",
    ])
    .ok();
    run(&[
        "route",
        "create",
        "--name",
        "vhost",
        "--function",
        "hello",
        "--url",
        "/v",
        "--host",
        "api.example.com",
    ])
    .ok();
    let listed = run(&["route", "list"]).ok().stdout;
    let row = listed
        .lines()
        .find(|l| l.starts_with("vhost "))
        .expect("route row");
    assert!(
        row.contains(" api.example.com "),
        "HOST shows the host the route matches: {listed}"
    );
    assert!(!row.contains(" * "), "{listed}");

    let out = run(&[
        "tt",
        "create",
        "--name",
        "tick",
        "--function",
        "hello",
        "--cron",
        "@every 1m",
    ])
    .ok();
    assert!(
        !out.stderr.contains("Warning:"),
        "time triggers fire, nothing to warn about: {}",
        out.stderr
    );
    let tt = run(&["tt", "list"]).ok().stdout;
    assert!(
        tt.lines()
            .next()
            .is_some_and(|h| h.trim_end().ends_with("NAMESPACE")),
        "{tt}"
    );
    assert!(
        tt.lines()
            .nth(1)
            .is_some_and(|r| r.trim_end().ends_with("default")),
        "{tt}"
    );
    let out = run(&[
        "mqt",
        "create",
        "--name",
        "q",
        "--function",
        "hello",
        "--topic",
        "orders",
    ])
    .ok();
    assert!(
        !out.stderr.contains("does not consume"),
        "kafka (the default type) is consumed: {}",
        out.stderr
    );
    let out = run(&[
        "mqt",
        "create",
        "--name",
        "sqs",
        "--function",
        "hello",
        "--topic",
        "orders",
        "--mqtype",
        "aws-sqs-queue",
    ])
    .ok();
    assert!(
        out.stderr
            .contains("Warning: this server does not consume 'aws-sqs-queue' message queues yet"),
        "{}",
        out.stderr
    );
    let out = run(&["watch", "create", "--name", "w", "--function", "hello"]).ok();
    assert!(
        !out.stderr.contains("does not fire"),
        "watch triggers fire: {}",
        out.stderr
    );
}

#[test]
fn router_405_says_which_methods_are_allowed() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    support::write(
        dir.path(),
        "hello.js",
        "module.exports = async () => ({ status: 200, body: 'hi' });\n",
    );
    run(&[
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
    run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js",
    ])
    .ok();
    run(&[
        "route",
        "create",
        "--name",
        "r",
        "--function",
        "hello",
        "--url",
        "/only",
        "--method",
        "GET",
        "--method",
        "POST",
    ])
    .ok();
    let resp = eventually_blocking(Duration::from_secs(30), "the route to be served", || {
        let r = http().delete(server.url("/only")).send().ok()?;
        (r.status().as_u16() == 405).then_some(r)
    });
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
}

#[test]
fn archive_commands_speak_fissions_ids_and_urls() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    std::fs::write(dir.path().join("blob.zip"), b"not really a zip, but bytes").expect("write");

    let up = run(&["archive", "upload", "--name", "blob.zip"])
        .ok()
        .stdout;
    // Scripts written for Fission take the fifth word.
    let id = up.split_whitespace().nth(5).expect("id").to_owned();
    assert!(
        up.starts_with("File successfully uploaded with ID: /fission/fission-functions/"),
        "{up}"
    );
    let hex = id
        .strip_prefix("/fission/fission-functions/")
        .expect("prefix")
        .to_owned();

    let listed = run(&["ar", "list"]).ok().stdout;
    assert_eq!(listed, format!("ARCHIVES\n{id}\n"));
    let url = run(&["archive", "get-url", "--id", &id]).ok().stdout;
    assert_eq!(
        url,
        format!(
            "URL: http://storagesvc.fission/v1/archive?id=%2Ffission%2Ffission-functions%2F{hex}\n"
        )
    );
    let got = run(&["archive", "download", "--id", &id]).ok().stdout;
    assert_eq!(got, format!("File download complete. File name: {hex}\n"));
    assert_eq!(
        std::fs::read(dir.path().join(&hex)).expect("downloaded"),
        b"not really a zip, but bytes"
    );

    assert_eq!(
        run(&["archive", "delete", "--id", &id]).ok().stdout,
        format!("Deleted archive with id: {id}\n")
    );
    assert_eq!(run(&["ar", "list"]).ok().stdout, "ARCHIVES\n");
    run(&["archive", "get-url", "--id", &id]).fails_with("not found");
}

#[test]
fn large_packages_refer_to_archives_by_fissions_escaped_url_and_still_run() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    // Over the 256 KiB literal limit, so the CLI uploads it and records a URL.
    let padding = format!("// {}\n", "x".repeat(300 * 1024));
    support::write(
        dir.path(),
        "big.js",
        &format!("{padding}module.exports = async () => ({{ status: 200, body: 'big\\n' }});\n"),
    );
    run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "1",
    ])
    .ok();
    run(&[
        "fn", "create", "--name", "big", "--env", "nodejs", "--code", "big.js",
    ])
    .ok();
    let ids = run(&["ar", "list"]).ok().stdout;
    let id = ids.lines().nth(1).expect("one archive").to_owned();
    let pkg = run(&["pkg", "list", "-o", "json"]).ok().stdout;
    let want = run(&["archive", "get-url", "--id", &id]).ok().stdout;
    let want = want.trim().strip_prefix("URL: ").expect("url");
    assert!(
        pkg.contains(want),
        "the package records the archive's URL {want}: {pkg}"
    );
    if can_call_functions() {
        run(&[
            "route",
            "create",
            "--name",
            "big",
            "--function",
            "big",
            "--url",
            "/big",
        ])
        .ok();
        assert_eq!(get_ok(&server, "/big"), "big\n");
    }
}

#[test]
fn a_function_uses_an_environment_of_another_namespace() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    support::write(
        dir.path(),
        "hello.js",
        "module.exports = async () => ({ status: 200, body: 'across\\n' });\n",
    );
    run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--poolsize",
        "1",
        "--envns",
        "shared",
    ])
    .ok();
    // Fission's deprecated per-kind namespace flags, as old scripts pass them.
    run(&[
        "fn", "create", "--name", "hello", "--env", "nodejs", "--code", "hello.js", "--fns",
        "team", "--envns", "shared",
    ])
    .ok();
    let f: serde_json::Value = serde_json::from_str(
        &run(&["fn", "list", "--fns", "team", "-o", "json"])
            .ok()
            .stdout,
    )
    .expect("json");
    assert_eq!(f[0]["metadata"]["namespace"], "team");
    assert_eq!(
        f[0]["spec"]["environment"],
        serde_json::json!({"namespace": "shared", "name": "nodejs"})
    );
    let pkgs = run(&["pkg", "list", "--pkgns", "team"]).ok().stdout;
    assert!(
        pkgs.contains("hello-"),
        "the package lives with the function: {pkgs}"
    );
    run(&[
        "route",
        "create",
        "--name",
        "hello",
        "--function",
        "hello",
        "--url",
        "/across",
        "--triggerns",
        "team",
    ])
    .ok();
    if can_call_functions() {
        assert_eq!(get_ok(&server, "/across"), "across\n");
    }
    run(&["env", "delete", "--name", "nodejs", "--envns", "shared"]).fails_with("(team/hello)");
    // The controller checks the reference where it points.
    run(&[
        "fn", "create", "--name", "lost", "--env", "nodejs", "--code", "hello.js", "--fns", "team",
    ])
    .fails_with("error retrieving environment information");
    // --spec records the reference's namespace too.
    run(&["spec", "init"]).ok();
    run(&[
        "fn", "create", "--name", "saved", "--env", "nodejs", "--code", "hello.js", "--envns",
        "shared", "--spec",
    ])
    .ok();
    let saved =
        std::fs::read_to_string(dir.path().join("specs/function-saved.yaml")).expect("spec file");
    assert!(
        saved
            .matches("    namespace: shared\n    name: nodejs\n")
            .count()
            == 2,
        "{saved}"
    );
}

#[test]
fn a_spec_keeps_an_environment_reference_to_another_namespace() {
    let server = Server::start();
    let project = tempfile::tempdir().expect("project");
    copy_dir(&corpus(), project.path());
    let run = |args: &[&str]| server.fission_in(args, Some(project.path()));
    // The environment moves to 'shared'; the function (no namespace of its own) points there.
    let specs = project.path().join("specs");
    let env = std::fs::read_to_string(specs.join("env-nodejs.yaml")).expect("env");
    std::fs::write(
        specs.join("env-nodejs.yaml"),
        env.replace("namespace: default", "namespace: shared"),
    )
    .expect("write");
    let f = std::fs::read_to_string(specs.join("function-hello.yaml")).expect("fn");
    let f = f.replace(
        "    name: nodejs\n    namespace: default\n",
        "    name: nodejs\n    namespace: shared\n",
    );
    let f = f.replace("  name: hello\n  namespace: default\n", "  name: hello\n");
    std::fs::write(specs.join("function-hello.yaml"), f).expect("write");
    let out = run(&["spec", "apply"]).ok().stdout;
    assert!(out.contains("shared:nodejs"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["fn", "list", "-o", "json"]).ok().stdout).expect("json");
    let hello = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|f| f["metadata"]["name"] == "hello")
        .expect("hello");
    assert_eq!(hello["spec"]["environment"]["namespace"], "shared");
    if can_call_functions() {
        assert_eq!(
            get_ok(&server, "/corpus/hello"),
            "hello from a fission spec\n"
        );
    }
}

#[test]
fn go_style_boolean_flags_and_usage_errors() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| server.fission_in(args, Some(dir.path()));
    let dry = run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--dry=true",
    ])
    .ok();
    assert!(
        dry.stdout.contains("kind: Environment"),
        "--dry=true is --dry: {}",
        dry.stdout
    );
    run(&[
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
        "--dry=false",
        "--poolsize",
        "0",
    ])
    .ok();
    assert_eq!(names(&server, "env"), ["nodejs"], "--dry=false creates");
    run(&["fn", "list", "--bogus"]).fails_with("unexpected argument '--bogus'");
}
