//! End-to-end: a real Prometheus scrapes the real server while real functions are called, and
//! the queries of the Grafana dashboard in `deploy/grafana/fission-rs.json` (calls per second,
//! error ratio, p50/p99 from the duration histogram, …) are evaluated through its HTTP API.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/fission-rs.json"
);

/// A free local port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Prometheus on a free port with its own data directory, scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, target: &str) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: fission\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let client = http();
        eventually_blocking(Duration::from_secs(30), "prometheus ready", || {
            let r = client.get(format!("{url}/-/ready")).send().ok()?;
            r.status().is_success().then_some(())
        });
        Self { child, url }
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let body: Value = http()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .expect("query")
            .json()
            .expect("query JSON");
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the scrape of the server is up and has seen `series`.
    fn has(&self, series: &str) -> bool {
        !self.query(series).is_empty()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample labelled `name=<function>` (or `function_name`), if any.
fn value_for(result: &[Value], function: &str) -> Option<f64> {
    result
        .iter()
        .find(|s| s["metric"]["name"] == function || s["metric"]["function_name"] == function)
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
}

/// Every query of the dashboard, by panel title and refId, with Grafana's variables as a user
/// looking at namespace `default` would have them.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard JSON"))
            .expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m")
                .replace("$namespace", "default")
                .replace("$function", ".+");
            out.push((
                panel["title"].as_str().expect("title").to_owned(),
                target["refId"].as_str().expect("refId").to_owned(),
                expr,
            ));
        }
    }
    out
}

fn prometheus_bin() -> Option<PathBuf> {
    require(
        "Prometheus",
        "apt-get install prometheus",
        fission_test_support::binary_on_path("prometheus"),
    )
}

#[test]
fn prometheus_scrapes_the_server_and_the_dashboard_queries_give_sane_numbers() {
    let Some(prometheus) = prometheus_bin() else {
        return;
    };
    let Some(s) = Setup::start() else { return };
    s.env("nodejs", "fission/node-env", &["--poolsize", "2"]);
    s.function(
        "steady",
        "nodejs",
        "steady.js",
        "module.exports = async () => ({ status: 200, body: 'ok\\n' });\n",
        &[],
    );
    s.function(
        "flaky",
        "nodejs",
        "flaky.js",
        "module.exports = async (context) => context.request.query.fail ? { status: 500, body: 'boom\\n' } : { status: 200, body: 'fine\\n' };\n",
        &[],
    );
    // Every series the queries read exists before the measured calls (a counter's first sample
    // is its baseline for rate()): one call of each kind, then two scrapes.
    assert_eq!(s.call("steady", "").0, 200);
    assert_eq!(s.call("flaky", "").0, 200);
    assert_eq!(s.call("flaky", "?fail=1").0, 500);
    let target = s.server.controller.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(&prometheus, s.dir.path(), &target);
    eventually_blocking(Duration::from_secs(30), "first scrapes", || {
        prom.has(r#"fission_function_errors_total{name="flaky"}"#)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));

    for _ in 0..20 {
        assert_eq!(s.call("steady", "").0, 200);
    }
    for i in 0..20 {
        let (code, _) = s.call("flaky", if i % 4 == 0 { "?fail=1" } else { "" });
        assert_eq!(code, if i % 4 == 0 { 500 } else { 200 });
    }
    // The calls are in the next scrapes.
    std::thread::sleep(Duration::from_secs(3));

    let queries = dashboard_queries();
    let find = |title: &str, ref_id: &str| -> &str {
        &queries
            .iter()
            .find(|(t, r, _)| t == title && r == ref_id)
            .unwrap_or_else(|| panic!("the dashboard has no query {title}/{ref_id}"))
            .2
    };

    let rate = prom.query(find("Calls per second", "A"));
    let steady = value_for(&rate, "steady").expect("a call rate for steady");
    assert!(steady > 0.0, "steady's call rate {steady}");

    let ratio = prom.query(find("Error ratio", "A"));
    let flaky = value_for(&ratio, "flaky").expect("an error ratio for flaky");
    // 5 of the 20 measured calls failed; rate() extrapolates numerator and denominator alike.
    assert!((0.1..=0.5).contains(&flaky), "flaky's error ratio {flaky}");
    assert_eq!(
        value_for(&ratio, "steady"),
        None,
        "steady never failed, so it has no error series: {ratio:?}"
    );

    let p50 = value_for(&prom.query(find("Latency p50 / p99", "A")), "steady").expect("p50");
    let p99 = value_for(&prom.query(find("Latency p50 / p99", "B")), "steady").expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    assert!(p99 < 5.0, "warm calls answered in under 5 s, p99 {p99}");

    // Every other query of the dashboard is valid PromQL over series the server exports.
    for (title, ref_id, expr) in &queries {
        let result = prom.query(expr);
        if title == "Cold starts per minute" || title == "Router overhead p99" {
            continue; // may be 0/NaN after the warm-up; validity is what the query call checked
        }
        assert!(
            !result.is_empty(),
            "{title}/{ref_id} ({expr}) found nothing"
        );
    }
}

/// Jaeger all-in-one (scripts/ensure-jaeger.sh builds it): `JAEGER_BIN`, else the cached build.
fn jaeger_bin() -> Option<PathBuf> {
    let probe = match std::env::var_os("JAEGER_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/fission-rs/jaeger/v1.75.0/jaeger"))
            .ok_or_else(|| "HOME is not set".to_owned()),
    }
    .and_then(|p| {
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} does not exist", p.display()))
        }
    });
    require(
        "Jaeger all-in-one",
        "scripts/ensure-jaeger.sh (builds it from the Go module proxy), or set JAEGER_BIN",
        probe,
    )
}

