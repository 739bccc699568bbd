//! `fission-bench`: starts a real `fission server` (the release binary next to this one) on
//! free ports with a temporary data directory and measures cold starts, warm latency,
//! throughput, create → first call, start-up time and memory, each next to a baseline taken
//! in the same run. Prints a Markdown report (and writes it to `--out`).
//!
//! ```sh
//! cargo build --release -p fission -p fission-bench
//! cargo run --release -p fission-bench -- [--smoke] [--out BENCHMARKS.md]
//! ```
//!
//! Targets never fail the run: the exit status is 0 unless the harness itself breaks.
//!
//! For a breakdown of a cold start, run with `FISSION_BENCH_TRACE=1` (wall-clock stamps of each
//! timed pool-hit call on stderr), `RUST_LOG=info,fission_executor=debug` (the server logs each
//! specialization and instance start) and `--keep-data` (keeps `server.log`).

mod anchors;
mod api;
mod density;
mod http;
mod procs;
mod report;
mod soak;
mod stats;
mod zygote;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use tokio::task::JoinSet;

use api::{Api, Limits, Metrics, SumCount};
use http::Conn;
use procs::{FreshStart, Lang, Paths, Runtime, Server};
use report::{Row, Target};
use stats::{Summary, mib, ms, rate, ratio, summarize, us};

/// Benchmarks of fission-rs against same-run baselines.
#[derive(Debug, Parser)]
#[command(name = "fission-bench")]
struct Args {
    /// Small and fast (under ~30 s, for CI): fewer samples, 1 s load runs.
    #[arg(long)]
    smoke: bool,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The `fission` binary to run [default: `fission` next to this executable].
    #[arg(long, value_name = "PATH")]
    fission: Option<PathBuf>,
    /// Keep the server's temporary data directory (with `server.log`) after the run.
    #[arg(long)]
    keep_data: bool,
    /// Extra argument for `fission server` (repeatable), e.g. `--server-arg=--sandbox=none`.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Instead of the benchmarks: a soak run at 80 % of the measured maximum throughput across
    /// Node.js and Python functions, killing one instance half-way (exit 1 on any error beyond
    /// the killed instance's in-flight requests).
    #[arg(long)]
    soak: bool,
    /// Instead of the benchmarks: the Python zygote against an interpreter per instance (two
    /// servers, `--python-zygote=on|off`, calls interleaved): pool-hit and empty-pool cold
    /// starts, PSS of idle specialized instances.
    #[arg(long, conflicts_with = "soak")]
    zygote: bool,
    /// Length of the soak run.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, requires = "soak")]
    seconds: u64,
    /// Instead of the benchmarks: the density run — N Node.js and M Python functions (`N` alone:
    /// N of each) made warm at once, their memory and second-call latency (issue #15). Stops
    /// adding functions when MemAvailable falls below --floor-mib.
    #[arg(long, value_name = "N[,M]", value_parser = density::parse_counts, conflicts_with = "soak")]
    density: Option<(usize, usize)>,
    /// The density run's memory floor: no function is added while MemAvailable is below it.
    #[arg(long, value_name = "MIB", default_value_t = 3072, requires = "density")]
    floor_mib: u64,
    /// How long the density run lets every function idle before reading memory.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 20,
        requires = "density"
    )]
    idle_secs: u64,
}

/// How much of everything.
#[derive(Debug, Clone)]
struct Plan {
    /// Fresh functions per runtime for the pool-hit cold start.
    cold_n: usize,
    /// Fresh-interpreter baseline runs per runtime.
    fresh_n: usize,
    /// Pool size of the environments used for cold starts.
    poolsize: u32,
    /// Concurrent first calls in the empty-pool burst, and how many bursts.
    burst_k: usize,
    burst_rounds: usize,
    /// Sequential warm calls per target, in blocks of `warm_block`.
    warm_n: usize,
    warm_block: usize,
    /// Throughput: connections and seconds per target.
    tp_conns: usize,
    tp_secs: f64,
    /// Create → first call runs per runtime.
    create_n: usize,
    /// Server starts timed (the last one is the server used for the rest).
    starts: usize,
    /// Quiet time after a pool refilled, before a timed call.
    settle: Duration,
}

impl Plan {
    fn full() -> Self {
        Self {
            cold_n: 50,
            fresh_n: 10,
            poolsize: 3,
            burst_k: 4,
            burst_rounds: 5,
            warm_n: 2000,
            warm_block: 100,
            tp_conns: 16,
            tp_secs: 5.0,
            create_n: 10,
            starts: 5,
            settle: Duration::from_millis(50),
        }
    }

