//! Crash consistency: SIGKILL the server while clients create and update objects, restart it on
//! the same data dir, and check that every write acknowledged with a 2xx survived and that the
//! store opens cleanly. Repeated at random moments (seeded; the seed is printed, and
//! `CRASH_SEED=<n>` replays a run).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fission");
const ITERATIONS: u64 = 20;
const CLIENTS: usize = 4;

/// splitmix64: a seeded, reproducible source of kill moments without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Server {
    child: Child,
    controller: String,
}

impl Server {
    /// Start on `data_dir` with no sandbox (no runtimes are involved), or say why it did not.
    fn start(data_dir: &Path, log: &Path) -> Result<Self, String> {
        let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let mut child = Command::new(BIN)
            .args(["server", "--sandbox", "none", "--data-dir"])
            .arg(data_dir)
            .args([
                "--controller-listen",
                "127.0.0.1:0",
                "--router-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("fission server ready") => {
                    let controller = line
                        .split("controller ")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or_default()
                        .to_owned();
                    return Ok(Self { child, controller });
                }
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = std::fs::read_to_string(log).unwrap_or_default();
                        return Err(format!("server exited with {status}:\n{log}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        let log = std::fs::read_to_string(log).unwrap_or_default();
                        return Err(format!("no ready line within 30 s:\n{log}"));
                    }
                }
            }
        }
    }

    /// `Child::kill` is SIGKILL on Unix: no shutdown code of the server runs.
    fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client knows about one object it writes.
#[derive(Debug, Clone, Default)]
struct Written {
    /// The last acknowledged write: (resourceVersion, relativeurl).
    acked: Option<(u64, String)>,
    /// A write sent after the last acknowledgement whose answer never came: it may or may not
    /// have been committed.
    pending: Option<String>,
}

type Ledger = Arc<Mutex<BTreeMap<String, Written>>>;

fn trigger(name: &str, url: &str, rv: Option<u64>) -> Value {
    let mut metadata = json!({ "name": name, "namespace": "default" });
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "HTTPTrigger",
        "apiVersion": "fission.io/v1",
        "metadata": metadata,
        "spec": {
            "relativeurl": url,
            "method": "GET",
            "functionref": { "type": "name", "name": "nothing" },
        },
    })
}

fn resource_version(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")
        .or_else(|| v.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Create then update objects until the server goes away (the first dropped connection). Any answer other than 2xx or a
/// dropped connection is a bug in itself.
fn client(base: String, iteration: u64, id: usize, ledger: Ledger) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let collection = format!("{base}/v2/triggers/http");
    for n in 0.. {
        let name = format!("c{iteration}-{id}-{n}");
        let url = format!("/crash/{iteration}/{id}/{n}");
        ledger
            .lock()
            .expect("ledger")
            .entry(name.clone())
            .or_default()
            .pending = Some(url.clone());
        let Ok(resp) = http
            .post(&collection)
            .json(&trigger(&name, &url, None))
            .send()
        else {
            return;
        };
        let status = resp.status();
        let Ok(body) = resp.json::<Value>() else {
            return;
        };
        assert!(status.is_success(), "create {name}: {status} {body}");
        let mut rv = resource_version(&body).expect("create answers the resourceVersion");
        {
            let mut l = ledger.lock().expect("ledger");
            let w = l.entry(name.clone()).or_default();
            w.acked = Some((rv, url));
            w.pending = None;
        }
        for u in 0..3 {
            let url = format!("/crash/{iteration}/{id}/{n}/v{u}");
            ledger
                .lock()
                .expect("ledger")
                .entry(name.clone())
                .or_default()
                .pending = Some(url.clone());
            let Ok(resp) = http
                .put(format!("{collection}/{name}"))
                .json(&trigger(&name, &url, Some(rv)))
                .send()
            else {
                return;
            };
            let status = resp.status();
            let Ok(body) = resp.json::<Value>() else {
                return;
            };
            assert!(status.is_success(), "update {name}: {status} {body}");
            rv = resource_version(&body).expect("update answers the resourceVersion");
            let mut l = ledger.lock().expect("ledger");
            let w = l.entry(name.clone()).or_default();
            w.acked = Some((rv, url));
            w.pending = None;
        }
    }
}

/// Every acknowledged write is there, at that version or at the one write that was in flight.
fn verify(base: &str, ledger: &BTreeMap<String, Written>) -> usize {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let resp = http
        .get(format!("{base}/v2/triggers/http"))
        .send()
        .expect("list after restart");
    assert_eq!(resp.status(), 200, "list after restart");
    let listed: Vec<Value> = resp.json().expect("list JSON");
    let stored: BTreeMap<String, (u64, String)> = listed
        .iter()
        .map(|o| {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let rv = resource_version(o).unwrap_or(0);
            let url = o["spec"]["relativeurl"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (name, (rv, url))
        })
        .collect();
    let mut checked = 0;
    for (name, w) in ledger {
        let found = stored.get(name);
        match (&w.acked, found) {
            (Some((rv, url)), Some((srv, surl))) => {
                let same = srv == rv && surl == url;
                let later = srv > rv && w.pending.as_deref() == Some(surl.as_str());
                assert!(
                    same || later,
                    "{name}: acknowledged rv {rv} {url}, pending {:?}; stored rv {srv} {surl}",
                    w.pending
                );
                checked += 1;
            }
            (Some((rv, url)), None) => {
                panic!("{name}: acknowledged (rv {rv}, {url}) but missing after restart")
            }
            (None, Some((_, surl))) => assert_eq!(
                w.pending.as_deref(),
                Some(surl.as_str()),
                "{name}: never acknowledged, stored with content nobody sent"
            ),
            (None, None) => {}
        }
    }
    checked
}

#[test]
fn every_acknowledged_write_survives_sigkill_and_the_store_reopens() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash test seed: {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let ledger: Ledger = Arc::default();
    let mut server = Server::start(&data_dir, &log).expect("first start");
    let started = Instant::now();
    for iteration in 0..ITERATIONS {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (base, ledger) = (server.controller.clone(), ledger.clone());
                std::thread::spawn(move || client(base, iteration, id, ledger))
            })
            .collect();
        // Anywhere from before the first write lands to well into a stream of them.
        let moment = Duration::from_millis(20 + rng.below(600));
        std::thread::sleep(moment);
        server.sigkill();
        for c in clients {
            if let Err(panic) = c.join() {
                std::panic::resume_unwind(panic);
            }
        }
        server = match Server::start(&data_dir, &log) {
            Ok(s) => s,
            Err(e) => panic!(
                "iteration {iteration} (seed {seed}): the server did not restart after SIGKILL at {moment:?}: {e}"
            ),
        };
        let ledger = ledger.lock().expect("ledger");
        let checked = verify(&server.controller, &ledger);
        eprintln!(
            "iteration {iteration}: killed at {moment:?}; {checked} acknowledged objects intact"
        );
    }
    let ledger = ledger.lock().expect("ledger");
    let acked = ledger.values().filter(|w| w.acked.is_some()).count();
    eprintln!(
        "{ITERATIONS} SIGKILLs in {:?}; {acked} acknowledged objects all present",
        started.elapsed()
    );
    // The test must have exercised something: writes were acknowledged before the kills.
    assert!(
        acked > ITERATIONS as usize,
        "only {acked} writes acknowledged"
    );
}
