//! `fission httptrigger|route|ht …` (§3.4).

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use fission_core::resources::{
    FunctionReference, FunctionSpec, HTTP_METHODS, HttpTrigger, HttpTriggerSpec, IngressConfig,
    function_ref_type,
};

use super::{Ctx, ListArgs, SpecArgs, delete_one, get_one, print_dry, say, to_yaml};
use crate::NsKind;
use crate::api::Wrap;
use crate::output::{OutputFormat, Table, go_list, go_map, print_structured};
use crate::util::{check_name, random_name, validate};

/// `fission route` subcommands.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Create an HTTP trigger
    Create(RouteCreateArgs),
    /// Show an HTTP trigger
    Get(RouteGetArgs),
    /// List HTTP triggers
    List(RouteListArgs),
    /// Update an HTTP trigger
    Update(RouteUpdateArgs),
    /// Delete HTTP triggers by name or by function
    Delete(RouteDeleteArgs),
}

/// Ingress flags shared by create and update.
#[derive(Debug, Clone, Default, Args)]
pub struct IngressArgs {
    /// Ingress rule host=path ('-' resets to the trigger URL and any host)
    #[arg(long)]
    pub ingressrule: Option<String>,
    /// Ingress annotation k=v (repeatable; '-' removes all)
    #[arg(long)]
    pub ingressannotation: Vec<String>,
    /// Name of the TLS secret for the ingress
    #[arg(long)]
    pub ingresstls: Option<String>,
}

/// `route create` flags.
#[derive(Debug, Args)]
pub struct RouteCreateArgs {
    /// Trigger name (a UUID is generated when omitted)
    #[arg(long)]
    pub name: Option<String>,
    /// Function name (repeat twice with --weight for a weighted split)
    #[arg(long)]
    pub function: Vec<String>,
    /// Weight of the function at the same position (repeatable)
    #[arg(long)]
    pub weight: Vec<i32>,
    /// URL pattern (gorilla/mux template, e.g. /hello/{name})
    #[arg(long)]
    pub url: Option<String>,
    /// Path prefix (wins over --url)
    #[arg(long)]
    pub prefix: Option<String>,
    /// Forward the full path instead of stripping the prefix
    #[arg(long)]
    pub keepprefix: bool,
    /// HTTP method (repeatable; default GET)
    #[arg(long)]
    pub method: Vec<String>,
    /// Host to match (deprecated)
    #[arg(long)]
    pub host: Option<String>,
    /// Create an ingress for the trigger
    #[arg(long)]
    pub createingress: bool,
    #[command(flatten)]
    pub ingress: IngressArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// `route get` flags.
#[derive(Debug, Args)]
pub struct RouteGetArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Print the full object as json or yaml
    #[arg(long = "output", short = 'o', value_enum)]
    pub output: Option<OutputFormat>,
}

/// `route list` flags.
#[derive(Debug, Args)]
pub struct RouteListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Only triggers of this function
    #[arg(long)]
    pub function: Option<String>,
}

/// `route update` flags.
#[derive(Debug, Args)]
pub struct RouteUpdateArgs {
    /// Trigger name
    #[arg(long)]
    pub name: String,
    /// Function name(s) (replace the target; two need --weight)
    #[arg(long)]
    pub function: Vec<String>,
    /// Weight of the function at the same position (repeatable)
    #[arg(long)]
    pub weight: Vec<i32>,
    /// URL pattern
    #[arg(long)]
    pub url: Option<String>,
    /// Path prefix
    #[arg(long)]
    pub prefix: Option<String>,
    /// Forward the full path instead of stripping the prefix
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub keepprefix: Option<bool>,
    /// HTTP method (repeatable; replaces the methods)
    #[arg(long)]
    pub method: Vec<String>,
    /// Host to match (deprecated)
    #[arg(long)]
    pub host: Option<String>,
    /// Create an ingress for the trigger
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub createingress: Option<bool>,
    #[command(flatten)]
    pub ingress: IngressArgs,
}

/// `route delete` flags.
#[derive(Debug, Args)]
pub struct RouteDeleteArgs {
    /// Trigger name
    #[arg(long)]
    pub name: Option<String>,
    /// Delete every trigger of this function
    #[arg(long)]
    pub function: Option<String>,
    /// Do not fail when the trigger does not exist
    #[arg(long)]
    pub ignorenotfound: bool,
}

