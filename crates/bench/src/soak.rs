//! `fission-bench --soak`: a long run at ~80 % of the measured maximum throughput across
//! several functions in both runtimes, with one function instance SIGKILLed half-way.
//!
//! It reports errors (none are acceptable before the kill; after it, at most the requests that
//! were in flight on the killed instance), p50/p99 per window, and how long the warm pools took
//! to refill.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::task::JoinSet;

use crate::api::{Api, Limits, Metrics};
use crate::http::Conn;
use crate::procs::{self, Lang, Paths, Server};
use crate::stats::{ms, rate, summarize};

const POOLSIZE: u32 = 3;
/// Connections per function: also the most requests one function can have in flight.
const CONNS_PER_FN: usize = 4;
const WINDOW: Duration = Duration::from_secs(10);
const FUNCTIONS: [(&str, &str, Lang); 4] = [
    ("soak-node-a", "nodejs", Lang::Node),
    ("soak-node-b", "nodejs", Lang::Node),
    ("soak-py-a", "python", Lang::Python),
    ("soak-py-b", "python", Lang::Python),
];

/// One request: when it was sent (since the start of the paced run), how long it took, and
/// whether it answered 200.
struct Sample {
    at: Duration,
    latency_ms: f64,
    ok: bool,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("fission-bench: soak: {}", msg.as_ref());
}

