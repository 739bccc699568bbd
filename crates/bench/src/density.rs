//! `fission-bench --density N[,M]`: how many warm, specialized, idle functions one machine
//! holds while each still answers its next call quickly (issue #15).
//!
//! A fresh server gets N Node.js and M Python functions, each with its own code and route,
//! created and called once (a specialization each), alternating the runtimes. Before every
//! function the bench reads `MemAvailable` and stops adding when it is below the floor: the
//! machine is shared, and the OOM killer would pick someone else's build. Once every function
//! has idled, it reads the memory of the server's process tree (`smaps_rollup`: PSS, RSS,
//! anonymous) per instance and per runtime, then calls every function once more in random
//! order through the router: the second-call latency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hyper::StatusCode;

use crate::api::{Api, Limits, Metrics};
use crate::http::Conn;
use crate::procs::{self, Lang, Paths, Server};
use crate::report::{self, Row, Target};
use crate::stats::{mib, ms, summarize};

/// Warm pool per environment while functions are added: enough to keep specializations off
/// the interpreter's start-up, few enough not to count in the per-instance figures.
const POOLSIZE: u32 = 2;
/// Longest the first call of one function may take, retries included.
const FIRST_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct DensityPlan {
    pub node: usize,
    pub python: usize,
    /// Stop adding functions when `MemAvailable` is below this many bytes.
    pub floor_bytes: u64,
    /// Idle time after the last first call, before memory is read.
    pub idle: Duration,
}

impl DensityPlan {
    /// The few functions the smoke bench adds: the floor only guards against a machine that
    /// is already out of memory.
    pub fn smoke() -> Self {
        Self {
            node: 3,
            python: 3,
            floor_bytes: 256 << 20,
            idle: Duration::from_secs(2),
        }
    }
}

/// `N` or `N,M` (Node, Python).
pub fn parse_counts(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{v}' is not a count (expected N or N,M, e.g. 1000,1000)"))
    };
    match s.split_once(',') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("fission-bench: density: {}", msg.as_ref());
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The fields of `/proc/<pid>/smaps_rollup` the report uses, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rollup {
    pub rss: u64,
    pub pss: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
}

impl std::ops::AddAssign for Rollup {
    fn add_assign(&mut self, o: Self) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.pss_anon += o.pss_anon;
        self.pss_file += o.pss_file;
    }
}

/// `smaps_rollup` of one process (None when it is gone or unreadable).
pub fn rollup(pid: u32) -> Option<Rollup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut r = Rollup::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(kb)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
        else {
            continue;
        };
        let b = kb * 1024;
        match key {
            "Rss:" => r.rss = b,
            "Pss:" => r.pss = b,
            "Pss_Anon:" => r.pss_anon = b,
            "Pss_File:" => r.pss_file = b,
            _ => {}
        }
    }
    Some(r)
}

/// One instance: a child of the server with everything under it.
#[derive(Debug, Default)]
struct InstanceMem {
    lang: Option<Lang>,
    /// The whole tree (sandbox helpers and interpreter).
    total: Rollup,
    /// The sandbox's own processes (bubblewrap), included in `total`.
    helpers: Rollup,
    helper_count: usize,
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn instances_of(server: u32) -> Vec<InstanceMem> {
    procs::children(server)
        .into_iter()
        .map(|c| {
            let mut m = InstanceMem::default();
            for p in std::iter::once(c).chain(procs::descendants(c)) {
                let Some(r) = rollup(p) else { continue };
                m.total += r;
                if comm(p) == "bwrap" {
                    m.helpers += r;
                    m.helper_count += 1;
                } else {
                    let cmd = procs::cmdline(p);
                    if cmd.contains("server.js") {
                        m.lang = Some(Lang::Node);
                    } else if cmd.contains("server.py") {
                        m.lang = Some(Lang::Python);
                    }
                }
            }
            m
        })
        .filter(|m| m.lang.is_some())
        .collect()
}

/// Why the bench stopped adding functions.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Done,
    Floor { available: u64 },
}

#[derive(Debug)]
struct Func {
    name: String,
    lang: Lang,
}

impl Func {
    fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// The body it answers: its own name, so a call that reached another function's
    /// instance is caught.
    fn expect(&self) -> String {
        format!("{}\n", self.name)
    }

    fn code(&self) -> String {
        match self.lang {
            Lang::Node => format!(
                "module.exports = async function(context) {{\n    return {{ status: 200, body: \"{}\\n\" }};\n}}\n",
                self.name
            ),
            Lang::Python => format!("def main():\n    return '{}\\n'\n", self.name),
        }
    }
}