pub(crate) async fn run(ctx: &Ctx, cmd: RouteCommand) -> anyhow::Result<()> {
    match cmd {
        RouteCommand::Create(a) => create(ctx, a).await,
        RouteCommand::Get(a) => get(ctx, a).await,
        RouteCommand::List(a) => list(ctx, a).await,
        RouteCommand::Update(a) => update(ctx, a).await,
        RouteCommand::Delete(a) => delete(ctx, a).await,
    }
}

/// The function reference for one function, or two with weights adding up to 100.
pub(crate) fn function_ref(
    functions: &[String],
    weights: &[i32],
) -> anyhow::Result<FunctionReference> {
    match functions {
        [] => bail!("need a function name to create a trigger, use --function"),
        [one] => Ok(FunctionReference::by_name(one)),
        [a, b] => {
            if weights.len() != 2 {
                bail!("weights of the function need to be specified when 2 functions are supplied");
            }
            if a == b {
                bail!("the two functions of a weighted trigger must be different");
            }
            if weights.iter().any(|w| !(0..=100).contains(w)) || weights[0] + weights[1] != 100 {
                bail!("the function weights should add up to 100");
            }
            let weights: BTreeMap<String, i32> =
                [(a.clone(), weights[0]), (b.clone(), weights[1])].into();
            Ok(FunctionReference {
                ref_type: function_ref_type::FUNCTION_WEIGHTS.to_owned(),
                name: String::new(),
                functionweights: Some(weights),
            })
        }
        _ => bail!(
            "the number of functions in a trigger can be 1 or 2 (for canary feature along with their weights)"
        ),
    }
}

fn with_leading_slash(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

/// The trigger's `(relativeurl, prefix)` from `--url`/`--prefix`; the flag rules of
/// `route create`. The bool says both were given (the prefix wins).
pub(crate) fn trigger_paths(
    url: Option<&str>,
    prefix: Option<&str>,
) -> anyhow::Result<(String, Option<String>, bool)> {
    let url = url.filter(|u| !u.is_empty());
    let prefix = prefix.filter(|p| !p.is_empty());
    if url.is_none() && prefix.is_none() {
        bail!("You need to supply either Prefix or URL/RelativeURL");
    }
    if url == Some("/") {
        bail!("url with only root path is not allowed");
    }
    let both = url.is_some() && prefix.is_some();
    Ok((
        url.map(with_leading_slash).unwrap_or_default(),
        prefix.map(with_leading_slash),
        both,
    ))
}

/// Upper-cased, validated methods; `GET` when none given.
pub(crate) fn parse_methods(methods: &[String]) -> anyhow::Result<Vec<String>> {
    if methods.is_empty() {
        return Ok(vec!["GET".to_owned()]);
    }
    let mut out: Vec<String> = Vec::new();
    for m in methods {
        let up = m.trim().to_ascii_uppercase();
        if !HTTP_METHODS.contains(&up.as_str()) {
            bail!("invalid or unsupported HTTP Method {m}");
        }
        if !out.contains(&up) {
            out.push(up);
        }
    }
    Ok(out)
}

/// Fission's ingress flag semantics: `host=path` rule (`-` resets), `k=v` annotations (`-`
/// removes all), TLS secret; fields not given keep `old` (or default to host `*` and the
/// trigger path).
pub(crate) fn ingress_config(
    a: &IngressArgs,
    fallback_path: &str,
    old: Option<IngressConfig>,
) -> anyhow::Result<IngressConfig> {
    let mut cfg = old.unwrap_or_default();
    if a.ingressannotation.iter().any(|s| s == "-") {
        cfg.annotations = None;
    } else if !a.ingressannotation.is_empty() {
        let anns = cfg.annotations.get_or_insert_with(BTreeMap::new);
        for s in &a.ingressannotation {
            match s.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.contains('=') => {
                    anns.insert(k.to_owned(), v.to_owned());
                }
                _ => bail!("error parsing ingress configuration: illegal ingress annotation: {s}"),
            }
        }
    }
    match a.ingressrule.as_deref() {
        None | Some("") => {
            if cfg.host.is_empty() {
                cfg.host = "*".to_owned();
            }
            if cfg.path.is_empty() {
                cfg.path = fallback_path.to_owned();
            }
        }
        Some("-") => {
            cfg.host = "*".to_owned();
            cfg.path = fallback_path.to_owned();
        }
        Some(rule) => match rule.split_once('=') {
            Some((h, p)) if !h.is_empty() && !p.is_empty() && !p.contains('=') => {
                cfg.host = h.to_owned();
                cfg.path = p.to_owned();
            }
            Some((h, p)) if !p.contains('=') => {
                bail!(
                    "error parsing ingress configuration: host ({h}) or path ({p}) cannot be empty"
                )
            }
            _ => bail!("error parsing ingress configuration: illegal ingress rule: {rule}"),
        },
    }
    if let Some(tls) = &a.ingresstls {
        cfg.tls = if tls == "-" {
            String::new()
        } else {
            tls.clone()
        };
    }
    Ok(cfg)
}

