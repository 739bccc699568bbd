//! Property tests over the validators: arbitrary input never panics, invalid names are always
//! rejected with a message naming the field, and valid objects survive the JSON round trip the
//! store and the API make.

use fission_core::resources::{AnyResource, HTTP_METHODS, ResourceKind};
use fission_core::validation::{check_cron, parse_go_duration};
use fission_core::{is_dns1123_label, is_dns1123_subdomain};
use proptest::prelude::*;
use serde_json::{Value, json};

fn valid_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

/// Names Kubernetes refuses: empty, too long, upper case, other characters, dashes at the ends.
fn invalid_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{64,80}",
        "[a-z0-9]{0,5}[A-Z_.!/ ][a-z0-9]{0,5}",
        "-[a-z0-9]{0,5}",
        "[a-z0-9]{0,5}-",
        any::<String>().prop_filter("not a label", |s| !is_dns1123_label(s)),
    ]
}

/// A URL path of literal segments and `{var}` templates.
fn valid_url() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["[a-z0-9_-]{1,8}", "\\{[a-z]{1,5}\\}"], 1..5)
        .prop_map(|segs| format!("/{}", segs.join("/")))
        .prop_filter("not a reserved path", |u| {
            !u.starts_with("/fission-function")
                && !["/_version", "/metrics", "/router-healthz"].contains(&u.as_str())
        })
}

/// A cron field valid in every position (seconds, minutes, hours, day of month, month, day of
/// week): values 1–6 fit all their ranges.
fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        (1u32..=6).prop_map(|n| n.to_string()),
        (1u32..=5).prop_map(|n| format!("*/{n}")),
        (1u32..=3, 4u32..=6).prop_map(|(a, b)| format!("{a}-{b}")),
    ]
}

fn trigger(name: &str, url: &str, method: &str) -> Value {
    json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "relativeurl": url,
            "method": method,
            "functionref": { "type": "name", "name": "hello" },
        },
    })
}

/// Decode, normalize, validate, as the controller does.
fn accept(kind: ResourceKind, v: Value) -> Result<AnyResource, String> {
    let mut obj = AnyResource::from_value(kind, v).map_err(|e| e.to_string())?;
    obj.normalize();
    obj.validate().map_err(|e| e.to_string())?;
    Ok(obj)
}

