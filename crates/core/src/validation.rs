//! Validation with Fission's rules. Every problem is collected so a user fixes them in one go;
//! messages name the field and say what would be accepted.

use std::fmt;

use crate::meta::ObjectMeta;
use crate::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::resources::*;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field (`spec.functionTimeout`).
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// Collected problems of one object.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Record a problem.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Ok when nothing was recorded.
    pub fn into_result(self, kind: ResourceKind, name: &str) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind,
                name: name.to_owned(),
                errors: self.0,
            })
        }
    }
}

/// An object failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// Kind of the object.
    pub kind: ResourceKind,
    /// Name of the object (may be the invalid name itself).
    pub name: String,
    /// Every problem found.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} '{}': ", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

fn name_rule(value: &str) -> String {
    if value.is_empty() {
        "is required".to_owned()
    } else {
        format!(
            "'{value}' is not a valid name: use at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        )
    }
}

pub(crate) fn metadata(m: &ObjectMeta, errs: &mut FieldErrors) {
    if !is_dns1123_label(&m.name) {
        errs.push("metadata.name", name_rule(&m.name));
    }
    if !m.namespace.is_empty() && !is_dns1123_label(&m.namespace) {
        errs.push("metadata.namespace", name_rule(&m.namespace));
    }
}

fn reference(field: &str, r: &crate::ObjectReference, required: bool, errs: &mut FieldErrors) {
    if r.name.is_empty() {
        if required {
            errs.push(format!("{field}.name"), "is required");
        }
    } else if !is_dns1123_label(&r.name) {
        errs.push(format!("{field}.name"), name_rule(&r.name));
    }
    if !r.namespace.is_empty() && !is_dns1123_label(&r.namespace) {
        errs.push(format!("{field}.namespace"), name_rule(&r.namespace));
    }
}

fn resources(field: &str, r: &ResourceRequirements, errs: &mut FieldErrors) {
    for (which, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (k, v) in map {
            let ok = match k.as_str() {
                "cpu" => ResourceRequirements::cpu_millis(map).is_some_and(|c| c >= 0),
                "memory" => parse_memory(v).is_some(),
                _ => true,
            };
            if !ok {
                errs.push(
                    format!("{field}.{which}.{k}"),
                    format!("'{v}' is not a valid quantity"),
                );
            }
        }
    }
    let cpu = (
        ResourceRequirements::cpu_millis(&r.requests),
        ResourceRequirements::cpu_millis(&r.limits),
    );
    if let (Some(min), Some(max)) = cpu
        && min > max
    {
        errs.push(
            format!("{field}.requests.cpu"),
            format!("MinCPU ({min}m) cannot be greater than MaxCPU ({max}m)"),
        );
    }
    let mem = (
        ResourceRequirements::memory_bytes(&r.requests),
        ResourceRequirements::memory_bytes(&r.limits),
    );
    if let (Some(min), Some(max)) = mem
        && min > max
    {
        errs.push(
            format!("{field}.requests.memory"),
            format!(
                "MinMemory ({}) cannot be greater than MaxMemory ({})",
                r.requests["memory"], r.limits["memory"]
            ),
        );
    }
}

pub(crate) fn environment(s: &EnvironmentSpec, errs: &mut FieldErrors) {
    if !(1..=3).contains(&s.version) {
        errs.push(
            "spec.version",
            format!("{} is not supported: use 1, 2 or 3", s.version),
        );
    }
    if s.runtime.image.trim().is_empty() {
        errs.push("spec.runtime.image", "is required");
    }
    if s.poolsize < 0 {
        errs.push("spec.poolsize", format!("{} must be 0 or more", s.poolsize));
    }
    if !["", "single", "infinite"].contains(&s.allowed_functions_per_container.as_str()) {
        errs.push(
            "spec.allowedFunctionsPerContainer",
            format!(
                "'{}' is not one of single, infinite",
                s.allowed_functions_per_container
            ),
        );
    }
    if s.termination_grace_period < 0 {
        errs.push("spec.terminationGracePeriod", "must be 0 or more seconds");
    }
    resources("spec.resources", &s.resources, errs);
}

fn archive(field: &str, a: &Archive, errs: &mut FieldErrors) {
    match a.archive_type.as_str() {
        "" | ARCHIVE_LITERAL => {}
        ARCHIVE_URL => {
            if a.url.is_empty() {
                errs.push(
                    format!("{field}.url"),
                    "is required for an archive of type url",
                );
            }
        }
        other => errs.push(
            format!("{field}.type"),
            format!("'{other}' is not one of literal, url"),
        ),
    }
    if !a.checksum.checksum_type.is_empty() && a.checksum.checksum_type != "sha256" {
        errs.push(
            format!("{field}.checksum.type"),
            format!(
                "'{}' is not supported: use sha256",
                a.checksum.checksum_type
            ),
        );
    }
    let sum = &a.checksum.sum;
    let is_sha256 = sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit());
    if !sum.is_empty() && !is_sha256 {
        errs.push(
            format!("{field}.checksum.sum"),
            "must be 64 hexadecimal digits (sha256)",
        );
    }
}

