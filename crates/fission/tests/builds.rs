//! End-to-end: source packages built by the server's build manager (pip and npm against the
//! real registries), deployed, and called through the router.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// A server with `python` and `nodejs` environments that have builders.
fn setup() -> Option<Setup> {
    let s = Setup::start()?;
    s.env(
        "python",
        "fission/python-env",
        &["--builder", "fission/python-builder", "--poolsize", "1"],
    );
    s.env(
        "nodejs",
        "fission/node-env",
        &["--builder", "fission/node-builder", "--poolsize", "1"],
    );
    assert!(
        builds_packages(&s),
        "a source package stayed pending for 10s: the server does not run the build manager (fission_builder)"
    );
    Some(s)
}

/// Whether a trivial source package leaves `pending` within a few seconds.
fn builds_packages(s: &Setup) -> bool {
    let src = s.files("probe", &[("main.py", "def main():\n    return 'probe'\n")]);
    s.fission(&[
        "pkg",
        "create",
        "--name",
        "probe",
        "--env",
        "python",
        "--src",
        &glob(&src),
        "--nowait",
    ])
    .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let info = s.fission(&["pkg", "info", "--name", "probe"]).ok();
        if !info.stdout.contains("pending") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The package `fn create` made for `function`.
fn package_of(s: &Setup, function: &str) -> String {
    let meta = s
        .fission(&["fn", "getmeta", "--name", function])
        .ok()
        .stdout;
    meta.lines()
        .find_map(|l| l.strip_prefix("Package: "))
        .expect("Package: line")
        .trim()
        .to_owned()
}

fn glob(dir: &Path) -> String {
    format!("{}/*", dir.display())
}

/// The "Package 'x' built in 3.2s" line of a waiting command.
fn build_time(run: &Run) -> String {
    run.stderr
        .lines()
        .find(|l| l.contains("built in"))
        .unwrap_or("(no build line)")
        .to_owned()
}

const PY_SIX: &str = "import six\n\ndef main():\n    return 'six %s on %s\\n' % (six.__version__, 'py3' if six.PY3 else 'py2')\n";

#[test]
fn python_function_from_source_with_requirements_from_pypi() {
    let Some(s) = setup() else { return };
    let src = s.files(
        "pysix",
        &[("main.py", PY_SIX), ("requirements.txt", "six==1.16.0\n")],
    );
    let run = s
        .fission(&[
            "fn",
            "create",
            "--name",
            "pysix",
            "--env",
            "python",
            "--src",
            &glob(&src),
            "--entrypoint",
            "main.main",
        ])
        .ok();
    assert!(
        run.stdout.contains("function 'pysix' created"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("Waiting for package '"),
        "{}",
        run.stderr
    );
    eprintln!("python build: {}", build_time(&run));
    let pkg = package_of(&s, "pysix");
    let info = s.fission(&["pkg", "info", "--name", &pkg]).ok().stdout;
    assert!(info.contains("succeeded"), "{info}");
    assert!(
        info.contains("pip install -r requirements.txt")
            && info.contains("Successfully installed six-1.16.0"),
        "{info}"
    );
    s.route(&["--url", "/pysix", "--function", "pysix"]);
    assert_eq!(s.get("/pysix"), (200, "six 1.16.0 on py3\n".to_owned()));
}

#[test]
fn node_function_from_source_with_a_dependency_from_npm() {
    let Some(s) = setup() else { return };
    let src = s.files(
        "isnum",
        &[
            ("package.json", r#"{"name": "isnum", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}}"#),
            (
                "hello.js",
                "const isNumber = require('is-number');\nmodule.exports = async () => ({ status: 200, body: `${isNumber('42')} ${isNumber('x')}\\n` });\n",
            ),
        ],
    );
    let run = s
        .fission(&[
            "fn",
            "create",
            "--name",
            "isnum",
            "--env",
            "nodejs",
            "--src",
            &glob(&src),
            "--entrypoint",
            "hello",
        ])
        .ok();
    eprintln!("node build: {}", build_time(&run));
    let info = s
        .fission(&["pkg", "info", "--name", &package_of(&s, "isnum")])
        .ok()
        .stdout;
    assert!(
        info.contains("succeeded") && info.contains("npm install"),
        "{info}"
    );
    s.route(&["--url", "/isnum", "--function", "isnum"]);
    assert_eq!(s.get("/isnum"), (200, "true false\n".to_owned()));
}

#[test]
fn multi_file_python_deployment_with_a_dotted_entrypoint() {
    let Some(s) = setup() else { return };
    let dir = s.files(
        "multi",
        &[
            ("main.py", "def main():\n    return 'main\\n'\n"),
            ("helper.py", "def greet():\n    return 'hello from helper'\n"),
            ("sub_mod/altmain.py", "from helper import greet\n\ndef entrypoint():\n    return greet() + ' via sub_mod.altmain\\n'\n"),
        ],
    );
    let run = s
        .fission(&[
            "fn",
            "create",
            "--name",
            "multi",
            "--env",
            "python",
            "--deploy",
            &glob(&dir),
            "--entrypoint",
            "sub_mod.altmain.entrypoint",
        ])
        .ok();
    assert!(
        !run.stderr.contains("Waiting for package"),
        "deploy archives need no build: {}",
        run.stderr
    );
    s.route(&["--url", "/multi", "--function", "multi"]);
    assert_eq!(
        s.get("/multi"),
        (200, "hello from helper via sub_mod.altmain\n".to_owned())
    );
}

#[test]
fn custom_build_command_generates_code_into_the_deployment() {
    let Some(s) = setup() else { return };
    let src = s.files(
        "custom",
        &[
            ("main.py", "from generated import GREETING\n\ndef main():\n    return GREETING + '\\n'\n"),
            (
                "build.sh",
                "#!/bin/sh\nset -e\necho \"custom build in $SRC_PKG\"\ncp -r \"$SRC_PKG\" \"$DEPLOY_PKG\"\necho \"GREETING = 'built by build.sh'\" > \"$DEPLOY_PKG/generated.py\"\n",
            ),
        ],
    );
    let run = s
        .fission(&[
            "pkg",
            "create",
            "--name",
            "custompkg",
            "--env",
            "python",
            "--src",
            &glob(&src),
            "--buildcmd",
            "./build.sh",
        ])
        .ok();
    assert!(
        run.stdout.contains("Package 'custompkg' created"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("Package 'custompkg' built in"),
        "{}",
        run.stderr
    );
    let info = s
        .fission(&["pkg", "info", "--name", "custompkg"])
        .ok()
        .stdout;
    assert!(
        info.contains("succeeded") && info.contains("custom build in"),
        "{info}"
    );
    s.fission(&[
        "fn",
        "create",
        "--name",
        "custom",
        "--pkg",
        "custompkg",
        "--entrypoint",
        "main.main",
    ])
    .ok();
    s.route(&["--url", "/custom", "--function", "custom"]);
    assert_eq!(s.get("/custom"), (200, "built by build.sh\n".to_owned()));
}

#[test]
fn fn_update_src_rebuilds_and_a_failed_build_keeps_the_old_code() {
    let Some(s) = setup() else { return };
    let v1 = s.files(
        "v1",
        &[("main.py", PY_SIX), ("requirements.txt", "six==1.16.0\n")],
    );
    s.fission(&[
        "fn",
        "create",
        "--name",
        "app",
        "--env",
        "python",
        "--src",
        &glob(&v1),
        "--entrypoint",
        "main.main",
    ])
    .ok();
    s.route(&["--url", "/app", "--function", "app"]);
    assert_eq!(s.get("/app"), (200, "six 1.16.0 on py3\n".to_owned()));

    // A new source version is built and served.
    let v2 = s.files(
        "v2",
        &[
            (
                "main.py",
                "import six\n\ndef main():\n    return 'v2 with six %s\\n' % six.__version__\n",
            ),
            ("requirements.txt", "six==1.16.0\n"),
        ],
    );
    let run = s
        .fission(&["fn", "update", "--name", "app", "--src", &glob(&v2)])
        .ok();
    assert!(
        run.stdout.contains("Function 'app' updated"),
        "{}",
        run.stdout
    );
    eprintln!("python rebuild: {}", build_time(&run));
    let body = eventually_blocking(
        Duration::from_secs(15),
        "the new build to be served",
        || {
            let (status, body) = s.get("/app");
            (status == 200 && body.starts_with("v2")).then_some(body)
        },
    );
    assert_eq!(body, "v2 with six 1.16.0\n");

    // A build that fails (a requirement that does not exist) leaves the function on v2.
    let bad = s.files(
        "bad",
        &[
            ("main.py", "def main():\n    return 'never served\\n'\n"),
            (
                "requirements.txt",
                "fission-rs-no-such-package-xyzzy==9.9.9\n",
            ),
        ],
    );
    let pkg = package_of(&s, "app");
    let run = s.fission(&["fn", "update", "--name", "app", "--src", &glob(&bad)]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let expected = format!(
        "Error: package '{pkg}' build failed; see 'fission pkg info --name {pkg}' for the build log"
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(
        run.stderr.contains("fission-rs-no-such-package-xyzzy"),
        "the log tail is shown: {}",
        run.stderr
    );
    let info = s.fission(&["pkg", "info", "--name", &pkg]).ok().stdout;
    assert!(info.contains("Status:      failed"), "{info}");
    assert!(
        info.contains("No matching distribution found for fission-rs-no-such-package-xyzzy==9.9.9"),
        "the pip error is in the build log: {info}"
    );
    assert_eq!(
        s.get("/app"),
        (200, "v2 with six 1.16.0\n".to_owned()),
        "still the last good build"
    );

    // Retrying a failed build fails the same way; only failed packages can be rebuilt.
    let run = s.fission(&["pkg", "rebuild", "--name", &pkg]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("Retrying build for pkg {pkg}")),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("build failed"), "{}", run.stderr);
    s.fission(&["pkg", "update", "--name", &pkg, "--src", &glob(&v2)])
        .ok();
    s.fission(&["pkg", "rebuild", "--name", &pkg])
        .fails_with("only failed builds can be retried");
}

/// A zip written with Python's zipfile: entries as given, names unchecked.
fn hostile_zip(path: &Path, entries: &[(&str, &str)]) {
    let list: Vec<String> = entries
        .iter()
        .map(|(n, b)| format!("({n:?}, {b:?})"))
        .collect();
    let script = format!(
        "import zipfile\nwith zipfile.ZipFile({:?}, 'w') as z:\n    for n, b in [{}]:\n        z.writestr(n, b)\n",
        path.display().to_string(),
        list.join(", ")
    );
    let ok = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3")
        .success();
    assert!(ok, "could not write {}", path.display());
}

#[test]
fn hostile_archives_are_refused_with_a_clear_error() {
    let Some(s) = setup() else { return };
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 3] = [
        (
            "slip",
            &[
                ("main.py", "def main():\n    return 'x'\n"),
                ("../../escaped.py", "x"),
            ],
            "..",
        ),
        (
            "absolute",
            &[
                ("main.py", "def main():\n    return 'x'\n"),
                ("/etc/evil", "x"),
            ],
            "/etc/evil",
        ),
        (
            "dupes",
            &[
                ("main.py", "def main():\n    return 'a'\n"),
                ("main.py", "def main():\n    return 'b'\n"),
            ],
            "more than once",
        ),
    ];
    for (name, entries, needle) in cases {
        let zip = s.dir.path().join(format!("{name}.zip"));
        hostile_zip(&zip, entries);
        s.fission(&[
            "fn",
            "create",
            "--name",
            name,
            "--env",
            "python",
            "--deploy",
            zip.to_str().expect("path"),
            "--entrypoint",
            "main.main",
        ])
        .ok();
        let r = http()
            .get(s.server.url(&format!("/fission-function/{name}")))
            .send()
            .expect("call");
        let status = r.status().as_u16();
        let body = r.text().expect("body");
        assert_eq!(status, 500, "{name}: {body}");
        assert!(
            body.contains(needle),
            "{name}: the error names the bad entry: {body}"
        );
        assert!(
            !s.dir.path().join("escaped.py").exists() && !Path::new("/etc/evil").exists(),
            "nothing written outside"
        );
    }
    // A hostile source archive fails its build with the reason in the log.
    let zip = s.dir.path().join("src-slip.zip");
    hostile_zip(&zip, &[("main.py", "x"), ("../../escaped.py", "x")]);
    let out = s.fission(&[
        "pkg",
        "create",
        "--name",
        "src-slip",
        "--env",
        "python",
        "--src",
        zip.to_str().expect("path"),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let info = s
        .fission(&["pkg", "info", "--name", "src-slip"])
        .ok()
        .stdout;
    assert!(info.contains("failed") && info.contains(".."), "{info}");
}
