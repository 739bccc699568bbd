//! Async calls: queued durably, run through the (stand-in) router with retries, outcome by
//! id, dead-letter list, callbacks, and jobs surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{FakeFunction, fake_router};
use fission_core::{AsyncCalls, AsyncRequest};
use fission_triggers::{AsyncConfig, AsyncJobs, Delivery, JobState};
use tokio_util::sync::CancellationToken;

fn jobs(db: &Path, router: SocketAddr, max_attempts: u32) -> AsyncJobs {
    let mut registry = prometheus_client::registry::Registry::default();
    let delivery = Delivery::new(&format!("http://{router}"), &mut registry, None);
    AsyncJobs::open(
        db,
        delivery,
        AsyncConfig {
            max_attempts,
            first_backoff: Duration::from_millis(50),
            concurrency: 4,
        },
    )
    .unwrap()
}

fn request(body: &str, callback: Option<String>) -> AsyncRequest {
    AsyncRequest {
        method: "POST".into(),
        uri: "/fission-function/hello/sub?x=1".into(),
        headers: vec![("x-custom".into(), "yes".into())],
        body: body.as_bytes().to_vec(),
        callback,
    }
}

async fn wait_for_state(j: &AsyncJobs, id: &str, state: JobState) -> fission_triggers::Job {
    for _ in 0..200 {
        let job = j.get(id).await.unwrap().unwrap();
        if job.state == state {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{:?}", j.get(id).await.unwrap());
}

#[tokio::test]
async fn a_queued_call_runs_through_the_router_and_its_result_is_kept_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(FakeFunction::default());
    let j = jobs(&dir.path().join("a.redb"), fake_router(f.clone()).await, 3);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(j.clone().run(stop.clone()));
    let id = j.enqueue(request("payload", None)).await.unwrap();
    let job = wait_for_state(&j, &id, JobState::Succeeded).await;
    assert_eq!(job.attempts, 1);
    let result = job.result.unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(result.body.as_deref(), Some("echo:payload"));
    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/fission-function/hello/sub");
    assert_eq!(calls[0].headers["x-custom"], "yes");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_failing_call_is_retried_then_dead_lettered_and_the_callback_gets_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(FakeFunction::default());
    f.status.store(503, Ordering::SeqCst);
    let cb = Arc::new(FakeFunction::default());
    let cb_addr = fake_router(cb.clone()).await;
    let j = jobs(&dir.path().join("a.redb"), fake_router(f.clone()).await, 3);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(j.clone().run(stop.clone()));
    let id = j
        .enqueue(request("x", Some(format!("http://{cb_addr}/done"))))
        .await
        .unwrap();
    let job = wait_for_state(&j, &id, JobState::Dead).await;
    assert_eq!(job.attempts, 3);
    assert_eq!(f.calls().len(), 3);
    assert_eq!(job.result.unwrap().status, 503);
    let dead = j.list(Some(JobState::Dead)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    for _ in 0..100 {
        if !cb.calls().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let posted = cb.calls();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].path, "/done");
    let v: serde_json::Value = serde_json::from_slice(&posted[0].body).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["state"], "dead");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(FakeFunction::default());
    f.status.store(400, Ordering::SeqCst);
    let j = jobs(&dir.path().join("a.redb"), fake_router(f.clone()).await, 5);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(j.clone().run(stop.clone()));
    let id = j.enqueue(request("x", None)).await.unwrap();
    let job = wait_for_state(&j, &id, JobState::Failed).await;
    assert_eq!(job.attempts, 1);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn jobs_queued_or_interrupted_before_a_restart_run_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.redb");
    let f = Arc::new(FakeFunction::default());
    f.delay_ms.store(5000, Ordering::SeqCst);
    let router = fake_router(f.clone()).await;
    let mut ids = Vec::new();
    {
        // First run: one job starts and is cut off mid-call, three never start.
        let j = jobs(&db, router, 3);
        let stop = CancellationToken::new();
        let worker = {
            let j = AsyncJobs::clone(&j);
            tokio::spawn(j.run(stop.clone()))
        };
        ids.push(j.enqueue(request("0", None)).await.unwrap());
        for _ in 0..100 {
            if !f.calls().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.abort();
        let _ = worker.await;
        for i in 1..4 {
            ids.push(j.enqueue(request(&i.to_string(), None)).await.unwrap());
        }
        assert_eq!(
            j.get(&ids[0]).await.unwrap().unwrap().state,
            JobState::Running
        );
    }
    f.delay_ms.store(0, Ordering::SeqCst);
    let j = jobs(&db, router, 3);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(j.clone().run(stop.clone()));
    for id in &ids {
        wait_for_state(&j, id, JobState::Succeeded).await;
    }
    let mut bodies: Vec<String> = f
        .calls()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.body).into_owned())
        .collect();
    bodies.sort();
    // The interrupted job ran twice (at least once), every other exactly once.
    assert_eq!(bodies, ["0", "0", "1", "2", "3"]);
    stop.cancel();
    worker.await.unwrap();
}
