//! Per-function call statistics over the last hour, kept in memory: what the dashboard plots.
//!
//! The router records every call it answers ([`CallStats::record`]); the controller reads
//! [`CallStats::series`] for the REST endpoint and the live stream. Time is cut into
//! [`BUCKET_SECS`] buckets; each function keeps only its buckets that saw calls in the last
//! [`WINDOW_SECS`] (a ring of at most [`SLOTS`], allocated as calls arrive), so an idle or never
//! called function costs a few words, and a function called every bucket of the hour at most
//! `SLOTS × size_of::<Bucket>()` (about 42 KiB). Latency percentiles come from a log-scale
//! histogram per bucket (bins a factor of 2 apart, interpolated), which sums exactly when buckets
//! are merged into coarser steps.
//!
//! Recording is one read-locked map lookup (the write lock only on a function's first call) and
//! one uncontended mutex per call.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::CallCounts;

/// Width of one bucket, in seconds.
pub const BUCKET_SECS: u64 = 10;
/// How far back the series reach, in seconds.
pub const WINDOW_SECS: u64 = 3600;
/// Buckets per window.
pub const SLOTS: usize = (WINDOW_SECS / BUCKET_SECS) as usize;

/// Latency histogram bins: bin `i` holds durations up to `FIRST_BIN_MS × 2^i`; the last is open.
const BINS: usize = 24;
const FIRST_BIN_MS: f64 = 0.25;

/// What one call reports.
#[derive(Debug, Clone, Copy)]
pub struct CallSample {
    /// Status sent to the client (≥ 400 counts as an error, as Fission's metrics do).
    pub code: u16,
    /// From receiving the request to having the response head.
    pub latency: Duration,
    /// The call waited for a specialization.
    pub cold: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// `unix seconds / BUCKET_SECS` of the bucket's start.
    index: u64,
    calls: u32,
    errors: u32,
    cold: u32,
    latency: [u32; BINS],
}

impl Bucket {
    fn empty(index: u64) -> Self {
        Self {
            index,
            calls: 0,
            errors: 0,
            cold: 0,
            latency: [0; BINS],
        }
    }

    fn add(&mut self, s: &CallSample) {
        self.calls = self.calls.saturating_add(1);
        if s.code >= 400 {
            self.errors = self.errors.saturating_add(1);
        }
        if s.cold {
            self.cold = self.cold.saturating_add(1);
        }
        let bin = bin_of(s.latency.as_secs_f64() * 1000.0);
        self.latency[bin] = self.latency[bin].saturating_add(1);
    }

    fn merge(&mut self, other: &Bucket) {
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.cold = self.cold.saturating_add(other.cold);
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The `q` quantile (0..=1) of the latency in milliseconds, `None` without calls.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        // Rank of the wanted call, 1-based, as Prometheus' histogram_quantile reads it.
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, &count) in self.latency.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let next = seen + u64::from(count);
            if next as f64 >= rank {
                let (lo, hi) = bin_bounds(i);
                // Geometric interpolation inside the bin: bins are a factor of 2 wide.
                let frac = ((rank - seen as f64) / f64::from(count)).clamp(0.0, 1.0);
                return Some(if lo == 0.0 {
                    hi * frac
                } else {
                    lo * (hi / lo).powf(frac)
                });
            }
            seen = next;
        }
        let (_, hi) = bin_bounds(BINS - 1);
        Some(hi)
    }
}

fn bin_of(ms: f64) -> usize {
    if ms <= FIRST_BIN_MS {
        return 0;
    }
    let i = (ms / FIRST_BIN_MS).log2().ceil();
    if i.is_finite() && i >= 0.0 {
        (i as usize).min(BINS - 1)
    } else {
        BINS - 1
    }
}

/// Lower and upper bound (ms) of bin `i`; the last bin is reported up to twice its lower bound.
fn bin_bounds(i: usize) -> (f64, f64) {
    let hi = FIRST_BIN_MS * f64::from(1u32 << i.min(30));
    let lo = if i == 0 { 0.0 } else { hi / 2.0 };
    (lo, hi)
}