pub(crate) fn package(s: &PackageSpec, errs: &mut FieldErrors) {
    reference("spec.environment", &s.environment, true, errs);
    archive("spec.source", &s.source, errs);
    archive("spec.deployment", &s.deployment, errs);
}

/// Package status must be one of the known values (checked on status writes).
pub fn package_status(st: &PackageStatus, errs: &mut FieldErrors) {
    if !st.buildstatus.is_empty() && !build_status::ALL.contains(&st.buildstatus.as_str()) {
        errs.push(
            "status.buildstatus",
            format!(
                "'{}' is not one of {}",
                st.buildstatus,
                build_status::ALL.join(", ")
            ),
        );
    }
}

pub(crate) fn function(s: &FunctionSpec, ns: &str, errs: &mut FieldErrors) {
    let es = &s.invoke_strategy.execution_strategy;
    let et = s.executor_type();
    if ![
        executor_type::POOLMGR,
        executor_type::NEWDEPLOY,
        executor_type::CONTAINER,
    ]
    .contains(&et)
    {
        errs.push(
            "spec.InvokeStrategy.ExecutionStrategy.ExecutorType",
            format!("'{et}' is not one of poolmgr, newdeploy, container"),
        );
    }
    if !s.invoke_strategy.strategy_type.is_empty() && s.invoke_strategy.strategy_type != "execution"
    {
        errs.push(
            "spec.InvokeStrategy.StrategyType",
            format!(
                "'{}' is not supported: use execution",
                s.invoke_strategy.strategy_type
            ),
        );
    }
    if et == executor_type::CONTAINER {
        if s.podspec.is_none() {
            errs.push("spec.podspec", "is required for the container executor");
        }
    } else {
        reference("spec.environment", &s.environment, true, errs);
        let pr = &s.package.packageref;
        if pr.name.is_empty() {
            errs.push("spec.package.packageref.name", "is required");
        } else if !is_dns1123_label(&pr.name) {
            errs.push("spec.package.packageref.name", name_rule(&pr.name));
        }
    }
    if et != executor_type::POOLMGR {
        if es.min_scale < 0 {
            errs.push(
                "spec.InvokeStrategy.ExecutionStrategy.MinScale",
                "must be 0 or more",
            );
        }
        if es.max_scale <= 0 {
            errs.push(
                "spec.InvokeStrategy.ExecutionStrategy.MaxScale",
                "must be greater than 0",
            );
        } else if es.max_scale < es.min_scale {
            errs.push(
                "spec.InvokeStrategy.ExecutionStrategy.MaxScale",
                format!(
                    "minscale ({}) can not be greater than maxscale ({})",
                    es.min_scale, es.max_scale
                ),
            );
        }
        if !(0..=100).contains(&es.target_cpu_percent) {
            errs.push(
                "spec.InvokeStrategy.ExecutionStrategy.TargetCPUPercent",
                "must be between 1 and 100",
            );
        }
    }
    if es.specialization_timeout != 0
        && es.specialization_timeout < function_defaults::SPECIALIZATION_TIMEOUT
    {
        errs.push(
            "spec.InvokeStrategy.ExecutionStrategy.SpecializationTimeout",
            format!(
                "{} must be at least {} seconds",
                es.specialization_timeout,
                function_defaults::SPECIALIZATION_TIMEOUT
            ),
        );
    }
    if s.function_timeout < 0 {
        errs.push(
            "spec.functionTimeout",
            format!("{} must be greater than 0 seconds", s.function_timeout),
        );
    }
    if s.idletimeout.is_some_and(|t| t < 0) {
        errs.push("spec.idletimeout", "must be 0 or more seconds");
    }
    if s.concurrency < 0 {
        errs.push("spec.concurrency", "must be greater than 0");
    }
    if s.requests_per_pod < 0 {
        errs.push("spec.requestsPerPod", "must be greater than 0");
    }
    if s.retain_pods < 0 {
        errs.push("spec.retainPods", "must be 0 or more");
    }
    for (field, refs, what) in [
        ("spec.secrets", &s.secrets, "secret"),
        ("spec.configmaps", &s.configmaps, "configmap"),
    ] {
        for (i, r) in refs.iter().enumerate() {
            reference(&format!("{field}[{i}]"), r, true, errs);
            if !r.namespace.is_empty() && !ns.is_empty() && r.namespace != ns {
                errs.push(
                    format!("{field}[{i}].namespace"),
                    format!(
                        "{what} {} must be in same namespace as function namespace ({ns})",
                        r.name
                    ),
                );
            }
        }
    }
    resources("spec.resources", &s.resources, errs);
}

