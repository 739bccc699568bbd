//! Behaviour tests of the pool manager with fake instances (in-process HTTP servers), plus
//! integration tests with the real runtimes in `real_runtimes`.

mod real_runtimes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fission_core::resources::{Environment, Function, Package};
use fission_core::{ExecutorError, FunctionInstances, ResourceKind, ResourceStore};
use fission_store::archive::ArchiveStore;
use fission_store::logs::LogStore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::package::UnpackLimits;
use crate::testing::{self, FakeBehaviour, FakeLauncher, MemoryStore};
use crate::{Config, Executor};

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    launcher: Arc<FakeLauncher>,
    exec: Arc<Executor>,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), crate::Error>>,
    env: Environment,
    function: Function,
}

struct Setup {
    poolsize: i32,
    reaper_interval: Duration,
    specialize_timeout: Duration,
    tune: fn(&mut Function),
    admission: Option<crate::AdmissionConfig>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            poolsize: 2,
            reaper_interval: Duration::from_secs(3600),
            specialize_timeout: Duration::from_secs(10),
            tune: |_| {},
            admission: None,
        }
    }
}

async fn harness(setup: Setup) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let (envs, bin) = testing::fake_environments(dir.path());
    let mut config = Config::new(envs, dir.path().join("cache"), bin.clone(), bin);
    config.reaper_interval = setup.reaper_interval;
    config.specialize_timeout = setup.specialize_timeout;
    if let Some(a) = setup.admission {
        config.admission = a;
    }
    let store = MemoryStore::new();
    let launcher = FakeLauncher::new();
    let logs = LogStore::open(dir.path().join("logs")).expect("logs");
    let archives = ArchiveStore::open(dir.path().join("archives")).expect("archives");
    let env: Environment = testing::create(
        &store,
        testing::environment("nodejs", "fission/node-env", setup.poolsize),
    )
    .await;
    let _: Package = testing::create(
        &store,
        testing::literal_package("hello-pkg", "nodejs", b"module.exports = 1"),
    )
    .await;
    let mut f = testing::function("hello", "nodejs", "hello-pkg", "");
    (setup.tune)(&mut f);
    let function: Function = testing::create(&store, f).await;
    let exec = Executor::with_metrics(
        config,
        store.clone(),
        archives,
        logs.clone(),
        launcher.clone(),
        Metrics::unregistered(),
        UnpackLimits::default(),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(exec.clone().run(shutdown.clone()));
    let h = Harness {
        _dir: dir,
        store,
        launcher,
        exec,
        shutdown,
        run,
        env,
        function,
    };
    h.wait_for("pool filled", |h| {
        h.launcher.launched.load(Ordering::SeqCst) >= setup.poolsize as usize
    })
    .await;
    h
}

impl Harness {
    async fn wait_for(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        for _ in 0..500 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let r = self.run.await.expect("join");
        assert!(r.is_ok(), "run failed: {r:?}");
        assert_eq!(
            self.launcher.alive(),
            0,
            "instances left running after shutdown"
        );
    }

    fn killed(&self, id: u64) -> bool {
        self.launcher
            .instance(id)
            .is_some_and(|i| i.kills.load(Ordering::SeqCst) > 0)
    }
}

fn tuned(concurrency: i32, rpp: i32) -> impl Fn(&mut Function) {
    move |f: &mut Function| {
        f.spec.concurrency = concurrency;
        f.spec.requests_per_pod = rpp;
    }
}