    fn smoke() -> Self {
        Self {
            cold_n: 5,
            fresh_n: 3,
            poolsize: 3,
            burst_k: 4,
            burst_rounds: 1,
            warm_n: 200,
            warm_block: 50,
            tp_conns: 16,
            tp_secs: 1.0,
            create_n: 3,
            starts: 2,
            settle: Duration::from_millis(30),
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("fission-bench: {}", msg.as_ref());
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fission-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Dropping the `run` future (done, failed or interrupted) drops the process guards: the
    // server gets SIGTERM and our own runtimes are killed.
    let result = rt.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    drop(rt);
    match result {
        Ok(report) => {
            print!("{report}");
            if let Some(out) = &args.out {
                if let Err(e) = std::fs::write(out, &report) {
                    eprintln!("fission-bench: cannot write {}: {e}", out.display());
                    return ExitCode::from(1);
                }
                progress(format!("report written to {}", out.display()));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fission-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Everything measured, then turned into rows.
#[derive(Default)]
struct Results {
    starts_reported: Vec<f64>,
    starts_line: Vec<f64>,
    starts_healthz: Vec<f64>,
    rss_idle: f64,
    rss_one_env_server: f64,
    rss_one_env_instances: f64,
    rss_one_env_count: usize,
    rss_node_instance: f64,
    rss_python_instance: f64,
    rss_end: f64,
    fresh: Vec<(Lang, Vec<FreshStart>)>,
    /// Own idle generic instance: (specialize, first request) in ms.
    pooled: Vec<(Lang, Vec<(f64, f64)>)>,
    /// Router overhead (excluding the upstream wait) during the warm phase.
    warm_overhead: SumCount,
    cold: Vec<(Lang, ColdResult)>,
    create: Vec<(Lang, CreateResult)>,
    burst: Vec<(Lang, Vec<f64>)>,
    warm_router: Vec<f64>,
    warm_direct: Vec<f64>,
    /// A bare Node `http.createServer` hello, and nginx in front of it (same client, same run).
    warm_bare: Vec<f64>,
    warm_nginx: Vec<f64>,
    /// Why the anchors were not measured.
    anchors_skipped: Option<String>,
    tp_router: f64,
    tp_direct: f64,
    tp_errors: u64,
    tp_conns: usize,
    quiet_timeouts: usize,
}

#[derive(Default)]
struct ColdResult {
    samples: Vec<f64>,
    failures: Vec<String>,
    /// Executor-side specialization (take instance → runtime accepted), over the run.
    spec: SumCount,
    /// Router `fission_function_overhead_seconds` over the run.
    overhead: SumCount,
}

#[derive(Default)]
struct CreateResult {
    samples: Vec<f64>,
    /// Create → the last 404 the router answered for the function (0 when none).
    last_404: Vec<f64>,
    /// 404 answers in all.
    n_404: usize,
    failures: Vec<String>,
}

struct Bench {
    paths: Paths,
    plan: Plan,
    api: Api,
    metrics: Metrics,
    router: Conn,
    server_pid: u32,
    seq: usize,
    /// Waits for a quiet machine that timed out.
    quiet_timeouts: usize,
}

async fn run(args: &Args) -> Result<String> {
    let paths = Paths::discover(args.fission.clone())?;
    if args.soak {
        return soak::run(&paths, &args.server_args, args.keep_data, args.seconds).await;
    }
    if args.zygote {
        return zygote::run(&paths, &args.server_args, args.smoke).await;
    }
    if let Some((node, python)) = args.density {
        let plan = density::DensityPlan {
            node,
            python,
            floor_bytes: args.floor_mib << 20,
            idle: Duration::from_secs(args.idle_secs),
        };
        let load_before = report::loadavg();
        let mut command = format!(
            "cargo run --release -p fission-bench -- --density {node},{python} --floor-mib {} --idle-secs {}",
            args.floor_mib, args.idle_secs
        );
        for a in &args.server_args {
            command.push_str(&format!(" --server-arg={a}"));
        }
        let extra = vec![
            format!("fission binary: {}", binary_info(&paths.fission)),
            format!("runtimes: {}", versions(&paths)),
            format!("load average before the run: {load_before}"),
        ];
        let mut s = report::machine_header(&command, &extra);
        s.push_str(&density::run(&paths, &args.server_args, args.keep_data, plan).await?);
        return Ok(s);
    }
    let paths_for_density = paths.clone();
    let plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    let versions = versions(&paths);
    progress(format!(
        "fission: {}; runtimes: {}",
        paths.fission.display(),
        paths.environments.display()
    ));
    let background = report::background_cpu(Duration::from_secs(1)).unwrap_or(f64::NAN);
    let load_before = report::loadavg();
    if background > 0.2 {
        progress(format!(
            "warning: the machine is busy ({:.0}% CPU used by other processes); numbers will be noisy",
            background * 100.0
        ));
    }
    let t_all = Instant::now();
    let busy0 = report::machine_busy_ticks();
    let own0 = report::own_ticks();
    let mut res = Results::default();

    // 6. Server start → ready.
    progress(format!("server start → ready ×{}", plan.starts));
    let mut server = None;
    for i in 0..plan.starts.max(1) {
        let last = i + 1 == plan.starts.max(1);
        let s = Server::start(
            &paths.fission,
            &paths.environments,
            &args.server_args,
            last && args.keep_data,
        )?;
        res.starts_reported.push(s.reported_ready_ms);
        res.starts_line
            .push(s.spawn_to_ready_line.as_secs_f64() * 1e3);
        res.starts_healthz
            .push(s.spawn_to_healthz.as_secs_f64() * 1e3);
        if last {
            server = Some(s);
        } else {
            drop(s);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let server = server.context("no server")?;
    let data_dir = server
        .log_path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let data_fs = report::filesystem_of(&data_dir);
    let sandbox = server
        .started_field("sandbox")
        .unwrap_or_else(|| "not reported".into());
    let binary = binary_info(&paths.fission);
    if args.keep_data {
        progress(format!("server log: {}", server.log_path.display()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    res.rss_idle = procs::rss_bytes(server.pid()).unwrap_or(0) as f64;

    let mut b = Bench {
        api: Api::connect(server.controller).await?,
        metrics: Metrics::connect(server.router).await?,
        router: Conn::connect(server.router).await?,
        server_pid: server.pid(),
        paths,
        plan,
        seq: 0,
        quiet_timeouts: 0,
    };
    let outcome = b.measure(&server, &mut res).await;
    res.rss_end = procs::rss_bytes(server.pid()).unwrap_or(0) as f64;
    let notes_extra = match &outcome {
        Ok(()) => None,
        Err(e) => Some(format!(
            "{e:#}\n\nserver log (tail):\n{}",
            server.log_tail()
        )),
    };
    drop(b);
    drop(server);
    if let Some(e) = notes_extra {
        bail!("{e}");
    }
    let wall = t_all.elapsed().as_secs_f64();
    progress(format!("done in {wall:.1} s"));
    // CPU the rest of the machine used meanwhile (everything we started is waited for by now).
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let others = match (
        busy0,
        report::machine_busy_ticks(),
        own0,
        report::own_ticks(),
    ) {
        (Some(b0), Some(b1), Some(o0), Some(o1)) => {
            let other_ticks = (b1 - b0) as f64 - (o1 - o0) as f64;
            (other_ticks.max(0.0) / 100.0) / (wall * ncpu)
        }
        _ => f64::NAN,
    };
    if others > 0.1 {
        progress(format!(
            "warning: other processes used {:.0}% of the machine's CPU during the run; numbers are noisy",
            others * 100.0
        ));
    }

    let mut command = String::from("cargo run --release -p fission-bench --");
    if args.smoke {
        command.push_str(" --smoke");
    }
    for a in &args.server_args {
        command.push_str(&format!(" --server-arg={a}"));
    }
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", out.display()));
    }
    let extra = vec![
        format!(
            "fission binary: {binary}; instance isolation reported by the server: `sandbox={sandbox}`"
        ),
        format!("runtimes: {versions}"),
        format!("server data directory: a fresh temporary directory on {data_fs}"),
        format!(
            "background before the run: {:.0}% CPU busy over 1 s, load average {load_before}; during the run ({wall:.0} s) \
             other processes used {:.0}% of the machine's CPU",
            background * 100.0,
            others * 100.0
        ),
    ];
    let mut report = render(&res, &command, &extra, args.smoke);
    if args.smoke {
        // The density run at a few functions, so CI runs its code path too.
        let plan = density::DensityPlan::smoke();
        progress(format!(
            "density (smoke): {} Node + {} Python functions",
            plan.node, plan.python
        ));
        report.push_str(&density::run(&paths_for_density, &args.server_args, false, plan).await?);
    }
    Ok(report)
}

/// Modification time of the binary and the checkout's commit (with `-dirty` for local changes).
fn binary_info(bin: &std::path::Path) -> String {
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| "?".into());
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain", "--untracked-files=no"]),
    ) {
        (Some(c), Some(st)) if !st.is_empty() => format!("{c}-dirty"),
        (Some(c), _) => c,
        _ => "unknown".into(),
    };
    format!("built {built}, work tree at commit {commit}")
}

fn versions(paths: &Paths) -> String {
    let v = |bin: &std::path::Path| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| {
                let s = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&s).trim().to_owned()
            })
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "{} ({}), {} ({})",
        v(&paths.node),
        paths.node.display(),
        v(&paths.python),
        paths.python.display()
    )
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Bench {
    fn fresh_name(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}", self.seq)
    }

    fn env_name(lang: Lang) -> &'static str {
        match lang {
            Lang::Node => "nodejs",
            Lang::Python => "python",
        }
    }

    fn runtime_label(lang: Lang) -> &'static str {
        match lang {
            Lang::Node => "runtime=\"nodejs\"",
            Lang::Python => "runtime=\"python\"",
        }
    }

    async fn measure(&mut self, server: &Server, res: &mut Results) -> Result<()> {
        let poolsize = self.plan.poolsize;
        let pool_timeout = Duration::from_secs(60);

        // 6b. Memory with one environment, then per-instance sizes with both.
        progress(format!("memory: environment nodejs, poolsize {poolsize}"));
        self.api.create_env("nodejs", Lang::Node, poolsize).await?;
        self.metrics
            .wait_pool_full("nodejs", poolsize, pool_timeout)
            .await?;
        self.wait_quiet().await;
        res.rss_one_env_server = procs::rss_bytes(server.pid()).unwrap_or(0) as f64;
        let kids = procs::descendants(server.pid());
        res.rss_one_env_count = procs::children(server.pid()).len();
        res.rss_one_env_instances = kids
            .iter()
            .filter_map(|&p| procs::rss_bytes(p))
            .sum::<u64>() as f64;
        self.api
            .create_env("python", Lang::Python, poolsize)
            .await?;
        self.metrics
            .wait_pool_full("python", poolsize, pool_timeout)
            .await?;
        self.wait_quiet().await;
        // An instance = one child of the server with everything under it (a sandbox wrapper
        // and the interpreter, or just the interpreter).
        let per = |needle: &str| {
            let rss: Vec<f64> = procs::children(server.pid())
                .into_iter()
                .map(|c| {
                    std::iter::once(c)
                        .chain(procs::descendants(c))
                        .collect::<Vec<u32>>()
                })
                .filter(|tree| tree.iter().any(|&p| procs::cmdline(p).contains(needle)))
                .map(|tree| {
                    tree.iter()
                        .filter_map(|&p| procs::rss_bytes(p))
                        .sum::<u64>() as f64
                })
                .collect();
            if rss.is_empty() {
                f64::NAN
            } else {
                rss.iter().sum::<f64>() / rss.len() as f64
            }
        };
        res.rss_node_instance = per("server.js");
        res.rss_python_instance = per("server.py");

        // 1. Baseline: fresh interpreter → first answer.
        self.wait_quiet().await;
        for lang in [Lang::Node, Lang::Python] {
            progress(format!(
                "fresh {} interpreter cold start ×{}",
                lang.label(),
                self.plan.fresh_n
            ));
            let mut v = Vec::new();
            for _ in 0..self.plan.fresh_n {
                v.push(Runtime::fresh_start(&self.paths, lang).await?);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            res.fresh.push((lang, v));
            progress(format!(
                "own idle generic {} instance: specialize + first request ×{}",
                lang.label(),
                self.plan.fresh_n
            ));
            let mut v = Vec::new();
            for _ in 0..self.plan.fresh_n {
                let (spec, first) = Runtime::pooled_start(&self.paths, lang).await?;
                v.push((ms_of(spec), ms_of(first)));
            }
            res.pooled.push((lang, v));
        }

        // 1. Pool-hit cold start.
        for lang in [Lang::Node, Lang::Python] {
            progress(format!(
                "pool-hit cold start, {} ×{}",
                lang.label(),
                self.plan.cold_n
            ));
            let r = self.pool_hit(lang).await?;
            res.cold.push((lang, r));
        }

        // 5. Create → first call.
        for lang in [Lang::Node, Lang::Python] {
            progress(format!(
                "create → first call, {} ×{}",
                lang.label(),
                self.plan.create_n
            ));
            let r = self.create_first_call(lang).await?;
            res.create.push((lang, r));
        }

        // 2. Empty pool: a burst beyond a pool of one.
        for lang in [Lang::Node, Lang::Python] {
            progress(format!(
                "empty-pool burst, {}: {} concurrent first calls ×{}",
                lang.label(),
                self.plan.burst_k,
                self.plan.burst_rounds
            ));
            let r = self.burst(lang).await?;
            res.burst.push((lang, r));
        }

        // 3 + 4. Warm latency and throughput, router vs direct.
        progress(format!(
            "warm latency, {} sequential calls each",
            self.plan.warm_n
        ));
        self.warm_and_throughput(res).await?;
        res.quiet_timeouts = self.quiet_timeouts;
        Ok(())
    }

    /// Wait for a full pool whose instances finished booting: the gauge reaches poolsize, then
    /// the server and its instances stay (almost) idle for 20 ms, then a short settle time.
    async fn pool_ready(&mut self, env: &str, poolsize: u32) -> Result<()> {
        self.metrics
            .wait_pool_full(env, poolsize, Duration::from_secs(60))
            .await?;
        self.wait_quiet().await;
        tokio::time::sleep(self.plan.settle).await;
        Ok(())
    }

    async fn wait_quiet(&mut self) {
        let quiet = procs::wait_quiet(
            self.server_pid,
            Duration::from_millis(20),
            Duration::from_millis(1),
            Duration::from_secs(10),
        )
        .await;
        if quiet.is_none() {
            self.quiet_timeouts += 1;
        }
    }

    async fn pool_hit(&mut self, lang: Lang) -> Result<ColdResult> {
        let env = Self::env_name(lang);
        let n = self.plan.cold_n;
        let names: Vec<String> = (0..n)
            .map(|_| self.fresh_name(&format!("cold-{}", env)))
            .collect();
        for name in &names {
            self.api
                .create_function(name, env, lang, Limits::default())
                .await?;
        }
        // Routes are rebuilt from the change feed within milliseconds; make sure no timed call
        // races that.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let spec_label = [Self::runtime_label(lang), "outcome=\"success\""];
        let overhead_label = [format!("name=\"cold-{env}-")];
        let overhead_label: Vec<&str> = overhead_label.iter().map(String::as_str).collect();
        let spec0 = self
            .metrics
            .histogram("fission_specialization_duration_seconds", &spec_label)
            .await?;
        let over0 = self
            .metrics
            .histogram("fission_function_overhead_seconds", &overhead_label)
            .await?;
        let mut out = ColdResult::default();
        for name in &names {
            self.pool_ready(env, self.plan.poolsize).await?;
            let path = format!("/fission-function/{name}");
            let wall0 = chrono::Utc::now();
            let t0 = Instant::now();
            let r = self.router.get(&path).await;
            let took = ms_of(t0.elapsed());
            if std::env::var_os("FISSION_BENCH_TRACE").is_some() {
                // Wall-clock stamps to line up with the server's log (RUST_LOG=debug).
                progress(format!(
                    "trace {name}: sent {} took {took:.3} ms",
                    wall0.format("%H:%M:%S%.6f")
                ));
            }
            match r {
                Ok(r) if r.status == 200 && r.body.starts_with(b"Hello, world!") => {
                    out.samples.push(took)
                }
                Ok(r) => out
                    .failures
                    .push(format!("{name}: {} {}", r.status, r.text().trim())),
                Err(e) => out.failures.push(format!("{name}: {e:#}")),
            }
            self.api.delete_function(name).await?;
        }
        let spec1 = self
            .metrics
            .histogram("fission_specialization_duration_seconds", &spec_label)
            .await?;
        let over1 = self
            .metrics
            .histogram("fission_function_overhead_seconds", &overhead_label)
            .await?;
        out.spec = spec1.minus(spec0);
        out.overhead = over1.minus(over0);
        if out.samples.is_empty() {
            bail!(
                "no pool-hit cold start of {} succeeded: {:?}",
                lang.label(),
                out.failures
            );
        }
        Ok(out)
    }

    async fn create_first_call(&mut self, lang: Lang) -> Result<CreateResult> {
        let env = Self::env_name(lang);
        let mut out = CreateResult::default();
        for _ in 0..self.plan.create_n {
            let name = self.fresh_name(&format!("create-{env}"));
            self.pool_ready(env, self.plan.poolsize).await?;
            let path = format!("/fission-function/{name}");
            let t0 = Instant::now();
            self.api
                .create_function(&name, env, lang, Limits::default())
                .await?;
            let mut last_404 = 0.0;
            let result = loop {
                let r = self.router.get(&path).await?;
                if r.status == 404 && r.is_router_error() {
                    last_404 = ms_of(t0.elapsed());
                    out.n_404 += 1;
                    if t0.elapsed() > Duration::from_secs(10) {
                        break Err(format!("{name}: still 404 after 10 s"));
                    }
                    // Not routed yet: try again shortly (blocking sleep: finer than the timer).
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                if r.status == 200 {
                    break Ok(t0.elapsed());
                }
                break Err(format!("{name}: {} {}", r.status, r.text().trim()));
            };
            match result {
                Ok(d) => {
                    out.samples.push(ms_of(d));
                    out.last_404.push(last_404);
                }
                Err(e) => out.failures.push(e),
            }
            self.api.delete_function(&name).await?;
        }
        Ok(out)
    }

    async fn burst(&mut self, lang: Lang) -> Result<Vec<f64>> {
        let env = format!("burst-{}", Self::env_name(lang));
        self.api.create_env(&env, lang, 1).await?;
        let k = self.plan.burst_k;
        let mut samples = Vec::new();
        for _ in 0..self.plan.burst_rounds {
            let names: Vec<String> = (0..k).map(|_| self.fresh_name(&env)).collect();
            for name in &names {
                self.api
                    .create_function(name, &env, lang, Limits::default())
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.pool_ready(&env, 1).await?;
            let mut conns = Vec::new();
            for _ in 0..k {
                conns.push(Conn::connect(self.router.addr()).await?);
            }
            let t0 = Instant::now();
            let mut set = JoinSet::new();
            for (conn, name) in conns.into_iter().zip(&names) {
                let path = format!("/fission-function/{name}");
                let mut conn = conn;
                set.spawn(async move {
                    let r = conn.get(&path).await;
                    (t0.elapsed(), r)
                });
            }
            while let Some(j) = set.join_next().await {
                let (d, r) = j.context("burst task")?;
                match r {
                    Ok(r) if r.status == 200 => samples.push(ms_of(d)),
                    Ok(r) => bail!("burst call answered {}: {}", r.status, r.text().trim()),
                    Err(e) => return Err(e),
                }
            }
            for name in &names {
                self.api.delete_function(name).await?;
            }
        }
        self.api.delete_env(&env).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(samples)
    }

    async fn warm_and_throughput(&mut self, res: &mut Results) -> Result<()> {
        let lang = Lang::Node;
        // One instance behind the router, like the one direct instance: concurrency 1, and
        // enough requests per instance for every load connection.
        let limits = Limits {
            concurrency: 1,
            requests_per_pod: 100,
        };
        self.api
            .create_function("hello", "nodejs", lang, limits)
            .await?;
        self.api.create_route("hello", "/hello", "hello").await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.router.get("/hello").await?;
            if r.status == 200 {
                break;
            }
            if Instant::now() > deadline {
                bail!("/hello answered {}: {}", r.status, r.text().trim());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let direct_rt = Runtime::spawn(&self.paths, lang).await?;
        self.wait_quiet().await;
        let mut direct = Conn::connect(direct_rt.addr).await?;
        direct_rt.specialize(&mut direct, lang, "hello").await?;
        direct.get_ok("/").await?;
        let mut router = Conn::connect(self.router.addr()).await?;
        let anchors = match (anchors::nginx_binary(), std::env::var_os("CI")) {
            (Some(nginx), _) => Some(anchors::Anchors::start(&self.paths.node, &nginx).await?),
            (None, Some(_)) => bail!("nginx is not installed (the warm-path anchor needs it)"),
            (None, None) => {
                res.anchors_skipped = Some("nginx is not installed".into());
                None
            }
        };
        let (mut bare, mut nginx) = match &anchors {
            Some(a) => (
                Some(Conn::connect(a.bare).await?),
                Some(Conn::connect(a.nginx).await?),
            ),
            None => (None, None),
        };

        // Warm-up, then interleaved blocks, rotating which target goes first.
        for _ in 0..300 {
            router.get_ok("/hello").await?;
            direct.get_ok("/").await?;
            if let (Some(b), Some(x)) = (bare.as_mut(), nginx.as_mut()) {
                b.get_ok("/").await?;
                x.get_ok("/").await?;
            }
        }
        let (n, block) = (self.plan.warm_n, self.plan.warm_block.max(1));
        let over0 = self
            .metrics
            .histogram("fission_function_overhead_seconds", &["name=\"hello\""])
            .await?;
        let mut round = 0usize;
        {
            let mut targets: Vec<(&mut Conn, &str, &mut Vec<f64>)> = vec![
                (&mut router, "/hello", &mut res.warm_router),
                (&mut direct, "/", &mut res.warm_direct),
            ];
            if let (Some(b), Some(x)) = (bare.as_mut(), nginx.as_mut()) {
                targets.push((b, "/", &mut res.warm_bare));
                targets.push((x, "/", &mut res.warm_nginx));
            }
            let count = targets.len();
            while targets.iter().any(|(_, _, out)| out.len() < n) {
                for k in 0..count {
                    let (conn, path, out) = &mut targets[(round + k) % count];
                    for _ in 0..block.min(n - out.len().min(n)) {
                        let t0 = Instant::now();
                        let r = conn.get(path).await?;
                        let took = t0.elapsed();
                        if r.status != 200 {
                            bail!("warm call {path} on {} answered {}", conn.addr(), r.status);
                        }
                        out.push(took.as_secs_f64() * 1e6);
                    }
                }
                round += 1;
            }
        }
        drop((bare, nginx));
        if let Some(a) = anchors {
            a.stop().await;
        }
        drop(router);
        let over1 = self
            .metrics
            .histogram("fission_function_overhead_seconds", &["name=\"hello\""])
            .await?;
        res.warm_overhead = over1.minus(over0);

        // Throughput: halves alternate direct / router.
        progress(format!(
            "throughput, {} connections, {} s per target",
            self.plan.tp_conns, self.plan.tp_secs
        ));
        let half = Duration::from_secs_f64(self.plan.tp_secs / 2.0);
        let (mut ok_r, mut ok_d, mut t_r, mut t_d) = (0u64, 0u64, 0f64, 0f64);
        for _ in 0..2 {
            let (ok, err, secs) = load(direct_rt.addr, "/", self.plan.tp_conns, half).await?;
            ok_d += ok;
            t_d += secs;
            res.tp_errors += err;
            let (ok, err, secs) =
                load(self.router.addr(), "/hello", self.plan.tp_conns, half).await?;
            ok_r += ok;
            t_r += secs;
            res.tp_errors += err;
        }
        res.tp_conns = self.plan.tp_conns;
        res.tp_direct = ok_d as f64 / t_d;
        res.tp_router = ok_r as f64 / t_r;
        drop(direct);
        direct_rt.kill().await;
        Ok(())
    }
}

/// Closed-loop keep-alive load: `conns` connections, each sending the next request when the
/// previous answer is read. Returns (successes, errors, seconds).
async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    conns: usize,
    dur: Duration,
) -> Result<(u64, u64, f64)> {
    let mut cs = Vec::new();
    for _ in 0..conns {
        cs.push(Conn::connect(addr).await?);
    }
    // Short warm-up on every connection.
    for c in &mut cs {
        c.get_ok(path).await?;
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = JoinSet::new();
    for mut c in cs {
        let path = path.to_owned();
        set.spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                match c.get(&path).await {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err)
        });
    }
    let (mut ok, mut err) = (0, 0);
    while let Some(j) = set.join_next().await {
        let (o, e) = j.context("load task")?;
        ok += o;
        err += e;
    }
    Ok((ok, err, start.elapsed().as_secs_f64()))
}

fn render(res: &Results, command: &str, extra: &[String], smoke: bool) -> String {
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let fresh_of = |lang: Lang| -> Option<(Summary, Summary, Summary)> {
        let v = &res.fresh.iter().find(|(l, _)| *l == lang)?.1;
        let first: Vec<f64> = v.iter().map(|f| ms_of(f.first_response)).collect();
        let listen: Vec<f64> = v.iter().map(|f| ms_of(f.listening)).collect();
        let spec: Vec<f64> = v
            .iter()
            .map(|f| ms_of(f.specialized - f.listening))
            .collect();
        Some((summarize(&first), summarize(&listen), summarize(&spec)))
    };

    // 1. Pool-hit cold start.
    for (lang, r) in &res.cold {
        let s = summarize(&r.samples);
        let (fresh, listen, spec) =
            fresh_of(*lang).unwrap_or((summarize(&[]), summarize(&[]), summarize(&[])));
        let (t50, t99) = match lang {
            Lang::Node => (5.0, 15.0),
            Lang::Python => (3.0, 10.0),
        };
        let l = lang.label();
        rows.push(
            Row::new(
                format!("Pool-hit cold start, {l}: p50 (n = {})", s.n),
                ms(s.p50),
            )
            .baseline(
                format!("fresh interpreter p50 {} (n = {})", ms(fresh.p50), fresh.n),
                ratio(s.p50, fresh.p50),
            )
            .target(format!("≤ {t50} ms"), s.p50, Target::AtMost(t50)),
        );
        rows.push(
            Row::new(format!("Pool-hit cold start, {l}: p99"), ms(s.p99))
                .baseline(
                    format!("fresh interpreter p99 {}", ms(fresh.p99)),
                    ratio(s.p99, fresh.p99),
                )
                .target(format!("≤ {t99} ms"), s.p99, Target::AtMost(t99)),
        );
        rows.push(
            Row::new(
                format!("Pool-hit cold start, {l}: min / max"),
                format!("{} / {}", ms(s.min), ms(s.max)),
            )
            .baseline(
                format!("fresh min / max {} / {}", ms(fresh.min), ms(fresh.max)),
                "—",
            ),
        );
        let pooled = res
            .pooled
            .iter()
            .find(|(x, _)| x == lang)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let pooled_total = summarize(&pooled.iter().map(|(a, b)| a + b).collect::<Vec<_>>());
        let pooled_spec = summarize(&pooled.iter().map(|(a, _)| *a).collect::<Vec<_>>());
        let pooled_first = summarize(&pooled.iter().map(|(_, b)| *b).collect::<Vec<_>>());
        rows.push(
            Row::new(
                format!("Pool-hit floor, {l}: the bench's own idle generic instance, connect + specialize + first request: p50 (n = {})", pooled_total.n),
                ms(pooled_total.p50),
            )
            .baseline(format!("fresh interpreter p50 {}", ms(fresh.p50)), ratio(pooled_total.p50, fresh.p50)),
        );
        let spec_mean = r.spec.mean().map(|v| v * 1e3).unwrap_or(f64::NAN);
        let over_mean = r.overhead.mean().map(|v| v * 1e3).unwrap_or(f64::NAN);
        notes.push(format!(
            "Pool-hit {l}: mean first call {}; of that, executor specialization \
             (`fission_specialization_duration_seconds`, take instance → runtime accepted the code) mean {} over {} \
             specializations; router `fission_function_overhead_seconds` mean {}. Fresh {l} interpreter: \
             spawn → listening p50 {}, specialize p50 {}, first request the rest. The bench's own idle generic \
             {l} instance: specialize p50 {}, first request (new connection) p50 {}; so the server adds about {} to \
             the runtime's own work at p50.{}",
            ms(s.mean),
            ms(spec_mean),
            r.spec.count,
            ms(over_mean),
            ms(listen.p50),
            ms(spec.p50),
            ms(pooled_spec.p50),
            ms(pooled_first.p50),
            ms(s.p50 - pooled_total.p50),
            if r.failures.is_empty() { String::new() } else { format!(" Failed calls: {:?}.", r.failures) }
        ));
    }

    // 2. Empty pool.
    for (lang, v) in &res.burst {
        let s = summarize(v);
        let (fresh, _, _) =
            fresh_of(*lang).unwrap_or((summarize(&[]), summarize(&[]), summarize(&[])));
        let t = match lang {
            Lang::Node => 60.0,
            Lang::Python => 15.0,
        };
        rows.push(
            Row::new(
                format!(
                    "Empty-pool cold start, {}: p50 (poolsize 1, bursts of 4 concurrent first calls, n = {})",
                    lang.label(),
                    s.n
                ),
                ms(s.p50),
            )
            .baseline(format!("fresh interpreter p50 {}", ms(fresh.p50)), ratio(s.p50, fresh.p50))
            .target(format!("≤ {t} ms"), s.p50, Target::AtMost(t)),
        );
        rows.push(
            Row::new(
                format!("Empty-pool cold start, {}: min / max", lang.label()),
                format!("{} / {}", ms(s.min), ms(s.max)),
            )
            .baseline(format!("fresh interpreter max {}", ms(fresh.max)), "—"),
        );
    }

    // 3. Warm latency.
    let wr = summarize(&res.warm_router);
    let wd = summarize(&res.warm_direct);
    rows.push(
        Row::new(
            format!(
                "Warm call via router, keep-alive, Node hello: p50 (n = {})",
                wr.n
            ),
            us(wr.p50),
        )
        .baseline(
            format!("direct to an instance p50 {} (n = {})", us(wd.p50), wd.n),
            ratio(wr.p50, wd.p50),
        ),
    );
    rows.push(
        Row::new("Warm call via router: p99", us(wr.p99))
            .baseline(format!("direct p99 {}", us(wd.p99)), ratio(wr.p99, wd.p99)),
    );
    let add50 = wr.p50 - wd.p50;
    let add99 = wr.p99 - wd.p99;
    let wo = res
        .warm_overhead
        .mean()
        .map(|v| v * 1e6)
        .unwrap_or(f64::NAN);
    notes.push(format!(
        "Warm calls: the router's own `fission_function_overhead_seconds` (time in the router minus the wait for \
         the instance) averaged {} per call over {} calls; the rest of the added latency is the second loopback \
         hop (router → instance) and the scheduling of one more process on 2 cores.",
        us(wo),
        res.warm_overhead.count
    ));
    rows.push(
        Row::new("Router added latency: p50 (router − direct)", us(add50)).target(
            "≤ 50 µs",
            add50,
            Target::AtMost(50.0),
        ),
    );
    rows.push(
        Row::new("Router added latency: p99 (router − direct)", us(add99)).target(
            "≤ 500 µs",
            add99,
            Target::AtMost(500.0),
        ),
    );
    if res.warm_nginx.is_empty() {
        notes.push(format!(
            "Warm-path anchors (bare Node, nginx → bare Node) not measured: {}.",
            res.anchors_skipped.as_deref().unwrap_or("no samples")
        ));
    } else {
        let wb = summarize(&res.warm_bare);
        let wn = summarize(&res.warm_nginx);
        rows.push(
            Row::new(
                "Anchor: bare Node `http.createServer` hello, warm p50 / p99",
                format!("{} / {}", us(wb.p50), us(wb.p99)),
            )
            .baseline(
                format!("fission-rs p50 {}", us(wr.p50)),
                ratio(wr.p50, wb.p50),
            ),
        );
        rows.push(
            Row::new(
                "Anchor: nginx (1 worker, keep-alive upstream) → bare Node, warm p50 / p99",
                format!("{} / {}", us(wn.p50), us(wn.p99)),
            )
            .baseline(
                format!("fission-rs p50 {}", us(wr.p50)),
                ratio(wr.p50, wn.p50),
            ),
        );
        let gap = wr.p50 - wn.p50;
        rows.push(
            Row::new(
                "Whole warm path (router + runtime) − nginx → bare Node: p50",
                us(gap),
            )
            .target("≤ 25 µs", gap, Target::AtMost(25.0)),
        );
    }

    // 4. Throughput.
    let tp_ratio = res.tp_router / res.tp_direct;
    rows.push(
        Row::new(
            format!(
                "Throughput via router, {} keep-alive connections, Node hello (rpp 100, concurrency 1)",
                res.tp_conns
            ),
            rate(res.tp_router),
        )
        .baseline(format!("direct {}", rate(res.tp_direct)), ratio(res.tp_router, res.tp_direct))
        .target("≥ 0.8× direct", tp_ratio, Target::AtLeast(0.8)),
    );

    // 5. Create → first call.
    for (lang, r) in &res.create {
        let s = summarize(&r.samples);
        let cold = res
            .cold
            .iter()
            .find(|(l, _)| l == lang)
            .map(|(_, c)| summarize(&c.samples).p50)
            .unwrap_or(f64::NAN);
        rows.push(
            Row::new(
                format!(
                    "Create function (API) → first call, {}: p50 (n = {})",
                    lang.label(),
                    s.n
                ),
                ms(s.p50),
            )
            .baseline(
                format!("pool-hit cold start p50 {}", ms(cold)),
                ratio(s.p50, cold),
            )
            .target("≤ 50 ms", s.p50, Target::AtMost(50.0)),
        );
        let last = summarize(&r.last_404);
        notes.push(format!(
            "Create → first call, {}: p50 {} / max {} (creation = POST package + POST function, each a durable \
             store commit, then the call retried while the router answered 404: {} such answers in {} runs, the \
             latest {} after the start of a run).{}",
            lang.label(),
            ms(s.p50),
            ms(s.max),
            r.n_404,
            s.n,
            ms(last.max),
            if r.failures.is_empty() { String::new() } else { format!(" Failures: {:?}.", r.failures) }
        ));
    }

    // 6. Start and memory.
    let rep = summarize(&res.starts_reported);
    let line = summarize(&res.starts_line);
    let hz = summarize(&res.starts_healthz);
    rows.push(
        Row::new(
            format!(
                "Server start → ready, self-reported (\"ready in N ms\"): p50 (n = {})",
                rep.n
            ),
            ms(rep.p50),
        )
        .target("≤ 100 ms", rep.p50, Target::AtMost(100.0)),
    );
    rows.push(
        Row::new(
            "Server spawn → ready line on stdout (wall): p50",
            ms(line.p50),
        )
        .target("≤ 100 ms", line.p50, Target::AtMost(100.0)),
    );
    rows.push(
        Row::new(
            "Server spawn → first `/healthz` 200 (wall): p50",
            ms(hz.p50),
        )
        .target("≤ 100 ms", hz.p50, Target::AtMost(100.0)),
    );
    rows.push(
        Row::new("Idle RSS, server, no environments", mib(res.rss_idle)).target(
            "≤ 30 MB",
            res.rss_idle / 1e6,
            Target::AtMost(30.0),
        ),
    );
    rows.push(Row::new(
        "RSS with one environment (nodejs, poolsize 3): server / instances",
        format!(
            "{} / {} in {} instances",
            mib(res.rss_one_env_server),
            mib(res.rss_one_env_instances),
            res.rss_one_env_count
        ),
    ));
    rows.push(Row::new(
        "RSS per generic instance: Node / Python",
        format!(
            "{} / {}",
            mib(res.rss_node_instance),
            mib(res.rss_python_instance)
        ),
    ));
    rows.push(Row::new(
        "Server RSS at the end of the run",
        mib(res.rss_end),
    ));

    let mut s = report::machine_header(command, extra);
    if smoke {
        s.push_str("- **smoke run**: few samples, p99 of small samples is the maximum; not for comparison\n");
    }
    s.push_str("\n## Measured\n\n");
    s.push_str(&report::table(&rows));
    s.push_str("\n## Fission's published figures (quoted, not measured here)\n\n");
    s.push_str(
        "Different hardware and setup (Kubernetes/kind, pods, networking); for orientation only, \
         not comparable row by row.\n\n",
    );
    s.push_str(&report::anchors());
    s.push_str("\n## Method and breakdown\n\n");
    let method = [
        "Server: `target/release/fission server` on free loopback ports, temporary data directory, started by the bench; \
         stopped with SIGTERM at the end.".to_owned(),
        "Timed calls use a hyper HTTP/1.1 client on a single-threaded tokio runtime; cold-start calls go over an \
         already open keep-alive connection to the router (`/fission-function/<name>`), so connection set-up is not counted.".to_owned(),
        "Pool-hit cold start: every function is new (own package); before each timed call the environment's \
         `fission_pool_ready_instances` equals its poolsize (3) plus a short quiet time; the function is deleted after its call.".to_owned(),
        "Fresh-interpreter baseline: the bench spawns the loader itself (`node environments/nodejs/server.js` / \
         `python3 -I -S environments/python/server.py`, clean environment, `PORT`), waits for its \"listening\" line, \
         POSTs `/v2/specialize` and times the first answer, spawn included.".to_owned(),
        "Empty-pool cold start: environment with poolsize 1, 4 new functions called at once over 4 connections; \
         one call can take the pooled instance, the others need new instances.".to_owned(),
        "Warm latency: same hello code; router = `GET /hello` (an HTTPTrigger) over keep-alive, direct = the bench's own \
         specialized instance over keep-alive; sequential, interleaved blocks, after 300 warm-up calls each. \
         Added latency = difference of the percentiles.".to_owned(),
        format!(
            "Throughput: closed loop, {} keep-alive connections on one client thread, against one Node instance each way \
             (router function: requestsPerPod 100, concurrency 1), halves alternating direct/router; errors: {}.",
            res.tp_conns,
            res.tp_errors
        ),
        "Percentiles are nearest-rank: with n = 50, p99 is the largest sample.".to_owned(),
        format!(
            "\"Pool warm again\" = `fission_pool_ready_instances` equals poolsize **and** the server with all its instances \
             used < 1 ms CPU over 20 ms: the gauge counts an instance as ready as soon as it is spawned on its pre-bound \
             socket, while Node/Python still boot for ~80 ms of CPU. Waits for quiet that timed out (10 s): {}.",
            res.quiet_timeouts
        ),
    ];
    for m in method.iter().chain(notes.iter()) {
        s.push_str(&format!("- {m}\n"));
    }
    s
}