/// What a run measured.
struct Measured {
    plan: DensityPlan,
    funcs: Vec<Func>,
    stop: Stop,
    first_calls: HashMap<&'static str, Vec<f64>>,
    second: Vec<(Lang, f64)>,
    second_failures: Vec<String>,
    avail_before: u64,
    avail_base: u64,
    avail_after: u64,
    avail_min: u64,
    server_rss: u64,
    server: Rollup,
    tree: Rollup,
    instances: Vec<InstanceMem>,
    fill_secs: f64,
}

/// Call `f` once through the router until it answers with its own body; returns the latency
/// of the successful call (ms). 404 (route not seen yet) and 429/503 (admission) are retried.
async fn first_call(router: &mut Conn, f: &Func) -> Result<f64> {
    let t0 = Instant::now();
    let path = f.path();
    loop {
        let t = Instant::now();
        let r = router.get(&path).await?;
        let took = t.elapsed().as_secs_f64() * 1e3;
        match r.status {
            StatusCode::OK if r.text() == f.expect() => return Ok(took),
            StatusCode::OK => bail!(
                "{path} answered another function's body: {:?}",
                r.text().trim()
            ),
            StatusCode::NOT_FOUND
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
                if t0.elapsed() < FIRST_CALL_TIMEOUT =>
            {
                let wait = r
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_millis(20));
                tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
            }
            s => bail!("{path} answered {s}: {}", r.text().trim()),
        }
    }
}

/// A small xorshift for the call order (no need for a crate to shuffle a list).
fn shuffle<T>(v: &mut [T]) {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
        | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Run the density measurement on a fresh server; returns the report section (Markdown).
pub async fn run(
    paths: &Paths,
    server_args: &[String],
    keep_data: bool,
    plan: DensityPlan,
) -> Result<String> {
    let avail_before = mem_available().context("cannot read MemAvailable from /proc/meminfo")?;
    let mut args = server_args.to_vec();
    // The default cap (memory / 48 MiB) is what this run measures past.
    if !args.iter().any(|a| a.starts_with("--max-instances")) {
        args.push(format!(
            "--max-instances={}",
            plan.node + plan.python + 2 * POOLSIZE as usize + 16
        ));
    }
    let mut server = Server::start(&paths.fission, &paths.environments, &args, keep_data)?;
    server.set_stop_timeout(Duration::from_secs(
        60 + (plan.node + plan.python) as u64 / 20,
    ));
    let outcome = measure(&server, plan.clone(), avail_before).await;
    let tail = server.log_tail();
    progress("stopping the server");
    drop(server);
    match outcome {
        Ok(m) => Ok(render(&m)),
        Err(e) => Err(e.context(format!("server log (tail):\n{tail}"))),
    }
}

async fn measure(server: &Server, plan: DensityPlan, avail_before: u64) -> Result<Measured> {
    let mut api = Api::connect(server.controller).await?;
    let mut metrics = Metrics::connect(server.router).await?;
    let mut router = Conn::connect(server.router).await?;
    let pid = server.pid();
    for (env, lang) in [("nodejs", Lang::Node), ("python", Lang::Python)] {
        api.create_env(env, lang, POOLSIZE).await?;
    }
    for env in ["nodejs", "python"] {
        metrics
            .wait_pool_full(env, POOLSIZE, Duration::from_secs(60))
            .await?;
    }
    let _ = procs::wait_quiet(
        pid,
        Duration::from_millis(50),
        Duration::from_millis(5),
        Duration::from_secs(10),
    )
    .await;
    let avail_base = mem_available().unwrap_or(0);
    progress(format!(
        "{} Node + {} Python functions; MemAvailable {} (floor {})",
        plan.node,
        plan.python,
        mib(avail_base as f64),
        mib(plan.floor_bytes as f64)
    ));

    let mut funcs: Vec<Func> = Vec::new();
    let mut first_calls: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut stop = Stop::Done;
    let mut avail_min = avail_base;
    let t_fill = Instant::now();
    'fill: for i in 0..plan.node.max(plan.python) {
        for (lang, count, env, prefix) in [
            (Lang::Node, plan.node, "nodejs", "d-node"),
            (Lang::Python, plan.python, "python", "d-py"),
        ] {
            if i >= count {
                continue;
            }
            let available = mem_available().unwrap_or(0);
            avail_min = avail_min.min(available);
            if available < plan.floor_bytes {
                progress(format!(
                    "MemAvailable {} is below the floor: stopping at {} functions",
                    mib(available as f64),
                    funcs.len()
                ));
                stop = Stop::Floor { available };
                break 'fill;
            }
            let f = Func {
                name: format!("{prefix}-{i}"),
                lang,
            };
            api.create_function_with(&f.name, env, &f.code(), Limits::default(), 86_400)
                .await
                .with_context(|| format!("creating {}", f.name))?;
            api.create_route(&f.name, &f.path(), &f.name).await?;
            let took = first_call(&mut router, &f).await?;
            first_calls.entry(lang.label()).or_default().push(took);
            funcs.push(f);
            if funcs.len().is_multiple_of(100) {
                progress(format!(
                    "{} functions warm, MemAvailable {}, {:.0} s",
                    funcs.len(),
                    mib(available as f64),
                    t_fill.elapsed().as_secs_f64()
                ));
            }
        }
    }
    let fill_secs = t_fill.elapsed().as_secs_f64();
    progress(format!(
        "{} functions in {fill_secs:.0} s; idling {:?}",
        funcs.len(),
        plan.idle
    ));
    tokio::time::sleep(plan.idle).await;
    let _ = procs::wait_quiet(
        pid,
        Duration::from_millis(100),
        Duration::from_millis(20),
        Duration::from_secs(30),
    )
    .await;

    progress("reading memory");
    let server_rss = procs::rss_bytes(pid).unwrap_or(0);
    let server_mem = rollup(pid).unwrap_or_default();
    let mut tree = server_mem;
    for p in procs::descendants(pid) {
        if let Some(r) = rollup(p) {
            tree += r;
        }
    }
    let instances = instances_of(pid);
    let avail_after = mem_available().unwrap_or(0);
    avail_min = avail_min.min(avail_after);

    progress(format!("second calls ×{}, random order", funcs.len()));
    let mut order: Vec<usize> = (0..funcs.len()).collect();
    shuffle(&mut order);
    let mut second = Vec::with_capacity(order.len());
    let mut second_failures = Vec::new();
    for i in order {
        let f = &funcs[i];
        let t = Instant::now();
        let r = router.get(&f.path()).await;
        let took = t.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(r) if r.status == StatusCode::OK && r.text() == f.expect() => {
                second.push((f.lang, took));
            }
            Ok(r) => second_failures.push(format!("{}: {} {:?}", f.name, r.status, r.text())),
            Err(e) => second_failures.push(format!("{}: {e:#}", f.name)),
        }
    }
    Ok(Measured {
        plan,
        funcs,
        stop,
        first_calls,
        second,
        second_failures,
        avail_before,
        avail_base,
        avail_after,
        avail_min,
        server_rss,
        server: server_mem,
        tree,
        instances,
        fill_secs,
    })
}