/// Jaeger with in-memory storage: an OTLP/HTTP receiver and the query API on free ports.
struct Jaeger {
    child: Child,
    otlp: String,
    query: String,
}

impl Jaeger {
    fn start(bin: &Path, dir: &Path) -> Self {
        let (otlp, query, query_grpc) = (free_port(), free_port(), free_port());
        let config = dir.join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"
            ),
        )
        .expect("jaeger config");
        let log = std::fs::File::create(dir.join("jaeger.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn jaeger");
        let jaeger = Self {
            child,
            otlp: format!("http://127.0.0.1:{otlp}"),
            query: format!("http://127.0.0.1:{query}"),
        };
        let client = http();
        eventually_blocking(Duration::from_secs(60), "jaeger ready", || {
            let r = client
                .get(format!("{}/api/services", jaeger.query))
                .send()
                .ok()?;
            r.status().is_success().then_some(())
        });
        jaeger
    }

    /// The spans of trace `id`, once Jaeger has at least `want` of them.
    fn trace(&self, id: &str, want: usize) -> Vec<Value> {
        let client = http();
        eventually_blocking(Duration::from_secs(30), "the trace in jaeger", || {
            let body: Value = client
                .get(format!("{}/api/traces/{id}", self.query))
                .send()
                .ok()?
                .json()
                .ok()?;
            let spans = body["data"][0]["spans"].as_array()?.clone();
            (spans.len() >= want).then_some(spans)
        })
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn span<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["operationName"] == name)
        .unwrap_or_else(|| {
            let names: Vec<&Value> = spans.iter().map(|s| &s["operationName"]).collect();
            panic!("no span '{name}' in the trace; spans: {names:?}")
        })
}

fn parent_of(span: &Value) -> Option<&str> {
    span["references"]
        .as_array()?
        .iter()
        .find(|r| r["refType"] == "CHILD_OF")
        .and_then(|r| r["spanID"].as_str())
}

#[test]
fn a_cold_call_is_traced_in_jaeger_and_its_traceparent_reaches_the_function() {
    let Some(jaeger_bin) = jaeger_bin() else {
        return;
    };
    if require_functions().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let jaeger = Jaeger::start(&jaeger_bin, dir.path());
    let server = Server::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp),
        ("OTEL_SERVICE_NAME", "fission-trace-test"),
    ]);
    server
        .fission(&[
            "env",
            "create",
            "--name",
            "nodejs",
            "--image",
            "fission/node-env",
            "--poolsize",
            "1",
        ])
        .ok();
    let code = write(
        dir.path(),
        "echo.js",
        "module.exports = async (context) => ({ status: 200, body: String(context.request.headers['traceparent'] || 'none') });\n",
    );
    server
        .fission(&[
            "fn",
            "create",
            "--name",
            "echo",
            "--env",
            "nodejs",
            "--code",
            code.to_str().expect("path"),
        ])
        .ok();

    // The caller's own trace: the router continues it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = http()
        .get(server.url("/fission-function/echo"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .expect("call");
    assert_eq!(resp.status().as_u16(), 200);
    let seen = resp.text().expect("body");
    let parts: Vec<&str> = seen.trim().split('-').collect();
    assert_eq!(parts.len(), 4, "the function saw traceparent {seen:?}");
    assert_eq!(
        parts[1], trace_id,
        "the function's call is in the caller's trace"
    );
    assert_ne!(
        parts[2], caller_span,
        "the router's span is the function's parent"
    );

    let spans = jaeger.trace(trace_id, 5);
    let request = span(&spans, "router.request");
    let lookup = span(&spans, "route lookup");
    let acquire = span(&spans, "acquire instance");
    let specialize = span(&spans, "specialize");
    let upstream = span(&spans, "upstream call");
    assert_eq!(parent_of(request), Some(caller_span), "{request}");
    let request_id = request["spanID"].as_str().expect("span id");
    assert_eq!(parent_of(lookup), Some(request_id), "{lookup}");
    assert_eq!(parent_of(acquire), Some(request_id), "{acquire}");
    assert_eq!(parent_of(upstream), Some(request_id), "{upstream}");
    assert_eq!(
        parent_of(specialize),
        acquire["spanID"].as_str(),
        "the specialization happens inside the acquisition: {specialize}"
    );
    assert_eq!(
        upstream["spanID"].as_str(),
        Some(parts[2]),
        "the function's traceparent names the upstream call span"
    );
    let cold = acquire["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["key"] == "fission.cold"))
        .map(|t| t["value"].clone());
    assert_eq!(cold, Some(Value::Bool(true)), "{acquire}");
}
