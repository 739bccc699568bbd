//! API access control, TLS and the router's internal routes, through the real binary: what an
//! operator sets up and what a client (the CLI, curl, a browser) then sees.

mod support;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{BIN, Run, require_runtimes};

/// A server started with extra flags; killed (SIGTERM, then SIGKILL) on drop.
struct Served {
    child: Child,
    /// The controller's URL a client uses (a wildcard address replaced by 127.0.0.1).
    controller: String,
    router: String,
    /// Every stdout line up to and including the ready line.
    stdout: Vec<String>,
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
}

impl Served {
    fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        match Self::try_start(&data_dir, extra) {
            Ok(mut s) => {
                s._tmp = tmp;
                s
            }
            Err(e) => panic!("server did not start: {e}"),
        }
    }

    fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let mut child = Command::new(BIN)
            .args(["server", "--sandbox", "none", "--data-dir"])
            .arg(data_dir)
            .args(["--router-listen", "127.0.0.1:0", "--grace-period", "1"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("FISSION_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let ready = line.starts_with("fission server ready");
                    lines.push(line);
                    if ready {
                        let line = lines.last().expect("line");
                        let field = |key: &str| {
                            line.split(key)
                                .nth(1)
                                .and_then(|r| r.split_whitespace().next())
                                .expect("field")
                                .replace("0.0.0.0", "127.0.0.1")
                        };
                        let (controller, router) = (field("controller "), field("router "));
                        return Ok(Self {
                            child,
                            controller,
                            router,
                            stdout: lines,
                            _tmp: tempfile::tempdir().expect("tempdir"),
                            data_dir: data_dir.to_owned(),
                        });
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = std::io::Read::read_to_string(&mut e, &mut err);
                        }
                        return Err(format!("exited with {status}: {err}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err("timed out waiting for the ready line".into());
                    }
                }
            }
        }
    }

    /// `fission <args>` with `env` set (FISSION_AUTH_TOKEN and FISSION_CA_CERT cleared first).
    fn fission(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        fission_at(&self.controller, args, env)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fission_at(server: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("FISSION_URL", server)
        .env_remove("FISSION_AUTH_TOKEN")
        .env_remove("FISSION_CA_CERT")
        .env_remove("FISSION_DEFAULT_NAMESPACE")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run fission");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Names in the first column of a `list`, header skipped.
fn names(run: Run) -> Vec<String> {
    run.ok()
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn a_controller_beyond_loopback_generates_a_token_and_serves_only_healthz_without_it() {
    let server = Served::start(&["--controller-listen", "0.0.0.0:0"]);
    let token_file = server.data_dir.join("auth-token");
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("API token generated in") && l.contains("auth-token")),
        "the token's path is printed at start: {:?}",
        server.stdout
    );
    let mode = std::fs::metadata(&token_file)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let token = std::fs::read_to_string(&token_file)
        .expect("token")
        .trim()
        .to_owned();

    let c = http();
    let healthz = c
        .get(format!("{}/healthz", server.controller))
        .send()
        .expect("healthz");
    assert_eq!(healthz.status(), 200);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v2/functions"),
        ("GET", "/v2/environments?namespace=default"),
        ("POST", "/v2/environments"),
        ("DELETE", "/v2/environments/e?namespace=default"),
        ("GET", "/metrics"),
        ("GET", "/v2/apidocs.json"),
        ("GET", "/proxy/logs/f?follow=true"),
        ("GET", "/proxy/svcname?application=fission-router"),
        ("GET", "/proxy/storage/v1/archive"),
        ("GET", "/ui"),
        ("GET", "/ui/app.js"),
        ("POST", "/ui/api/invoke"),
        ("GET", "/v2/triggerstatus/time/t?namespace=default"),
        ("GET", "/no/such/path"),
    ] {
        let resp = c
            .request(
                method.parse().expect("method"),
                format!("{}{path}", server.controller),
            )
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .expect("request");
        assert_eq!(resp.status(), 401, "{method} {path} without a token");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some(r#"Bearer realm="fission""#),
            "{method} {path}"
        );
        let body: serde_json::Value = resp.json().expect("Fission's error JSON");
        assert_eq!(body["code"], 1, "{method} {path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("requires an API token")),
            "{body}"
        );
    }
    // The same token works as a header from curl-like clients.
    let ok = c
        .get(format!("{}/v2/environments", server.controller))
        .bearer_auth(&token)
        .send()
        .expect("with token");
    assert_eq!(ok.status(), 200);

    // The CLI: no token, then a wrong one, then the right one.
    let env_create = [
        "env",
        "create",
        "--name",
        "nodejs",
        "--image",
        "fission/node-env",
    ];
    server.fission(&env_create, &[]).fails_with(
        "requires an API token and none was given: set FISSION_AUTH_TOKEN or pass --auth-token",
    );
    server
        .fission(
            &env_create,
            &[("FISSION_AUTH_TOKEN", "0123456789abcdef-wrong")],
        )
        .fails_with("refused the API token");
    server
        .fission(&["env", "list"], &[])
        .fails_with("requires an API token");
    assert!(
        names(server.fission(&["env", "list"], &[("FISSION_AUTH_TOKEN", &token)])).is_empty(),
        "refused requests created nothing"
    );
    server
        .fission(&env_create, &[("FISSION_AUTH_TOKEN", &token)])
        .ok();
    // A wrong token changes nothing either: no delete, no update.
    let wrong = [("FISSION_AUTH_TOKEN", "0123456789abcdef-wrong")];
    server
        .fission(&["env", "delete", "--name", "nodejs"], &wrong)
        .fails_with("refused the API token");
    server
        .fission(
            &["env", "update", "--name", "nodejs", "--poolsize", "7"],
            &wrong,
        )
        .fails_with("refused the API token");
    let listed = server.fission(
        &["env", "get", "--name", "nodejs", "-o", "json"],
        &[("FISSION_AUTH_TOKEN", &token)],
    );
    let env: serde_json::Value = serde_json::from_str(&listed.ok().stdout).expect("env json");
    assert_ne!(
        env["spec"]["poolsize"], 7,
        "the refused update did not apply"
    );
    // --auth-token works like the variable.
    assert_eq!(
        names(server.fission(&["env", "list", "--auth-token", &token], &[])),
        ["nodejs"]
    );
}