pub async fn run(
    paths: &Paths,
    server_args: &[String],
    keep_data: bool,
    seconds: u64,
) -> Result<String> {
    let server = Server::start(&paths.fission, &paths.environments, server_args, keep_data)?;
    let mut api = Api::connect(server.controller).await?;
    let mut metrics = Metrics::connect(server.router).await?;
    api.create_env("nodejs", Lang::Node, POOLSIZE).await?;
    api.create_env("python", Lang::Python, POOLSIZE).await?;
    for env in ["nodejs", "python"] {
        metrics
            .wait_pool_full(env, POOLSIZE, Duration::from_secs(60))
            .await?;
    }
    for (name, env, lang) in FUNCTIONS {
        api.create_function(name, env, lang, Limits::default())
            .await?;
        api.create_route(name, &format!("/{name}"), name).await?;
    }
    let mut warm = Conn::connect(server.router).await?;
    for (name, ..) in FUNCTIONS {
        let path = format!("/{name}");
        let t0 = Instant::now();
        loop {
            match warm.get(&path).await {
                Ok(r) if r.status == 200 => break,
                _ if t0.elapsed() > Duration::from_secs(60) => {
                    bail!("{path} did not answer 200 within 60 s")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    for env in ["nodejs", "python"] {
        metrics
            .wait_pool_full(env, POOLSIZE, Duration::from_secs(60))
            .await?;
    }

    progress("measuring the maximum throughput (closed loop, 5 s)");
    let max = closed_loop(server.router, Duration::from_secs(5)).await?;
    let target = max * 0.8;
    progress(format!(
        "maximum {} → driving {} for {seconds} s",
        rate(max),
        rate(target)
    ));

    let duration = Duration::from_secs(seconds);
    let kill_at = duration / 2;
    let start = Instant::now() + Duration::from_millis(200);
    let per_conn = Duration::from_secs_f64(FUNCTIONS.len() as f64 * CONNS_PER_FN as f64 / target);
    let mut set = JoinSet::new();
    for (name, ..) in FUNCTIONS {
        for i in 0..CONNS_PER_FN {
            let mut conn = Conn::connect(server.router).await?;
            let path = format!("/{name}");
            // Spread the connections' send times over one period.
            let offset = per_conn.mul_f64(i as f64 / CONNS_PER_FN as f64);
            set.spawn(async move {
                let mut samples = Vec::new();
                let mut next = start + offset;
                while next < start + duration {
                    tokio::time::sleep_until(next.into()).await;
                    let t0 = Instant::now();
                    let ok = matches!(conn.get(&path).await, Ok(r) if r.status == 200);
                    samples.push(Sample {
                        at: t0 - start,
                        latency_ms: t0.elapsed().as_secs_f64() * 1e3,
                        ok,
                    });
                    next += per_conn;
                    // Behind schedule (a slow answer): carry on from now, no catch-up burst.
                    next = next.max(Instant::now());
                }
                samples
            });
        }
    }

    // Half-way: SIGKILL the busiest function instance (the server's child using the most CPU:
    // specialized, serving the load). From outside, the process tree does not tell pool
    // instances from idle specialized ones, so only the busy one is killed.
    tokio::time::sleep_until((start + kill_at).into()).await;
    let tree_cpu = |c: u32| -> u64 {
        std::iter::once(c)
            .chain(procs::descendants(c))
            .map(procs::cpu_ns)
            .sum()
    };
    let tree_cmd = |c: u32| -> String {
        std::iter::once(c)
            .chain(procs::descendants(c))
            .map(procs::cmdline)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let instances = procs::children(server.pid());
    let instances_before = instances.len();
    let victim = instances
        .iter()
        .copied()
        .max_by_key(|&c| tree_cpu(c))
        .context("the server has no instance processes")?;
    let victim_env = if tree_cmd(victim).contains("python") {
        "python"
    } else {
        "nodejs"
    };
    let killed_at = start.elapsed();
    for p in procs::descendants(victim).into_iter().chain([victim]) {
        procs::sigkill(p);
    }
    progress(format!(
        "killed busy instance pid {victim} ({victim_env}) at {:.1} s",
        killed_at.as_secs_f64()
    ));
    // Recovered: the executor reaped the dead instance (it is no longer the server's child)
    // and the warm pool of its runtime is full. Watched while the load goes on.
    let refill = async {
        loop {
            let current = procs::children(server.pid());
            if !current.contains(&victim) && metrics.pool_ready(victim_env).await? >= POOLSIZE {
                return Ok::<_, anyhow::Error>((
                    start.elapsed().saturating_sub(killed_at),
                    current.len(),
                ));
            }
            if start.elapsed() > killed_at + Duration::from_secs(60) {
                bail!(
                    "the killed instance was not reaped or the pool not full within 60 s ({} instances, {instances_before} before the kill)",
                    current.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let collect = async {
        let mut samples = Vec::new();
        while let Some(j) = set.join_next().await {
            samples.extend(j.context("load task")?);
        }
        Ok::<_, anyhow::Error>(samples)
    };
    let (samples, refill) = tokio::join!(collect, refill);
    let samples = samples?;
    let pool_after = metrics.pool_ready(victim_env).await?;
    drop(server);

    let before: Vec<&Sample> = samples.iter().filter(|s| s.at < killed_at).collect();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= killed_at).collect();
    let errors_before = before.iter().filter(|s| !s.ok).count();
    let errors_after = after.iter().filter(|s| !s.ok).count();
    let total = samples.len();
    let achieved = total as f64 / duration.as_secs_f64();

    let mut out = String::new();
    out.push_str("## Soak\n\n");
    out.push_str(&format!(
        "`fission-bench --soak --seconds {seconds}`: {} functions ({} Node.js, {} Python), \
         {CONNS_PER_FN} paced keep-alive connections each, through the router. Maximum measured \
         throughput (closed loop, 5 s): {}; driven at 80 %: target {}, achieved {}.\n\n",
        FUNCTIONS.len(),
        FUNCTIONS.iter().filter(|f| f.2 == Lang::Node).count(),
        FUNCTIONS.iter().filter(|f| f.2 == Lang::Python).count(),
        rate(max),
        rate(target),
        rate(achieved),
    ));
    out.push_str(
        "| window | requests | errors | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let windows = seconds.div_ceil(WINDOW.as_secs());
    for w in 0..windows {
        let (lo, hi) = (WINDOW * w as u32, WINDOW * (w as u32 + 1));
        let in_w: Vec<&Sample> = samples.iter().filter(|s| s.at >= lo && s.at < hi).collect();
        let lat: Vec<f64> = in_w.iter().map(|s| s.latency_ms).collect();
        let sum = summarize(&lat);
        let kill_mark = if killed_at >= lo && killed_at < hi {
            " (kill)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| {}–{} s{kill_mark} | {} | {} | {} | {} | {} |\n",
            lo.as_secs(),
            hi.as_secs().min(seconds),
            in_w.len(),
            in_w.iter().filter(|s| !s.ok).count(),
            ms(sum.p50),
            ms(sum.p99),
            ms(sum.max),
        ));
    }
    let all = summarize(&samples.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
    out.push_str(&format!(
        "| all | {total} | {} | {} | {} | {} |\n\n",
        errors_before + errors_after,
        ms(all.p50),
        ms(all.p99),
        ms(all.max)
    ));
    out.push_str(&format!(
        "- errors before the kill: **{errors_before}** of {}.\n",
        before.len()
    ));
    out.push_str(&format!(
        "- SIGKILL of the busiest instance (pid {victim}, {victim_env}) at {:.1} s: \
         **{errors_after}** failed requests afterwards (bound: the {CONNS_PER_FN} requests one function can have in flight).\n",
        killed_at.as_secs_f64()
    ));
    out.push_str(&match &refill {
        Ok((d, n)) => format!(
            "- recovered: the dead instance reaped and the {victim_env} pool full ({POOLSIZE} ready) {} after the kill \
             ({n} instances then, {instances_before} before); {pool_after} ready at the end.\n",
            ms(d.as_secs_f64() * 1e3)
        ),
        Err(e) => format!("- NOT recovered: {e:#}; {pool_after} ready at the end.\n"),
    });
    let verdict_ok = errors_before == 0 && errors_after <= CONNS_PER_FN && refill.is_ok();
    out.push_str(&format!(
        "- verdict: **{}**\n",
        if verdict_ok { "pass" } else { "FAIL" }
    ));
    if !verdict_ok {
        eprint!("{out}");
        bail!(
            "soak failed: {errors_before} errors before the kill, {errors_after} after (bound {CONNS_PER_FN}), pool refill {}",
            if refill.is_ok() { "ok" } else { "failed" }
        );
    }
    Ok(out)
}

/// Closed-loop load over every function at once; returns successful requests per second.
async fn closed_loop(router: std::net::SocketAddr, dur: Duration) -> Result<f64> {
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = JoinSet::new();
    for (name, ..) in FUNCTIONS {
        for _ in 0..CONNS_PER_FN {
            let mut conn = Conn::connect(router).await?;
            let path = format!("/{name}");
            set.spawn(async move {
                let mut ok = 0u64;
                while Instant::now() < deadline {
                    if matches!(conn.get(&path).await, Ok(r) if r.status == 200) {
                        ok += 1;
                    }
                }
                ok
            });
        }
    }
    let mut ok = 0;
    while let Some(j) = set.join_next().await {
        ok += j.context("load task")?;
    }
    Ok(ok as f64 / start.elapsed().as_secs_f64())
}
