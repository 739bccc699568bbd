//! End-to-end: canary rollouts through the real binary — a route splitting traffic between
//! two functions, `fission canary-config create` with Fission's flags, live traffic, and the
//! outcome in `fission canary-config get` and `fission route get`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use support::*;

fn answers(body: &str, status: u16) -> String {
    format!("module.exports = async () => ({{ status: {status}, body: '{body}' }});\n")
}

/// Two steps of 2 s each plus specializations on a loaded machine.
const ROLLOUT_WAIT: Duration = Duration::from_secs(90);

fn canary_status(s: &Setup, name: &str) -> String {
    let out = s
        .fission(&["canary-config", "get", "--name", name])
        .ok()
        .stdout;
    table_cell(&out, name, "STATUS")
}

fn route_functions(s: &Setup, name: &str) -> String {
    let out = s.fission(&["route", "get", "--name", name]).ok().stdout;
    table_cell(&out, name, "FUNCTION(s)")
}

/// Calls `path` until stopped; returns every (status, body).
fn traffic(s: &Setup, path: &str, stop: &Arc<AtomicBool>) -> JoinHandle<Vec<(u16, String)>> {
    let url = s.server.url(path);
    let stop = stop.clone();
    std::thread::spawn(move || {
        let client = http();
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(r) = client.get(&url).send() {
                seen.push((r.status().as_u16(), r.text().unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    })
}

/// Old and new functions behind a weighted route (old 100 %), and a canary config over them.
fn rollout(s: &Setup, new_status: u16) {
    s.function("old", "nodejs", "old.js", &answers("old", 200), &[]);
    s.function("new", "nodejs", "new.js", &answers("new", new_status), &[]);
    s.route(&[
        "--name",
        "shop",
        "--url",
        "/shop",
        "--function",
        "old",
        "--weight",
        "100",
        "--function",
        "new",
        "--weight",
        "0",
    ]);
    assert_eq!(s.get("/shop"), (200, "old".to_owned()));
    s.fission(&[
        "canary-config",
        "create",
        "--name",
        "rollout",
        "--httptrigger",
        "shop",
        "--newfunction",
        "new",
        "--oldfunction",
        "old",
        "--increment-step",
        "50",
        "--increment-interval",
        "2s",
        "--failure-threshold",
        "10",
    ])
    .ok();
    assert_eq!(canary_status(s, "rollout"), "pending");
}

/// Poll the canary until it leaves `pending`, recording the route's weights on the way.
fn wait_outcome(s: &Setup) -> (String, BTreeSet<String>) {
    let mut weights = BTreeSet::new();
    let status = eventually_blocking(ROLLOUT_WAIT, "the canary to finish", || {
        weights.insert(route_functions(s, "shop"));
        let st = canary_status(s, "rollout");
        (st != "pending").then_some(st)
    });
    weights.insert(route_functions(s, "shop"));
    (status, weights)
}

fn setup() -> Option<Setup> {
    let s = Setup::start()?;
    s.env("nodejs", "fission/node-env", &["--poolsize", "2"]);
    Some(s)
}

#[test]
fn a_healthy_new_version_reaches_all_traffic_in_steps_and_the_canary_succeeds() {
    let Some(s) = setup() else { return };
    rollout(&s, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = traffic(&s, "/shop", &stop);

    let (status, weights) = wait_outcome(&s);
    stop.store(true, Ordering::Relaxed);
    let seen = calls.join().expect("traffic");

    assert_eq!(status, "succeeded", "weights seen: {weights:?}");
    assert!(
        weights.contains("new:50 old:50"),
        "the rollout passed through 50 %: {weights:?}"
    );
    assert_eq!(route_functions(&s, "shop"), "new:100 old:0");
    assert!(seen.iter().all(|(st, _)| *st == 200), "no call failed");
    assert!(seen.iter().any(|(_, b)| b == "new"), "traffic reached new");
    for _ in 0..10 {
        assert_eq!(
            s.get("/shop"),
            (200, "new".to_owned()),
            "all traffic is new"
        );
    }
}

#[test]
fn a_failing_new_version_is_rolled_back_to_the_old_one_and_the_canary_fails() {
    let Some(s) = setup() else { return };
    rollout(&s, 500);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = traffic(&s, "/shop", &stop);

    let (status, weights) = wait_outcome(&s);
    stop.store(true, Ordering::Relaxed);
    let seen = calls.join().expect("traffic");

    assert_eq!(status, "failed", "weights seen: {weights:?}");
    assert!(
        seen.iter().any(|(st, b)| *st == 500 && b == "new"),
        "the new version got traffic before the rollback"
    );
    assert_eq!(
        route_functions(&s, "shop"),
        "new:0 old:100",
        "rolled back to the old function"
    );
    for _ in 0..10 {
        assert_eq!(
            s.get("/shop"),
            (200, "old".to_owned()),
            "all traffic is old"
        );
    }
}
