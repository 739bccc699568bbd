//! Which built-in runtime an Environment image selects.
//!
//! Until OCI images run here, `fission/node-env` and `fission/python-env` (with any registry
//! prefix and any tag or version suffix, e.g. `ghcr.io/fission/node-env-22:1.2`) select the
//! runtimes shipped in `environments/`; any other image is refused with a clear message.

/// A runtime shipped with fission-rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRuntime {
    /// `environments/nodejs`
    NodeJs,
    /// `environments/python`
    Python,
}

impl BuiltinRuntime {
    /// Directory name under `environments/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::NodeJs => "nodejs",
            Self::Python => "python",
        }
    }
}

/// Map an image reference to a built-in runtime.
pub fn builtin_runtime(image: &str) -> Option<BuiltinRuntime> {
    let repo = image_repository(image);
    // Last two path components: `fission/node-env…`.
    let mut parts = repo.rsplit('/');
    let last = parts.next().unwrap_or("");
    let owner = parts.next().unwrap_or("");
    if owner != "fission" {
        return None;
    }
    if last == "node-env" || last.starts_with("node-env-") {
        Some(BuiltinRuntime::NodeJs)
    } else if last == "python-env" || last.starts_with("python-env-") {
        Some(BuiltinRuntime::Python)
    } else {
        None
    }
}

/// Map a builder image to the runtime whose built-in builder it selects.
pub fn builtin_builder(image: &str) -> Option<BuiltinRuntime> {
    let repo = image_repository(image);
    let mut parts = repo.rsplit('/');
    let last = parts.next().unwrap_or("");
    let owner = parts.next().unwrap_or("");
    if owner != "fission" {
        return None;
    }
    if last == "node-builder" || last.starts_with("node-builder-") {
        Some(BuiltinRuntime::NodeJs)
    } else if last == "python-builder" || last.starts_with("python-builder-") {
        Some(BuiltinRuntime::Python)
    } else {
        None
    }
}

/// The image reference without tag or digest.
fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' is a tag; one before it is a registry port.
    match (no_digest.rfind(':'), no_digest.rfind('/')) {
        (Some(c), Some(s)) if c > s => &no_digest[..c],
        (Some(c), None) => &no_digest[..c],
        _ => no_digest,
    }
}

/// The message for an image that selects no built-in runtime.
pub fn unsupported_image_message(image: &str) -> String {
    format!(
        "image '{image}' is not supported yet: this server runs the built-in runtimes selected by \
         fission/node-env or fission/python-env (any registry prefix, tag or version suffix, e.g. \
         ghcr.io/fission/node-env-22); OCI images are not supported"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_builtin_runtime_for_fission_images_with_any_prefix_or_tag() {
        for img in [
            "fission/node-env",
            "ghcr.io/fission/node-env-22",
            "fission/node-env:latest",
            "localhost:5000/fission/node-env-20:1.0",
        ] {
            assert_eq!(builtin_runtime(img), Some(BuiltinRuntime::NodeJs), "{img}");
        }
        for img in [
            "fission/python-env",
            "ghcr.io/fission/python-env-3.11:v1",
            "docker.io/fission/python-env@sha256:abc",
        ] {
            assert_eq!(builtin_runtime(img), Some(BuiltinRuntime::Python), "{img}");
        }
    }

    #[test]
    fn refuses_other_images() {
        for img in [
            "node:20",
            "fission/go-env",
            "evil/node-env",
            "fission/node-envy",
            "fission/python-builder",
        ] {
            assert_eq!(builtin_runtime(img), None, "{img}");
        }
        assert_eq!(
            builtin_builder("ghcr.io/fission/python-builder-3.11"),
            Some(BuiltinRuntime::Python)
        );
    }
}
