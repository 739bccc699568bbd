//! Prometheus metrics, under Fission's names so existing dashboards and the canary manager's
//! queries keep working.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `fission_function_calls_total` | counter | namespace, name, path, method, code |
//! | `fission_function_errors_total` | counter (code ≥ 400, as Fission) | namespace, name, path, method, code |
//! | `fission_function_overhead_seconds` | histogram | namespace, name, path, method, code |
//! | `fission_function_duration_seconds` | histogram (fission-rs) | namespace, name, path, method, code |
//! | `fission_function_cold_start_requests_total` | counter | namespace, name |
//!
//! `path` is the trigger's prefix or relativeurl (empty for `/fission-function/...`), `code`
//! the status sent to the client; a client that disconnects before the response head is
//! counted with code 499, as Fission does. Overhead is the time from receiving the request to
//! having the response head, minus the time spent waiting for the function: it includes
//! leasing an instance, so cold starts show up in it. Duration is the whole time to the response
//! head as the caller sees it (Fission has no such family; latency percentiles come from it).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::table::FunctionTarget;

/// Status code recorded when the client went away before the response head.
const CLIENT_CLOSED: u16 = 499;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    namespace: Arc<str>,
    name: Arc<str>,
    path: Arc<str>,
    method: Cow<'static, str>,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    namespace: Arc<str>,
    name: Arc<str>,
}

/// Prometheus' default buckets, plus finer ones below 5 ms where a warm proxy hop lives.
fn overhead_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Call durations: from 1 ms to a minute (the default function timeout).
fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The router's metric families.
#[derive(Debug)]
pub(crate) struct Metrics {
    calls: Family<CallLabels, Counter>,
    errors: Family<CallLabels, Counter>,
    overhead: Family<CallLabels, Histogram, fn() -> Histogram>,
    duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    cold_starts: Family<FunctionLabels, Counter>,
    /// Per-function totals and the last hour's series (the canary manager's and the
    /// dashboard's input).
    pub(crate) stats: Arc<fission_core::CallStats>,
}

impl Metrics {
    /// Create the families and register them. prometheus-client appends `_total` to counters,
    /// so they are registered without it.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            calls: Family::default(),
            errors: Family::default(),
            overhead: Family::new_with_constructor(overhead_histogram),
            duration: Family::new_with_constructor(duration_histogram),
            cold_starts: Family::default(),
            stats: Arc::new(fission_core::CallStats::new()),
        };
        registry.register(
            "fission_function_calls",
            "Count of Fission function calls",
            m.calls.clone(),
        );
        registry.register(
            "fission_function_errors",
            "Count of Fission function errors",
            m.errors.clone(),
        );
        registry.register(
            "fission_function_overhead_seconds",
            "The function call delay caused by fission",
            m.overhead.clone(),
        );
        registry.register(
            "fission_function_duration_seconds",
            "Time from receiving a call to having the function's response head",
            m.duration.clone(),
        );
        registry.register(
            // Not `fission_function_cold_starts`: the executor owns that family (specializations);
            // one name declared twice makes the whole scrape unparseable.
            "fission_function_cold_start_requests",
            "Requests that had to wait for a function instance to be specialized",
            m.cold_starts.clone(),
        );
        m
    }
}

impl Metrics {
    pub(crate) fn totals(&self, namespace: &str, name: &str) -> fission_core::CallCounts {
        self.stats.totals(namespace, name)
    }
}

/// Standard methods as static strings, so labelling a request does not allocate.
fn method_label(m: &Method) -> Cow<'static, str> {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    KNOWN.iter().position(|k| k == m).map_or_else(
        || Cow::Owned(m.as_str().to_owned()),
        |i| Cow::Borrowed(NAMES[i]),
    )
}

/// Most `(path, method, code)` combinations a function target keeps handles for; calls of
/// other kinds are recorded through the families directly.
const SERIES_CACHE_SIZE: usize = 16;

/// Handles of the series one function target records into, by `(path, method, code)`.
///
/// prometheus-client hands out shared handles, so once a kind of call has been recorded, the
/// next one is two atomic updates instead of two label-set hashes and map lookups in the
/// families (the series stay registered there and are exported as before).
#[derive(Default)]
pub(crate) struct SeriesCache {
    entries: std::sync::Mutex<Vec<Series>>,
}

struct Series {
    path: Arc<str>,
    method: Cow<'static, str>,
    code: u16,
    calls: Counter,
    /// Only for error codes.
    errors: Option<Counter>,
    overhead: Histogram,
    duration: Histogram,
}

impl SeriesCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Series>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Metrics of one proxied call. Recording happens exactly once: in [`CallRecord::finish`], or
/// on drop with code 499 when the request future was abandoned (client disconnect).
pub(crate) struct CallRecord {
    metrics: Arc<Metrics>,
    target: Arc<FunctionTarget>,
    labels: Option<CallLabels>,
    started: Instant,
    upstream: Duration,
    cold: bool,
}

impl CallRecord {
    pub(crate) fn start(
        metrics: Arc<Metrics>,
        target: &Arc<FunctionTarget>,
        path: &Arc<str>,
        method: &Method,
    ) -> Self {
        Self {
            metrics,
            target: target.clone(),
            labels: Some(CallLabels {
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                path: path.clone(),
                method: method_label(method),
                code: 0,
            }),
            started: Instant::now(),
            upstream: Duration::ZERO,
            cold: false,
        }
    }

    /// Time spent waiting for the function (excluded from the overhead).
    pub(crate) fn add_upstream(&mut self, d: Duration) {
        self.upstream += d;
    }

