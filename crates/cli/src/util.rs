//! Small pieces shared by the commands: name checks and generation, `k=v` flags, resource
//! flags.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use fission_core::resources::ResourceRequirements;
use fission_core::{AnyResource, Object, Spec, ValidationError};

/// Reject a name that the server would reject, before any request is made, with the server's
/// message (`invalid Function '../x': metadata.name: '../x' is not a valid name: …`).
pub(crate) fn check_name<S: Spec>(ns: &str, name: &str) -> anyhow::Result<()>
where
    AnyResource: From<Object<S>>,
{
    let probe = Object::<S>::new(ns, name, S::default());
    match AnyResource::from(probe).validate() {
        Ok(()) => Ok(()),
        Err(e) => {
            let errors: Vec<_> = e
                .errors
                .into_iter()
                .filter(|f| f.field.starts_with("metadata."))
                .collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(ValidationError {
                    kind: e.kind,
                    name: e.name,
                    errors,
                }
                .into())
            }
        }
    }
}

/// Validate a whole object with the server's rules before sending it.
pub(crate) fn validate<S: Spec>(obj: &Object<S>) -> anyhow::Result<()>
where
    AnyResource: From<Object<S>>,
{
    AnyResource::from(obj.clone())
        .validate()
        .map_err(Into::into)
}

/// A fresh random name, as Fission uses for triggers created without `--name` (a UUID v4,
/// which is a valid DNS-1123 label).
pub(crate) fn random_name() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `n` random lower-case hex characters.
pub(crate) fn random_suffix(n: usize) -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(n)
        .collect()
}

/// The name of the package `fn create` makes for function `fn_name`: `<fn>-<id>`, cut to a
/// valid DNS-1123 label of at most 63 characters. When the function name is long it is
/// shortened first, so at least 16 characters of `id` survive and names stay unique.
pub(crate) fn package_name_for_function(fn_name: &str, id: &str) -> String {
    const MAX: usize = 63;
    const MIN_ID: usize = 16;
    let fn_part = fn_name.to_ascii_lowercase();
    let id = id.to_ascii_lowercase();
    let full = format!("{fn_part}-{id}");
    if full.len() <= MAX {
        return full;
    }
    let keep_fn = fn_part.len().min(MAX - 1 - MIN_ID);
    let fn_part = fn_part[..keep_fn].trim_end_matches('-');
    let room = MAX - fn_part.len() - 1;
    let id_part: String = id.chars().take(room).collect();
    let id_part = id_part.trim_end_matches('-');
    if fn_part.is_empty() {
        id_part.to_owned()
    } else {
        format!("{fn_part}-{id_part}")
    }
}

/// Turn arbitrary text (a file name) into a DNS-1123 label fragment of at most `max` chars.
pub(crate) fn kubify(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(max).collect();
    out.trim_end_matches('-').to_owned()
}

/// The default name of `pkg create`: the first file's base name, kubified, plus 4 random chars.
/// For a glob the last component without wildcards is used (`multifile/*` → `multifile`); for a
/// URL its last path segment (query dropped).
pub(crate) fn package_name_from_file(first_arg: &str, suffix: &str) -> String {
    let path = first_arg.split(['?', '#']).next().unwrap_or_default();
    let base = path
        .split(['/', '\\'])
        .rfind(|c| !c.is_empty() && *c != "." && *c != ".." && !c.contains(['*', '?', '[']))
        .unwrap_or_default();
    let stem = kubify(base, 63 - 1 - suffix.len());
    if stem.is_empty() {
        format!("pkg-{suffix}")
    } else {
        format!("{stem}-{suffix}")
    }
}

/// Parse one `key=value` (the value may contain `=`).
pub(crate) fn parse_kv(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => bail!("illegal {what} '{s}': use key=value"),
    }
}

/// Parse repeated `k=v` flags into a map.
pub(crate) fn parse_kv_list(
    items: &[String],
    what: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    items.iter().map(|s| parse_kv(s, what)).collect()
}

/// Parse `--labels "a=b,c=d"`.
pub(crate) fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse_kv(p, "label"))
        .collect()
}

/// Apply `--labels` and `--annotation` to metadata (merging with what is there).
pub(crate) fn apply_labels_annotations(
    meta: &mut fission_core::ObjectMeta,
    labels: Option<&str>,
    annotations: &[String],
) -> anyhow::Result<()> {
    if let Some(l) = labels {
        let parsed = parse_labels(l)?;
        if !parsed.is_empty() {
            meta.labels.get_or_insert_with(BTreeMap::new).extend(parsed);
        }
    }
    let anns = parse_kv_list(annotations, "annotation")?;
    if !anns.is_empty() {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(anns);
    }
    Ok(())
}

