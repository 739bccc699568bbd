//! `--zygote`: the Python zygote against an interpreter per instance, two servers side by side
//! (`--python-zygote=on` and `=off`, otherwise identical), calls interleaved so that the
//! machine's load falls on both alike. Measures the Python pool-hit cold start, the empty-pool
//! cold start (an environment of pool size 0: every call starts an instance) and the PSS of an
//! idle specialized instance (sum of `Pss` in `/proc/<pid>/smaps_rollup` over the instance's
//! processes: the runtime and its slot's bubblewrap and, with the zygote, the placeholder).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::api::{Api, Limits, Metrics};
use crate::http::Conn;
use crate::procs::{self, Lang, Paths, Server};
use crate::stats::{mib, ms, summarize};

/// Pool-hit and empty-pool calls per mode, and idle specialized instances for the PSS.
struct Counts {
    pool_hit: usize,
    empty_pool: usize,
    idle: usize,
}

struct Side {
    label: &'static str,
    server: Server,
    api: Api,
    metrics: Metrics,
    router: Conn,
    pool_hit: Vec<f64>,
    empty_pool: Vec<f64>,
    failures: Vec<String>,
}

const POOLSIZE: u32 = 3;

impl Side {
    async fn start(paths: &Paths, extra: &[String], zygote: bool) -> Result<Self> {
        let mut args = extra.to_vec();
        args.push(format!(
            "--python-zygote={}",
            if zygote { "on" } else { "off" }
        ));
        let server = Server::start(&paths.fission, &paths.environments, &args, false)?;
        let mut side = Self {
            label: if zygote {
                "zygote"
            } else {
                "interpreter per instance"
            },
            api: Api::connect(server.controller).await?,
            metrics: Metrics::connect(server.router).await?,
            router: Conn::connect(server.router).await?,
            server,
            pool_hit: Vec::new(),
            empty_pool: Vec::new(),
            failures: Vec::new(),
        };
        side.api.create_env("python0", Lang::Python, 0).await?;
        Ok(side)
    }