    /// This request caused a specialization.
    pub(crate) fn cold_start(&mut self) {
        self.cold = true;
        if let Some(l) = &self.labels {
            let labels = FunctionLabels {
                namespace: l.namespace.clone(),
                name: l.name.clone(),
            };
            self.metrics.cold_starts.get_or_create(&labels).inc();
        }
    }

    /// Record the call with the status sent to the client.
    pub(crate) fn finish(mut self, code: u16) {
        self.record(code);
    }

    fn record(&mut self, code: u16) {
        let Some(mut labels) = self.labels.take() else {
            return;
        };
        labels.code = code;
        let elapsed = self.started.elapsed();
        self.metrics.stats.record(
            &labels.namespace,
            &labels.name,
            fission_core::stats::CallSample {
                code,
                latency: elapsed,
                cold: self.cold,
            },
            fission_core::stats::unix_now(),
        );
        let overhead = elapsed.saturating_sub(self.upstream).as_secs_f64();
        let mut cache = self.target.series.lock();
        let cached = cache.iter().find(|s| {
            s.code == code
                && s.method == labels.method
                && (Arc::ptr_eq(&s.path, &labels.path) || s.path == labels.path)
        });
        if let Some(s) = cached {
            s.calls.inc();
            if let Some(e) = &s.errors {
                e.inc();
            }
            s.overhead.observe(overhead);
            s.duration.observe(elapsed.as_secs_f64());
            return;
        }
        let series = Series {
            calls: self.metrics.calls.get_or_create(&labels).clone(),
            errors: (code >= 400).then(|| self.metrics.errors.get_or_create(&labels).clone()),
            overhead: self.metrics.overhead.get_or_create(&labels).clone(),
            duration: self.metrics.duration.get_or_create(&labels).clone(),
            path: labels.path,
            method: labels.method,
            code,
        };
        series.calls.inc();
        if let Some(e) = &series.errors {
            e.inc();
        }
        series.overhead.observe(overhead);
        series.duration.observe(elapsed.as_secs_f64());
        if cache.len() < SERIES_CACHE_SIZE {
            cache.push(series);
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.record(CLIENT_CLOSED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::resources::{Function, FunctionSpec};
    use prometheus_client::encoding::text::encode;

    fn target() -> Arc<FunctionTarget> {
        let f = Function::new("default", "hello", FunctionSpec::default());
        let table = crate::table::RouteTable::build([&f], []);
        match table.lookup(&Method::GET, None, "/fission-function/hello") {
            crate::table::Lookup::Function(m) => m.backend.pick_with_roll(0).clone(),
            other => panic!("internal route missing: {other:?}"),
        }
    }

    fn exposition(registry: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, registry).expect("encoding to a String cannot fail");
        s
    }

    #[test]
    fn exposes_fission_metric_names_with_single_total_suffix() {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let t = target();
        let path: Arc<str> = Arc::from("/hello");
        let mut rec = CallRecord::start(metrics.clone(), &t, &path, &Method::GET);
        rec.cold_start();
        rec.finish(500);

        let text = exposition(&registry);
        assert!(text.contains(r#"fission_function_calls_total{namespace="default",name="hello",path="/hello",method="GET",code="500"} 1"#), "{text}");
        assert!(text.contains(r#"fission_function_errors_total{namespace="default",name="hello",path="/hello",method="GET",code="500"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"fission_function_cold_start_requests_total{namespace="default",name="hello"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("fission_function_overhead_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains(r#"fission_function_duration_seconds_count{namespace="default",name="hello",path="/hello",method="GET",code="500"} 1"#), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn successful_call_is_not_an_error_and_abandoned_call_counts_as_499() {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let t = target();
        let path: Arc<str> = Arc::from("");
        CallRecord::start(metrics.clone(), &t, &path, &Method::POST).finish(200);
        drop(CallRecord::start(metrics.clone(), &t, &path, &Method::POST));

        let text = exposition(&registry);
        assert!(text.contains(r#"fission_function_calls_total{namespace="default",name="hello",path="",method="POST",code="200"} 1"#), "{text}");
        assert!(!text.contains(r#"fission_function_errors_total{namespace="default",name="hello",path="",method="POST",code="200"}"#), "{text}");
        assert!(text.contains(r#"fission_function_calls_total{namespace="default",name="hello",path="",method="POST",code="499"} 1"#), "{text}");
    }

    #[test]
    fn repeated_calls_of_a_kind_add_up_in_one_series_per_code() {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let t = target();
        let path: Arc<str> = Arc::from("/hello");
        for code in [200, 200, 200, 404, 404] {
            CallRecord::start(metrics.clone(), &t, &path, &Method::GET).finish(code);
        }
        // Same path, spelled by another Arc: the same series.
        CallRecord::start(metrics.clone(), &t, &Arc::from("/hello"), &Method::GET).finish(200);

        let text = exposition(&registry);
        assert!(text.contains(r#"fission_function_calls_total{namespace="default",name="hello",path="/hello",method="GET",code="200"} 4"#), "{text}");
        assert!(text.contains(r#"fission_function_calls_total{namespace="default",name="hello",path="/hello",method="GET",code="404"} 2"#), "{text}");
        assert!(text.contains(r#"fission_function_errors_total{namespace="default",name="hello",path="/hello",method="GET",code="404"} 2"#), "{text}");
        assert!(!text.contains(r#"fission_function_errors_total{namespace="default",name="hello",path="/hello",method="GET",code="200"}"#), "{text}");
        assert!(text.contains(r#"fission_function_overhead_seconds_count{namespace="default",name="hello",path="/hello",method="GET",code="200"} 4"#), "{text}");
    }

    #[test]
    fn labels_extension_methods_verbatim() {
        assert_eq!(method_label(&Method::GET), "GET");
        let purge = Method::from_bytes(b"PURGE").expect("valid method");
        assert_eq!(method_label(&purge), "PURGE");
    }
}