#[derive(Debug, Default)]
struct FunctionStats {
    total: AtomicU64,
    failed: AtomicU64,
    /// Buckets with calls, oldest first, within the window.
    ring: Mutex<VecDeque<Bucket>>,
}

impl FunctionStats {
    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<Bucket>> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `(namespace, name)`.
type Key = (Arc<str>, Arc<str>);

/// Every function's statistics. Shared by the router (writer) and the controller (reader).
#[derive(Debug, Default)]
pub struct CallStats {
    functions: RwLock<HashMap<Key, Arc<FunctionStats>>>,
}

/// One point of a series: a step's worth of calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Unix seconds of the step's start.
    pub start: u64,
    /// Calls answered.
    pub calls: u32,
    /// Calls answered with a status ≥ 400.
    pub errors: u32,
    /// Calls that waited for a specialization.
    pub cold_starts: u32,
    /// Median latency (ms), absent without calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms), absent without calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// One function's calls over a time range, in steps (only steps with calls are listed).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSeries {
    /// Namespace.
    pub namespace: String,
    /// Function name.
    pub name: String,
    /// Calls since the server started (all time, not only the window).
    pub total_calls: u64,
    /// Failed calls since the server started.
    pub total_errors: u64,
    /// The whole range merged into one point (`start` is the range's start).
    pub summary: Point,
    /// Steps with calls, oldest first.
    pub points: Vec<Point>,
}

/// Which part of the window to read and how coarsely.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// Step width in seconds: a multiple of [`BUCKET_SECS`] (rounded up to one).
    pub step: u64,
    /// Only data from this unix second on (rounded down to a step); the window's start at most.
    pub since: u64,
    /// The current unix second.
    pub now: u64,
}

impl Range {
    /// The last hour at `step` seconds, as of `now`.
    pub fn window(step: u64, now: u64) -> Self {
        Self {
            step,
            since: now.saturating_sub(WINDOW_SECS),
            now,
        }
    }

    fn step_buckets(&self) -> u64 {
        self.step.div_ceil(BUCKET_SECS).max(1)
    }
}

