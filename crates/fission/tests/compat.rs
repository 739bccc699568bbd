//! Fission users' specs and workflows run unchanged: the real `fission` binary against a real
//! server, fed what Fission's own CLI writes.

mod support;

use std::path::{Path, PathBuf};

use support::{Server, http, runtimes_installed};

/// Whether the built-in runtimes are there to call functions; under CI their absence fails.
fn can_call_functions() -> bool {
    let ok = runtimes_installed();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI: the built-in runtimes are not installed (environments/*)"
    );
    ok
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
    support::eventually(60, &format!("GET {path} answering 200"), || {
        let r = http().get(server.url(path)).send().ok()?;
        if r.status().as_u16() == 200 {
            r.text().ok()
        } else {
            None
        }
    })
}

#[test]
fn a_spec_directory_exactly_as_fission_writes_it_applies_and_serves() {
    let server = Server::start();
    let project = tempfile::tempdir().expect("project");
    copy_dir(&corpus(), project.path());
    let run = |args: &[&str]| server.fission_in(args, Some(project.path()));

    run(&["spec", "validate"]).ok();
    let out = run(&["spec", "apply"]).ok();
    for needle in [
        "2 environments created: default:nodejs, default:python",
        "2 functions created: default:hello, default:pyhello",
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
