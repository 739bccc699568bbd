use std::collections::BTreeMap;

use fission_core::resources::{FunctionReference, FunctionSpec, HttpTriggerSpec};
use rand::SeedableRng as _;

use super::*;

fn function(ns: &str, name: &str) -> Function {
    let mut f = Function::new(ns, name, FunctionSpec::default());
    f.metadata.uid = format!("uid-{ns}-{name}");
    f.metadata.resource_version = "7".to_owned();
    f
}

fn url_trigger(name: &str, url: &str, methods: &[&str], func: &str) -> HttpTrigger {
    HttpTrigger::new(
        "default",
        name,
        HttpTriggerSpec {
            relativeurl: url.to_owned(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            functionref: FunctionReference::by_name(func),
            ..HttpTriggerSpec::default()
        },
    )
}

fn prefix_trigger(name: &str, prefix: &str, keep: bool, func: &str) -> HttpTrigger {
    let mut t = url_trigger(name, "", &["GET"], func);
    t.spec.prefix = Some(prefix.to_owned());
    t.spec.keep_prefix = keep;
    t
}

fn table(functions: &[Function], triggers: &[HttpTrigger]) -> RouteTable {
    RouteTable::build(functions, triggers)
}

/// What a lookup resolved to, flattened for assertions.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Fn {
        function: String,
        trigger: Option<String>,
        path: String,
        params: Vec<(String, String)>,
    },
    Builtin(Builtin),
    NotAllowed,
    NotFound,
}

fn see(t: &RouteTable, method: Method, host: Option<&str>, path: &str) -> Seen {
    match t.lookup(&method, host, path) {
        Lookup::Function(m) => Seen::Fn {
            function: m.backend.pick_with_roll(0).label.to_string(),
            trigger: m.trigger.map(str::to_owned),
            path: m.forward_path.into_owned(),
            params: m
                .params
                .iter()
                .map(|p| (p.name.to_owned(), p.value.to_owned()))
                .collect(),
        },
        Lookup::Builtin(b) => Seen::Builtin(b),
        Lookup::MethodNotAllowed { .. } => Seen::NotAllowed,
        Lookup::NotFound => Seen::NotFound,
    }
}

fn served_by(t: &RouteTable, method: Method, path: &str) -> Option<String> {
    match see(t, method, None, path) {
        Seen::Fn {
            trigger, function, ..
        } => Some(trigger.unwrap_or(function)),
        _ => None,
    }
}

fn forwarded_path(t: &RouteTable, path: &str) -> String {
    match see(t, Method::GET, None, path) {
        Seen::Fn { path, .. } => path,
        other => panic!("{path} not routed: {other:?}"),
    }
}

// === Exact and template paths ===

#[test]
fn matches_exact_relativeurl_and_forwards_root() {
    let t = table(
        &[function("default", "hello")],
        &[url_trigger("hello", "/hello", &["GET"], "hello")],
    );
    assert_eq!(
        see(&t, Method::GET, None, "/hello"),
        Seen::Fn {
            function: "default/hello".into(),
            trigger: Some("default/hello".into()),
            path: "/".into(),
            params: vec![]
        }
    );
    assert_eq!(
        see(&t, Method::GET, None, "/hello/"),
        Seen::NotFound,
        "no strict-slash redirect"
    );
    assert_eq!(see(&t, Method::GET, None, "/hellox"), Seen::NotFound);
}