/// Another trigger (any namespace) with the same host, path and an overlapping method.
pub(crate) fn find_duplicate<'a>(
    existing: &'a [HttpTrigger],
    t: &HttpTrigger,
) -> Option<&'a HttpTrigger> {
    let methods = t.spec.all_methods();
    existing.iter().find(|o| {
        !(o.metadata.name == t.metadata.name && o.metadata.namespace == t.metadata.namespace)
            && o.spec.host == t.spec.host
            && o.spec.relativeurl == t.spec.relativeurl
            && o.spec.effective_prefix() == t.spec.effective_prefix()
            && o.spec.all_methods().iter().any(|m| methods.contains(m))
    })
}

/// Refuse a trigger that would shadow an existing route (checked across all namespaces, like
/// Fission; the server checks again).
pub(crate) async fn check_duplicate(ctx: &Ctx, t: &HttpTrigger) -> anyhow::Result<()> {
    let all: Vec<HttpTrigger> = ctx
        .api
        .list(None)
        .await
        .wrap("error listing HTTP triggers")?;
    if let Some(d) = find_duplicate(&all, t) {
        bail!(
            "HTTPTrigger with same Host, URL & method already exists ({})",
            d.metadata.name
        );
    }
    Ok(())
}

/// Warn about referenced functions that do not exist (Fission only warns).
pub(crate) async fn warn_missing_functions(
    ctx: &Ctx,
    ns: &str,
    functions: &[String],
) -> anyhow::Result<()> {
    for f in functions {
        check_name::<FunctionSpec>(ns, f)?;
        if ctx
            .api
            .get_opt::<FunctionSpec>(ns, f)
            .await
            .wrap("error checking function")?
            .is_none()
        {
            ctx.warn(format!(
                "function '{f}' does not exist in namespace '{ns}'; the trigger does nothing until it is created"
            ));
        }
    }
    Ok(())
}

/// Build the HTTPTrigger `route create` sends.
pub(crate) fn build_trigger(
    ns: &str,
    name: &str,
    a: &RouteCreateArgs,
) -> anyhow::Result<(HttpTrigger, bool)> {
    let functionref = function_ref(&a.function, &a.weight)?;
    let (relativeurl, prefix, both) = trigger_paths(a.url.as_deref(), a.prefix.as_deref())?;
    let methods = parse_methods(&a.method)?;
    let fallback = prefix.clone().unwrap_or_else(|| relativeurl.clone());
    let ingressconfig = ingress_config(&a.ingress, &fallback, None)?;
    let spec = HttpTriggerSpec {
        host: a.host.clone().unwrap_or_default(),
        relativeurl,
        prefix: Some(prefix.unwrap_or_default()),
        keep_prefix: a.keepprefix,
        method: String::new(),
        methods,
        functionref,
        createingress: a.createingress,
        ingressconfig,
    };
    Ok((HttpTrigger::new(ns, name, spec), both))
}

async fn create(ctx: &Ctx, a: RouteCreateArgs) -> anyhow::Result<()> {
    if a.spec.saves() {
        return super::spec::save::route(ctx, &a);
    }
    let dry = a.spec.dry_run()?;
    let ns = ctx.ns(NsKind::Trigger);
    // Validate the flags before naming anything.
    function_ref(&a.function, &a.weight)?;
    trigger_paths(a.url.as_deref(), a.prefix.as_deref())?;
    parse_methods(&a.method)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => {
            ctx.warn("--name will be soon marked as required flag, see 'help' for details");
            random_name()
        }
    };
    check_name::<HttpTriggerSpec>(&ns, &name)?;
    let (trigger, both) = build_trigger(&ns, &name, &a)?;
    if both {
        ctx.warn("Prefix will take precedence over URL/RelativeURL");
    }
    validate(&trigger)?;
    if dry {
        return print_dry(&[to_yaml(&trigger)?]);
    }
    if a.name.is_some()
        && ctx
            .api
            .get_opt::<HttpTriggerSpec>(&ns, &name)
            .await
            .wrap("error creating HTTP trigger")?
            .is_some()
    {
        bail!(
            "duplicate trigger exists, choose a different name or leave it empty for fission to auto-generate it"
        );
    }
    check_duplicate(ctx, &trigger).await?;
    warn_missing_functions(ctx, &ns, &a.function).await?;
    ctx.api
        .create(&trigger)
        .await
        .wrap("error creating HTTP trigger")?;
    say(format!("trigger '{name}' created"));
    Ok(())
}

