//! The Markdown report: machine header, results table, quoted anchors, notes.

use std::fmt::Write as _;

/// A target from the issue.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Measured value must be ≤ this (same unit as `Row::value`).
    AtMost(f64),
    /// Measured value must be ≥ this.
    AtLeast(f64),
    None,
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// The number compared with the target.
    pub value: f64,
    pub check: Target,
}

impl Row {
    pub fn new(metric: impl Into<String>, measured: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            measured: measured.into(),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "—".into(),
            value: f64::NAN,
            check: Target::None,
        }
    }

    pub fn baseline(mut self, baseline: impl Into<String>, ratio: impl Into<String>) -> Self {
        self.baseline = baseline.into();
        self.ratio = ratio.into();
        self
    }

    pub fn target(mut self, text: impl Into<String>, value: f64, check: Target) -> Self {
        self.target = text.into();
        self.value = value;
        self.check = check;
        self
    }

    pub fn status(&self) -> &'static str {
        match self.check {
            Target::None => "",
            _ if !self.value.is_finite() => "not measured",
            Target::AtMost(t) if self.value <= t => "met",
            Target::AtLeast(t) if self.value >= t => "met",
            _ => "**missed**",
        }
    }
}

/// `nproc`, CPU model, kernel, date.
pub fn machine_header(command: &str, extra: &[String]) -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let mut s = String::new();
    let _ = writeln!(s, "# fission-rs benchmarks\n");
    let _ = writeln!(
        s,
        "- machine: `nproc` = {nproc}, {model}, {mem} RAM, kernel {kernel}"
    );
    let _ = writeln!(s, "- date: {date}");
    for e in extra {
        let _ = writeln!(s, "- {e}");
    }
    let _ = writeln!(s, "- command: `{command}`");
    s
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| metric | measured | baseline (same run) | ratio | target | met? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.metric,
            r.measured,
            r.baseline,
            r.ratio,
            r.target,
            r.status()
        );
    }
    s
}

/// Fission's own published numbers (from the reference notes), never measured here.
pub fn anchors() -> String {
    let rows = [
        (
            "Pool-hit cold start (poolmgr, warm pool, 30 fresh functions)",
            "p50 110 ms, p95 145 ms (min 89, max 184 ms)",
            "RFC-0002 perf runbook 2026, kind on an 8-CPU laptop VM (EndpointSlice path); legacy path p50 124 ms, p95 1 155 ms",
        ),
        (
            "Cold start, marketing claim",
            "\"typically about 100 ms\"",
            "Fission README since 2017, no setup given",
        ),
        (
            "Cold start by version (cold ×5)",
            "p50 90.8 / 89.2 / 74.5 / 115.5 ms (v1.24 / 1.25 / 1.26 / 1.27)",
            "fission/fission PR #3542 benchmark comment, kind",
        ),
        (
            "Warm call through the router (k6 20 VUs × 60 s, Python hello, requestsPerPod 200)",
            "median 4.4 ms (legacy) / 4.6 ms (new data plane); p99 91.8 / 22.1 ms",
            "RFC-0002 runbook; end-to-end latency incl. client, kind networking",
        ),
        (
            "Warm throughput, one router",
            "≈ 212 req/s (legacy) → ≈ 3 550 req/s (new data plane)",
            "same runbook, closed loop 20 VUs",
        ),
        (
            "Warm throughput, 3 routers in-cluster",
            "5 547 req/s, p99 12.8 ms",
            "RFC-0002 runbook, 30 VUs",
        ),
        (
            "Warm p50 by version",
            "30.2 ms & 610 req/s (v1.24) → ~9–10 ms & ~1 890–2 044 req/s (v1.26+)",
            "PR #3542 comment, warm 15 s @ c=20, one pod",
        ),
        ("Newdeploy cold start", "p50 2 848 → 2 664 ms", "PR #3559"),
    ];
    let mut s = String::new();
    let _ = writeln!(s, "| Fission figure | value | setup / source |");
    let _ = writeln!(s, "|---|---|---|");
    for (a, b, c) in rows {
        let _ = writeln!(s, "| {a} | {b} | {c} |");
    }
    s
}

/// The filesystem type a path lives on (longest matching mount point in /proc/self/mounts).
pub fn filesystem_of(path: &std::path::Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[1].to_owned(), f[2].to_owned(), f[0].to_owned()))
        })
        .filter(|(mp, _, _)| path.starts_with(mp))
        .max_by_key(|(mp, _, _)| mp.len())
        .map(|(mp, fs, dev)| format!("{fs} ({dev} on {mp})"))
        .unwrap_or_else(|| "unknown".into())
}

/// Share of all CPUs busy over `window` (from /proc/stat), while the caller sleeps.
pub fn background_cpu(window: std::time::Duration) -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let line = s.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        Some((total, idle))
    }
    let (t0, i0) = sample()?;
    std::thread::sleep(window);
    let (t1, i1) = sample()?;
    let dt = t1.checked_sub(t0)?;
    (dt > 0).then(|| 1.0 - (i1 - i0) as f64 / dt as f64)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Busy CPU ticks of the whole machine (/proc/stat, USER_HZ).
pub fn machine_busy_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user + nice + system + steal; idle, iowait and (soft)irq time (mostly our own loopback
    // traffic, which no process is charged for) are left out.
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(7).copied().unwrap_or(0))
}

/// CPU ticks of this process plus its waited-for descendants (the server, which waits for
/// its instances; our own runtimes).
pub fn own_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &s[s.rfind(')')? + 1..];
    // Fields 14–17 of stat (utime stime cutime cstime) are 12–15 after the comm.
    Some(
        after
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|x| x.parse::<u64>().ok())
            .sum(),
    )
}
