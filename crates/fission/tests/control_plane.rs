//! End-to-end: the real `fission server` and the real `fission` CLI, as a user drives them.

mod support;

use std::process::Command;

use support::*;

const HELLO_JS: &str = "module.exports = async function(context) {\n  return { status: 200, body: \"Hello, world!\\n\" };\n}\n";

fn names(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn seed_walkthrough_prints_what_fission_prints_and_lists_show_the_objects() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let code = write(dir.path(), "hello.js", HELLO_JS);

    let out = server
        .fission(&[
            "env",
            "create",
            "--name",
            "nodejs",
            "--image",
            "fission/node-env",
        ])
        .ok();
    assert!(
        out.stdout.contains("poolsize setting default to 3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("environment 'nodejs' created"),
        "{}",
        out.stdout
    );

    let out = server
        .fission(&[
            "function",
            "create",
            "--name",
            "hello",
            "--env",
            "nodejs",
            "--code",
            code.to_str().expect("path"),
        ])
        .ok();
    assert!(
        out.stdout.contains("function 'hello' created"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Package 'hello-"), "{}", out.stdout);

    let out = server
        .fission(&[
            "route",
            "create",
            "--method",
            "GET",
            "--url",
            "/hello",
            "--function",
            "hello",
            "--name",
            "hello",
        ])
        .ok();
    assert!(
        out.stdout.contains("trigger 'hello' created"),
        "{}",
        out.stdout
    );

    let envs = server.fission(&["env", "list"]).ok().stdout;
    assert!(envs.starts_with("NAME"), "{envs}");
    assert_eq!(names(&envs), vec!["nodejs"]);
    let fns = server.fission(&["fn", "list"]).ok().stdout;
    assert!(fns.starts_with("NAME"), "{fns}");
    assert_eq!(names(&fns), vec!["hello"]);
    let routes = server.fission(&["route", "list"]).ok().stdout;
    assert_eq!(names(&routes), vec!["hello"]);
    assert!(
        routes.contains("/hello") && routes.contains("[GET]"),
        "{routes}"
    );

    // The code comes back byte for byte.
    let got = server
        .fission(&["fn", "get", "--name", "hello"])
        .ok()
        .stdout;
    assert_eq!(got, HELLO_JS);
    let meta = server
        .fission(&["fn", "getmeta", "--name", "hello"])
        .ok()
        .stdout;
    assert!(meta.contains("hello") && meta.contains("nodejs"), "{meta}");

    let json = server.fission(&["fn", "get", "--name", "hello", "-o", "json"]);
    if json.code == 0 {
        let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json output");
        assert_eq!(v["spec"]["environment"]["name"], "nodejs");
    }
}

#[test]
fn acknowledged_objects_survive_kill_9_and_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let code = write(tmp.path(), "hello.js", HELLO_JS);
    let mut server = Server::start_on(&data, "127.0.0.1:0", "127.0.0.1:0");
    server
        .fission(&[
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
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "hello",
            "--env",
            "nodejs",
            "--code",
            code.to_str().expect("path"),
        ])
        .ok();
    server
        .fission(&[
            "route",
            "create",
            "--url",
            "/hello",
            "--function",
            "hello",
            "--name",
            "r1",
        ])
        .ok();
    for i in 0..5 {
        server
            .fission(&[
                "env",
                "create",
                "--name",
                &format!("e{i}"),
                "--image",
                "fission/python-env",
                "--poolsize",
                "0",
            ])
            .ok();
    }
    server.kill9();

    let server = Server::start_on(&data, "127.0.0.1:0", "127.0.0.1:0");
    assert_eq!(
        names(&server.fission(&["env", "list"]).ok().stdout).len(),
        6
    );
    assert_eq!(
        names(&server.fission(&["fn", "list"]).ok().stdout),
        vec!["hello"]
    );
    assert_eq!(
        names(&server.fission(&["route", "list"]).ok().stdout),
        vec!["r1"]
    );
    assert_eq!(
        server
            .fission(&["fn", "get", "--name", "hello"])
            .ok()
            .stdout,
        HELLO_JS
    );
}

#[test]
fn second_server_on_the_same_data_dir_refuses_to_start() {
    let first = Server::start();
    let err = Server::try_start_on(&first.data_dir, "127.0.0.1:0", "127.0.0.1:0")
        .err()
        .expect("second server must fail");
    assert!(err.contains("in use by another fission server"), "{err}");
    // The first one is unharmed.
    first.fission(&["env", "list"]).ok();
}

#[test]
fn stale_update_is_refused_with_409_and_changes_nothing() {
    let server = Server::start();
    server
        .fission(&[
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
    let client = reqwest::blocking::Client::new();
    let url = format!(
        "{}/v2/environments/nodejs?namespace=default",
        server.controller
    );
    let original: serde_json::Value = client.get(&url).send().expect("get").json().expect("json");
    let mut first = original.clone();
    first["spec"]["poolsize"] = 2.into();
    assert_eq!(
        client.put(&url).json(&first).send().expect("put").status(),
        200
    );
    let mut stale = original;
    stale["spec"]["poolsize"] = 7.into();
    let resp = client.put(&url).json(&stale).send().expect("put");
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().expect("json error");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("modified since you read it"),
        "{body}"
    );
    let now: serde_json::Value = client.get(&url).send().expect("get").json().expect("json");
    assert_eq!(now["spec"]["poolsize"], 2);
}

#[test]
fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let code = write(dir.path(), "hello.js", HELLO_JS);
    let code = code.to_str().expect("path");

    server
        .fission(&[
            "env",
            "create",
            "--name",
            "Upper",
            "--image",
            "fission/node-env",
        ])
        .fails_with("Upper");
    server
        .fission(&[
            "env",
            "create",
            "--name",
            &"a".repeat(64),
            "--image",
            "fission/node-env",
        ])
        .fails_with("valid");
    server
        .fission(&[
            "env",
            "create",
            "--name",
            "../x",
            "--image",
            "fission/node-env",
        ])
        .fails_with("valid");
    server
        .fission(&["env", "create", "--name", "img", "--image", "nginx:latest"])
        .fails_with("not supported");
    assert_eq!(
        names(&server.fission(&["env", "list"]).ok().stdout),
        Vec::<String>::new()
    );

    server
        .fission(&[
            "fn", "create", "--name", "hello", "--env", "nope", "--code", code,
        ])
        .fails_with("nope");
    server
        .fission(&[
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
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "hello",
            "--env",
            "nodejs",
            "--code",
            "/does/not/exist.js",
        ])
        .fails_with("exist.js");
    assert_eq!(
        names(&server.fission(&["fn", "list"]).ok().stdout),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&server.fission(&["pkg", "list"]).ok().stdout),
        Vec::<String>::new(),
        "no half-written package"
    );

    server
        .fission(&[
            "fn", "create", "--name", "hello", "--env", "nodejs", "--code", code,
        ])
        .ok();
    server
        .fission(&[
            "fn", "create", "--name", "hello", "--env", "nodejs", "--code", code,
        ])
        .fails_with("already exists");
    server
        .fission(&[
            "route",
            "create",
            "--url",
            "/hello",
            "--function",
            "hello",
            "--name",
            "r1",
        ])
        .ok();
    server
        .fission(&[
            "route",
            "create",
            "--url",
            "/hello",
            "--function",
            "hello",
            "--name",
            "r2",
        ])
        .fails_with("already exists (r1)");
    server
        .fission(&["route", "create", "--function", "hello", "--name", "r3"])
        .fails_with("Prefix or URL");

    server
        .fission(&["fn", "delete", "--name", "ghost"])
        .fails_with("ghost");
    server
        .fission(&["fn", "delete", "--name", "ghost", "--ignorenotfound"])
        .ok();
    server
        .fission(&["env", "delete", "--name", "nodejs"])
        .fails_with("used by at least one function");
    assert_eq!(
        names(&server.fission(&["env", "list"]).ok().stdout),
        vec!["nodejs"]
    );
}

#[test]
fn update_and_delete_round_trip_through_the_cli() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = write(dir.path(), "v1.js", HELLO_JS);
    let v2 = write(
        dir.path(),
        "v2.js",
        "module.exports = async () => ({status: 200, body: 'v2'});\n",
    );
    server
        .fission(&[
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
    server
        .fission(&["env", "update", "--name", "nodejs", "--poolsize", "1"])
        .ok();
    let env = server.fission(&["env", "list"]).ok().stdout;
    assert!(
        env.lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "1"),
        "{env}"
    );

    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "hello",
            "--env",
            "nodejs",
            "--code",
            v1.to_str().expect("p"),
        ])
        .ok();
    let out = server
        .fission(&[
            "fn",
            "update",
            "--name",
            "hello",
            "--code",
            v2.to_str().expect("p"),
        ])
        .ok();
    assert!(out.stdout.contains("updated"), "{}", out.stdout);
    assert!(
        server
            .fission(&["fn", "get", "--name", "hello"])
            .ok()
            .stdout
            .contains("'v2'")
    );

    server
        .fission(&[
            "route",
            "create",
            "--url",
            "/a",
            "--function",
            "hello",
            "--name",
            "r",
        ])
        .ok();
    server
        .fission(&["route", "update", "--name", "r", "--url", "/b"])
        .ok();
    assert!(
        server
            .fission(&["route", "get", "--name", "r"])
            .ok()
            .stdout
            .contains("/b")
    );
    let out = server.fission(&["route", "delete", "--name", "r"]).ok();
    assert!(out.stdout.contains("trigger 'r' deleted"), "{}", out.stdout);
    let out = server.fission(&["fn", "delete", "--name", "hello"]).ok();
    assert!(
        out.stdout.contains("function 'hello' deleted"),
        "{}",
        out.stdout
    );
    let out = server.fission(&["env", "delete", "--name", "nodejs"]).ok();
    assert!(
        out.stdout.contains("environment 'nodejs' deleted"),
        "{}",
        out.stdout
    );
}