#[tokio::test]
async fn a_burst_of_first_calls_starts_exactly_concurrency_specializations() {
    let h = harness(Setup {
        tune: |f| tuned(3, 1)(f),
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        delay: Duration::from_millis(100),
        ..FakeBehaviour::default()
    });
    let mut calls = Vec::new();
    for _ in 0..10 {
        let exec = h.exec.clone();
        let f = h.function.clone();
        calls.push(tokio::spawn(async move {
            let lease = exec.acquire(&f).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ExecutorError>((lease.instance_id, lease.cold))
        }));
    }
    let mut cold = 0;
    let mut instances = std::collections::HashSet::new();
    for c in calls {
        let (id, was_cold) = c.await.expect("join").expect("acquire");
        cold += usize::from(was_cold);
        instances.insert(id);
    }
    assert_eq!(
        h.launcher.specializations(),
        3,
        "exactly min(N, concurrency) specializations"
    );
    assert_eq!(cold, 3);
    assert_eq!(instances.len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn a_small_burst_below_concurrency_specializes_once_per_call() {
    let h = harness(Setup {
        tune: |f| tuned(5, 1)(f),
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        delay: Duration::from_millis(50),
        ..FakeBehaviour::default()
    });
    let (a, b) = tokio::join!(h.exec.acquire(&h.function), h.exec.acquire(&h.function));
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_ne!(a.instance_id, b.instance_id);
    assert!(a.cold && b.cold);
    assert_eq!(h.launcher.specializations(), 2);
    drop((a, b));
    h.stop().await;
}

#[tokio::test]
async fn requests_per_pod_shares_one_instance_between_concurrent_requests() {
    let h = harness(Setup {
        tune: |f| tuned(10, 3)(f),
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        delay: Duration::from_millis(100),
        ..FakeBehaviour::default()
    });
    // A burst of 3 first calls joins one specialization instead of starting three.
    let (a, b, c) = tokio::join!(
        h.exec.acquire(&h.function),
        h.exec.acquire(&h.function),
        h.exec.acquire(&h.function)
    );
    let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    assert_eq!(h.launcher.specializations(), 1);
    assert!(a.instance_id == b.instance_id && b.instance_id == c.instance_id);
    assert_eq!([a.cold, b.cold, c.cold].iter().filter(|c| **c).count(), 1);
    // The fourth concurrent request exceeds requestsPerPod: a second instance.
    let d = h.exec.acquire(&h.function).await.expect("d");
    assert_ne!(d.instance_id, a.instance_id);
    assert_eq!(h.launcher.specializations(), 2);
    // Once one ends, its slot is reused without specializing.
    drop(b);
    let e = h.exec.acquire(&h.function).await.expect("e");
    assert!(!e.cold);
    assert_eq!(h.launcher.specializations(), 2);
    drop((a, c, d, e));
    h.stop().await;
}

#[tokio::test]
async fn waiting_requests_get_the_instance_when_a_lease_ends() {
    let h = harness(Setup {
        tune: |f| tuned(1, 1)(f),
        ..Setup::default()
    })
    .await;
    let first = h.exec.acquire(&h.function).await.expect("first");
    assert!(first.cold);
    let exec = h.exec.clone();
    let f = h.function.clone();
    let waiter = tokio::spawn(async move { exec.acquire(&f).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "at concurrency 1 the second call must wait"
    );
    let id = first.instance_id;
    drop(first);
    let second = waiter.await.expect("join").expect("second");
    assert_eq!(second.instance_id, id);
    assert!(!second.cold);
    assert_eq!(h.launcher.specializations(), 1);
    drop(second);
    h.stop().await;
}

#[tokio::test]
async fn a_waiting_request_times_out_after_the_function_timeout() {
    let h = harness(Setup {
        tune: |f| {
            tuned(1, 1)(f);
            f.spec.function_timeout = 1;
        },
        ..Setup::default()
    })
    .await;
    let held = h.exec.acquire(&h.function).await.expect("first");
    let started = std::time::Instant::now();
    let err = h
        .exec
        .acquire(&h.function)
        .await
        .expect_err("must time out");
    assert!(
        matches!(err, ExecutorError::Timeout { secs: 1, .. }),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(held);
    h.stop().await;
}

#[tokio::test]
async fn once_only_gives_every_call_a_fresh_instance_and_retires_it_after() {
    let h = harness(Setup {
        tune: |f| f.spec.once_only = true,
        ..Setup::default()
    })
    .await;
    let a = h.exec.acquire(&h.function).await.expect("a");
    let a_id = a.instance_id;
    drop(a);
    h.wait_for("once-only instance killed", |h| h.killed(a_id))
        .await;
    let b = h.exec.acquire(&h.function).await.expect("b");
    assert_ne!(b.instance_id, a_id);
    assert!(b.cold);
    assert_eq!(h.launcher.specializations(), 2);
    drop(b);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn idle_instances_are_reaped_after_idletimeout_but_retain_pods_survive() {
    let h = harness(Setup {
        reaper_interval: Duration::from_secs(5),
        tune: |f| {
            f.spec.idletimeout = Some(60);
            f.spec.retain_pods = 1;
        },
        ..Setup::default()
    })
    .await;
    let (a, b, c) = tokio::join!(
        h.exec.acquire(&h.function),
        h.exec.acquire(&h.function),
        h.exec.acquire(&h.function)
    );
    let leases = [a.expect("a"), b.expect("b"), c.expect("c")];
    let ids: Vec<u64> = leases.iter().map(|l| l.instance_id).collect();
    drop(leases);

    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        ids.iter().all(|id| !h.killed(*id)),
        "nothing is idle long enough yet"
    );

    tokio::time::sleep(Duration::from_secs(40)).await;
    let killed: Vec<u64> = ids.iter().copied().filter(|id| h.killed(*id)).collect();
    assert_eq!(killed.len(), 2, "all but retainPods=1 reaped: {killed:?}");

    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        ids.iter().filter(|id| h.killed(**id)).count(),
        2,
        "the retained one stays"
    );
    // The survivor still serves warm.
    let again = h.exec.acquire(&h.function).await.expect("again");
    assert!(!again.cold);
    drop(again);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_in_use_is_not_reaped() {
    let h = harness(Setup {
        reaper_interval: Duration::from_secs(5),
        tune: |f| f.spec.idletimeout = Some(10),
        ..Setup::default()
    })
    .await;
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!h.killed(lease.instance_id));
    let id = lease.instance_id;
    drop(lease);
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert!(h.killed(id));
    h.stop().await;
}

#[tokio::test]
async fn a_function_update_retires_old_instances_once_their_requests_finish() {
    let h = harness(Setup::default()).await;
    let old_idle = h.exec.acquire(&h.function).await.expect("idle one");
    let old_busy = h.exec.acquire(&h.function).await.expect("busy one");
    let (idle_id, busy_id) = (old_idle.instance_id, old_busy.instance_id);
    drop(old_idle);

    let mut changed = h.function.clone();
    changed.spec.package.function_name = "other".to_owned();
    let updated: Function = testing::update(&h.store, changed).await;
    h.wait_for("idle old instance killed", |h| h.killed(idle_id))
        .await;
    assert!(!h.killed(busy_id), "an in-flight request is not cut off");

    let fresh = h.exec.acquire(&updated).await.expect("new version");
    assert!(fresh.cold, "the new version never reuses old code");
    assert_ne!(fresh.instance_id, busy_id);
    let loads = h.launcher.load_requests.lock().expect("lock").clone();
    assert_eq!(
        loads.last().and_then(|l| l["functionName"].as_str()),
        Some("other")
    );

    drop(old_busy);
    h.wait_for("busy old instance killed after its lease", |h| {
        h.killed(busy_id)
    })
    .await;
    drop(fresh);
    h.stop().await;
}

#[tokio::test]
async fn a_deleted_function_has_its_instances_stopped() {
    let h = harness(Setup::default()).await;
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    let id = lease.instance_id;
    drop(lease);
    h.store
        .delete(ResourceKind::Function, "default", "hello")
        .await
        .expect("delete");
    h.wait_for("instance of deleted function killed", |h| h.killed(id))
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_broken_lease_kills_its_instance() {
    let h = harness(Setup::default()).await;
    let mut lease = h.exec.acquire(&h.function).await.expect("lease");
    let id = lease.instance_id;
    lease.mark_broken();
    drop(lease);
    assert!(h.killed(id));
    let next = h.exec.acquire(&h.function).await.expect("next");
    assert_ne!(next.instance_id, id);
    assert!(next.cold);
    drop(next);
    h.stop().await;
}

#[tokio::test]
async fn a_failed_specialization_reports_the_runtime_message_and_refills_the_pool() {
    let h = harness(Setup::default()).await;
    h.launcher.set(FakeBehaviour {
        fail_with: Some("SyntaxError: Unexpected token ')' in hello.js:3".to_owned()),
        ..FakeBehaviour::default()
    });
    let started = std::time::Instant::now();
    let err = h.exec.acquire(&h.function).await.expect_err("must fail");
    assert!(started.elapsed() < Duration::from_secs(1));
    match &err {
        ExecutorError::SpecializationFailed { function, message } => {
            assert_eq!(function, "default/hello");
            assert_eq!(message, "SyntaxError: Unexpected token ')' in hello.js:3");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        h.launcher
            .instance(1)
            .map(|i| i.kills.load(Ordering::SeqCst)),
        Some(1),
        "the failed instance is discarded"
    );
    h.wait_for("pool refilled", |h| {
        h.launcher.launched.load(Ordering::SeqCst) >= 3
    })
    .await;
    h.wait_for("pool refilled", |h| h.launcher.alive() == 2)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_runtime_that_never_answers_specialize_times_out_and_is_killed() {
    let h = harness(Setup {
        specialize_timeout: Duration::from_millis(300),
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        hang: true,
        ..FakeBehaviour::default()
    });
    let err = h.exec.acquire(&h.function).await.expect_err("must fail");
    assert!(
        err.to_string()
            .contains("did not answer the specialize request"),
        "{err}"
    );
    let killed = (1..=10).filter(|id| h.killed(*id)).count();
    assert_eq!(killed, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_crashed_instance_is_forgotten_and_the_next_call_specializes_again() {
    let h = harness(Setup::default()).await;
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    let id = lease.instance_id;
    drop(lease);
    h.launcher.instance(id).expect("instance").crash();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = h.exec.acquire(&h.function).await.expect("next");
    assert_ne!(next.instance_id, id);
    assert!(next.cold);
    drop(next);
    h.stop().await;
}

#[tokio::test]
async fn a_crashed_generic_instance_is_replaced_in_the_pool() {
    let h = harness(Setup::default()).await;
    h.launcher.instance(1).expect("pooled instance").crash();
    h.wait_for("replacement started", |h| {
        h.launcher.launched.load(Ordering::SeqCst) >= 3
    })
    .await;
    h.wait_for("pool full", |h| h.launcher.alive() == 2).await;
    h.stop().await;
}

#[tokio::test]
async fn an_unknown_image_is_unsupported_with_a_clear_message() {
    let h = harness(Setup::default()).await;
    let _: Environment =
        testing::create(&h.store, testing::environment("go", "fission/go-env", 1)).await;
    let f: Function =
        testing::create(&h.store, testing::function("gofn", "go", "hello-pkg", "")).await;
    let err = h.exec.acquire(&f).await.expect_err("unsupported");
    assert!(matches!(err, ExecutorError::Unsupported(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        fission_core::runtime::unsupported_image_message("fission/go-env")
    );
    h.stop().await;
}

#[tokio::test]
async fn a_package_that_never_built_is_refused() {
    let h = harness(Setup::default()).await;
    let mut pkg = testing::literal_package("broken-pkg", "nodejs", b"x");
    pkg.spec.deployment = fission_core::resources::Archive::default();
    pkg.spec.source = fission_core::resources::Archive::literal(b"src".to_vec());
    pkg.status.buildstatus = "failed".to_owned();
    let _: Package = testing::create(&h.store, pkg).await;
    let f: Function =
        testing::create(&h.store, testing::function("b", "nodejs", "broken-pkg", "")).await;
    let err = h.exec.acquire(&f).await.expect_err("refused");
    assert!(
        err.to_string()
            .contains("package build status was \"failed\""),
        "{err}"
    );
    let missing: Function =
        testing::create(&h.store, testing::function("m", "nodejs", "nope", "")).await;
    let err = h.exec.acquire(&missing).await.expect_err("missing");
    assert!(matches!(err, ExecutorError::NotFound(_)), "{err:?}");
    h.stop().await;
}

#[tokio::test]
async fn the_load_request_has_fission_s_shape_and_the_code_is_unpacked_once() {
    let h = harness(Setup {
        tune: |f| tuned(5, 1)(f),
        ..Setup::default()
    })
    .await;
    let (a, b) = tokio::join!(h.exec.acquire(&h.function), h.exec.acquire(&h.function));
    drop((a.expect("a"), b.expect("b")));
    let loads = h.launcher.load_requests.lock().expect("lock").clone();
    assert_eq!(loads.len(), 2);
    let l = &loads[0];
    let path = l["filepath"].as_str().expect("filepath");
    assert!(
        path.ends_with("/default/hello-pkg/2/deployarchive"),
        "{path}"
    );
    assert_eq!(std::fs::read(path).expect("code"), b"module.exports = 1");
    assert_eq!(l["functionName"], "");
    assert_eq!(l["url"], "");
    assert_eq!(l["envVersion"], 3);
    assert_eq!(l["FunctionMetadata"]["name"], "hello");
    assert_eq!(
        l["FunctionMetadata"]["uid"],
        h.function.metadata.uid.as_str()
    );
    assert_eq!(loads[1]["filepath"], l["filepath"]);
    h.stop().await;
}

#[tokio::test]
async fn an_environment_update_replaces_the_pool_and_retires_specialized_instances() {
    let h = harness(Setup::default()).await;
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    let id = lease.instance_id;
    drop(lease);
    let generic_before: Vec<u64> = (1..=3).filter(|i| *i != id).collect();

    let mut env = h.env.clone();
    env.metadata.resource_version.clear();
    env.spec.poolsize = 1;
    let _: Environment = testing::update(&h.store, env).await;
    h.wait_for("specialized instance of old env retired", |h| h.killed(id))
        .await;
    h.wait_for("old generic instances stopped", |h| {
        generic_before.iter().all(|g| h.killed(*g))
    })
    .await;
    h.wait_for("new pool filled", |h| h.launcher.alive() == 1)
        .await;
    let next = h.exec.acquire(&h.function).await.expect("next");
    assert!(next.cold);
    drop(next);

    h.store
        .delete(ResourceKind::Environment, "default", "nodejs")
        .await
        .expect("delete");
    h.wait_for("pool gone", |h| h.launcher.alive() == 0).await;
    h.stop().await;
}

#[tokio::test]
async fn shutdown_stops_every_instance_and_refuses_new_calls() {
    let h = harness(Setup::default()).await;
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    drop(lease);
    let exec = h.exec.clone();
    let f = h.function.clone();
    h.stop().await;
    let err = exec.acquire(&f).await.expect_err("shut down");
    assert!(matches!(err, ExecutorError::ShuttingDown));
}

#[tokio::test]
async fn metrics_count_cold_starts_and_pool_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (envs, bin) = testing::fake_environments(dir.path());
    let store = MemoryStore::new();
    let _: Environment = testing::create(
        &store,
        testing::environment("nodejs", "fission/node-env", 1),
    )
    .await;
    let _: Package = testing::create(&store, testing::literal_package("p", "nodejs", b"x")).await;
    let f: Function = testing::create(&store, testing::function("hello", "nodejs", "p", "")).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let exec = Executor::new(
        Config::new(envs, dir.path().join("cache"), bin.clone(), bin),
        store.clone(),
        ArchiveStore::open(dir.path().join("a")).expect("archives"),
        LogStore::open(dir.path().join("l")).expect("logs"),
        FakeLauncher::new(),
        &mut registry,
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(exec.clone().run(shutdown.clone()));
    drop(exec.acquire(&f).await.expect("lease"));
    drop(exec.acquire(&f).await.expect("warm"));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(text.contains("fission_cold_starts_total 1"), "{text}");
    assert!(
        text.contains("fission_function_cold_starts_total{function_namespace=\"default\",function_name=\"hello\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "fission_function_instances{function_namespace=\"default\",function_name=\"hello\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("fission_specialization_duration_seconds_count{runtime=\"nodejs\",outcome=\"success\"} 1"), "{text}");
    assert!(text.contains("fission_pool_ready_instances"), "{text}");
    shutdown.cancel();
    run.await.expect("join").expect("run");
}

impl Harness {
    async fn pool(&self) -> Arc<crate::pool::Pool<crate::LaunchTemplate>> {
        let key = (
            self.env.metadata.namespace.clone(),
            self.env.metadata.name.clone(),
        );
        self.wait_for("the environment's pool", |h| {
            h.exec.lock_pools().contains_key(&key)
        })
        .await;
        self.exec
            .lock_pools()
            .get(&key)
            .cloned()
            .expect("the environment's pool")
    }
}

/// `n` concurrent first calls (each its own instance: requestsPerPod 1), leases kept.
async fn burst(h: &Harness, n: usize) -> Vec<fission_core::InstanceLease> {
    let calls = (0..n).map(|_| h.exec.acquire(&h.function));
    let leases: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("acquire"))
        .collect();
    assert!(leases.iter().all(|l| l.cold));
    leases
}

#[tokio::test]
async fn a_burst_beyond_the_pool_grows_it_for_the_next_burst_until_the_boost_expires() {
    let h = harness(Setup {
        poolsize: 1,
        tune: |f| tuned(40, 1)(f),
        ..Setup::default()
    })
    .await;
    let pool = h.pool().await;
    // One call takes the pooled instance; the others find the pool empty (unless the refill's
    // replacement, started at once, beats them to it).
    let first = burst(&h, 4).await;
    let boost = pool.sizes().1;
    assert!(
        (1..=3).contains(&boost),
        "one more instance wanted per miss, got {boost}"
    );
    h.wait_for("pool refilled to poolsize + boost", |_| {
        pool.sizes().0 == 1 + boost
    })
    .await;
    // A burst of that size is now served from the pool: no misses, the boost stays.
    let second = burst(&h, 1 + boost).await;
    assert_eq!(pool.sizes().1, boost);
    // Misses beyond the cap do not grow it further.
    let third = burst(&h, 20).await;
    assert_eq!(pool.sizes().1, crate::pool::max_boost(1));
    // Once the boost expires, the pool shrinks back to poolsize and stops the extra instances.
    h.wait_for("pool refilled to the cap", |_| {
        pool.sizes().0 == 1 + crate::pool::max_boost(1)
    })
    .await;
    let later = tokio::time::Instant::now() + crate::pool::BOOST_TTL + Duration::from_secs(1);
    let extra = pool.expire_boost(later);
    assert_eq!(extra.len(), crate::pool::max_boost(1));
    assert_eq!(pool.sizes(), (1, 0));
    assert!(
        pool.expire_boost(later).is_empty(),
        "nothing more to expire"
    );
    for g in extra {
        g.instance.kill();
    }
    drop((first, second, third));
    h.stop().await;
}

#[tokio::test]
async fn a_pool_of_size_zero_stays_empty_after_misses() {
    let h = harness(Setup {
        poolsize: 0,
        tune: |f| tuned(20, 1)(f),
        ..Setup::default()
    })
    .await;
    let pool = h.pool().await;
    let leases = burst(&h, 2).await;
    assert_eq!(pool.sizes(), (0, 0));
    tokio::time::sleep(crate::pool::BOOST_SPACING * 3).await;
    assert_eq!(
        h.launcher.launched.load(Ordering::SeqCst),
        2,
        "only the calls' own instances"
    );
    drop(leases);
    h.stop().await;
}

#[tokio::test]
async fn a_new_function_s_deployment_is_unpacked_before_its_first_call() {
    let h = harness(Setup::default()).await;
    let pkg: Package = testing::create(
        &h.store,
        testing::literal_package("new-pkg", "nodejs", b"module.exports = 2"),
    )
    .await;
    let _: Function =
        testing::create(&h.store, testing::function("new", "nodejs", "new-pkg", "")).await;
    let target = h
        ._dir
        .path()
        .join("cache/default/new-pkg")
        .join(&pkg.metadata.resource_version)
        .join("deployarchive");
    h.wait_for("deployment prefetched", |_| target.is_file())
        .await;
    assert_eq!(std::fs::read(&target).expect("code"), b"module.exports = 2");
    assert_eq!(h.launcher.specializations(), 0, "no call was needed");
    h.stop().await;
}

#[tokio::test]
async fn a_function_s_own_specializationtimeout_bounds_its_specialization() {
    let h = harness(Setup {
        specialize_timeout: Duration::from_secs(30),
        tune: |f| {
            f.spec
                .invoke_strategy
                .execution_strategy
                .specialization_timeout = 1
        },
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        hang: true,
        ..FakeBehaviour::default()
    });
    let started = tokio::time::Instant::now();
    let err = h.exec.acquire(&h.function).await.expect_err("must fail");
    assert!(
        err.to_string()
            .contains("did not answer the specialize request within 1s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    h.stop().await;
}

fn admission(
    max_specializations: usize,
    max_instances: usize,
    wait_ms: u64,
) -> Option<crate::AdmissionConfig> {
    Some(crate::AdmissionConfig {
        max_instances,
        max_specializations,
        max_queued: 100,
        max_queue_wait: Duration::from_millis(wait_ms),
    })
}

#[tokio::test]
async fn a_burst_beyond_the_specialization_budget_queues_and_every_call_is_served() {
    let h = harness(Setup {
        tune: |f| tuned(50, 1)(f),
        admission: admission(2, 100, 5_000),
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        delay: Duration::from_millis(30),
        ..FakeBehaviour::default()
    });
    let calls: Vec<_> = (0..30)
        .map(|_| {
            let (exec, f) = (h.exec.clone(), h.function.clone());
            tokio::spawn(async move {
                let lease = exec.acquire(&f).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, ExecutorError>(lease.instance_id)
            })
        })
        .collect();
    for c in calls {
        c.await.expect("join").expect("every call is served");
    }
    // Queued calls took instances that freed up instead of each starting its own.
    let specialized = h.launcher.specializations();
    assert!(
        specialized < 30,
        "{specialized} specializations for 30 calls"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_cold_start_that_waits_past_the_queue_deadline_is_refused_as_overloaded() {
    let h = harness(Setup {
        tune: |f| tuned(5, 1)(f),
        admission: admission(1, 100, 200),
        ..Setup::default()
    })
    .await;
    h.launcher.set(FakeBehaviour {
        delay: Duration::from_millis(1_500),
        ..FakeBehaviour::default()
    });
    let first = {
        let (exec, f) = (h.exec.clone(), h.function.clone());
        tokio::spawn(async move { exec.acquire(&f).await.map(|l| l.instance_id) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let err = h.exec.acquire(&h.function).await.expect_err("over budget");
    assert!(
        matches!(
            err,
            ExecutorError::Overloaded {
                queue_full: false,
                retry_after_secs: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "waited {:?}",
        started.elapsed()
    );
    first
        .await
        .expect("join")
        .expect("the first call still gets its instance");
    h.stop().await;
}

#[tokio::test]
async fn no_instance_starts_beyond_the_server_wide_cap() {
    let h = harness(Setup {
        poolsize: 1,
        tune: |f| tuned(10, 1)(f),
        admission: admission(10, 2, 300),
        ..Setup::default()
    })
    .await;
    let a = h.exec.acquire(&h.function).await.expect("first");
    let b = h.exec.acquire(&h.function).await.expect("second");
    // Two instances exist (the pool may be refilling into the cap); a third call cannot start one.
    let err = h.exec.acquire(&h.function).await.expect_err("cap reached");
    assert!(matches!(err, ExecutorError::Overloaded { .. }), "{err}");
    assert!(
        h.launcher.launched.load(Ordering::SeqCst) <= 2,
        "launched {}",
        h.launcher.launched.load(Ordering::SeqCst)
    );
    drop((a, b));
    h.stop().await;
}

fn newdeploy(min: i32, max: i32) -> impl Fn(&mut Function) {
    move |f: &mut Function| {
        let es = &mut f.spec.invoke_strategy.execution_strategy;
        es.executor_type = "newdeploy".to_owned();
        es.min_scale = min;
        es.max_scale = max;
    }
}

#[tokio::test]
async fn newdeploy_specializes_minscale_instances_before_any_call() {
    let h = harness(Setup {
        tune: |f| newdeploy(2, 4)(f),
        ..Setup::default()
    })
    .await;
    h.wait_for("MinScale instances", |h| h.launcher.specializations() == 2)
        .await;
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    assert!(!lease.cold, "the first call is warm");
    assert_eq!(h.exec.instance_count("default", "hello"), 2);
    drop(lease);
    h.stop().await;
}

#[tokio::test]
async fn newdeploy_scales_out_under_load_up_to_maxscale_and_never_makes_calls_wait_there() {
    let h = harness(Setup {
        tune: |f| newdeploy(1, 3)(f),
        ..Setup::default()
    })
    .await;
    h.wait_for("MinScale instance", |h| h.launcher.specializations() == 1)
        .await;
    let leases: Vec<_> = futures::future::join_all((0..40).map(|_| h.exec.acquire(&h.function)))
        .await
        .into_iter()
        .map(|r| r.expect("every call gets an instance"))
        .collect();
    let instances: std::collections::HashSet<u64> = leases.iter().map(|l| l.instance_id).collect();
    assert_eq!(instances.len(), 3, "scaled out to MaxScale, no further");
    assert_eq!(h.launcher.specializations(), 3);
    drop(leases);
    h.stop().await;
}

#[tokio::test]
async fn newdeploy_scales_back_to_minscale_when_idle_and_minscale_0_scales_to_zero() {
    let h = harness(Setup {
        reaper_interval: Duration::from_millis(100),
        tune: |f| {
            newdeploy(0, 3)(f);
            f.spec.idletimeout = Some(1);
        },
        ..Setup::default()
    })
    .await;
    assert_eq!(
        h.exec.instance_count("default", "hello"),
        0,
        "MinScale 0: nothing before a call"
    );
    let lease = h.exec.acquire(&h.function).await.expect("lease");
    assert!(lease.cold, "from zero the first call is a cold start");
    drop(lease);
    assert_eq!(h.exec.instance_count("default", "hello"), 1);
    h.wait_for("scaled to zero after idletimeout", |h| {
        h.exec.instance_count("default", "hello") == 0
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn newdeploy_adds_instances_when_cpu_runs_above_target_cpu_percent() {
    let h = harness(Setup {
        reaper_interval: Duration::from_millis(100),
        tune: |f| {
            newdeploy(1, 3)(f);
            f.spec.invoke_strategy.execution_strategy.target_cpu_percent = 50;
        },
        ..Setup::default()
    })
    .await;
    h.wait_for("MinScale instance", |h| {
        h.exec.instance_count("default", "hello") == 1
    })
    .await;
    // Idle: no scale-out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.exec.instance_count("default", "hello"), 1);
    // Hot (90 % of a CPU against a 50 % target): instances are added, one per sample, up to MaxScale.
    h.launcher.set(FakeBehaviour {
        cpu_percent: 90,
        ..FakeBehaviour::default()
    });
    h.wait_for("scaled out to MaxScale", |h| {
        h.exec.instance_count("default", "hello") == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.exec.instance_count("default", "hello"),
        3,
        "never beyond MaxScale"
    );
    h.stop().await;
}
