//! End-to-end: a function deployed from one file (`--code hello.js`) keeps the user's file
//! name inside its instance, so the stack trace of an exception in `fission fn logs` names
//! `hello.js` / `hello.py` — not Fission's `deployarchive`.

mod support;

use std::time::Duration;

use support::*;

const THROWING_JS: &str = "module.exports = async function (context) {\n\
  throw new Error('boom from the user');\n\
};\n";

const RAISING_PY: &str = "def main():\n    raise ValueError('boom from the user')\n";

/// Call `name` (which throws), and return its logs once they hold the stack trace.
fn trace_of(s: &Setup, name: &str) -> String {
    let (status, body) = s.call(name, "");
    assert_eq!(status, 500, "{body}");
    eventually_blocking(
        Duration::from_secs(30),
        "the stack trace in fn logs",
        || {
            let logs = s.fission(&["fn", "logs", "--name", name]).ok().stdout;
            logs.contains("boom from the user").then_some(logs)
        },
    )
}

#[test]
fn node_stack_traces_name_the_users_file() {
    let Some(s) = Setup::start() else { return };
    s.env("nodejs", "fission/node-env", &["--poolsize", "1"]);
    s.function("hello", "nodejs", "hello.js", THROWING_JS, &[]);
    let logs = trace_of(&s, "hello");
    assert!(logs.contains("hello.js:2"), "trace names hello.js:\n{logs}");
    assert!(!logs.contains("deployarchive"), "{logs}");

    // fn update --code with another file: the new name.
    let code = write(s.dir.path(), "v2/greet.js", THROWING_JS);
    s.fission(&[
        "fn",
        "update",
        "--name",
        "hello",
        "--code",
        code.to_str().expect("path"),
    ])
    .ok();
    eventually_blocking(
        Duration::from_secs(60),
        "the trace to name greet.js",
        || {
            s.call("hello", "");
            let logs = s.fission(&["fn", "logs", "--name", "hello"]).ok().stdout;
            logs.contains("greet.js:2")
        },
    );
}

#[test]
fn python_stack_traces_name_the_users_file() {
    let Some(s) = Setup::start() else { return };
    s.env("python", "fission/python-env", &["--poolsize", "1"]);
    s.function("hello", "python", "hello.py", RAISING_PY, &[]);
    let logs = trace_of(&s, "hello");
    assert!(
        logs.contains("hello.py\", line 2"),
        "trace names hello.py:\n{logs}"
    );
    assert!(!logs.contains("deployarchive"), "{logs}");
}