#[test]
fn the_generated_token_survives_a_restart_and_insecure_no_auth_opts_out() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let first = Served::try_start(&data, &["--controller-listen", "0.0.0.0:0"]).expect("start");
    let token = std::fs::read_to_string(data.join("auth-token")).expect("token");
    drop(first);
    let again = Served::try_start(&data, &["--controller-listen", "0.0.0.0:0"]).expect("restart");
    assert!(
        again
            .stdout
            .iter()
            .any(|l| l.contains("API token read from")),
        "{:?}",
        again.stdout
    );
    assert_eq!(
        std::fs::read_to_string(data.join("auth-token")).expect("token"),
        token
    );
    again
        .fission(&["fn", "list"], &[("FISSION_AUTH_TOKEN", token.trim())])
        .ok();
    drop(again);

    let open = Served::try_start(
        &data,
        &["--controller-listen", "0.0.0.0:0", "--insecure-no-auth"],
    )
    .expect("insecure start");
    open.fission(&["fn", "list"], &[]).ok();
}

#[test]
fn a_loopback_controller_needs_a_token_only_when_one_is_given() {
    let open = Served::start(&["--controller-listen", "127.0.0.1:0"]);
    open.fission(&["env", "list"], &[]).ok();
    assert!(!open.data_dir.join("auth-token").exists());
    drop(open);

    let token = "loopback-token-0123456789";
    let server = Served::start(&["--controller-listen", "127.0.0.1:0", "--auth-token", token]);
    server
        .fission(&["env", "list"], &[])
        .fails_with("requires an API token");
    server
        .fission(&["env", "list"], &[("FISSION_AUTH_TOKEN", token)])
        .ok();
}