#[test]
fn namespaces_separate_objects() {
    let server = Server::start();
    server
        .fission(&[
            "env",
            "create",
            "--name",
            "nodejs",
            "--image",
            "fission/node-env",
            "--poolsize",
            "0",
            "-n",
            "team-a",
        ])
        .ok();
    assert_eq!(
        names(&server.fission(&["env", "list", "-n", "team-a"]).ok().stdout),
        vec!["nodejs"]
    );
    let default_only = server
        .fission(&["env", "list", "-n", "default"])
        .ok()
        .stdout;
    assert_eq!(names(&default_only), Vec::<String>::new());
    let out = Command::new(BIN)
        .args(["env", "list"])
        .env("FISSION_URL", &server.controller)
        .env("FISSION_DEFAULT_NAMESPACE", "team-a")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nodejs"));
}

#[test]
fn cli_says_where_it_looked_when_no_server_runs() {
    let out = Command::new(BIN)
        .args(["fn", "list"])
        .env("FISSION_URL", "http://127.0.0.1:9")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:9") && stderr.contains("fission server"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn secrets_and_configmaps_are_managed_without_printing_values() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "token.txt", "file-value");
    let out = server
        .fission(&[
            "secret",
            "create",
            "--name",
            "db",
            "--from-literal",
            "password=hunter2",
            "--from-file",
            &format!("token={}", file.display()),
        ])
        .ok();
    assert!(out.stdout.contains("secret 'db' created"), "{}", out.stdout);
    let list = server.fission(&["secret", "list"]).ok().stdout;
    assert_eq!(names(&list), vec!["db"]);
    assert!(list.contains("password,token"), "{list}");
    assert!(
        !list.contains("hunter2"),
        "list must not print values: {list}"
    );
    let get = server
        .fission(&["secret", "get", "--name", "db"])
        .ok()
        .stdout;
    assert!(
        !get.contains("hunter2") && !get.contains("aHVudGVyMg"),
        "{get}"
    );
    let yaml = server
        .fission(&["secret", "get", "--name", "db", "-o", "yaml"])
        .ok()
        .stdout;
    assert!(
        yaml.contains("aHVudGVyMg=="),
        "values shown when asked: {yaml}"
    );
    server
        .fission(&[
            "secret",
            "update",
            "--name",
            "db",
            "--from-literal",
            "password=new",
        ])
        .ok();
    let yaml = server
        .fission(&["secret", "get", "--name", "db", "-o", "json"])
        .ok()
        .stdout;
    assert!(yaml.contains("bmV3") && !yaml.contains("token"), "{yaml}");
    server
        .fission(&[
            "secret",
            "create",
            "--name",
            "Bad_Name",
            "--from-literal",
            "a=b",
        ])
        .fails_with("invalid secret name");
    server
        .fission(&["secret", "create", "--name", "empty"])
        .fails_with("at least one value");

    server
        .fission(&[
            "configmap",
            "create",
            "--name",
            "cfg",
            "--from-literal",
            "mode=fast",
        ])
        .ok();
    let out = server
        .fission(&["configmap", "get", "--name", "cfg", "-o", "json"])
        .ok()
        .stdout;
    assert!(out.contains("\"mode\": \"fast\""), "{out}");
    server
        .fission(&["configmap", "delete", "--name", "cfg"])
        .ok();
    server
        .fission(&["configmap", "delete", "--name", "cfg"])
        .fails_with("not found");
    server
        .fission(&["configmap", "delete", "--name", "cfg", "--ignorenotfound"])
        .ok();
    // Secret values are sealed at rest.
    let db = std::fs::read(server.data_dir.join("fission.redb")).expect("db");
    assert!(!db.windows(4).any(|w| w == b"bmV3"), "sealed at rest");
}