fn function_ref(field: &str, r: &FunctionReference, allow_weights: bool, errs: &mut FieldErrors) {
    match r.ref_type.as_str() {
        function_ref_type::NAME | "" => {
            if r.name.is_empty() {
                errs.push(format!("{field}.name"), "is required");
            } else if !is_dns1123_label(&r.name) {
                errs.push(format!("{field}.name"), name_rule(&r.name));
            }
        }
        function_ref_type::FUNCTION_WEIGHTS if allow_weights => {
            let weights = r.functionweights.clone().unwrap_or_default();
            if weights.is_empty() {
                errs.push(
                    format!("{field}.functionweights"),
                    "needs at least one function",
                );
            }
            for (name, w) in &weights {
                if !is_dns1123_label(name) {
                    errs.push(format!("{field}.functionweights"), name_rule(name));
                }
                if !(0..=100).contains(w) {
                    errs.push(
                        format!("{field}.functionweights.{name}"),
                        format!("{w} must be between 0 and 100"),
                    );
                }
            }
            let sum: i32 = weights.values().sum();
            if !weights.is_empty() && sum != 100 {
                errs.push(
                    format!("{field}.functionweights"),
                    format!("the function weights should add up to 100 (they add up to {sum})"),
                );
            }
        }
        other => errs.push(
            format!("{field}.type"),
            if allow_weights {
                format!("'{other}' is not one of name, function-weights")
            } else {
                format!("'{other}' is not supported: use name")
            },
        ),
    }
}

/// Paths the router serves itself; a trigger may not claim them.
pub const RESERVED_PATHS: [&str; 3] = ["/router-healthz", "/_version", "/metrics"];
/// Prefix of the internal per-function routes.
pub const INTERNAL_ROUTE_PREFIX: &str = "/fission-function";

fn url_template(field: &str, url: &str, errs: &mut FieldErrors) {
    if !url.starts_with('/') {
        errs.push(field, format!("'{url}' must start with '/'"));
        return;
    }
    if url.split('/').any(|seg| seg == "..") {
        errs.push(field, format!("'{url}' must not contain '..' segments"));
    }
    if RESERVED_PATHS.contains(&url)
        || url == INTERNAL_ROUTE_PREFIX
        || url.starts_with("/fission-function/")
    {
        errs.push(
            field,
            format!("'{url}' is reserved by the router; choose another path"),
        );
    }
    // Braces must balance: `{name}` or `{name:regex}` with a non-empty name.
    let mut depth = 0i32;
    for c in url.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            break;
        }
    }
    if depth != 0 {
        errs.push(
            field,
            format!("'{url}' has unbalanced braces in its template"),
        );
    }
}

pub(crate) fn http_trigger(s: &HttpTriggerSpec, errs: &mut FieldErrors) {
    match s.effective_prefix() {
        Some(p) => url_template("spec.prefix", p, errs),
        None if s.relativeurl.is_empty() => {
            errs.push(
                "spec.relativeurl",
                "either relativeurl or prefix is required",
            );
        }
        None => {
            if s.relativeurl == "/" {
                errs.push("spec.relativeurl", "url with only root path is not allowed");
            } else {
                url_template("spec.relativeurl", &s.relativeurl, errs);
            }
        }
    }
    for m in s
        .methods
        .iter()
        .chain(std::iter::once(&s.method))
        .filter(|m| !m.is_empty())
    {
        if !HTTP_METHODS.contains(&m.to_ascii_uppercase().as_str()) {
            errs.push(
                "spec.methods",
                format!(
                    "'{m}' is not an HTTP method: use one of {}",
                    HTTP_METHODS.join(", ")
                ),
            );
        }
    }
    if !s.host.is_empty() && s.host != "*" && !is_dns1123_subdomain(&s.host) {
        errs.push(
            "spec.host",
            format!("'{}' is not a valid host name", s.host),
        );
    }
    function_ref("spec.functionref", &s.functionref, true, errs);
}