#[test]
fn the_dashboard_asks_for_the_token_once_and_then_works_with_its_cookie() {
    let token = "dashboard-token-0123456789";
    let server = Served::start(&["--controller-listen", "127.0.0.1:0", "--auth-token", token]);
    let c = http();
    // A browser opening the dashboard gets the login form, not JSON.
    let page = c
        .get(format!("{}/ui", server.controller))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .expect("ui");
    assert_eq!(page.status(), 401);
    let html = page.text().expect("html");
    assert!(
        html.contains(r#"<form method="post" action="/ui/login">"#),
        "{html}"
    );
    assert!(!html.contains(token));

    let wrong = c
        .post(format!("{}/ui/login", server.controller))
        .form(&[("token", "not-the-token-0123456789")])
        .send()
        .expect("login");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().expect("html").contains("not this server"));

    let ok = c
        .post(format!("{}/ui/login", server.controller))
        .form(&[("token", token)])
        .send()
        .expect("login");
    assert_eq!(ok.status(), 303);
    assert_eq!(
        ok.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui")
    );
    let cookie = ok
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_owned();
    for path in ["/ui", "/ui/app.js", "/v2/functions?namespace=default"] {
        let resp = c
            .get(format!("{}{path}", server.controller))
            .header("cookie", &pair)
            .send()
            .expect("with cookie");
        assert_eq!(resp.status(), 200, "{path} with the login cookie");
    }
    let forged = c
        .get(format!("{}/v2/functions", server.controller))
        .header("cookie", "fission-token=forged-0123456789abcdef")
        .send()
        .expect("forged");
    assert_eq!(forged.status(), 401);
}

/// A CA, and a certificate for 127.0.0.1/localhost it signed: (ca.pem, cert.pem, key.pem).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fission-rs security test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("ca");
    std::fs::write(&paths.1, cert.pem()).expect("cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("key");
    (paths.0, paths.1, paths.2)
}

#[test]
fn the_cli_talks_https_to_a_tls_controller_trusting_the_given_ca() {
    let pki = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = test_ca(pki.path());
    let token = "tls-token-0123456789abcdef";
    let server = Served::start(&[
        "--controller-listen",
        "127.0.0.1:0",
        "--auth-token",
        token,
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ]);
    assert!(
        server.controller.starts_with("https://"),
        "{}",
        server.controller
    );
    let ca_s = ca.to_str().expect("path");
    let with = [("FISSION_AUTH_TOKEN", token), ("FISSION_CA_CERT", ca_s)];
    server
        .fission(
            &[
                "env",
                "create",
                "--name",
                "nodejs",
                "--image",
                "fission/node-env",
            ],
            &with,
        )
        .ok();
    assert_eq!(names(server.fission(&["env", "list"], &with)), ["nodejs"]);
    // --ca-cert works like the variable.
    assert_eq!(
        names(server.fission(
            &["env", "list", "--ca-cert", ca_s],
            &[("FISSION_AUTH_TOKEN", token)]
        )),
        ["nodejs"]
    );

    // Without the CA the certificate cannot be verified, and the CLI says what to do.
    server
        .fission(&["env", "list"], &[("FISSION_AUTH_TOKEN", token)])
        .fails_with("cannot verify the TLS certificate of the fission server")
        .fails_with("--ca-cert or FISSION_CA_CERT");
    // Plain http to the TLS listener does not get through.
    let plain = server.controller.replace("https://", "http://");
    let run = fission_at(&plain, &["env", "list"], &with);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("Error: "), "{}", run.stderr);
    // A CA file that is not PEM is a clear error before any request.
    let bogus = pki.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").expect("write");
    server
        .fission(
            &["env", "list"],
            &[
                ("FISSION_AUTH_TOKEN", token),
                ("FISSION_CA_CERT", bogus.to_str().expect("path")),
            ],
        )
        .fails_with("holds no");
}