/// Arbitrary JSON, biased towards objects with the fields resources have.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        valid_name().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("name".to_owned()),
                    Just("namespace".to_owned()),
                    Just("relativeurl".to_owned()),
                    Just("cron".to_owned()),
                    Just("functionref".to_owned()),
                    Just("environment".to_owned()),
                    Just("runtime".to_owned()),
                    Just("data".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn name_check_matches_the_kubernetes_label_rule(s in any::<String>()) {
        let re = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex");
        prop_assert_eq!(is_dns1123_label(&s), s.len() <= 63 && re.is_match(&s));
        // Never panics on anything.
        let _ = is_dns1123_subdomain(&s);
    }

    #[test]
    fn valid_names_are_accepted_on_every_kind_that_needs_only_a_name(name in valid_name()) {
        prop_assert!(is_dns1123_label(&name));
        let cm = json!({ "metadata": { "name": name }, "data": { "k": "v" } });
        prop_assert!(accept(ResourceKind::ConfigMap, cm).is_ok());
    }

    #[test]
    fn invalid_names_are_always_rejected_naming_metadata_name(name in invalid_name()) {
        for kind in ResourceKind::ALL {
            let mut v = match kind {
                ResourceKind::HttpTrigger => trigger("x", "/x", "GET"),
                _ => json!({ "metadata": { "name": "x" } }),
            };
            v["metadata"]["name"] = json!(name);
            let Ok(mut obj) = AnyResource::from_value(kind, v) else { continue };
            obj.normalize();
            let err = obj.validate().expect_err("an invalid name must be refused");
            let field = err.errors.iter().find(|e| e.field == "metadata.name");
            prop_assert!(field.is_some(), "{kind}: no metadata.name error in {err}");
            let msg = &field.expect("checked").message;
            prop_assert!(
                msg == "is required" || msg.contains("is not a valid name"),
                "{kind}: message does not say what to fix: {msg}"
            );
        }
    }

    #[test]
    fn invalid_namespaces_are_rejected_naming_metadata_namespace(ns in invalid_name().prop_filter("set", |s| !s.is_empty())) {
        let v = json!({ "metadata": { "name": "x", "namespace": ns }, "data": {} });
        let mut obj = AnyResource::from_value(ResourceKind::ConfigMap, v).expect("decodes");
        obj.normalize();
        let err = obj.validate().expect_err("an invalid namespace must be refused");
        prop_assert!(err.errors.iter().any(|e| e.field == "metadata.namespace"), "{}", err);
    }

    #[test]
    fn arbitrary_json_never_panics_and_what_validates_round_trips(kind in 0..ResourceKind::ALL.len(), v in json_value()) {
        let kind = ResourceKind::ALL[kind];
        if let Ok(obj) = accept(kind, v) {
            let bytes = obj.to_json();
            let mut again = AnyResource::from_json(kind, &bytes).expect("own JSON decodes");
            again.normalize();
            prop_assert!(again.validate().is_ok());
            prop_assert_eq!(again.to_json(), bytes);
        }
    }

    #[test]
    fn a_valid_trigger_round_trips_unchanged(name in valid_name(), url in valid_url(), m in 0..HTTP_METHODS.len()) {
        let obj = accept(ResourceKind::HttpTrigger, trigger(&name, &url, HTTP_METHODS[m]))
            .map_err(TestCaseError::fail)?;
        let again = accept(ResourceKind::HttpTrigger, obj.to_value()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(again.to_json(), obj.to_json());
        let AnyResource::HttpTrigger(t) = again else { unreachable!("kind kept") };
        prop_assert_eq!(t.spec.relativeurl, url);
        prop_assert_eq!(t.metadata.name, name);
    }

    #[test]
    fn urls_with_dotdot_segments_or_without_a_leading_slash_are_rejected(url in valid_url(), cut in any::<bool>()) {
        let bad = if cut { url.trim_start_matches('/').to_owned() } else { format!("{url}/..") };
        let err = accept(ResourceKind::HttpTrigger, trigger("r", &bad, "GET")).expect_err("refused");
        prop_assert!(err.contains("spec.relativeurl"), "{}", err);
    }

    #[test]
    fn reserved_router_paths_are_rejected(sub in "[a-z]{0,6}") {
        for url in ["/router-healthz".to_owned(), "/_version".to_owned(), "/metrics".to_owned(), format!("/fission-function/{sub}")] {
            let err = accept(ResourceKind::HttpTrigger, trigger("r", &url, "GET")).expect_err("reserved");
            prop_assert!(err.contains("reserved by the router"), "{}", err);
        }
    }

    #[test]
    fn unknown_http_methods_are_rejected_naming_the_field(m in "[A-Za-z]{1,10}") {
        prop_assume!(!HTTP_METHODS.contains(&m.to_ascii_uppercase().as_str()));
        let err = accept(ResourceKind::HttpTrigger, trigger("r", "/x", &m)).expect_err("refused");
        prop_assert!(err.contains("spec.methods") && err.contains("is not an HTTP method"), "{}", err);
    }

    #[test]
    fn five_and_six_field_crons_and_every_durations_are_accepted(
        fields in prop::collection::vec(cron_field(), 5..=6),
        secs in 1u64..100_000,
    ) {
        prop_assert!(check_cron(&fields.join(" ")).is_ok());
        let every = format!("@every {secs}s");
        prop_assert!(check_cron(&every).is_ok());
        let tt = json!({
            "metadata": { "name": "t" },
            "spec": { "cron": fields.join(" "), "functionref": { "type": "name", "name": "f" } },
        });
        prop_assert!(accept(ResourceKind::TimeTrigger, tt).is_ok());
    }

    #[test]
    fn crons_with_the_wrong_field_count_are_rejected_naming_spec_cron(fields in prop::collection::vec(cron_field(), 1..10)) {
        prop_assume!(fields.len() != 5 && fields.len() != 6);
        let tt = json!({
            "metadata": { "name": "t" },
            "spec": { "cron": fields.join(" "), "functionref": { "type": "name", "name": "f" } },
        });
        let err = accept(ResourceKind::TimeTrigger, tt).expect_err("refused");
        prop_assert!(err.contains("spec.cron") && err.contains("is not a valid cron spec"), "{}", err);
    }

    #[test]
    fn arbitrary_crons_and_durations_never_panic(s in any::<String>()) {
        let _ = check_cron(&s);
        let _ = parse_go_duration(&s);
    }

    #[test]
    fn go_durations_parse_to_their_milliseconds(h in 0u64..100, m in 0u64..60, s in 0u64..60) {
        prop_assert_eq!(parse_go_duration(&format!("{h}h{m}m{s}s")), Some((h * 3600 + m * 60 + s) * 1000));
    }
}
