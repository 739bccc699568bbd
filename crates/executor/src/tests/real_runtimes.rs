//! Integration tests with the real runtimes (`environments/nodejs`, `environments/python`)
//! started by [`ProcessLauncher`]. Skipped, with a notice, when the runtimes' dependencies are
//! not installed (`environments/setup.sh`) or an interpreter is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fission_core::resources::{Environment, Function, Package};
use fission_core::{ExecutorError, FunctionInstances};
use fission_store::archive::ArchiveStore;
use fission_store::logs::LogStore;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::testing::{self, MemoryStore};
use crate::{Config, Executor, ProcessLauncher, resolve_runtime_binaries};

#[derive(Clone, Copy, Debug)]
enum Lang {
    Node,
    Python,
}

impl Lang {
    fn image(self) -> &'static str {
        match self {
            Lang::Node => "ghcr.io/fission/node-env-22",
            Lang::Python => "fission/python-env",
        }
    }
}

fn environments_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../environments")
}

/// The interpreters, or `None` (with a printed notice) when this runtime cannot run here;
/// under `CI=true` a missing runtime fails the test instead.
fn runtime_available(lang: Lang) -> Option<(PathBuf, PathBuf)> {
    fission_test_support::require_runtimes()?;
    let (node, python) = resolve_runtime_binaries();
    let found = match (lang, node, python) {
        (Lang::Node, Some(n), p) => Ok((n, p.unwrap_or_default())),
        (Lang::Python, n, Some(p)) => Ok((n.unwrap_or_default(), p)),
        _ => Err(format!("no interpreter for {lang:?}")),
    };
    fission_test_support::require(
        "the runtime's interpreter",
        "apt-get install nodejs python3",
        found,
    )
}

struct Real {
    _dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    exec: Arc<Executor>,
    logs: LogStore,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), crate::Error>>,
}

impl Real {
    async fn start(lang: Lang, env_version: i32, poolsize: i32) -> Option<Self> {
        let (node, python) = runtime_available(lang)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(environments_dir(), dir.path().join("cache"), node, python);
        config.specialize_timeout = Duration::from_secs(20);
        let store = MemoryStore::new();
        let logs = LogStore::open(dir.path().join("logs")).expect("logs");
        let launcher = Arc::new(ProcessLauncher::new(dir.path().join("run")).expect("launcher"));
        let mut env = testing::environment("rt", lang.image(), poolsize);
        env.spec.version = env_version;
        env.spec.runtime.container =
            Some(serde_json::json!({"env": [{"name": "GREETING", "value": "hej"}]}));
        let _: Environment = testing::create(&store, env).await;
        let exec = Executor::with_metrics(
            config,
            store.clone(),
            ArchiveStore::open(dir.path().join("archives")).expect("archives"),
            logs.clone(),
            launcher,
            crate::metrics::Metrics::unregistered(),
            crate::package::UnpackLimits::default(),
        );
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(exec.clone().run(shutdown.clone()));
        let real = Self {
            _dir: dir,
            store,
            exec,
            logs,
            shutdown,
            run,
        };
        // A warm pool is filled long before requests arrive; give the runtimes time to boot.
        real.wait_until("pool filled and booted", Duration::from_secs(20), |r| {
            r.logs
                .read("default", "env:rt", 100)
                .map(|l| l.iter().filter(|x| x.message.contains("listening")).count())
                .unwrap_or(0)
                >= poolsize as usize
        })
        .await;
        Some(real)
    }

