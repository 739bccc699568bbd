//! The router's route table: built from arbitrary triggers, looked up with arbitrary requests.
//! Must never panic, and every valid, routed trigger with a literal URL must serve that URL.
#![no_main]

use arbitrary::Arbitrary;
use fission_core::resources::{AnyResource, Function, HttpTrigger, ResourceKind};
use fission_router::RouteTable;
use fission_router::table::Lookup;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];
const HOSTS: [&str; 3] = ["", "example.com", "Example.COM"];

#[derive(Debug, Arbitrary)]
struct Trigger {
    url: String,
    prefix: Option<String>,
    keep_prefix: bool,
    method: u8,
    extra_method: Option<u8>,
    host: u8,
    function: u8,
    namespace: bool,
}

#[derive(Debug, Arbitrary)]
struct Request {
    method: u8,
    host: Option<String>,
    path: String,
}

#[derive(Debug, Arbitrary)]
struct Input {
    triggers: Vec<Trigger>,
    requests: Vec<Request>,
}

fn function(name: &str) -> Function {
    let v = json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "environment": { "name": "nodejs", "namespace": "default" } },
    });
    serde_json::from_value(v).expect("a minimal function parses")
}

fn trigger(i: usize, t: &Trigger) -> Option<HttpTrigger> {
    let mut methods = vec![METHODS[usize::from(t.method) % METHODS.len()]];
    if let Some(m) = t.extra_method {
        methods.push(METHODS[usize::from(m) % METHODS.len()]);
    }
    let v = json!({
        "metadata": {
            "name": format!("t{i}"),
            "namespace": if t.namespace { "other" } else { "default" },
        },
        "spec": {
            "host": HOSTS[usize::from(t.host) % HOSTS.len()],
            "relativeurl": t.url,
            "prefix": t.prefix,
            "keepPrefix": t.keep_prefix,
            "methods": methods,
            "functionref": { "type": "name", "name": format!("f{}", t.function % 4) },
        },
    });
    let mut any = AnyResource::from_value(ResourceKind::HttpTrigger, v).ok()?;
    any.normalize();
    match any {
        AnyResource::HttpTrigger(t) => Some(t),
        _ => None,
    }
}

fuzz_target!(|input: Input| {
    let functions: Vec<Function> = (0..3).map(|i| function(&format!("f{i}"))).collect();
    let triggers: Vec<HttpTrigger> = input
        .triggers
        .iter()
        .take(16)
        .enumerate()
        .filter_map(|(i, t)| trigger(i, t))
        .collect();
    let table = RouteTable::build(&functions, &triggers);
    let empty = RouteTable::build(&[], &[]);

    for r in input.requests.iter().take(16) {
        let method =
            http::Method::from_bytes(METHODS[usize::from(r.method) % METHODS.len()].as_bytes())
                .expect("a known method");
        if let Lookup::Function(m) = table.lookup(&method, r.host.as_deref(), &r.path) {
            // A request path (HTTP origin form) forwards as a path. Paths without the leading
            // '/' never reach the table from hyper; kept routes pass them through as they are.
            assert!(
                !r.path.starts_with('/') || m.forward_path.starts_with('/'),
                "forward path {:?} for {:?}",
                m.forward_path,
                r.path
            );
        }
    }

    // Consistency: a valid, routed trigger with a literal URL (no template, no prefix) serves a
    // request for exactly that URL, with its own method and host (some route serves it: a more
    // specific one may win, but it is never 404 or 405).
    for t in &triggers {
        let spec = &t.spec;
        let url = spec.relativeurl.as_str();
        let literal = spec.prefix.as_deref().is_none_or(str::is_empty)
            && !url.is_empty()
            && url.starts_with('/')
            && url
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
        let id = format!("{}/{}", t.metadata.namespace, t.metadata.name);
        let routed = !table.skipped().iter().any(|s| s.trigger == id);
        let valid = AnyResource::HttpTrigger(t.clone()).validate().is_ok();
        let Some(method) = spec.all_methods().first().cloned() else {
            continue;
        };
        let method = http::Method::from_bytes(method.as_bytes()).expect("a known method");
        // The router's own paths come first, as in Fission.
        let reserved = !matches!(empty.lookup(&method, None, url), Lookup::NotFound);
        if !(literal && routed && valid) || reserved {
            continue;
        }
        let host = (!spec.host.is_empty()).then_some(spec.host.as_str());
        match table.lookup(&method, host, url) {
            Lookup::Function(_) => {}
            other => panic!("trigger {id} ({method} {url} host {host:?}) is not served: {other:?}"),
        }
    }
});