/// `--mincpu/--maxcpu` (millicores) and `--minmemory/--maxmemory` (MiB).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResourceArgs {
    /// Minimum CPU to be assigned to pod (in millicore, minimum 1)
    #[arg(long)]
    pub mincpu: Option<i64>,
    /// Maximum CPU to be assigned to pod (in millicore, minimum 1)
    #[arg(long)]
    pub maxcpu: Option<i64>,
    /// Minimum memory to be assigned to pod (in megabyte)
    #[arg(long)]
    pub minmemory: Option<i64>,
    /// Maximum memory to be assigned to pod (in megabyte)
    #[arg(long)]
    pub maxmemory: Option<i64>,
}

impl ResourceArgs {
    pub(crate) fn any_set(&self) -> bool {
        self.mincpu.is_some()
            || self.maxcpu.is_some()
            || self.minmemory.is_some()
            || self.maxmemory.is_some()
    }

    /// Apply to `r` (the existing requirements on update, empty on create). When only the
    /// minimum is given and no maximum exists, the maximum becomes the minimum; a minimum above
    /// the maximum is refused.
    pub(crate) fn apply(&self, r: &mut ResourceRequirements) -> anyhow::Result<()> {
        for (flag, v) in [
            ("mincpu", self.mincpu),
            ("maxcpu", self.maxcpu),
            ("minmemory", self.minmemory),
            ("maxmemory", self.maxmemory),
        ] {
            if let Some(v) = v.filter(|v| *v < 0) {
                bail!("--{flag} must be 0 or more, got {v}");
            }
        }
        if let Some(min) = self.mincpu {
            r.requests.insert("cpu".into(), format!("{min}m"));
        }
        if let Some(max) = self.maxcpu {
            r.limits.insert("cpu".into(), format!("{max}m"));
        } else if let Some(min) = self.mincpu {
            r.limits
                .entry("cpu".into())
                .or_insert_with(|| format!("{min}m"));
        }
        if let Some(min) = self.minmemory {
            r.requests.insert("memory".into(), format!("{min}Mi"));
        }
        if let Some(max) = self.maxmemory {
            r.limits.insert("memory".into(), format!("{max}Mi"));
        } else if let Some(min) = self.minmemory {
            r.limits
                .entry("memory".into())
                .or_insert_with(|| format!("{min}Mi"));
        }
        let cpu = ResourceRequirements::cpu_millis(&r.requests)
            .zip(ResourceRequirements::cpu_millis(&r.limits));
        if let Some((min, max)) = cpu.filter(|(min, max)| min > max) {
            bail!("MinCPU ({min}) cannot be greater than MaxCPU ({max})");
        }
        let mem = ResourceRequirements::memory_bytes(&r.requests)
            .zip(ResourceRequirements::memory_bytes(&r.limits));
        if let Some((min, max)) = mem.filter(|(min, max)| min > max) {
            bail!(
                "MinMemory ({}) cannot be greater than MaxMemory ({})",
                min >> 20,
                max >> 20
            );
        }
        Ok(())
    }
}

/// The cell Fission's tables print for a quantity (`0` when unset, like Go's zero Quantity).
pub(crate) fn quantity_cell(map: &BTreeMap<String, String>, key: &str) -> String {
    map.get(key).cloned().unwrap_or_else(|| "0".to_owned())
}