/// The `FUNCTION(s)` cell: the name, or `fnA:90 fnB:10 ` for weighted triggers.
pub(crate) fn functions_cell(r: &FunctionReference) -> String {
    if r.ref_type == function_ref_type::FUNCTION_WEIGHTS {
        r.functionweights
            .iter()
            .flatten()
            .map(|(f, w)| format!("{f}:{w} "))
            .collect()
    } else {
        r.name.clone()
    }
}

pub(crate) fn route_table(triggers: &[HttpTrigger]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "METHOD",
        "URL",
        "FUNCTION(s)",
        "INGRESS",
        "HOST",
        "PATH",
        "TLS",
        "ANNOTATIONS",
        "NAMESPACE",
    ]);
    let empty = BTreeMap::new();
    for tr in triggers {
        let s = &tr.spec;
        t.row(vec![
            tr.metadata.name.clone(),
            go_list(&s.all_methods()),
            s.effective_prefix().unwrap_or(&s.relativeurl).to_owned(),
            functions_cell(&s.functionref),
            s.createingress.to_string(),
            s.ingressconfig.host.clone(),
            s.ingressconfig.path.clone(),
            s.ingressconfig.tls.clone(),
            go_map(s.ingressconfig.annotations.as_ref().unwrap_or(&empty)),
            tr.metadata.namespace.clone(),
        ]);
    }
    t
}

async fn get(ctx: &Ctx, a: RouteGetArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let t: HttpTrigger = get_one(ctx, &ns, &a.name, "HTTP trigger").await?;
    if let Some(f) = a.output {
        return print_structured(f, &t);
    }
    route_table(&[t]).print();
    Ok(())
}

async fn list(ctx: &Ctx, a: RouteListArgs) -> anyhow::Result<()> {
    let scope = a.list.scope(ctx, NsKind::Trigger);
    let mut triggers: Vec<HttpTrigger> = ctx
        .api
        .list(scope.as_deref())
        .await
        .wrap("error listing HTTP triggers")?;
    if let Some(f) = &a.function {
        triggers.retain(|t| t.spec.functionref.function_names().contains(f));
    }
    if let Some(f) = a.list.output {
        return print_structured(f, &triggers);
    }
    route_table(&triggers).print();
    Ok(())
}

async fn update(ctx: &Ctx, a: RouteUpdateArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    let mut t: HttpTrigger = get_one(ctx, &ns, &a.name, "HTTP trigger").await?;
    let old_path = t
        .spec
        .effective_prefix()
        .unwrap_or(&t.spec.relativeurl)
        .to_owned();
    if !a.function.is_empty() {
        t.spec.functionref = function_ref(&a.function, &a.weight)?;
        warn_missing_functions(ctx, &ns, &a.function).await?;
    } else if !a.weight.is_empty() {
        let names: Vec<String> = t.spec.functionref.function_names();
        if t.spec.functionref.ref_type != function_ref_type::FUNCTION_WEIGHTS {
            bail!("--weight needs two functions: give both with --function");
        }
        // Weights follow the functions' sorted order (as `route get` lists them).
        t.spec.functionref = function_ref(&names, &a.weight)?;
    }
    if let Some(u) = a.url.as_deref() {
        if u == "/" {
            bail!("url with only root path is not allowed");
        }
        t.spec.relativeurl = if u.is_empty() {
            String::new()
        } else {
            with_leading_slash(u)
        };
    }
    if let Some(p) = a.prefix.as_deref() {
        t.spec.prefix = Some(if p.is_empty() {
            String::new()
        } else {
            with_leading_slash(p)
        });
    }
    if t.spec.relativeurl.is_empty() && t.spec.effective_prefix().is_none() {
        bail!("You need to supply either Prefix or URL/RelativeURL");
    }
    if !a.method.is_empty() {
        t.spec.methods = parse_methods(&a.method)?;
        t.spec.method = String::new();
    }
    if let Some(k) = a.keepprefix {
        t.spec.keep_prefix = k;
    }
    if let Some(h) = &a.host {
        t.spec.host = h.clone();
    }
    if let Some(c) = a.createingress {
        t.spec.createingress = c;
    }
    let new_path = t
        .spec
        .effective_prefix()
        .unwrap_or(&t.spec.relativeurl)
        .to_owned();
    let old_cfg = t.spec.ingressconfig.clone();
    let followed_path = old_cfg.path == old_path;
    let mut cfg = ingress_config(&a.ingress, &new_path, Some(old_cfg))?;
    // An ingress path that was the trigger's own path moves with it unless a rule is given.
    if a.ingress.ingressrule.is_none() && followed_path {
        cfg.path = new_path;
    }
    t.spec.ingressconfig = cfg;
    validate(&t)?;
    check_duplicate(ctx, &t).await?;
    ctx.api
        .update(&t)
        .await
        .wrap("error updating HTTP trigger")?;
    say(format!("trigger '{}' updated", a.name));
    Ok(())
}