/// The current unix second.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CallStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&self, namespace: &Arc<str>, name: &Arc<str>) -> Arc<FunctionStats> {
        let key = (namespace.clone(), name.clone());
        if let Some(f) = self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return f.clone();
        }
        self.functions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }

    fn find(&self, namespace: &str, name: &str) -> Option<Arc<FunctionStats>> {
        let key: Key = (Arc::from(namespace), Arc::from(name));
        self.functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    /// Record one call to `namespace/name` at unix second `now`.
    pub fn record(&self, namespace: &Arc<str>, name: &Arc<str>, sample: CallSample, now: u64) {
        let f = self.entry(namespace, name);
        f.total.fetch_add(1, Ordering::Relaxed);
        if sample.code >= 400 {
            f.failed.fetch_add(1, Ordering::Relaxed);
        }
        let index = now / BUCKET_SECS;
        let mut ring = f.ring();
        match ring.back_mut() {
            Some(b) if b.index == index => b.add(&sample),
            // A clock stepped back: fold the call into the newest bucket rather than reorder.
            Some(b) if b.index > index => b.add(&sample),
            _ => {
                let mut b = Bucket::empty(index);
                b.add(&sample);
                ring.push_back(b);
            }
        }
        expire(&mut ring, index);
    }

    /// Calls to `namespace/name` since the server started.
    pub fn totals(&self, namespace: &str, name: &str) -> CallCounts {
        self.find(namespace, name)
            .map_or_else(CallCounts::default, |f| CallCounts {
                total: f.total.load(Ordering::Relaxed),
                failed: f.failed.load(Ordering::Relaxed),
            })
    }

    /// `(namespace, name, totals)` of every function called within the window (split roles
    /// send it to the controller, which sums the routers').
    pub fn all_totals(&self) -> Vec<(String, String, CallCounts)> {
        self.functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((ns, name), f)| {
                let counts = CallCounts {
                    total: f.total.load(Ordering::Relaxed),
                    failed: f.failed.load(Ordering::Relaxed),
                };
                (ns.to_string(), name.to_string(), counts)
            })
            .collect()
    }

    /// `namespace/name` over `range`, `None` if it was never called.
    pub fn function(&self, namespace: &str, name: &str, range: Range) -> Option<FunctionSeries> {
        let f = self.find(namespace, name)?;
        Some(series(namespace, name, &f, range))
    }

    /// Every function of `namespace` (every namespace when `None`) with calls in `range`,
    /// sorted by namespace and name.
    pub fn functions(&self, namespace: Option<&str>, range: Range) -> Vec<FunctionSeries> {
        let mut entries: Vec<(Key, Arc<FunctionStats>)> = self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|want| &**ns == want))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .map(|((ns, name), f)| series(&ns, &name, &f, range))
            .filter(|s| s.summary.calls > 0)
            .collect()
    }

    /// Drop buckets older than the window from every function (the ring also trims itself on
    /// each call; this reclaims the memory of functions no longer called).
    pub fn expire(&self, now: u64) {
        let functions: Vec<Arc<FunctionStats>> = self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for f in functions {
            let mut ring = f.ring();
            expire(&mut ring, now / BUCKET_SECS);
            if ring.is_empty() && ring.capacity() > 0 {
                ring.shrink_to_fit();
            }
        }
    }

    /// How many functions have statistics (called at least once since the start).
    pub fn len(&self) -> usize {
        self.functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no function was called yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn expire(ring: &mut VecDeque<Bucket>, current: u64) {
    let oldest = current.saturating_sub(SLOTS as u64 - 1);
    while ring.front().is_some_and(|b| b.index < oldest) {
        ring.pop_front();
    }
}

fn point(b: &Bucket, start: u64) -> Point {
    Point {
        start,
        calls: b.calls,
        errors: b.errors,
        cold_starts: b.cold,
        p50_ms: b.quantile_ms(0.5),
        p99_ms: b.quantile_ms(0.99),
    }
}

fn series(namespace: &str, name: &str, f: &FunctionStats, range: Range) -> FunctionSeries {
    let per = range.step_buckets();
    let step_secs = per * BUCKET_SECS;
    let window_start = range.now.saturating_sub(WINDOW_SECS) / BUCKET_SECS + 1;
    let first = (range.since / BUCKET_SECS).max(window_start);
    let first_step = first / per;
    let mut summary = Bucket::empty(first);
    let mut points = Vec::new();
    let mut current: Option<Bucket> = None;
    // Newest buckets are at the back: read only those in range (the live stream asks for the
    // current bucket of every function once a second).
    let in_range: Vec<Bucket> = {
        let ring = f.ring();
        let n = ring.iter().rev().take_while(|b| b.index >= first).count();
        ring.range(ring.len() - n..).copied().collect()
    };
    for b in &in_range {
        summary.merge(b);
        let step = b.index / per;
        match &mut current {
            Some(c) if c.index == step => c.merge(b),
            _ => {
                if let Some(done) = current.take() {
                    points.push(point(&done, done.index * step_secs));
                }
                let mut c = *b;
                c.index = step;
                current = Some(c);
            }
        }
    }
    if let Some(done) = current {
        points.push(point(&done, done.index * step_secs));
    }
    FunctionSeries {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        total_calls: f.total.load(Ordering::Relaxed),
        total_errors: f.failed.load(Ordering::Relaxed),
        summary: point(&summary, first_step * step_secs),
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(code: u16, ms: u64, cold: bool) -> CallSample {
        CallSample {
            code,
            latency: Duration::from_millis(ms),
            cold,
        }
    }

    fn key(name: &str) -> (Arc<str>, Arc<str>) {
        (Arc::from("default"), Arc::from(name))
    }

    #[test]
    fn calls_land_in_ten_second_buckets_with_errors_and_cold_starts() {
        let stats = CallStats::new();
        let (ns, f) = key("hello");
        let t0 = 1_000_000;
        stats.record(&ns, &f, call(200, 5, true), t0);
        stats.record(&ns, &f, call(500, 5, false), t0 + 3);
        stats.record(&ns, &f, call(200, 5, false), t0 + 10);

        let s = stats
            .function("default", "hello", Range::window(10, t0 + 15))
            .expect("called");
        assert_eq!(s.total_calls, 3);
        assert_eq!(s.total_errors, 1);
        assert_eq!(s.summary.calls, 3);
        assert_eq!(s.summary.cold_starts, 1);
        let counts: Vec<(u64, u32, u32)> = s
            .points
            .iter()
            .map(|p| (p.start, p.calls, p.errors))
            .collect();
        assert_eq!(counts, vec![(t0, 2, 1), (t0 + 10, 1, 0)]);
    }

    #[test]
    fn percentiles_follow_the_latency_distribution() {
        let stats = CallStats::new();
        let (ns, f) = key("slow");
        let now = 2_000_000;
        for _ in 0..98 {
            stats.record(&ns, &f, call(200, 10, false), now);
        }
        for _ in 0..2 {
            stats.record(&ns, &f, call(200, 1000, false), now);
        }
        let s = stats
            .function("default", "slow", Range::window(10, now))
            .expect("called");
        let p50 = s.summary.p50_ms.expect("has calls");
        let p99 = s.summary.p99_ms.expect("has calls");
        // Bins are a factor of 2 wide: the estimate is within that factor of the truth.
        assert!((5.0..=20.0).contains(&p50), "p50 {p50}");
        assert!((500.0..=2000.0).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn coarser_steps_merge_buckets_and_old_buckets_fall_out_of_the_hour() {
        let stats = CallStats::new();
        let (ns, f) = key("hello");
        let t0 = 3_600_000;
        for i in 0..6 {
            stats.record(&ns, &f, call(200, 1, false), t0 + i * 10);
        }
        let s = stats
            .function("default", "hello", Range::window(60, t0 + 59))
            .expect("called");
        assert_eq!(s.points.len(), 1);
        assert_eq!(s.points[0].calls, 6);
        assert_eq!(s.points[0].start, t0);

        // An hour and a minute later, the window no longer reaches those calls.
        let later = t0 + WINDOW_SECS + 60;
        stats.expire(later);
        let s = stats
            .function("default", "hello", Range::window(10, later))
            .expect("still known");
        assert!(s.points.is_empty(), "{s:?}");
        assert_eq!(
            s.total_calls, 6,
            "totals are since the start, not the window"
        );
        assert!(
            stats.functions(None, Range::window(10, later)).is_empty(),
            "a function without calls in the window is not listed"
        );
    }

    #[test]
    fn a_function_called_every_bucket_keeps_one_ring_of_the_hour() {
        let stats = CallStats::new();
        let (ns, f) = key("busy");
        let t0 = 7_200_000;
        for i in 0..(3 * SLOTS as u64) {
            stats.record(&ns, &f, call(200, 1, false), t0 + i * BUCKET_SECS);
        }
        let entry = stats.find("default", "busy").expect("called");
        assert_eq!(entry.ring().len(), SLOTS);
    }

    #[test]
    fn listing_filters_by_namespace() {
        let stats = CallStats::new();
        let now = 5_000_000;
        stats.record(&Arc::from("a"), &Arc::from("f"), call(200, 1, false), now);
        stats.record(&Arc::from("b"), &Arc::from("g"), call(200, 1, false), now);
        let names: Vec<String> = stats
            .functions(Some("b"), Range::window(60, now))
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, vec!["g".to_owned()]);
        assert_eq!(stats.functions(None, Range::window(60, now)).len(), 2);
    }
}