/// Whether a cron expression has a shape the timer accepts: 5 or 6 fields, or a descriptor.
pub fn cron_shape_ok(cron: &str) -> bool {
    let c = cron.trim();
    if let Some(rest) = c.strip_prefix("@every ") {
        return !rest.trim().is_empty();
    }
    if c.starts_with('@') {
        return [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ]
        .contains(&c);
    }
    let n = c.split_whitespace().count();
    (n == 5 || n == 6)
        && c.split_whitespace().all(|f| {
            f.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ",-*/?LW#".contains(ch))
        })
}

pub(crate) fn time_trigger(s: &TimeTriggerSpec, errs: &mut FieldErrors) {
    if s.cron.trim().is_empty() {
        errs.push(
            "spec.cron",
            "need a cron spec like '30 * * * *', '@every 1h30m', or '@hourly'",
        );
    } else if !cron_shape_ok(&s.cron) {
        errs.push(
            "spec.cron",
            format!(
                "'{}' is not a cron spec: use e.g. '30 * * * *', '@every 1h30m', or '@hourly'",
                s.cron
            ),
        );
    }
    if !s.method.is_empty() && !HTTP_METHODS.contains(&s.method.to_ascii_uppercase().as_str()) {
        errs.push(
            "spec.method",
            format!("'{}' is not an HTTP method", s.method),
        );
    }
    if !s.subpath.is_empty() && !s.subpath.starts_with('/') {
        errs.push("spec.subpath", "must start with '/'");
    }
    function_ref("spec.functionref", &s.functionref, false, errs);
}

pub(crate) fn watch_trigger(s: &KubernetesWatchTriggerSpec, errs: &mut FieldErrors) {
    let t = s.object_type.to_ascii_lowercase();
    if !["pod", "service", "replicationcontroller", "job"].contains(&t.as_str()) {
        errs.push(
            "spec.type",
            format!(
                "'{}' is not one of pod, service, replicationcontroller, job",
                s.object_type
            ),
        );
    }
    if !s.namespace.is_empty() && !is_dns1123_label(&s.namespace) {
        errs.push("spec.namespace", name_rule(&s.namespace));
    }
    function_ref("spec.functionref", &s.functionref, false, errs);
}

pub(crate) fn mq_trigger(s: &MessageQueueTriggerSpec, errs: &mut FieldErrors) {
    if s.topic.is_empty() {
        errs.push("spec.topic", "topic cannot be empty");
    }
    if !s.resp_topic.is_empty() && s.resp_topic == s.topic {
        errs.push(
            "spec.respTopic",
            "listen topic should not equal to response topic",
        );
    }
    if !s.error_topic.is_empty() && s.error_topic == s.topic {
        errs.push(
            "spec.errorTopic",
            "listen topic should not equal to error topic",
        );
    }
    if s.max_retries < 0 {
        errs.push("spec.maxRetries", "must be 0 or more");
    }
    if !["", "fission", "keda"].contains(&s.mqtkind.as_str()) {
        errs.push(
            "spec.mqtkind",
            format!("'{}' is not one of fission, keda", s.mqtkind),
        );
    }
    const TYPES: [&str; 9] = [
        "kafka",
        "aws-sqs-queue",
        "aws-kinesis-stream",
        "gcp-pubsub",
        "stan",
        "nats-jetstream",
        "rabbitmq",
        "redis",
        "nats",
    ];
    if !TYPES.contains(&s.message_queue_type.as_str()) {
        errs.push(
            "spec.messageQueueType",
            format!(
                "'{}' is not one of {}",
                s.message_queue_type,
                TYPES.join(", ")
            ),
        );
    }
    function_ref("spec.functionref", &s.functionref, false, errs);
}

pub(crate) fn canary(s: &CanaryConfigSpec, errs: &mut FieldErrors) {
    for (field, v) in [
        ("spec.trigger", &s.trigger),
        ("spec.newfunction", &s.newfunction),
        ("spec.oldfunction", &s.oldfunction),
    ] {
        if !is_dns1123_label(v) {
            errs.push(field, name_rule(v));
        }
    }
    if !(1..=100).contains(&s.weightincrement) {
        errs.push("spec.weightincrement", "must be between 1 and 100");
    }
    if !(0..=100).contains(&s.failurethreshold) {
        errs.push("spec.failurethreshold", "must be between 0 and 100");
    }
    if !s.duration.is_empty() && parse_go_duration(&s.duration).is_none() {
        errs.push(
            "spec.duration",
            format!("'{}' is not a duration like 30s, 2m, 1h", s.duration),
        );
    }
}

/// Parse a Go duration string (`1h30m`, `2m`, `500ms`) into milliseconds.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    let mut total: f64 = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as u64)
}