/// Parse a timeout like `60s`, `1m30s`, `500ms` or a bare number of seconds.
pub(crate) fn parse_timeout(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let ms = fission_core::validation::parse_go_duration(s)
        .with_context(|| format!("invalid duration '{s}': use e.g. 30s, 1m, 500ms"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// Read `--env`-style `K=V` pairs into Kubernetes `EnvVar` JSON.
pub(crate) fn env_vars(items: &[String]) -> anyhow::Result<Vec<serde_json::Value>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = parse_kv(s, "environment variable")?;
            Ok(serde_json::json!({"name": k, "value": v}))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fission_core::is_dns1123_label;
    use fission_core::resources::FunctionSpec;

    #[test]
    fn package_name_is_function_name_plus_id_when_it_fits() {
        let id = "3c1e0a2b-1111-4222-8333-444455556666";
        assert_eq!(
            package_name_for_function("hello", id),
            format!("hello-{id}")
        );
    }

    #[test]
    fn package_name_stays_a_valid_label_of_at_most_63_chars_for_long_function_names() {
        let id = "3c1e0a2b-1111-4222-8333-444455556666";
        for len in [1usize, 20, 26, 27, 40, 46, 47, 62, 63] {
            for fill in ['a', '-'] {
                let name: String = std::iter::once('f')
                    .chain(std::iter::repeat_n(fill, len - 1))
                    .collect();
                let name = if name.ends_with('-') {
                    format!("{}x", &name[..name.len() - 1])
                } else {
                    name
                };
                let p = package_name_for_function(&name, id);
                assert!(p.len() <= 63, "{p} too long");
                assert!(is_dns1123_label(&p), "{p:?} is not a DNS label");
                assert!(p.contains("3c1e0a2b"), "{p} lost the unique id");
            }
        }
    }

    #[test]
    fn package_names_from_random_ids_are_unique() {
        let a = package_name_for_function(&"x".repeat(63), &uuid::Uuid::new_v4().to_string());
        let b = package_name_for_function(&"x".repeat(63), &uuid::Uuid::new_v4().to_string());
        assert_ne!(a, b);
    }

    #[test]
    fn generated_trigger_names_are_valid_labels() {
        let n = random_name();
        assert!(is_dns1123_label(&n), "{n}");
    }

    #[test]
    fn package_default_name_is_kubified_file_name_with_suffix() {
        assert_eq!(
            package_name_from_file("dir/Hello_World.js", "ab12"),
            "hello-world-js-ab12"
        );
        assert_eq!(
            package_name_from_file("multifile/*", "ab12"),
            "multifile-ab12"
        );
        assert_eq!(package_name_from_file("*.py", "ab12"), "pkg-ab12");
        assert_eq!(
            package_name_from_file("http://h/x/app.zip?a=b", "ab12"),
            "app-zip-ab12"
        );
        let long = format!("{}.py", "a".repeat(100));
        let n = package_name_from_file(&long, "ab12");
        assert!(n.len() <= 63 && is_dns1123_label(&n), "{n}");
    }

    #[test]
    fn invalid_names_are_rejected_with_the_server_message() {
        for bad in ["Hello", "../x", &"a".repeat(64)] {
            let e = check_name::<FunctionSpec>("default", bad)
                .expect_err("must fail")
                .to_string();
            assert!(
                e.starts_with(&format!("invalid Function '{bad}': metadata.name:")),
                "{e}"
            );
        }
        check_name::<FunctionSpec>("default", "hello").expect("valid");
    }

    #[test]
    fn cpu_and_memory_flags_become_kubernetes_quantities() {
        let mut r = ResourceRequirements::default();
        ResourceArgs {
            mincpu: Some(100),
            maxcpu: Some(200),
            minmemory: Some(64),
            maxmemory: Some(128),
        }
        .apply(&mut r)
        .expect("apply");
        assert_eq!(r.requests["cpu"], "100m");
        assert_eq!(r.limits["cpu"], "200m");
        assert_eq!(r.requests["memory"], "64Mi");
        assert_eq!(r.limits["memory"], "128Mi");
    }

    #[test]
    fn only_min_given_sets_max_to_min() {
        let mut r = ResourceRequirements::default();
        ResourceArgs {
            mincpu: Some(50),
            minmemory: Some(32),
            ..Default::default()
        }
        .apply(&mut r)
        .expect("apply");
        assert_eq!(r.limits["cpu"], "50m");
        assert_eq!(r.limits["memory"], "32Mi");
    }

    #[test]
    fn min_above_max_is_refused() {
        let mut r = ResourceRequirements::default();
        let e = ResourceArgs {
            mincpu: Some(300),
            maxcpu: Some(100),
            ..Default::default()
        }
        .apply(&mut r)
        .expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "MinCPU (300) cannot be greater than MaxCPU (100)"
        );
        let mut r = ResourceRequirements::default();
        let e = ResourceArgs {
            minmemory: Some(256),
            maxmemory: Some(128),
            ..Default::default()
        }
        .apply(&mut r)
        .expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "MinMemory (256) cannot be greater than MaxMemory (128)"
        );
    }

    #[test]
    fn raising_min_on_update_is_checked_against_the_existing_max() {
        let mut r = ResourceRequirements::default();
        r.limits.insert("cpu".into(), "100m".into());
        let e = ResourceArgs {
            mincpu: Some(200),
            ..Default::default()
        }
        .apply(&mut r)
        .expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "MinCPU (200) cannot be greater than MaxCPU (100)"
        );
    }

    #[test]
    fn labels_and_kv_flags_parse() {
        let l = parse_labels("a=b, c=d=e").expect("labels");
        assert_eq!(l["a"], "b");
        assert_eq!(l["c"], "d=e");
        assert!(parse_kv("novalue", "annotation").is_err());
    }

    #[test]
    fn timeouts_accept_go_durations_and_seconds() {
        assert_eq!(parse_timeout("60").expect("t").as_secs(), 60);
        assert_eq!(parse_timeout("1m30s").expect("t").as_secs(), 90);
        assert_eq!(parse_timeout("500ms").expect("t").as_millis(), 500);
        assert!(parse_timeout("soon").is_err());
    }
}
