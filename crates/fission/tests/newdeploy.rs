//! End-to-end: `--executortype newdeploy` through the real binary — `MinScale` instances
//! specialized before any call, scale-out to `MaxScale` (never beyond) under a burst, back to
//! `MinScale` after `idletimeout`, scale to zero and a cold start, and `fn update --code`
//! under steady traffic without a failed request.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

/// Answers after `?ms=` milliseconds with the instance's token, so callers can tell instances
/// apart.
const SLOW_JS: &str = "const token = require('crypto').randomUUID();\n\
module.exports = async function (context) {\n\
  const ms = Number(context.request.query.ms || 0);\n\
  await new Promise((r) => setTimeout(r, ms));\n\
  return { status: 200, body: token };\n\
};\n";

fn version_js(v: &str) -> String {
    format!("module.exports = async () => ({{ status: 200, body: '{v}' }});\n")
}

/// Generous: a loaded 2-core machine may take seconds per specialization.
const SCALE_WAIT: Duration = Duration::from_secs(90);

fn setup() -> Option<Setup> {
    let s = Setup::start()?;
    s.env("nodejs", "fission/node-env", &["--poolsize", "1"]);
    Some(s)
}

/// How many instances serve `name`, as the controller reports it.
fn instances(s: &Setup, name: &str) -> usize {
    let url = format!("{}/v2/functions/{name}/instances", s.server.controller);
    let v: serde_json::Value = http()
        .get(url)
        .send()
        .expect("instances request")
        .json()
        .expect("instances JSON");
    v["instances"].as_u64().expect("instances count") as usize
}

/// The INSTANCES cell of `name` in `fission fn list`.
fn listed_instances(s: &Setup, name: &str) -> String {
    table_cell(&s.fission(&["fn", "list"]).ok().stdout, name, "INSTANCES")
}

#[track_caller]
fn wait_instances(s: &Setup, name: &str, want: usize, why: &str) {
    eventually_blocking(
        SCALE_WAIT,
        &format!("{name}: {want} instance(s) {why}"),
        || instances(s, name) == want,
    );
}

#[test]
fn newdeploy_keeps_minscale_warm_scales_to_maxscale_under_a_burst_and_back_when_idle() {
    let Some(s) = setup() else { return };
    s.function(
        "scaled",
        "nodejs",
        "slow.js",
        SLOW_JS,
        &[
            "--executortype",
            "newdeploy",
            "--minscale",
            "2",
            "--maxscale",
            "4",
            "--idletimeout",
            "2",
        ],
    );

    // MinScale instances are specialized ahead of any call, and fn list shows them.
    wait_instances(&s, "scaled", 2, "before any call");
    assert_eq!(listed_instances(&s, "scaled"), "2");
    s.route(&["--url", "/scaled", "--function", "scaled"]);
    let (status, _) = s.get("/scaled");
    assert_eq!(status, 200);
    assert_eq!(instances(&s, "scaled"), 2, "a warm call starts nothing");

    // A burst of slow calls: 8 in flight per instance before another is added, so 48 need
    // more than MaxScale — which is where it must stop.
    let burst = 48;
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, peak) = (done.clone(), peak.clone());
        let url = format!("{}/v2/functions/scaled/instances", s.server.controller);
        std::thread::spawn(move || {
            let client = http();
            while !done.load(Ordering::Relaxed) {
                if let Ok(r) = client.get(&url).send()
                    && let Ok(v) = r.json::<serde_json::Value>()
                    && let Some(n) = v["instances"].as_u64()
                {
                    peak.fetch_max(n as usize, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let url = s.server.url("/scaled?ms=6000");
    let calls: Vec<_> = (0..burst)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = http().get(url).send().expect("burst call");
                (r.status().as_u16(), r.text().unwrap_or_default())
            })
        })
        .collect();
    let results: Vec<(u16, String)> = calls
        .into_iter()
        .map(|c| c.join().expect("call thread"))
        .collect();
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");

    let failed: Vec<_> = results.iter().filter(|(st, _)| *st != 200).collect();
    assert!(failed.is_empty(), "burst calls failed: {failed:?}");
    let served_by: std::collections::HashSet<&str> =
        results.iter().map(|(_, b)| b.as_str()).collect();
    let peak = peak.load(Ordering::Relaxed);
    assert_eq!(
        peak,
        4,
        "the burst scales out to MaxScale and no further (served by {} instances)",
        served_by.len()
    );
    assert_eq!(
        served_by.len(),
        4,
        "every instance took calls: {served_by:?}"
    );

    // Idle past idletimeout: back to MinScale, not below.
    wait_instances(&s, "scaled", 2, "after idling");
    std::thread::sleep(Duration::from_secs(7)); // more than one reaper pass (5 s)
    assert_eq!(instances(&s, "scaled"), 2, "MinScale instances are kept");
}

#[test]
fn newdeploy_minscale_zero_scales_to_zero_and_the_next_call_cold_starts() {
    let Some(s) = setup() else { return };
    s.function(
        "zero",
        "nodejs",
        "slow.js",
        SLOW_JS,
        &[
            "--executortype",
            "newdeploy",
            "--minscale",
            "0",
            "--maxscale",
            "2",
            "--idletimeout",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(instances(&s, "zero"), 0, "MinScale 0 starts nothing ahead");

    let (status, first) = s.call("zero", "");
    assert_eq!(status, 200, "{first}");

    wait_instances(&s, "zero", 0, "after idling");
    let (status, second) = s.call("zero", "");
    assert_eq!(status, 200, "{second}");
    assert_ne!(
        first, second,
        "the call after scale-to-zero runs on a new instance"
    );
    // The router's access log says so.
    eventually_blocking(
        Duration::from_secs(10),
        "two cold-start access lines",
        || {
            s.server
                .log()
                .lines()
                .filter(|l| {
                    l.contains("fission_router::access")
                        && l.contains("function=default/zero")
                        && l.contains("start=cold")
                })
                .count()
                == 2
        },
    );
}

#[test]
fn newdeploy_fn_update_code_under_steady_traffic_fails_no_request() {
    let Some(s) = setup() else { return };
    s.function(
        "rolling",
        "nodejs",
        "v.js",
        &version_js("v1"),
        &[
            "--executortype",
            "newdeploy",
            "--minscale",
            "1",
            "--maxscale",
            "2",
        ],
    );
    wait_instances(&s, "rolling", 1, "before any call");
    assert_eq!(s.call("rolling", ""), (200, "v1".to_owned()));

    let stop = Arc::new(AtomicBool::new(false));
    let url = s.server.url("/fission-function/rolling");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            std::thread::spawn(move || {
                let client = http();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = client.get(&url).send().expect("call");
                    seen.push((r.status().as_u16(), r.text().unwrap_or_default()));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let code = write(s.dir.path(), "rolling/v2.js", &version_js("v2"));
    s.fission(&[
        "fn",
        "update",
        "--name",
        "rolling",
        "--code",
        code.to_str().expect("path"),
    ])
    .ok();
    eventually_blocking(SCALE_WAIT, "rolling answers v2", || {
        s.call("rolling", "") == (200, "v2".to_owned())
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);

    let seen: Vec<(u16, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    let failed: Vec<_> = seen
        .iter()
        .filter(|(st, body)| *st != 200 || (body != "v1" && body != "v2"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls during the update failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(seen.iter().any(|(_, b)| b == "v2"), "traffic reached v2");
}