#[test]
fn a_server_with_an_unusable_certificate_or_token_refuses_to_start() {
    let pki = tempfile::tempdir().expect("tmp");
    let (_ca, cert, _key) = test_ca(pki.path());
    let data = pki.path().join("data");
    // The certificate given as its own key.
    let err = Served::try_start(
        &data,
        &[
            "--controller-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            cert.to_str().expect("path"),
        ],
    )
    .err()
    .expect("must not start");
    assert!(err.contains("exit status: 2"), "{err}");
    assert!(err.contains("private key"), "{err}");
    let err = Served::try_start(
        &data,
        &[
            "--controller-listen",
            "127.0.0.1:0",
            "--auth-token",
            "short",
        ],
    )
    .err()
    .expect("must not start");
    assert!(
        err.contains("exit status: 2") && err.contains("at least 16"),
        "{err}"
    );
    let err = Served::try_start(
        &data,
        &[
            "--controller-listen",
            "127.0.0.1:0",
            "--auth-token",
            "0123456789abcdef0123",
            "--insecure-no-auth",
        ],
    )
    .err()
    .expect("must not start");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn internal_function_routes_can_move_off_the_public_router_listener() {
    if require_runtimes().is_none() {
        return;
    }
    let server = Served::start(&[
        "--controller-listen",
        "127.0.0.1:0",
        "--router-internal-listen",
        "127.0.0.1:0",
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let code = dir.path().join("hello.js");
    std::fs::write(
        &code,
        "module.exports = async () => ({ status: 200, body: 'hello internal\\n' });\n",
    )
    .expect("code");
    let code = code.to_str().expect("path");
    let envs: &[(&str, &str)] = &[];
    server
        .fission(
            &[
                "env",
                "create",
                "--name",
                "nodejs",
                "--image",
                "fission/node-env",
                "--poolsize",
                "1",
            ],
            envs,
        )
        .ok();
    server
        .fission(
            &[
                "fn", "create", "--name", "hello", "--env", "nodejs", "--code", code,
            ],
            envs,
        )
        .ok();
    server
        .fission(
            &[
                "route",
                "create",
                "--name",
                "hello",
                "--function",
                "hello",
                "--url",
                "/hello",
            ],
            envs,
        )
        .ok();
    let c = http();
    // `fn test` finds the internal listener through the controller and calls the function.
    let tested = server
        .fission(&["fn", "test", "--name", "hello"], envs)
        .ok();
    assert!(
        tested.stdout.contains("hello internal"),
        "{}",
        tested.stdout
    );
    let public = c
        .get(format!("{}/fission-function/hello", server.router))
        .send()
        .expect("public");
    assert_eq!(
        public.status(),
        404,
        "internal route on the public listener"
    );
    let routed = c
        .get(format!("{}/hello", server.router))
        .send()
        .expect("route");
    assert_eq!(routed.status(), 200);
    assert_eq!(routed.text().expect("body"), "hello internal\n");
}

/// Every verb given what a user gets wrong — missing or malformed flags, references to
/// nothing, invalid names, files that cannot be read — answers `Error: …` on stderr with exit
/// 1 and stores nothing.
#[test]
fn every_cli_verb_refuses_bad_input_with_an_error_and_creates_nothing() {
    let server = Served::start(&["--controller-listen", "127.0.0.1:0"]);
    let none: &[(&str, &str)] = &[];
    server
        .fission(
            &[
                "env",
                "create",
                "--name",
                "nodejs",
                "--image",
                "fission/node-env",
                "--poolsize",
                "0",
            ],
            none,
        )
        .ok();
    let dir = tempfile::tempdir().expect("tmp");
    let code = dir.path().join("f.js");
    std::fs::write(&code, "module.exports = async () => ({ status: 200 });\n").expect("code");
    let code = code.to_str().expect("path");
    let missing_file = dir.path().join("missing.js");
    let missing_file = missing_file.to_str().expect("path");
    let a_dir = dir.path().to_str().expect("path");
    let bad_yaml = dir.path().join("specs");
    std::fs::create_dir_all(&bad_yaml).expect("specs");
    std::fs::write(
        bad_yaml.join("fission-deployment-config.yaml"),
        "kind: DeploymentConfig\nname: x\nuid: 1\n",
    )
    .expect("dc");
    std::fs::write(
        bad_yaml.join("broken.yaml"),
        "apiVersion: fission.io/v1\nkind: Function\nmetadata: [not, a, map\n",
    )
    .expect("broken");
    let bad_yaml = bad_yaml.to_str().expect("path");

    // (arguments, what the message must mention)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // environments
        (
            vec!["env", "create", "--image", "fission/node-env"],
            "--name",
        ),
        (
            vec![
                "env",
                "create",
                "--name",
                "Bad_Name",
                "--image",
                "fission/node-env",
            ],
            "Bad_Name",
        ),
        (vec!["env", "create", "--name", "e1"], "--image"),
        (
            vec![
                "env",
                "create",
                "--name",
                "e1",
                "--image",
                "example.com/not-a-runtime",
            ],
            "not-a-runtime",
        ),
        (
            vec![
                "env",
                "create",
                "--name",
                "e1",
                "--image",
                "fission/node-env",
                "--poolsize",
                "many",
            ],
            "many",
        ),
        (
            vec![
                "env",
                "create",
                "--name",
                "e1",
                "--image",
                "fission/node-env",
                "--mincpu",
                "-5",
            ],
            "-5",
        ),
        (vec!["env", "get", "--name", "nope"], "nope"),
        (
            vec!["env", "update", "--name", "nope", "--poolsize", "2"],
            "nope",
        ),
        (vec!["env", "delete", "--name", "nope"], "nope"),
        (
            vec![
                "env",
                "create",
                "--name",
                "e1",
                "--image",
                "fission/node-env",
                "--version",
                "9",
            ],
            "version",
        ),
        // functions
        (
            vec!["fn", "create", "--env", "nodejs", "--code", code],
            "--name",
        ),
        (
            vec![
                "fn", "create", "--name", "f1", "--env", "nope", "--code", code,
            ],
            "nope",
        ),
        (
            vec![
                "fn",
                "create",
                "--name",
                "f1",
                "--env",
                "nodejs",
                "--code",
                missing_file,
            ],
            "missing.js",
        ),
        (
            vec![
                "fn", "create", "--name", "f1", "--env", "nodejs", "--code", a_dir,
            ],
            a_dir,
        ),
        (
            vec![
                "fn", "create", "--name", "F 1", "--env", "nodejs", "--code", code,
            ],
            "F 1",
        ),
        (
            vec![
                "fn",
                "create",
                "--name",
                "f1",
                "--env",
                "nodejs",
                "--code",
                code,
                "--executortype",
                "bogus",
            ],
            "bogus",
        ),
        (
            vec![
                "fn",
                "create",
                "--name",
                "f1",
                "--env",
                "nodejs",
                "--code",
                code,
                "--minscale",
                "x",
            ],
            "x",
        ),
        (
            vec![
                "fn",
                "create",
                "--name",
                "f1",
                "--env",
                "nodejs",
                "--code",
                code,
                "--fntimeout",
                "-1",
            ],
            "-1",
        ),
        (
            vec![
                "fn", "create", "--name", "f1", "--env", "nodejs", "--pkg", "nope",
            ],
            "nope",
        ),
        (vec!["fn", "get", "--name", "nope"], "nope"),
        (
            vec!["fn", "update", "--name", "nope", "--code", code],
            "nope",
        ),
        (vec!["fn", "delete", "--name", "nope"], "nope"),
        (vec!["fn", "logs", "--name", "nope"], "nope"),
        (vec!["fn", "test", "--name", "nope"], "nope"),
        // packages
        (
            vec!["pkg", "create", "--env", "nodejs", "--deploy", missing_file],
            "missing.js",
        ),
        (
            vec!["pkg", "create", "--env", "nope", "--code", code],
            "nope",
        ),
        (vec!["pkg", "create", "--env", "nodejs"], "--"),
        (vec!["pkg", "info", "--name", "nope"], "nope"),
        (
            vec!["pkg", "update", "--name", "nope", "--code", code],
            "nope",
        ),
        (vec!["pkg", "delete", "--name", "nope"], "nope"),
        // HTTP triggers
        (vec!["route", "create", "--url", "/x"], "--function"),
        // (A trigger of a function that does not exist yet is stored with a warning, as Fission's
        // CLI does, so that specs apply in any order: not bad input.)
        (
            vec![
                "route",
                "create",
                "--name",
                "r1",
                "--function",
                "f",
                "--url",
                "/x",
                "--method",
                "BOGUS",
            ],
            "BOGUS",
        ),
        (
            vec![
                "route",
                "create",
                "--name",
                "r1",
                "--function",
                "f",
                "--url",
                "/x{",
            ],
            "unbalanced",
        ),
        (
            vec![
                "route",
                "create",
                "--name",
                "Bad_Route",
                "--function",
                "nope",
                "--url",
                "/x",
            ],
            "Bad_Route",
        ),
        (vec!["route", "get", "--name", "nope"], "nope"),
        (
            vec!["route", "update", "--name", "nope", "--url", "/y"],
            "nope",
        ),
        (vec!["route", "delete", "--name", "nope"], "nope"),
        // time triggers
        (
            vec![
                "tt",
                "create",
                "--name",
                "t1",
                "--function",
                "f",
                "--cron",
                "not a cron",
            ],
            "not a valid cron",
        ),
        (
            vec!["tt", "create", "--name", "t1", "--cron", "@every 1m"],
            "--function",
        ),
        (
            vec!["tt", "showschedule", "--cron", "not a cron"],
            "not a cron",
        ),
        (vec!["tt", "get", "--name", "nope"], "nope"),
        (vec!["tt", "delete", "--name", "nope"], "nope"),
        // message-queue triggers
        (
            vec![
                "mqt",
                "create",
                "--name",
                "m1",
                "--function",
                "f",
                "--topic",
                "t",
                "--mqtype",
                "bogus",
            ],
            "bogus",
        ),
        (
            vec![
                "mqt",
                "create",
                "--name",
                "m1",
                "--function",
                "f",
                "--topic",
                "t",
                "--maxretries",
                "x",
            ],
            "x",
        ),
        (
            vec!["mqt", "create", "--name", "m1", "--topic", "t"],
            "--function",
        ),
        (vec!["mqt", "get", "--name", "nope"], "nope"),
        (vec!["mqt", "delete", "--name", "nope"], "nope"),
        // kube watchers
        (
            vec!["watch", "create", "--name", "W1", "--function", "f"],
            "W1",
        ),
        (vec!["watch", "delete", "--name", "nope"], "nope"),
        // canaries
        (
            vec![
                "canary",
                "create",
                "--name",
                "c1",
                "--httptrigger",
                "nope",
                "--newfunction",
                "a",
                "--oldfunction",
                "b",
            ],
            "nope",
        ),
        (
            vec![
                "canary",
                "create",
                "--name",
                "c1",
                "--httptrigger",
                "r",
                "--newfunction",
                "a",
                "--oldfunction",
                "b",
                "--increment-step",
                "500",
            ],
            "between 1 and 100",
        ),
        (vec!["canary", "get", "--name", "nope"], "nope"),
        (vec!["canary", "delete", "--name", "nope"], "nope"),
        // secrets and config maps
        (
            vec![
                "secret",
                "create",
                "--name",
                "s1",
                "--from-literal",
                "novalue",
            ],
            "novalue",
        ),
        (
            vec![
                "secret",
                "create",
                "--name",
                "s1",
                "--from-file",
                missing_file,
            ],
            "missing.js",
        ),
        (
            vec!["secret", "create", "--name", "S1", "--from-literal", "k=v"],
            "S1",
        ),
        (vec!["secret", "get", "--name", "nope"], "nope"),
        (vec!["secret", "delete", "--name", "nope"], "nope"),
        (
            vec!["cm", "create", "--name", "c1", "--from-file", missing_file],
            "missing.js",
        ),
        (vec!["cm", "get", "--name", "nope"], "nope"),
        // archives
        (
            vec!["archive", "upload", "--name", missing_file],
            "missing.js",
        ),
        (
            vec![
                "archive",
                "download",
                "--id",
                "nope",
                "--output",
                missing_file,
            ],
            "nope",
        ),
        (vec!["archive", "delete", "--id", "nope"], "nope"),
        // specs
        (
            vec!["spec", "apply", "--specdir", missing_file],
            "missing.js",
        ),
        (
            vec!["spec", "init", "--specdir", "/proc/no/such/dir"],
            "/proc/no/such/dir",
        ),
        (
            vec!["spec", "validate", "--specdir", bad_yaml],
            "broken.yaml",
        ),
        (vec!["spec", "apply", "--specdir", bad_yaml], "broken.yaml"),
        // global flags
        (vec!["fn", "list", "--server", "::not a url::"], "server"),
        (vec!["fn", "list", "--ca-cert", missing_file], "missing.js"),
        (vec!["fn", "list", "--no-such-flag"], "--no-such-flag"),
    ];
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let run = server.fission(args, none);
        let ok = run.code == 1
            && run.stderr.starts_with("Error: ")
            && run.stderr.contains(needle)
            && !run.stderr.contains("panicked");
        if !ok {
            failures.push(format!(
                "fission {}\n  exit {} (want 1), stderr must start with 'Error: ' and mention {needle:?}\n  stdout: {}\n  stderr: {}",
                args.join(" "),
                run.code,
                run.stdout.trim(),
                run.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were not refused cleanly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Nothing was created by any of them.
    assert_eq!(names(server.fission(&["env", "list"], none)), ["nodejs"]);
    for kind in [
        "fn", "pkg", "route", "tt", "mqt", "watch", "canary", "secret", "cm",
    ] {
        let listed = names(server.fission(&[kind, "list"], none));
        assert!(
            listed.is_empty(),
            "{kind} list after the bad inputs: {listed:?}"
        );
    }
    let archives = names(server.fission(&["archive", "list"], none));
    assert!(archives.is_empty(), "archives: {archives:?}");
}

/// With a token required, everything that reaches the controller still works when given it: a
/// large archive upload, `fn test` (router address from the controller), `fn logs -f`, specs,
/// time triggers (which call the router from inside the server) — and the router's function
/// routes stay public.
#[test]
fn with_a_token_every_client_path_keeps_working() {
    use std::io::{BufRead as _, BufReader};
    if require_runtimes().is_none() {
        return;
    }
    let token = "every-path-token-0123456789";
    let server = Served::start(&["--controller-listen", "127.0.0.1:0", "--auth-token", token]);
    let with: &[(&str, &str)] = &[("FISSION_AUTH_TOKEN", token)];
    let dir = tempfile::tempdir().expect("tmp");
    // Over 256 KiB: uploaded to the archive store rather than kept in the package.
    let padding = "x".repeat(300 * 1024);
    let code = dir.path().join("big.js");
    std::fs::write(
        &code,
        format!(
            "// {padding}\nmodule.exports = async (ctx) => {{ console.log('called-' + ctx.request.method); return {{ status: 200, body: 'big ok\\n' }}; }};\n"
        ),
    )
    .expect("code");
    let code = code.to_str().expect("path");
    server
        .fission(
            &[
                "env",
                "create",
                "--name",
                "nodejs",
                "--image",
                "fission/node-env",
                "--poolsize",
                "1",
            ],
            with,
        )
        .ok();
    server
        .fission(
            &[
                "fn", "create", "--name", "big", "--env", "nodejs", "--code", code,
            ],
            with,
        )
        .ok();
    assert_eq!(names(server.fission(&["archive", "list"], with)).len(), 1);
    server
        .fission(
            &[
                "route",
                "create",
                "--name",
                "big",
                "--function",
                "big",
                "--url",
                "/big",
            ],
            with,
        )
        .ok();
    let tested = server.fission(&["fn", "test", "--name", "big"], with).ok();
    assert!(tested.stdout.contains("big ok"), "{}", tested.stdout);
    // Function routes need no token, as in Fission.
    let routed = http()
        .get(format!("{}/big", server.router))
        .send()
        .expect("route");
    assert_eq!(routed.status(), 200);

    // A time trigger's calls go through the router from inside the server.
    server
        .fission(
            &[
                "tt",
                "create",
                "--name",
                "tick",
                "--function",
                "big",
                "--cron",
                "@every 1s",
            ],
            with,
        )
        .ok();
    let mut follow = Command::new(BIN)
        .args(["fn", "logs", "--name", "big", "-f"])
        .env("FISSION_URL", &server.controller)
        .env("FISSION_AUTH_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fn logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("called-POST")) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.iter().any(|l| l.contains("called-POST")),
        "the timer's call shows in the followed log: {seen:?}"
    );

    // Specs: init, save, apply.
    let specs = tempfile::tempdir().expect("specs");
    let in_specs = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .current_dir(specs.path())
            .env("FISSION_URL", &server.controller)
            .env("FISSION_AUTH_TOKEN", token)
            .env_remove("FISSION_DEFAULT_NAMESPACE")
            .output()
            .expect("run");
        assert!(
            o.status.success(),
            "fission {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    in_specs(&["spec", "init"]);
    in_specs(&[
        "fn",
        "create",
        "--name",
        "from-spec",
        "--env",
        "nodejs",
        "--code",
        code,
        "--spec",
    ]);
    in_specs(&["spec", "apply"]);
    assert!(names(server.fission(&["fn", "list"], with)).contains(&"from-spec".to_owned()));
}