async fn delete(ctx: &Ctx, a: RouteDeleteArgs) -> anyhow::Result<()> {
    let ns = ctx.ns(NsKind::Trigger);
    match (&a.name, &a.function) {
        (None, None) => bail!("need --name or --function argument"),
        (Some(_), Some(_)) => bail!("use either --name or --function, not both"),
        (Some(name), None) => {
            if delete_one::<HttpTriggerSpec>(
                ctx,
                &ns,
                name,
                a.ignorenotfound,
                false,
                "HTTP trigger",
            )
            .await?
            {
                say(format!("trigger '{name}' deleted"));
            }
        }
        (None, Some(f)) => {
            let triggers: Vec<HttpTrigger> = ctx
                .api
                .list(Some(&ns))
                .await
                .wrap("error listing HTTP triggers")?;
            for t in triggers
                .iter()
                .filter(|t| t.spec.functionref.function_names().contains(f))
            {
                if delete_one::<HttpTriggerSpec>(
                    ctx,
                    &ns,
                    &t.metadata.name,
                    true,
                    false,
                    "HTTP trigger",
                )
                .await?
                {
                    say(format!("trigger '{}' deleted", t.metadata.name));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: RouteCommand,
    }

    fn create_args(argv: &[&str]) -> RouteCreateArgs {
        let mut full = vec!["t", "create"];
        full.extend_from_slice(argv);
        match T::try_parse_from(full).expect("parse").c {
            RouteCommand::Create(a) => a,
            _ => unreachable!(),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn one_function_is_referenced_by_name() {
        let r = function_ref(&s(&["hello"]), &[]).expect("ref");
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            json!({"type": "name", "name": "hello", "functionweights": null})
        );
    }

    #[test]
    fn two_functions_need_two_weights_adding_up_to_100() {
        let r = function_ref(&s(&["a", "b"]), &[90, 10]).expect("ref");
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            json!({"type": "function-weights", "name": "", "functionweights": {"a": 90, "b": 10}})
        );
        assert_eq!(
            function_ref(&s(&["a", "b"]), &[90, 20])
                .expect_err("must fail")
                .to_string(),
            "the function weights should add up to 100"
        );
        assert_eq!(
            function_ref(&s(&["a", "b"]), &[100])
                .expect_err("must fail")
                .to_string(),
            "weights of the function need to be specified when 2 functions are supplied"
        );
        assert!(
            function_ref(&s(&["a", "b", "c"]), &[50, 25, 25])
                .expect_err("must fail")
                .to_string()
                .starts_with("the number of functions")
        );
        assert!(
            function_ref(&[], &[])
                .expect_err("must fail")
                .to_string()
                .contains("--function")
        );
    }

    #[test]
    fn url_or_prefix_is_required_and_root_is_refused() {
        assert_eq!(
            trigger_paths(None, None)
                .expect_err("must fail")
                .to_string(),
            "You need to supply either Prefix or URL/RelativeURL"
        );
        assert_eq!(
            trigger_paths(Some("/"), None)
                .expect_err("must fail")
                .to_string(),
            "url with only root path is not allowed"
        );
        assert_eq!(
            trigger_paths(Some("hello"), None).expect("ok"),
            ("/hello".into(), None, false)
        );
        assert_eq!(
            trigger_paths(Some("/a"), Some("p")).expect("ok"),
            ("/a".into(), Some("/p".into()), true)
        );
    }

    #[test]
    fn methods_default_to_get_and_are_validated() {
        assert_eq!(parse_methods(&[]).expect("m"), ["GET"]);
        assert_eq!(
            parse_methods(&s(&["post", "GET", "POST"])).expect("m"),
            ["POST", "GET"]
        );
        assert_eq!(
            parse_methods(&s(&["FETCH"]))
                .expect_err("must fail")
                .to_string(),
            "invalid or unsupported HTTP Method FETCH"
        );
    }

    #[test]
    fn route_create_builds_the_fission_shape() {
        let a = create_args(&[
            "--function",
            "hello",
            "--url",
            "hello/{name}",
            "--name",
            "r1",
        ]);
        let (t, _) = build_trigger("default", "r1", &a).expect("trigger");
        let v = serde_json::to_value(&t).expect("json");
        assert_eq!(v["spec"]["relativeurl"], "/hello/{name}");
        assert_eq!(v["spec"]["prefix"], "");
        assert_eq!(v["spec"]["methods"], json!(["GET"]));
        assert_eq!(
            v["spec"]["ingressconfig"],
            json!({"annotations": null, "path": "/hello/{name}", "host": "*", "tls": ""})
        );
        validate(&t).expect("valid");
    }

    #[test]
    fn ingress_flags_parse_like_fission() {
        let a = IngressArgs {
            ingressrule: Some("example.com=/x".into()),
            ingressannotation: s(&["a=b"]),
            ingresstls: Some("secret".into()),
        };
        let c = ingress_config(&a, "/hello", None).expect("cfg");
        assert_eq!(
            (c.host.as_str(), c.path.as_str(), c.tls.as_str()),
            ("example.com", "/x", "secret")
        );
        assert_eq!(c.annotations.as_ref().expect("anns")["a"], "b");
        let bad = IngressArgs {
            ingressrule: Some("nohost".into()),
            ..Default::default()
        };
        assert!(ingress_config(&bad, "/h", None).is_err());
        let reset = IngressArgs {
            ingressrule: Some("-".into()),
            ingressannotation: s(&["-"]),
            ..Default::default()
        };
        let c = ingress_config(&reset, "/h", Some(c)).expect("cfg");
        assert_eq!((c.host.as_str(), c.path.as_str()), ("*", "/h"));
        assert!(c.annotations.is_none());
    }

    #[test]
    fn duplicate_route_is_same_host_url_and_an_overlapping_method_in_any_namespace() {
        let a = create_args(&[
            "--function",
            "f",
            "--url",
            "/x",
            "--method",
            "GET",
            "--method",
            "POST",
        ]);
        let (existing, _) = build_trigger("other-ns", "old", &a).expect("t");
        let b = create_args(&["--function", "g", "--url", "/x", "--method", "POST"]);
        let (new, _) = build_trigger("default", "new", &b).expect("t");
        assert_eq!(
            find_duplicate(std::slice::from_ref(&existing), &new).map(|t| t.metadata.name.as_str()),
            Some("old")
        );
        let c = create_args(&["--function", "g", "--url", "/x", "--method", "PUT"]);
        let (put, _) = build_trigger("default", "put", &c).expect("t");
        assert!(find_duplicate(std::slice::from_ref(&existing), &put).is_none());
        // A trigger is not its own duplicate (update).
        assert!(find_duplicate(std::slice::from_ref(&existing), &existing).is_none());
    }

    #[test]
    fn route_table_shows_methods_and_weights_like_fission() {
        let a = create_args(&[
            "--function",
            "a",
            "--function",
            "b",
            "--weight",
            "90",
            "--weight",
            "10",
            "--url",
            "/w",
        ]);
        let (t, _) = build_trigger("default", "w1", &a).expect("t");
        let out = route_table(&[t]).render();
        let row = out.lines().nth(1).expect("row");
        assert!(row.starts_with("w1 "), "{row}");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "w1", "[GET]", "/w", "a:90", "b:10", "false", "*", "/w", "map[]", "default"
            ]
        );
        // The weighted cell keeps Fission's trailing space inside its column.
        assert!(row.contains("a:90 b:10   false"), "{row}");
        let header: Vec<&str> = out.lines().next().expect("h").split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "METHOD",
                "URL",
                "FUNCTION(s)",
                "INGRESS",
                "HOST",
                "PATH",
                "TLS",
                "ANNOTATIONS",
                "NAMESPACE"
            ]
        );
    }
}