    async fn call(&mut self, name: &str) -> Result<f64, String> {
        let path = format!("/fission-function/{name}");
        let t0 = Instant::now();
        let r = self.router.get(&path).await;
        let took = t0.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(r) if r.status == 200 && r.body.starts_with(b"Hello, world!") => Ok(took),
            Ok(r) => Err(format!("{name}: {} {}", r.status, r.text().trim())),
            Err(e) => Err(format!("{name}: {e:#}")),
        }
    }

    async fn create(&mut self, name: &str, env: &str) -> Result<()> {
        self.api
            .create_function(name, env, Lang::Python, Limits::default())
            .await?;
        // Routes follow the change feed within milliseconds; no timed call races that.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    /// Settle: the pool full (if any) and the server idle, as before every timed call.
    async fn settle(&mut self, pool: Option<&str>) -> Result<()> {
        if let Some(env) = pool {
            self.metrics
                .wait_pool_full(env, POOLSIZE, Duration::from_secs(60))
                .await?;
        }
        procs::wait_quiet(
            self.server.pid(),
            Duration::from_millis(20),
            Duration::from_millis(1),
            Duration::from_secs(10),
        )
        .await;
        Ok(())
    }

    /// PSS of every instance process under the server (the zygote itself apart), in bytes,
    /// and the zygote's own.
    fn pss(&self) -> (f64, f64, usize) {
        let server = self.server.pid();
        let mut instances = 0.0;
        let mut zygote = 0.0;
        let mut runtimes = 0;
        for pid in procs::descendants(server) {
            let cmd = procs::cmdline(pid);
            let pss = pss_bytes(pid).unwrap_or(0) as f64;
            let parent_is_server = procs::children(server).contains(&pid);
            if cmd.contains("zygote.py") && parent_is_server {
                zygote += pss;
            } else {
                // The runtime itself (bubblewrap's command line names the interpreter too).
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.starts_with("python") {
                    runtimes += 1;
                }
                instances += pss;
            }
        }
        (instances, zygote, runtimes)
    }
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, in bytes.
fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Run the comparison; returns a Markdown report.
pub async fn run(paths: &Paths, extra: &[String], smoke: bool) -> Result<String> {
    let counts = if smoke {
        Counts {
            pool_hit: 5,
            empty_pool: 5,
            idle: 5,
        }
    } else {
        Counts {
            pool_hit: 40,
            empty_pool: 30,
            idle: 30,
        }
    };
    let mut sides = [
        Side::start(paths, extra, true).await?,
        Side::start(paths, extra, false).await?,
    ];

    // Idle specialized PSS first, while nothing else runs in either server.
    eprintln!(
        "zygote: {} idle specialized instances per mode",
        counts.idle
    );
    let mut pss = Vec::new();
    for side in &mut sides {
        let mut names = Vec::new();
        for i in 0..counts.idle {
            let name = format!("idle-{i}");
            side.create(&name, "python0").await?;
            names.push(name);
        }
        for name in &names {
            if let Err(e) = side.call(name).await {
                side.failures.push(e);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (instances, zygote, runtimes) = side.pss();
        pss.push((instances / runtimes.max(1) as f64, zygote, runtimes));
        for name in &names {
            side.api.delete_function(name).await?;
        }
    }

    for side in &mut sides {
        side.api
            .create_env("python", Lang::Python, POOLSIZE)
            .await?;
    }
    eprintln!(
        "zygote: pool-hit ×{} and empty-pool ×{} per mode, interleaved",
        counts.pool_hit, counts.empty_pool
    );
    for i in 0..counts.pool_hit.max(counts.empty_pool) {
        for side in &mut sides {
            if i < counts.pool_hit {
                let name = format!("hit-{i}");
                side.create(&name, "python").await?;
                side.settle(Some("python")).await?;
                match side.call(&name).await {
                    Ok(t) => side.pool_hit.push(t),
                    Err(e) => side.failures.push(e),
                }
                side.api.delete_function(&name).await?;
            }
            if i < counts.empty_pool {
                let name = format!("empty-{i}");
                side.create(&name, "python0").await?;
                side.settle(None).await?;
                match side.call(&name).await {
                    Ok(t) => side.empty_pool.push(t),
                    Err(e) => side.failures.push(e),
                }
                side.api.delete_function(&name).await?;
            }
        }
    }
    if sides
        .iter()
        .any(|s| s.pool_hit.is_empty() || s.empty_pool.is_empty())
    {
        bail!(
            "calls failed: {:?}",
            sides
                .iter()
                .flat_map(|s| s.failures.clone())
                .collect::<Vec<_>>()
        );
    }

    let mut out = String::new();
    out.push_str(&format!(
        "| Python, same run | {} | {} | goal |\n|---|---|---|---|\n",
        sides[0].label, sides[1].label
    ));
    let p50 = |v: &[f64]| summarize(v).p50;
    let p99 = |v: &[f64]| summarize(v).p99;
    out.push_str(&format!(
        "| pool-hit cold start p50 / p99 (n={}) | {} / {} | {} / {} | p50 ≤ 3 ms |\n",
        counts.pool_hit,
        ms(p50(&sides[0].pool_hit)),
        ms(p99(&sides[0].pool_hit)),
        ms(p50(&sides[1].pool_hit)),
        ms(p99(&sides[1].pool_hit)),
    ));
    out.push_str(&format!(
        "| empty-pool cold start p50 / p99 (n={}) | {} / {} | {} / {} | p50 ≤ 15 ms |\n",
        counts.empty_pool,
        ms(p50(&sides[0].empty_pool)),
        ms(p99(&sides[0].empty_pool)),
        ms(p50(&sides[1].empty_pool)),
        ms(p99(&sides[1].empty_pool)),
    ));
    out.push_str(&format!(
        "| PSS per idle specialized instance ({} warm; runtime + bubblewrap + placeholder) | {} | {} | ≤ 5 MB |\n",
        pss[0].2,
        mib(pss[0].0),
        mib(pss[1].0),
    ));
    out.push_str(&format!(
        "| PSS of the zygote itself (once per server) | {} | — | |\n",
        mib(pss[0].1),
    ));
    out.push_str(&format!(
        "\nzygote in use: {}; failures: {:?}\n",
        pss[0].1 > 0.0,
        sides
            .iter()
            .flat_map(|s| s.failures.clone())
            .collect::<Vec<_>>()
    ));
    Ok(out)
}