fn render(m: &Measured) -> String {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let count = |l: Lang| m.funcs.iter().filter(|f| f.lang == l).count();
    let (n_node, n_py) = (count(Lang::Node), count(Lang::Python));
    let requested = m.plan.node + m.plan.python;
    let stopped = match m.stop {
        Stop::Done => "all requested".to_owned(),
        Stop::Floor { available } => format!(
            "stopped by the memory floor (MemAvailable {} < {})",
            mib(available as f64),
            mib(m.plan.floor_bytes as f64)
        ),
    };
    rows.push(
        Row::new(
            "Warm specialized functions held at once (Node + Python)",
            format!("{} + {} = {}", n_node, n_py, m.funcs.len()),
        )
        .baseline(
            format!("requested {} + {}", m.plan.node, m.plan.python),
            stopped,
        )
        .target(
            format!("{requested} (all requested)"),
            m.funcs.len() as f64,
            Target::AtLeast(requested as f64),
        ),
    );
    let all: Vec<f64> = m.second.iter().map(|(_, v)| *v).collect();
    let s = summarize(&all);
    rows.push(
        Row::new(
            format!(
                "Second call of every function via router, random order: p50 / p99 / max (n = {})",
                s.n
            ),
            format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.max)),
        )
        .target("p99 ≤ 10 ms", s.p99, Target::AtMost(10.0)),
    );
    for lang in [Lang::Node, Lang::Python] {
        let v: Vec<f64> = m
            .second
            .iter()
            .filter(|(l, _)| *l == lang)
            .map(|(_, v)| *v)
            .collect();
        let s = summarize(&v);
        let f = summarize(
            m.first_calls
                .get(lang.label())
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
        rows.push(
            Row::new(
                format!("Second call, {}: p50 / p99 (n = {})", lang.label(), s.n),
                format!("{} / {}", ms(s.p50), ms(s.p99)),
            )
            .baseline(
                format!(
                    "first call (cold start) p50 / p99 {} / {}",
                    ms(f.p50),
                    ms(f.p99)
                ),
                "—",
            ),
        );
    }
    rows.push(Row::new(
        "Server process: RSS / PSS",
        format!(
            "{} / {}",
            mib(m.server_rss as f64),
            mib(m.server.pss as f64)
        ),
    ));
    let per_fn = |b: u64| {
        if m.funcs.is_empty() {
            f64::NAN
        } else {
            b as f64 / m.funcs.len() as f64
        }
    };
    rows.push(Row::new(
        "PSS of the server's whole process tree (server, every instance, sandbox helpers)",
        format!(
            "{} ({} per function; anonymous {})",
            mib(m.tree.pss as f64),
            mib(per_fn(m.tree.pss)),
            mib(m.tree.pss_anon as f64)
        ),
    ));
    for lang in [Lang::Node, Lang::Python] {
        let v: Vec<&InstanceMem> = m
            .instances
            .iter()
            .filter(|i| i.lang == Some(lang))
            .collect();
        if v.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&InstanceMem) -> u64| {
            summarize(&v.iter().map(|i| f(i) as f64).collect::<Vec<_>>()).p50
        };
        rows.push(Row::new(
            format!(
                "Per {} instance (median of {}): PSS / of which anonymous / RSS",
                lang.label(),
                v.len()
            ),
            format!(
                "{} / {} / {}",
                mib(med(&|i| i.total.pss)),
                mib(med(&|i| i.total.pss_anon)),
                mib(med(&|i| i.total.rss))
            ),
        ));
        let helpers = summarize(&v.iter().map(|i| i.helper_count as f64).collect::<Vec<_>>());
        rows.push(Row::new(
            format!(
                "  of which the sandbox's bubblewrap processes ({} per instance): PSS",
                helpers.p50
            ),
            mib(med(&|i| i.helpers.pss)),
        ));
    }
    let used = m.avail_base.saturating_sub(m.avail_after);
    rows.push(
        Row::new(
            "MemAvailable: before the server / with its pools / with every function warm",
            format!(
                "{} / {} / {}",
                mib(m.avail_before as f64),
                mib(m.avail_base as f64),
                mib(m.avail_after as f64)
            ),
        )
        .baseline(
            format!(
                "{} per function (kernel objects included)",
                mib(per_fn(used))
            ),
            "—",
        ),
    );
    notes.push(format!(
        "Each function has its own code (its body is its name, checked on every call) and route; \
         created through the controller's REST API and called once through the router, Node and \
         Python alternating ({:.0} s for all, {:.1} functions/s). Environments with poolsize {POOLSIZE}; \
         the generic pool instances are among the instances counted (the medians are the \
         specialized ones). Idle time before the memory reading: {:?}; lowest MemAvailable seen \
         while filling: {}.",
        m.fill_secs,
        m.funcs.len() as f64 / m.fill_secs.max(1e-9),
        m.plan.idle,
        mib(m.avail_min as f64)
    ));
    notes.push(
        "PSS counts a shared page (the interpreter binaries, shared libraries) once across all \
         processes mapping it, so per-instance PSS falls as instances are added; MemAvailable's \
         drop also counts what no process map shows (page tables, sockets, the per-slot \
         network namespace, veth and cgroups)."
            .to_owned(),
    );
    if !m.second_failures.is_empty() {
        let shown: Vec<&String> = m.second_failures.iter().take(5).collect();
        notes.push(format!(
            "Second calls that failed: {} (first: {:?}).",
            m.second_failures.len(),
            shown
        ));
    }
    let mut s = String::from("\n## Density (issue #15)\n\n");
    s.push_str(&report::table(&rows));
    s.push('\n');
    for n in notes {
        s.push_str(&format!("- {n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_one_or_two_numbers() {
        assert_eq!(parse_counts("1000,1000"), Ok((1000, 1000)));
        assert_eq!(parse_counts("50"), Ok((50, 50)));
        assert_eq!(parse_counts("3, 0"), Ok((3, 0)));
        assert!(parse_counts("many").is_err());
        assert!(parse_counts("1,x").is_err());
    }

    #[test]
    fn shuffle_keeps_every_element() {
        let mut v: Vec<u32> = (0..500).collect();
        shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn rollup_of_this_process_has_pss() {
        let r = rollup(std::process::id()).expect("own smaps_rollup");
        assert!(r.pss > 0 && r.rss >= r.pss_anon, "{r:?}");
    }
}
