//! The route table: which function (if any) serves a request, decided without I/O.
//!
//! A [`RouteTable`] is built in one go from every HTTPTrigger and Function in the store and is
//! immutable afterwards; the router swaps whole tables when the store changes, so a request
//! always sees one consistent generation of routes. Everything a request needs that can be
//! computed ahead of time (compiled templates, header names and values, timeouts, metric
//! labels) is computed here, at build time, and not on the request path.
//!
//! See the crate documentation for the matching rules and the precedence between overlapping
//! routes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fission_core::DEFAULT_NAMESPACE;
use fission_core::resources::{Function, HttpTrigger, function_defaults, function_ref_type};
use fission_core::validation::INTERNAL_ROUTE_PREFIX;
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

/// Paths the router answers itself, before any trigger is considered.
pub const HEALTHZ_PATH: &str = "/router-healthz";
/// Version endpoint.
pub const VERSION_PATH: &str = "/_version";
/// Prometheus scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// Prefix of the header carrying a template variable (Fission's `X-Fission-Params-<Name>`).
const PARAMS_HEADER_PREFIX: &str = "X-Fission-Params-";

/// An endpoint the router serves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `GET /router-healthz`: 200, empty.
    Healthz,
    /// `GET /_version`: the router version as JSON.
    Version,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /` when no trigger claims it: 200, empty (load-balancer health checks probe `/`).
    Root,
}

// === FunctionTarget ===

/// One function a route can send traffic to, with what the proxy needs precomputed.
pub struct FunctionTarget {
    /// The function object as stored (passed to the executor when leasing an instance).
    pub function: Function,
    /// Namespace (defaulted).
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// `namespace/name`, for messages and spans.
    pub label: Arc<str>,
    /// `spec.functionTimeout` (defaulted to 60 s): the budget for a lease and for each attempt.
    pub timeout: Duration,
    /// `X-Fission-Function-{Uid,Name,Namespace,ResourceVersion}`, ready to insert.
    identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// Handles of this function's metric series, filled as calls are recorded.
    pub(crate) series: crate::metrics::SeriesCache,
}

impl FunctionTarget {
    fn new(function: &Function) -> Self {
        let meta = &function.metadata;
        let namespace = if meta.namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            meta.namespace.as_str()
        };
        let secs = if function.spec.function_timeout > 0 {
            function.spec.function_timeout
        } else {
            function_defaults::FUNCTION_TIMEOUT
        };
        let identity = [
            ("x-fission-function-uid", meta.uid.as_str()),
            ("x-fission-function-name", meta.name.as_str()),
            ("x-fission-function-namespace", namespace),
            (
                "x-fission-function-resourceversion",
                meta.resource_version.as_str(),
            ),
        ];
        let identity_headers = identity
            .into_iter()
            // Names and namespaces are DNS labels and uids/versions are ASCII, so a value that
            // is not a valid header value can only come from a hand-edited store; skip it.
            .filter_map(|(n, v)| Some((HeaderName::from_static(n), HeaderValue::from_str(v).ok()?)))
            .collect();
        Self {
            function: function.clone(),
            namespace: Arc::from(namespace),
            name: Arc::from(meta.name.as_str()),
            label: Arc::from(format!("{namespace}/{}", meta.name)),
            timeout: Duration::from_secs(u64::from(secs.unsigned_abs())),
            identity_headers,
            series: crate::metrics::SeriesCache::default(),
        }
    }

    /// The `X-Fission-Function-*` headers for this function.
    pub fn identity_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.identity_headers
    }
}

impl fmt::Debug for FunctionTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionTarget")
            .field("function", &self.label)
            .field("timeout", &self.timeout)
            .finish()
    }
}

// === Backend ===

/// Where a route sends traffic: one function, or a weighted split (`function-weights`).
#[derive(Debug, Clone)]
pub enum Backend {
    /// Always this function.
    Single(Arc<FunctionTarget>),
    /// Pick per request with probability weight/total.
    Weighted {
        /// `(cumulative weight, function)`, ascending; the last cumulative weight is the total.
        choices: Vec<(u64, Arc<FunctionTarget>)>,
    },
}

impl Backend {
    /// The function for a random roll in `0..self.total_weight()`.
    ///
    /// Separated from the random source so tests can drive it deterministically.
    pub fn pick_with_roll(&self, roll: u64) -> &Arc<FunctionTarget> {
        match self {
            Self::Single(t) => t,
            Self::Weighted { choices } => {
                // First function whose cumulative weight exceeds the roll. `choices` is never
                // empty (the builder skips triggers without positive weights).
                let i = choices
                    .partition_point(|(cum, _)| *cum <= roll)
                    .min(choices.len() - 1);
                &choices[i].1
            }
        }
    }

    /// Sum of the weights (1 for a single function).
    pub fn total_weight(&self) -> u64 {
        match self {
            Self::Single(_) => 1,
            Self::Weighted { choices } => choices.last().map_or(1, |(cum, _)| *cum),
        }
    }

    /// Pick a function, at random by weight.
    pub fn pick<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> &Arc<FunctionTarget> {
        match self {
            Self::Single(t) => t,
            Self::Weighted { .. } => self.pick_with_roll(rng.random_range(0..self.total_weight())),
        }
    }
}

// === Templates ===

/// A template variable: its name and the header it is forwarded in.
#[derive(Debug, Clone)]
pub struct TemplateVar {
    /// The name as written in the template (`user_id` in `{user_id}`).
    pub name: Box<str>,
    /// `x-fission-params-user_id` (see [`params_header_name`] for the canonical spelling).
    pub header: HeaderName,
}

/// A gorilla/mux path template compiled to an anchored regex.
#[derive(Debug, Clone)]
struct Template {
    regex: Regex,
    vars: Vec<TemplateVar>,
}

/// How a route's path is matched.
#[derive(Debug, Clone)]
enum PathMatcher {
    /// A template without variables, compared as a string (served from a hash map).
    Exact(Box<str>),
    /// A template with variables, matched whole.
    Template(Template),
    /// A literal prefix. `boundary`: the prefix does not end in `/`, so the path must equal it
    /// or continue with `/` (`/foo` matches `/foo` and `/foo/x`, not `/foobar`).
    Prefix { literal: Box<str>, boundary: bool },
    /// A prefix containing variables; capture group 1 is the matched prefix.
    TemplatePrefix(Template),
}

/// What path the function sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// Plain `relativeurl` triggers: always `/` (Fission behaviour; functions read
    /// `X-Fission-Full-Url` for the original).
    Root,
    /// Prefix triggers: what follows the prefix, with a leading `/`.
    StripPrefix,
    /// Prefix triggers with `keepPrefix`: the original path.
    Keep,
}

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Var {
        name: &'a str,
        pattern: Option<&'a str>,
    },
}

/// Split a template into literals and `{name}` / `{name:pattern}` variables. Braces inside a
/// pattern nest (`{id:[0-9]{3}}`), as in gorilla/mux.
fn parse_template(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut literal_start = 0;
    let mut depth = 0usize;
    let mut var_start = 0;
    for (i, c) in template.char_indices() {
        match c {
            '{' => {
                if depth == 0 {
                    if i > literal_start {
                        pieces.push(Piece::Literal(&template[literal_start..i]));
                    }
                    var_start = i + 1;
                }
                depth += 1;
            }
            '}' => {
                if depth == 0 {
                    return Err(format!("unbalanced braces in '{template}'"));
                }
                depth -= 1;
                if depth == 0 {
                    let inner = &template[var_start..i];
                    let (name, pattern) = match inner.split_once(':') {
                        Some((n, p)) => (n, Some(p)),
                        None => (inner, None),
                    };
                    if name.is_empty() {
                        return Err(format!("a variable in '{template}' has no name"));
                    }
                    if pieces
                        .iter()
                        .any(|p| matches!(p, Piece::Var { name: n, .. } if *n == name))
                    {
                        return Err(format!("variable '{name}' appears twice in '{template}'"));
                    }
                    pieces.push(Piece::Var { name, pattern });
                    literal_start = i + 1;
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced braces in '{template}'"));
    }
    if literal_start < template.len() {
        pieces.push(Piece::Literal(&template[literal_start..]));
    }
    Ok(pieces)
}

/// How a template is anchored at its end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// The whole path.
    Exact,
    /// A prefix ending in `/`: anything may follow.
    Prefix,
    /// A prefix not ending in `/`: the path ends there or continues with `/`.
    PrefixBoundary,
}

fn compile_template(pieces: &[Piece<'_>], anchor: Anchor) -> Result<Template, String> {
    let mut re = String::from("^");
    if anchor != Anchor::Exact {
        re.push('(');
    }
    let mut vars = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Literal(l) => re.push_str(&regex::escape(l)),
            Piece::Var { name, pattern } => {
                // Each variable is its own group, so alternations in a custom pattern stay
                // inside it; names are positional to avoid clashes with the user's groups.
                re.push_str(&format!(
                    "(?P<v{}>{})",
                    vars.len(),
                    pattern.unwrap_or("[^/]+")
                ));
                let header = HeaderName::try_from(params_header_name(name))
                    .map_err(|_| format!("variable name '{name}' cannot be sent as a header"))?;
                vars.push(TemplateVar {
                    name: Box::from(*name),
                    header,
                });
            }
        }
    }
    match anchor {
        Anchor::Exact => re.push('$'),
        Anchor::Prefix => re.push(')'),
        Anchor::PrefixBoundary => re.push_str(")(?:/|$)"),
    }
    let regex = Regex::new(&re).map_err(|e| format!("invalid pattern: {e}"))?;
    Ok(Template { regex, vars })
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: upper-case the first letter and every letter after
/// a `-`, lower-case the rest. Keys with bytes that are not token characters are left alone,
/// as Go does.
pub fn canonical_header_key(key: &str) -> String {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !key.bytes().all(is_token) {
        return key.to_owned();
    }
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The header a template variable is forwarded in: `{user_id}` → `X-Fission-Params-User_id`.
///
/// HTTP header names are case-insensitive and the proxy's client writes them title-cased, so
/// functions see exactly the spelling Fission's Go router produced.
pub fn params_header_name(var: &str) -> String {
    canonical_header_key(&format!("{PARAMS_HEADER_PREFIX}{var}"))
}

/// Number of `/`-separated segments without a variable, and the length of the literal text:
/// the specificity of a template (more literal first).
fn literal_specificity(pieces: &[Piece<'_>], template: &str) -> (usize, usize) {
    let segments = template
        .split('/')
        .filter(|s| !s.is_empty() && !s.contains('{'))
        .count();
    let chars = pieces
        .iter()
        .map(|p| {
            if let Piece::Literal(l) = p {
                l.len()
            } else {
                0
            }
        })
        .sum();
    (segments, chars)
}

// === Routes ===

/// A route made from one HTTPTrigger.
#[derive(Debug, Clone)]
struct TriggerRoute {
    /// `namespace/name` of the trigger.
    trigger: Arc<str>,
    /// Lower-cased host to match, if the trigger sets one.
    host: Option<Box<str>>,
    /// Methods matched; empty matches none (Fission always installs a method matcher).
    methods: Vec<Method>,
    matcher: PathMatcher,
    rewrite: Rewrite,
    backend: Backend,
    /// The trigger's `prefix` or `relativeurl`: the `path` label of the call metrics.
    metric_path: Arc<str>,
    /// Sort key; see [`RouteTable`]'s precedence.
    rank: RouteRank,
}

/// Precedence of a user route: lower sorts first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RouteRank {
    /// 0 exact, 1 template, 2 prefix.
    class: u8,
    /// Negated specificity: (literal segments, literal length) for templates, prefix length for
    /// prefixes; 0 for exact paths.
    specificity: std::cmp::Reverse<(usize, usize)>,
    /// Host-specific (false) before host-less (true).
    hostless: bool,
    /// Tie-break: `namespace/name` of the trigger.
    trigger: Arc<str>,
}

impl TriggerRoute {
    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        }
    }

    fn method_matches(&self, method: &Method) -> bool {
        self.methods.iter().any(|m| m == method)
    }

    /// Match the path; on success, how many bytes of it the prefix covered and the variables.
    fn match_path<'t, 'p>(&'t self, path: &'p str) -> Option<(usize, Vec<Param<'t, 'p>>)> {
        match &self.matcher {
            PathMatcher::Exact(p) => (path == &**p).then(|| (path.len(), Vec::new())),
            PathMatcher::Prefix { literal, boundary } => {
                let rest = path.strip_prefix(&**literal)?;
                (!*boundary || rest.is_empty() || rest.starts_with('/'))
                    .then(|| (literal.len(), Vec::new()))
            }
            PathMatcher::Template(t) | PathMatcher::TemplatePrefix(t) => {
                let caps = t.regex.captures(path)?;
                // A prefix template's group 1 is the matched prefix; a full template covers it all.
                let matched = match self.matcher {
                    PathMatcher::TemplatePrefix(_) => caps.get(1).map_or(0, |m| m.end()),
                    _ => path.len(),
                };
                let params = t
                    .vars
                    .iter()
                    .enumerate()
                    .filter_map(|(i, var)| {
                        // Group names are `v0`, `v1`, … in variable order.
                        let m = caps.name(VAR_GROUP_NAMES.get(i).copied()?)?;
                        Some(Param {
                            name: &var.name,
                            header: &var.header,
                            value: m.as_str(),
                        })
                    })
                    .collect();
                Some((matched, params))
            }
        }
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.matcher {
            PathMatcher::Template(t) | PathMatcher::TemplatePrefix(t) => t.regex.is_match(path),
            _ => self.match_path(path).is_some(),
        }
    }
}

/// Capture-group names of template variables; templates with more variables than this are
/// refused when the table is built (no real URL has 32 variables).
const VAR_GROUP_NAMES: [&str; 32] = [
    "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14",
    "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27",
    "v28", "v29", "v30", "v31",
];

/// A template variable's value in a matched request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'t, 'p> {
    /// Variable name.
    pub name: &'t str,
    /// Header to forward it in.
    pub header: &'t HeaderName,
    /// The value as it appears in the (percent-encoded) request path.
    pub value: &'p str,
}

/// A request that a function serves.
#[derive(Debug)]
pub struct RouteMatch<'t, 'p> {
    /// Where to send it.
    pub backend: &'t Backend,
    /// `namespace/name` of the trigger; `None` for the internal `/fission-function` routes.
    pub trigger: Option<&'t str>,
    /// `path` label for metrics: the trigger's prefix or relativeurl (empty for internal
    /// routes, as in Fission).
    pub metric_path: &'t Arc<str>,
    /// The path the function receives (without query).
    pub forward_path: Cow<'p, str>,
    /// Template variables.
    pub params: Vec<Param<'t, 'p>>,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'t, 'p> {
    /// The router answers itself.
    Builtin(Builtin),
    /// Forward to a function.
    Function(RouteMatch<'t, 'p>),
    /// Some route matches the path but none the method (405); `allow` is the `Allow` header
    /// value: the methods that would match, comma-separated.
    MethodNotAllowed {
        /// `GET, POST`.
        allow: String,
    },
    /// No route matches the path (404).
    NotFound,
}

/// A trigger that is not routed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SkippedTrigger {
    /// `namespace/name`.
    pub trigger: String,
    /// Why, in words an operator can act on.
    pub reason: String,
    /// Whether the cause is expected to resolve by itself (a function not created yet).
    pub transient: bool,
}

// === RouteTable ===

/// Every route the router serves, in precedence order. Pure: built from objects, no I/O.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// User routes sorted by [`RouteRank`].
    routes: Vec<TriggerRoute>,
    /// Exact (variable-free `relativeurl`) routes by path → indices into `routes`, ascending.
    exact: HashMap<Box<str>, Vec<usize>>,
    /// Indices of template and prefix routes, ascending (= precedence order).
    patterned: Vec<usize>,
    /// Internal routes by `namespace/name`.
    internal: HashMap<Box<str>, Backend>,
    /// Internal routes of the default namespace by name (`/fission-function/<name>`).
    internal_default: HashMap<Box<str>, Backend>,
    /// Shared empty metric path of internal routes.
    internal_metric_path: Arc<str>,
    skipped: Vec<SkippedTrigger>,
}

fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() { DEFAULT_NAMESPACE } else { ns }
}

impl RouteTable {
    /// Build from every Function and HTTPTrigger.
    ///
    /// Triggers that cannot be routed (function missing, bad template, no positive weight) are
    /// left out and listed in [`RouteTable::skipped`] for the caller to report.
    pub fn build<'a>(
        functions: impl IntoIterator<Item = &'a Function>,
        triggers: impl IntoIterator<Item = &'a HttpTrigger>,
    ) -> Self {
        let mut by_key: HashMap<(String, String), Arc<FunctionTarget>> = HashMap::new();
        let mut table = Self::default();
        for f in functions {
            let target = Arc::new(FunctionTarget::new(f));
            let key = format!("{}/{}", target.namespace, target.name);
            if &*target.namespace == DEFAULT_NAMESPACE {
                table
                    .internal_default
                    .insert(Box::from(&*target.name), Backend::Single(target.clone()));
            }
            table
                .internal
                .insert(key.into_boxed_str(), Backend::Single(target.clone()));
            by_key.insert(
                (target.namespace.to_string(), target.name.to_string()),
                target,
            );
        }

        for t in triggers {
            let ns = namespace_or_default(&t.metadata.namespace);
            let id = format!("{ns}/{}", t.metadata.name);
            match build_trigger_route(t, ns, &id, &by_key) {
                Ok(route) => table.routes.push(route),
                Err((reason, transient)) => table.skipped.push(SkippedTrigger {
                    trigger: id,
                    reason,
                    transient,
                }),
            }
        }
        table.routes.sort_by(|a, b| a.rank.cmp(&b.rank));
        for (i, r) in table.routes.iter().enumerate() {
            match &r.matcher {
                PathMatcher::Exact(p) => table.exact.entry(p.clone()).or_default().push(i),
                _ => table.patterned.push(i),
            }
        }
        table.skipped.sort_by(|a, b| a.trigger.cmp(&b.trigger));
        table
    }

    /// Triggers left out of this table, sorted by trigger.
    pub fn skipped(&self) -> &[SkippedTrigger] {
        &self.skipped
    }

    /// Number of trigger routes (internal routes not counted).
    pub fn trigger_route_count(&self) -> usize {
        self.routes.len()
    }

    /// Find what serves `method path` on `host` (the Host header without its port).
    ///
    /// `path` is the request path as received (percent-encoded), without the query.
    pub fn lookup<'t, 'p>(
        &'t self,
        method: &Method,
        host: Option<&str>,
        path: &'p str,
    ) -> Lookup<'t, 'p> {
        let mut path_matched = false;

        // 1. The router's own endpoints.
        let builtin = match path {
            HEALTHZ_PATH => Some(Builtin::Healthz),
            VERSION_PATH => Some(Builtin::Version),
            METRICS_PATH => Some(Builtin::Metrics),
            _ => None,
        };
        if let Some(b) = builtin {
            if method == Method::GET {
                return Lookup::Builtin(b);
            }
            path_matched = true;
        }

        // 2. Internal per-function routes (all methods).
        if let Some(m) = self.lookup_internal(path) {
            return Lookup::Function(m);
        }

        // 3. Exact relativeurl routes; they outrank every pattern, so a full match here wins.
        if let Some(indices) = self.exact.get(path) {
            for &i in indices {
                let r = &self.routes[i];
                if !r.host_matches(host) {
                    continue;
                }
                if r.method_matches(method) {
                    return Lookup::Function(r.to_match(path, path.len(), Vec::new()));
                }
                path_matched = true;
            }
        }

        // 4. Templates, then prefixes, in precedence order.
        for &i in &self.patterned {
            let r = &self.routes[i];
            if !r.host_matches(host) {
                continue;
            }
            if !r.method_matches(method) {
                path_matched = path_matched || r.path_matches(path);
                continue;
            }
            if let Some((matched, params)) = r.match_path(path) {
                return Lookup::Function(r.to_match(path, matched, params));
            }
        }

        // 5. Default `GET /`.
        if path == "/" {
            if method == Method::GET {
                return Lookup::Builtin(Builtin::Root);
            }
            path_matched = true;
        }

        if path_matched {
            Lookup::MethodNotAllowed {
                allow: self.allowed_methods(host, path),
            }
        } else {
            Lookup::NotFound
        }
    }

    /// Every method some route accepts for `path` on `host`, in a stable order (for `Allow`).
    /// Only called on the 405 path, so it may scan.
    fn allowed_methods(&self, host: Option<&str>, path: &str) -> String {
        let mut allowed: Vec<Method> = Vec::new();
        if matches!(path, HEALTHZ_PATH | VERSION_PATH | METRICS_PATH | "/") {
            allowed.push(Method::GET);
        }
        for r in self
            .routes
            .iter()
            .filter(|r| r.host_matches(host) && r.path_matches(path))
        {
            for m in &r.methods {
                if !allowed.contains(m) {
                    allowed.push(m.clone());
                }
            }
        }
        const ORDER: [Method; 9] = [
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
        allowed.sort_by_key(|m| ORDER.iter().position(|o| o == m).unwrap_or(ORDER.len()));
        allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `/fission-function/<ns>/<name>[/sub]` or `/fission-function/<name>[/sub]` (namespace
    /// `default`). When both readings name an existing function, the namespaced one wins.
    fn lookup_internal<'t, 'p>(&'t self, path: &'p str) -> Option<RouteMatch<'t, 'p>> {
        let rest = path
            .strip_prefix(INTERNAL_ROUTE_PREFIX)?
            .strip_prefix('/')?;
        let first_end = rest.find('/').unwrap_or(rest.len());
        if first_end < rest.len() {
            let second_end = rest[first_end + 1..]
                .find('/')
                .map_or(rest.len(), |i| first_end + 1 + i);
            if let Some(backend) = self.internal.get(&rest[..second_end]) {
                return Some(self.internal_match(backend, &rest[second_end..]));
            }
        }
        let backend = self.internal_default.get(&rest[..first_end])?;
        Some(self.internal_match(backend, &rest[first_end..]))
    }

    fn internal_match<'t, 'p>(
        &'t self,
        backend: &'t Backend,
        sub_path: &'p str,
    ) -> RouteMatch<'t, 'p> {
        RouteMatch {
            backend,
            trigger: None,
            metric_path: &self.internal_metric_path,
            forward_path: if sub_path.is_empty() {
                Cow::Borrowed("/")
            } else {
                Cow::Borrowed(sub_path)
            },
            params: Vec::new(),
        }
    }
}

impl TriggerRoute {
    fn to_match<'t, 'p>(
        &'t self,
        path: &'p str,
        matched: usize,
        params: Vec<Param<'t, 'p>>,
    ) -> RouteMatch<'t, 'p> {
        let forward_path = match self.rewrite {
            Rewrite::Root => Cow::Borrowed("/"),
            Rewrite::Keep => Cow::Borrowed(path),
            Rewrite::StripPrefix => {
                let rest = &path[matched..];
                if rest.starts_with('/') {
                    Cow::Borrowed(rest)
                } else if rest.is_empty() {
                    Cow::Borrowed("/")
                } else {
                    Cow::Owned(format!("/{rest}"))
                }
            }
        };
        RouteMatch {
            backend: &self.backend,
            trigger: Some(&self.trigger),
            metric_path: &self.metric_path,
            forward_path,
            params,
        }
    }
}

/// Turn one trigger into a route, or say why it cannot be routed (and whether that is
/// expected to pass, like a function that has not been created yet).
fn build_trigger_route(
    t: &HttpTrigger,
    ns: &str,
    id: &str,
    functions: &HashMap<(String, String), Arc<FunctionTarget>>,
) -> Result<TriggerRoute, (String, bool)> {
    let spec = &t.spec;
    let find = |name: &str| {
        functions
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| (format!("function '{ns}/{name}' does not exist (yet)"), true))
    };
    let backend = if spec.functionref.ref_type == function_ref_type::FUNCTION_WEIGHTS {
        let mut choices = Vec::new();
        let mut total = 0u64;
        for (name, weight) in spec.functionref.functionweights.iter().flatten() {
            let target = find(name)?;
            if *weight > 0 {
                total += u64::from(weight.unsigned_abs());
                choices.push((total, target));
            }
        }
        if choices.is_empty() {
            return Err((
                "functionweights has no function with a positive weight".to_owned(),
                false,
            ));
        }
        Backend::Weighted { choices }
    } else {
        Backend::Single(find(&spec.functionref.name)?)
    };

    let methods = spec
        .all_methods()
        .iter()
        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
        .collect::<Vec<_>>();

    let (template, is_prefix) = match spec.effective_prefix() {
        Some(p) => (p, true),
        None => (spec.relativeurl.as_str(), false),
    };
    let pieces = parse_template(template).map_err(|e| (e, false))?;
    if pieces
        .iter()
        .filter(|p| matches!(p, Piece::Var { .. }))
        .count()
        > VAR_GROUP_NAMES.len()
    {
        return Err((
            format!(
                "'{template}' has more than {} variables",
                VAR_GROUP_NAMES.len()
            ),
            false,
        ));
    }
    let has_vars = pieces.iter().any(|p| matches!(p, Piece::Var { .. }));
    let (class, specificity, matcher) = if is_prefix {
        let anchor = if template.ends_with('/') {
            Anchor::Prefix
        } else {
            Anchor::PrefixBoundary
        };
        let matcher = if has_vars {
            PathMatcher::TemplatePrefix(compile_template(&pieces, anchor).map_err(|e| (e, false))?)
        } else {
            PathMatcher::Prefix {
                literal: Box::from(template),
                boundary: anchor == Anchor::PrefixBoundary,
            }
        };
        (2, literal_specificity(&pieces, template), matcher)
    } else if has_vars {
        let matcher = PathMatcher::Template(
            compile_template(&pieces, Anchor::Exact).map_err(|e| (e, false))?,
        );
        (1, literal_specificity(&pieces, template), matcher)
    } else {
        (0, (0, 0), PathMatcher::Exact(Box::from(template)))
    };
    let rewrite = match (is_prefix, spec.keep_prefix) {
        (false, _) => Rewrite::Root,
        (true, false) => Rewrite::StripPrefix,
        (true, true) => Rewrite::Keep,
    };
    // `*` (and empty) mean every host, as for ingress hosts.
    let host = Some(spec.host.trim())
        .filter(|h| !h.is_empty() && *h != "*")
        .map(|h| h.to_ascii_lowercase().into());
    let trigger: Arc<str> = Arc::from(id);
    Ok(TriggerRoute {
        rank: RouteRank {
            class,
            specificity: std::cmp::Reverse(specificity),
            hostless: host.is_none(),
            trigger: trigger.clone(),
        },
        trigger,
        host,
        methods,
        matcher,
        rewrite,
        backend,
        metric_path: Arc::from(template),
    })
}

/// Decode `%XX` escapes; `None` if the result is not UTF-8 or an escape is malformed.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests;