#[test]
fn captures_template_variables_one_segment_each() {
    let t = table(
        &[function("default", "f")],
        &[url_trigger("t", "/users/{id}/posts/{post}", &["GET"], "f")],
    );
    match see(&t, Method::GET, None, "/users/42/posts/abc") {
        Seen::Fn { params, path, .. } => {
            assert_eq!(
                params,
                vec![("id".into(), "42".into()), ("post".into(), "abc".into())]
            );
            assert_eq!(path, "/");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        see(&t, Method::GET, None, "/users/4/2/posts/abc"),
        Seen::NotFound
    );
    assert_eq!(
        see(&t, Method::GET, None, "/users//posts/abc"),
        Seen::NotFound,
        "a variable needs at least one char"
    );
}

#[test]
fn custom_regex_variables_are_anchored_to_the_whole_path() {
    let t = table(
        &[function("default", "f")],
        &[
            url_trigger("digits", "/items/{id:[0-9]+}", &["GET"], "f"),
            url_trigger("alt", "/pick/{x:a|b}", &["GET"], "f"),
            url_trigger("nested", "/code/{c:[a-z]{3}}", &["GET"], "f"),
        ],
    );
    assert!(served_by(&t, Method::GET, "/items/123").is_some());
    assert_eq!(served_by(&t, Method::GET, "/items/12a"), None);
    assert_eq!(served_by(&t, Method::GET, "/items/123/x"), None);
    assert!(served_by(&t, Method::GET, "/pick/a").is_some());
    assert_eq!(
        served_by(&t, Method::GET, "/pick/ab"),
        None,
        "alternation stays inside the variable"
    );
    assert_eq!(served_by(&t, Method::GET, "/xpick/a"), None);
    assert!(served_by(&t, Method::GET, "/code/abc").is_some());
    assert_eq!(served_by(&t, Method::GET, "/code/abcd"), None);
}

#[test]
fn regex_variable_may_span_segments() {
    let t = table(
        &[function("default", "f")],
        &[url_trigger("t", "/files/{path:.+}", &["GET"], "f")],
    );
    match see(&t, Method::GET, None, "/files/a/b/c.txt") {
        Seen::Fn { params, .. } => assert_eq!(params, vec![("path".into(), "a/b/c.txt".into())]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn skips_triggers_with_broken_templates_and_reports_them() {
    let t = table(
        &[function("default", "f")],
        &[
            url_trigger("unbalanced", "/a/{id", &["GET"], "f"),
            url_trigger("badregex", "/b/{id:[}", &["GET"], "f"),
            url_trigger("dup", "/c/{id}/{id}", &["GET"], "f"),
            url_trigger("ok", "/ok", &["GET"], "f"),
        ],
    );
    assert_eq!(t.trigger_route_count(), 1);
    let skipped: Vec<_> = t
        .skipped()
        .iter()
        .map(|s| (s.trigger.as_str(), s.transient))
        .collect();
    assert_eq!(
        skipped,
        vec![
            ("default/badregex", false),
            ("default/dup", false),
            ("default/unbalanced", false)
        ]
    );
}

// === Prefixes ===

#[test]
fn prefix_without_trailing_slash_matches_itself_and_subpaths_only() {
    let t = table(
        &[function("default", "f")],
        &[prefix_trigger("p", "/foo", false, "f")],
    );
    assert_eq!(forwarded_path(&t, "/foo"), "/");
    assert_eq!(forwarded_path(&t, "/foo/"), "/");
    assert_eq!(forwarded_path(&t, "/foo/bar/baz"), "/bar/baz");
    assert_eq!(see(&t, Method::GET, None, "/foobar"), Seen::NotFound);
}

#[test]
fn prefix_with_trailing_slash_is_a_plain_prefix_and_strips_it() {
    let t = table(
        &[function("default", "f")],
        &[prefix_trigger("p", "/api/", false, "f")],
    );
    assert_eq!(forwarded_path(&t, "/api/"), "/");
    assert_eq!(forwarded_path(&t, "/api/users/1"), "/users/1");
    assert_eq!(see(&t, Method::GET, None, "/api"), Seen::NotFound);
}

#[test]
fn keep_prefix_forwards_the_whole_path() {
    let t = table(
        &[function("default", "f")],
        &[prefix_trigger("p", "/foo", true, "f")],
    );
    assert_eq!(forwarded_path(&t, "/foo/bar"), "/foo/bar");
    assert_eq!(forwarded_path(&t, "/foo"), "/foo");
}

#[test]
fn prefix_wins_over_relativeurl_when_both_are_set() {
    let mut tr = prefix_trigger("p", "/pre", false, "f");
    tr.spec.relativeurl = "/url".to_owned();
    let t = table(&[function("default", "f")], &[tr]);
    assert!(served_by(&t, Method::GET, "/pre/x").is_some());
    assert_eq!(served_by(&t, Method::GET, "/url"), None);
}

#[test]
fn empty_prefix_falls_back_to_relativeurl() {
    let mut tr = url_trigger("u", "/url", &["GET"], "f");
    tr.spec.prefix = Some(String::new());
    let t = table(&[function("default", "f")], &[tr]);
    assert_eq!(forwarded_path(&t, "/url"), "/");
}

#[test]
fn templated_prefix_captures_and_strips_the_matched_part() {
    let t = table(
        &[function("default", "f")],
        &[prefix_trigger("p", "/t/{tenant}", false, "f")],
    );
    match see(&t, Method::GET, None, "/t/acme/orders/9") {
        Seen::Fn { params, path, .. } => {
            assert_eq!(params, vec![("tenant".into(), "acme".into())]);
            assert_eq!(path, "/orders/9");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(forwarded_path(&t, "/t/acme"), "/");
}

// === Methods ===

#[test]
fn path_match_with_wrong_method_is_405_and_unknown_path_is_404() {
    let t = table(
        &[function("default", "f")],
        &[url_trigger("t", "/only-get", &["GET"], "f")],
    );
    assert_eq!(see(&t, Method::POST, None, "/only-get"), Seen::NotAllowed);
    assert_eq!(see(&t, Method::POST, None, "/elsewhere"), Seen::NotFound);
}

#[test]
fn method_field_merges_with_methods() {
    let mut tr = url_trigger("t", "/m", &["get"], "f");
    tr.spec.method = "POST".to_owned();
    let t = table(&[function("default", "f")], &[tr]);
    assert!(served_by(&t, Method::GET, "/m").is_some());
    assert!(served_by(&t, Method::POST, "/m").is_some());
    assert_eq!(see(&t, Method::PUT, None, "/m"), Seen::NotAllowed);
}

#[test]
fn trigger_without_methods_matches_no_method() {
    let t = table(
        &[function("default", "f")],
        &[url_trigger("t", "/none", &[], "f")],
    );
    assert_eq!(see(&t, Method::GET, None, "/none"), Seen::NotAllowed);
}

#[test]
fn a_route_matching_both_path_and_method_beats_an_earlier_path_only_match() {
    let t = table(
        &[function("default", "a"), function("default", "b")],
        &[
            url_trigger("a", "/same", &["GET"], "a"),
            url_trigger("b", "/same", &["POST"], "b"),
        ],
    );
    assert_eq!(
        served_by(&t, Method::POST, "/same").as_deref(),
        Some("default/b")
    );
    assert_eq!(
        served_by(&t, Method::GET, "/same").as_deref(),
        Some("default/a")
    );
    assert_eq!(see(&t, Method::DELETE, None, "/same"), Seen::NotAllowed);
}

// === Hosts ===

#[test]
fn host_specific_trigger_matches_only_its_host_ignoring_case() {
    let mut tr = url_trigger("h", "/h", &["GET"], "f");
    tr.spec.host = "Example.COM".to_owned();
    let t = table(&[function("default", "f")], &[tr]);
    assert!(matches!(
        see(&t, Method::GET, Some("example.com"), "/h"),
        Seen::Fn { .. }
    ));
    assert_eq!(
        see(&t, Method::GET, Some("other.com"), "/h"),
        Seen::NotFound
    );
    assert_eq!(see(&t, Method::GET, None, "/h"), Seen::NotFound);
}

#[test]
fn star_host_matches_every_host() {
    let mut tr = url_trigger("h", "/h", &["GET"], "f");
    tr.spec.host = "*".to_owned();
    let t = table(&[function("default", "f")], &[tr]);
    assert!(matches!(
        see(&t, Method::GET, Some("any.where"), "/h"),
        Seen::Fn { .. }
    ));
}

#[test]
fn host_specific_route_beats_hostless_route_of_equal_rank() {
    let mut specific = url_trigger("zz-specific", "/x", &["GET"], "b");
    specific.spec.host = "a.example".to_owned();
    let t = table(
        &[function("default", "a"), function("default", "b")],
        &[url_trigger("aa-hostless", "/x", &["GET"], "a"), specific],
    );
    match see(&t, Method::GET, Some("a.example"), "/x") {
        Seen::Fn { trigger, .. } => assert_eq!(trigger.as_deref(), Some("default/zz-specific")),
        other => panic!("{other:?}"),
    }
    match see(&t, Method::GET, Some("b.example"), "/x") {
        Seen::Fn { trigger, .. } => assert_eq!(trigger.as_deref(), Some("default/aa-hostless")),
        other => panic!("{other:?}"),
    }
}

// === Precedence ===

#[test]
fn precedence_is_exact_then_template_then_prefix() {
    let fns = [function("default", "f")];
    let t = table(
        &fns,
        &[
            prefix_trigger("prefix", "/api/", false, "f"),
            url_trigger("template", "/api/{x}", &["GET"], "f"),
            url_trigger("exact", "/api/users", &["GET"], "f"),
        ],
    );
    assert_eq!(
        served_by(&t, Method::GET, "/api/users").as_deref(),
        Some("default/exact")
    );
    assert_eq!(
        served_by(&t, Method::GET, "/api/other").as_deref(),
        Some("default/template")
    );
    assert_eq!(
        served_by(&t, Method::GET, "/api/a/b").as_deref(),
        Some("default/prefix")
    );
}

#[test]
fn more_literal_template_wins_then_longest_prefix() {
    let fns = [function("default", "f")];
    let t = table(
        &fns,
        &[
            url_trigger("generic", "/{a}/{b}", &["GET"], "f"),
            url_trigger("specific", "/users/{b}", &["GET"], "f"),
            prefix_trigger("short", "/s/", false, "f"),
            prefix_trigger("long", "/s/deeper", false, "f"),
        ],
    );
    assert_eq!(
        served_by(&t, Method::GET, "/users/1").as_deref(),
        Some("default/specific")
    );
    assert_eq!(
        served_by(&t, Method::GET, "/teams/1").as_deref(),
        Some("default/generic")
    );
    assert_eq!(
        served_by(&t, Method::GET, "/s/deeper/x").as_deref(),
        Some("default/long")
    );
    assert_eq!(
        served_by(&t, Method::GET, "/s/other/x").as_deref(),
        Some("default/short")
    );
}

#[test]
fn ties_go_to_the_first_trigger_by_namespace_and_name_regardless_of_input_order() {
    let fns = [function("default", "f")];
    let a = url_trigger("alpha", "/dup", &["GET"], "f");
    let b = url_trigger("beta", "/dup", &["GET"], "f");
    for order in [[a.clone(), b.clone()], [b, a]] {
        let t = table(&fns, &order);
        assert_eq!(
            served_by(&t, Method::GET, "/dup").as_deref(),
            Some("default/alpha")
        );
    }
}

#[test]
fn router_endpoints_beat_triggers_and_default_root_yields_to_triggers() {
    let fns = [function("default", "f")];
    let t = table(&fns, &[prefix_trigger("all", "/", false, "f")]);
    assert_eq!(
        see(&t, Method::GET, None, "/router-healthz"),
        Seen::Builtin(Builtin::Healthz)
    );
    assert_eq!(
        see(&t, Method::GET, None, "/_version"),
        Seen::Builtin(Builtin::Version)
    );
    assert_eq!(
        see(&t, Method::GET, None, "/metrics"),
        Seen::Builtin(Builtin::Metrics)
    );
    assert_eq!(
        served_by(&t, Method::GET, "/").as_deref(),
        Some("default/all")
    );

    let empty = table(&[], &[]);
    assert_eq!(
        see(&empty, Method::GET, None, "/"),
        Seen::Builtin(Builtin::Root)
    );
    assert_eq!(see(&empty, Method::POST, None, "/"), Seen::NotAllowed);
    assert_eq!(
        see(&empty, Method::POST, None, "/router-healthz"),
        Seen::NotAllowed
    );
}

#[test]
fn builtin_path_with_other_method_falls_through_to_a_trigger() {
    let t = table(
        &[function("default", "f")],
        &[prefix_trigger("all", "/", false, "f")],
    );
    let mut tr = prefix_trigger("all", "/", false, "f");
    tr.spec.methods = vec!["POST".to_owned()];
    let t2 = table(&[function("default", "f")], &[tr]);
    assert_eq!(see(&t, Method::POST, None, "/metrics"), Seen::NotAllowed);
    assert!(matches!(
        see(&t2, Method::POST, None, "/metrics"),
        Seen::Fn { .. }
    ));
}

// === Internal routes ===

#[test]
fn internal_routes_reach_default_namespace_functions_with_and_without_namespace() {
    let t = table(&[function("default", "hello")], &[]);
    for (path, fwd) in [
        ("/fission-function/hello", "/"),
        ("/fission-function/hello/", "/"),
        ("/fission-function/hello/a/b", "/a/b"),
        ("/fission-function/default/hello", "/"),
        ("/fission-function/default/hello/x", "/x"),
    ] {
        assert_eq!(
            see(&t, Method::DELETE, None, path),
            Seen::Fn {
                function: "default/hello".into(),
                trigger: None,
                path: fwd.into(),
                params: vec![]
            },
            "{path}"
        );
    }
    assert_eq!(
        see(&t, Method::GET, None, "/fission-function/nope"),
        Seen::NotFound
    );
    assert_eq!(
        see(&t, Method::GET, None, "/fission-function/hellox"),
        Seen::NotFound
    );
    assert_eq!(
        see(&t, Method::GET, None, "/fission-function"),
        Seen::NotFound
    );
}

#[test]
fn internal_routes_of_other_namespaces_need_the_namespace() {
    let t = table(&[function("team", "fn")], &[]);
    assert!(
        matches!(see(&t, Method::GET, None, "/fission-function/team/fn/sub"), Seen::Fn { path, .. } if path == "/sub")
    );
    assert_eq!(
        see(&t, Method::GET, None, "/fission-function/fn"),
        Seen::NotFound
    );
}

#[test]
fn namespaced_internal_route_wins_over_default_function_with_subpath() {
    let t = table(&[function("default", "team"), function("team", "fn")], &[]);
    assert!(
        matches!(see(&t, Method::GET, None, "/fission-function/team/fn"),
        Seen::Fn { function, .. } if function == "team/fn")
    );
    assert!(
        matches!(see(&t, Method::GET, None, "/fission-function/team/other"),
        Seen::Fn { function, path, .. } if function == "default/team" && path == "/other")
    );
}

// === Function resolution ===

#[test]
fn trigger_whose_function_is_missing_is_skipped_until_it_exists() {
    let tr = url_trigger("t", "/later", &["GET"], "later");
    let before = table(&[], std::slice::from_ref(&tr));
    assert_eq!(see(&before, Method::GET, None, "/later"), Seen::NotFound);
    assert_eq!(before.skipped().len(), 1);
    assert!(before.skipped()[0].transient);

    let after = table(&[function("default", "later")], &[tr]);
    assert!(matches!(
        see(&after, Method::GET, None, "/later"),
        Seen::Fn { .. }
    ));
    assert!(after.skipped().is_empty());
}

#[test]
fn trigger_resolves_functions_in_its_own_namespace() {
    let mut tr = url_trigger("t", "/ns", &["GET"], "f");
    tr.metadata.namespace = "team".to_owned();
    let wrong_ns = table(&[function("default", "f")], std::slice::from_ref(&tr));
    assert_eq!(see(&wrong_ns, Method::GET, None, "/ns"), Seen::NotFound);
    let right_ns = table(&[function("team", "f")], &[tr]);
    assert!(
        matches!(see(&right_ns, Method::GET, None, "/ns"), Seen::Fn { function, .. } if function == "team/f")
    );
}

fn weighted_trigger(weights: &[(&str, i32)]) -> HttpTrigger {
    let mut tr = url_trigger("canary", "/canary", &["GET"], "");
    tr.spec.functionref = FunctionReference {
        ref_type: function_ref_type::FUNCTION_WEIGHTS.to_owned(),
        name: String::new(),
        functionweights: Some(
            weights
                .iter()
                .map(|(n, w)| ((*n).to_owned(), *w))
                .collect::<BTreeMap<_, _>>(),
        ),
    };
    tr
}

#[test]
fn weighted_backend_maps_rolls_to_functions_by_cumulative_weight() {
    let t = table(
        &[function("default", "a"), function("default", "b")],
        &[weighted_trigger(&[("a", 90), ("b", 10)])],
    );
    let Lookup::Function(m) = t.lookup(&Method::GET, None, "/canary") else {
        panic!("not routed")
    };
    assert_eq!(m.backend.total_weight(), 100);
    assert_eq!(&*m.backend.pick_with_roll(0).name, "a");
    assert_eq!(&*m.backend.pick_with_roll(89).name, "a");
    assert_eq!(&*m.backend.pick_with_roll(90).name, "b");
    assert_eq!(&*m.backend.pick_with_roll(99).name, "b");
}

#[test]
fn weighted_selection_follows_the_weights() {
    let t = table(
        &[function("default", "a"), function("default", "b")],
        &[weighted_trigger(&[("a", 90), ("b", 10)])],
    );
    let Lookup::Function(m) = t.lookup(&Method::GET, None, "/canary") else {
        panic!("not routed")
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = 10_000;
    let b = (0..n)
        .filter(|_| &*m.backend.pick(&mut rng).name == "b")
        .count();
    // Expected 1000; the bounds are > 6 standard deviations wide.
    assert!((800..1200).contains(&b), "b chosen {b} times out of {n}");
}

#[test]
fn zero_weight_functions_are_never_chosen_and_all_zero_is_skipped() {
    let t = table(
        &[function("default", "a"), function("default", "b")],
        &[weighted_trigger(&[("a", 100), ("b", 0)])],
    );
    let Lookup::Function(m) = t.lookup(&Method::GET, None, "/canary") else {
        panic!("not routed")
    };
    assert!((0..100).all(|r| &*m.backend.pick_with_roll(r).name == "a"));

    let none = table(
        &[function("default", "a")],
        &[weighted_trigger(&[("a", 0)])],
    );
    assert_eq!(none.trigger_route_count(), 0);
    assert!(!none.skipped()[0].transient);
}

#[test]
fn weighted_trigger_is_skipped_while_any_of_its_functions_is_missing() {
    let t = table(
        &[function("default", "a")],
        &[weighted_trigger(&[("a", 50), ("b", 50)])],
    );
    assert_eq!(see(&t, Method::GET, None, "/canary"), Seen::NotFound);
}

// === Headers and values ===

#[test]
fn params_headers_use_go_canonical_spelling() {
    assert_eq!(params_header_name("name"), "X-Fission-Params-Name");
    assert_eq!(params_header_name("user_id"), "X-Fission-Params-User_id");
    assert_eq!(params_header_name("userId"), "X-Fission-Params-Userid");
    assert_eq!(
        params_header_name("first-name"),
        "X-Fission-Params-First-Name"
    );
    assert_eq!(
        canonical_header_key("has space"),
        "has space",
        "non-token keys are left alone"
    );
}

#[test]
fn function_target_carries_identity_headers_and_default_timeout() {
    let mut f = function("team", "fn");
    f.spec.function_timeout = 0;
    let t = FunctionTarget::new(&f);
    assert_eq!(t.timeout, Duration::from_secs(60));
    let got: Vec<(String, String)> = t
        .identity_headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("x-fission-function-uid".into(), "uid-team-fn".into()),
            ("x-fission-function-name".into(), "fn".into()),
            ("x-fission-function-namespace".into(), "team".into()),
            ("x-fission-function-resourceversion".into(), "7".into()),
        ]
    );
    f.spec.function_timeout = 3;
    assert_eq!(FunctionTarget::new(&f).timeout, Duration::from_secs(3));
}

#[test]
fn percent_decoding_handles_utf8_and_rejects_bad_escapes() {
    assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    assert_eq!(percent_decode("John%20Doe").as_deref(), Some("John Doe"));
    assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
    assert_eq!(percent_decode("bad%2").as_deref(), None);
    assert_eq!(percent_decode("bad%zz").as_deref(), None);
    assert_eq!(percent_decode("%FF").as_deref(), None);
}

#[test]
fn paths_match_as_received_so_encoded_slashes_stay_in_one_segment() {
    let t = table(
        &[function("default", "f")],
        &[url_trigger("t", "/f/{name}", &["GET"], "f")],
    );
    match see(&t, Method::GET, None, "/f/a%2Fb") {
        Seen::Fn { params, .. } => assert_eq!(params, vec![("name".into(), "a%2Fb".into())]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn metric_path_is_the_trigger_url_or_prefix_and_empty_for_internal_routes() {
    let t = table(
        &[function("default", "f")],
        &[
            url_trigger("u", "/u/{id}", &["GET"], "f"),
            prefix_trigger("p", "/p/", false, "f"),
        ],
    );
    let path_label = |path: &str| match t.lookup(&Method::GET, None, path) {
        Lookup::Function(m) => m.metric_path.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(path_label("/u/1"), "/u/{id}");
    assert_eq!(path_label("/p/x"), "/p/");
    assert_eq!(path_label("/fission-function/f"), "");
}

#[test]
fn method_not_allowed_names_every_method_the_path_accepts() {
    let t = table(
        &[function("default", "a")],
        &[
            url_trigger("g", "/m", &["GET"], "a"),
            url_trigger("p", "/m", &["POST", "GET"], "a"),
            url_trigger("o", "/other", &["DELETE"], "a"),
        ],
    );
    match t.lookup(&Method::PUT, None, "/m") {
        Lookup::MethodNotAllowed { allow } => assert_eq!(allow, "GET, POST"),
        _ => panic!("PUT /m must be a 405"),
    }
    match t.lookup(&Method::POST, None, "/router-healthz") {
        Lookup::MethodNotAllowed { allow } => assert_eq!(allow, "GET"),
        _ => panic!("POST /router-healthz must be a 405"),
    }
}