    async fn wait_until(&self, what: &str, limit: Duration, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    async fn function(&self, name: &str, code: &str, entrypoint: &str) -> Function {
        let pkg = format!("{name}-pkg");
        let _: Package = testing::create(
            &self.store,
            testing::literal_package(&pkg, "rt", code.as_bytes()),
        )
        .await;
        testing::create(&self.store, testing::function(name, "rt", &pkg, entrypoint)).await
    }

    fn live_pids(&self) -> Vec<u32> {
        self.exec
            .lock_live()
            .instances
            .values()
            .filter_map(|i| i.pid())
            .collect()
    }

    async fn stop(self) {
        let pids = self.live_pids();
        assert!(!pids.is_empty());
        self.shutdown.cancel();
        self.run.await.expect("join").expect("run");
        for pid in pids {
            assert!(
                !PathBuf::from(format!("/proc/{pid}")).exists(),
                "process {pid} survived shutdown"
            );
        }
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const NODE_HELLO: &str = "module.exports = async (context) => {\n  console.log('handling', context.request.url);\n  return { status: 200, body: 'hello from node ' + process.env.GREETING };\n};\n";
const PYTHON_HELLO: &str = "import os\n\ndef main():\n    print('handling')\n    return 'hello from python ' + os.environ.get('GREETING', '')\n";

async fn hello_roundtrip(lang: Lang, code: &str, expected: &str) {
    let Some(real) = Real::start(lang, 3, 1).await else {
        return;
    };
    let f = real.function("hello", code, "").await;

    let t0 = Instant::now();
    let lease = real.exec.acquire(&f).await.expect("acquire");
    let (status, body) = get(lease.addr, "/").await;
    let cold = t0.elapsed();
    assert!(lease.cold);
    assert_eq!((status, body.as_str()), (200, expected));
    drop(lease);

    let t1 = Instant::now();
    let lease = real.exec.acquire(&f).await.expect("warm acquire");
    let (status, _) = get(lease.addr, "/").await;
    let warm = t1.elapsed();
    assert!(!lease.cold);
    assert_eq!(status, 200);
    drop(lease);
    eprintln!(
        "MEASURED {lang:?}: pool-hit cold start (acquire → first response) {cold:?}, warm {warm:?}"
    );

    // The loader's and the function's output is in the function's log.
    real.wait_until("function log", Duration::from_secs(5), |r| {
        r.logs
            .read("default", "hello", 100)
            .map(|l| l.iter().any(|x| x.message.contains("handling")))
            .unwrap_or(false)
    })
    .await;
    let log = real.logs.read("default", "hello", 100).expect("log");
    assert!(
        log.iter().any(|x| x.message.contains("specialized")),
        "{log:?}"
    );
    real.stop().await;
}

#[tokio::test]
async fn node_runtime_serves_a_specialized_hello_function() {
    hello_roundtrip(Lang::Node, NODE_HELLO, "hello from node hej").await;
}

#[tokio::test]
async fn python_runtime_serves_a_specialized_hello_function() {
    hello_roundtrip(Lang::Python, PYTHON_HELLO, "hello from python hej").await;
}

async fn syntax_error_is_reported(lang: Lang, code: &str) {
    let Some(real) = Real::start(lang, 3, 1).await else {
        return;
    };
    let f = real.function("broken", code, "").await;
    let t0 = Instant::now();
    let err = real.exec.acquire(&f).await.expect_err("must fail");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    match &err {
        ExecutorError::SpecializationFailed { message, .. } => {
            assert!(message.contains("SyntaxError"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let log = real.logs.read("default", "broken", 100).expect("log");
    assert!(
        log.iter().any(|x| x.message.contains("SyntaxError")),
        "the load error is in the function's log: {log:?}"
    );
    // The failed instance was discarded and the pool refilled.
    real.wait_until("pool refilled", Duration::from_secs(10), |r| {
        r.live_pids().len() == 1
    })
    .await;
    real.stop().await;
}

#[tokio::test]
async fn node_syntax_error_fails_specialization_with_the_loader_message() {
    syntax_error_is_reported(Lang::Node, "module.exports = async (context => {\n").await;
}

#[tokio::test]
async fn python_syntax_error_fails_specialization_with_the_loader_message() {
    syntax_error_is_reported(Lang::Python, "def main(:\n    return 1\n").await;
}

async fn killed_process_is_replaced(lang: Lang, code: &str) {
    let Some(real) = Real::start(lang, 3, 1).await else {
        return;
    };
    let f = real.function("hello", code, "").await;
    let lease = real.exec.acquire(&f).await.expect("acquire");
    let id = lease.instance_id;
    let pid = real
        .exec
        .lock_live()
        .instances
        .get(&id)
        .and_then(|i| i.pid())
        .expect("pid");
    drop(lease);
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    real.wait_until("crashed instance forgotten", Duration::from_secs(5), |r| {
        !r.exec.lock_live().instances.contains_key(&id)
    })
    .await;
    let lease = real.exec.acquire(&f).await.expect("acquire after crash");
    assert!(lease.cold && lease.instance_id != id);
    let (status, _) = get(lease.addr, "/").await;
    assert_eq!(status, 200);
    drop(lease);
    // One specialized + one generic refilled.
    real.wait_until("pool refilled", Duration::from_secs(10), |r| {
        r.live_pids().len() == 2
    })
    .await;
    real.stop().await;
}

#[tokio::test]
async fn node_instance_killed_from_outside_is_removed_and_replaced() {
    killed_process_is_replaced(Lang::Node, NODE_HELLO).await;
}

#[tokio::test]
async fn python_instance_killed_from_outside_is_removed_and_replaced() {
    killed_process_is_replaced(Lang::Python, PYTHON_HELLO).await;
}

#[tokio::test]
async fn env_version_1_specializes_through_the_fixed_codepath() {
    for (lang, code, expected) in [
        (Lang::Node, NODE_HELLO, "hello from node hej"),
        (Lang::Python, PYTHON_HELLO, "hello from python hej"),
    ] {
        let Some(real) = Real::start(lang, 1, 1).await else {
            continue;
        };
        let f = real.function("v1", code, "").await;
        let lease = real.exec.acquire(&f).await.expect("acquire");
        assert_eq!(get(lease.addr, "/").await, (200, expected.to_owned()));
        drop(lease);
        real.stop().await;
    }
}

#[tokio::test]
async fn a_zip_package_with_an_entrypoint_is_loaded_from_its_directory() {
    let Some(real) = Real::start(Lang::Python, 3, 1).await else {
        return;
    };
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write as _;
        let mut w = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default();
        w.start_file("helpers.py", o).expect("file");
        w.write_all(b"def word():\n    return 'zipped'\n")
            .expect("write");
        w.start_file("app.py", o).expect("file");
        w.write_all(b"import helpers\n\ndef handler():\n    return helpers.word()\n")
            .expect("write");
        w.finish().expect("finish");
    }
    let _: Package = testing::create(
        &real.store,
        testing::literal_package("zpkg", "rt", &buf.into_inner()),
    )
    .await;
    let f: Function = testing::create(
        &real.store,
        testing::function("zipped", "rt", "zpkg", "app.handler"),
    )
    .await;
    let lease = real.exec.acquire(&f).await.expect("acquire");
    assert_eq!(get(lease.addr, "/").await, (200, "zipped".to_owned()));
    drop(lease);
    real.stop().await;
}

/// Whether `pid` is gone (or a zombie waiting for init to reap it).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(str::trim_start)
            .is_some_and(|rest| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn processes_a_function_starts_die_with_its_instance() {
    let Some(real) = Real::start(Lang::Python, 3, 1).await else {
        return;
    };
    let pidfile = real._dir.path().join("grandchild.pid");
    let code = format!(
        "import subprocess\n_child = subprocess.Popen(['/bin/sleep', '1000'])\nwith open({:?}, 'w') as f:\n    f.write(str(_child.pid))\n\ndef main():\n    return 'ok'\n",
        pidfile.display().to_string()
    );
    let f = real.function("spawner", &code, "").await;
    let lease = real.exec.acquire(&f).await.expect("acquire");
    assert_eq!(get(lease.addr, "/").await.0, 200);
    drop(lease);
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        !process_gone(pid),
        "the grandchild runs while its instance does"
    );
    real.shutdown.cancel();
    real.run.await.expect("join").expect("run");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !process_gone(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(process_gone(pid), "grandchild {pid} outlived its instance");
}

#[tokio::test]
async fn cold_starts_from_a_warm_pool_take_milliseconds() {
    for lang in [Lang::Node, Lang::Python] {
        let Some(real) = Real::start(lang, 3, 3).await else {
            continue;
        };
        let (code, _) = match lang {
            Lang::Node => (NODE_HELLO, ()),
            Lang::Python => (PYTHON_HELLO, ()),
        };
        let mut samples = Vec::new();
        for i in 0..3 {
            let f = real.function(&format!("f{i}"), code, "").await;
            let t0 = Instant::now();
            let lease = real.exec.acquire(&f).await.expect("acquire");
            assert_eq!(get(lease.addr, "/").await.0, 200);
            samples.push(t0.elapsed());
            assert!(lease.cold);
        }
        samples.sort();
        eprintln!("MEASURED {lang:?}: pool-hit cold starts {samples:?}");
        // Generous: catches port polling or a fresh interpreter per request, not jitter.
        assert!(
            samples[1] < Duration::from_millis(500),
            "{lang:?} median cold start {:?}",
            samples[1]
        );
        real.stop().await;
    }
}
