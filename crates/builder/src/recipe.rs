//! Which build a package gets: a built-in builder selected by the environment's builder image,
//! or a custom command (the package's `buildcmd`, else the environment's `builder.command`).

use fission_core::resources::{Environment, Package};
use fission_core::runtime::{BuiltinRuntime, builtin_builder};

/// How a package is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recipe {
    /// The built-in builder of a runtime.
    Builtin(BuiltinRuntime),
    /// A command line, split on whitespace (no shell).
    Command(Vec<String>),
}

/// Commands that mean "the builder image's own build script" (Fission's `env create --builder`
/// sets `build`; its builder runs `/build` when the command is empty).
const DEFAULT_COMMANDS: [&str; 3] = ["build", "/build", "/usr/local/bin/build"];

/// Pick the recipe for `pkg`, or explain (for the build log) why it cannot be built.
pub(crate) fn select(pkg: &Package, env: &Environment) -> Result<Recipe, String> {
    let builder = env.spec.builder.as_ref();
    let image = builder.map(|b| b.image.trim()).unwrap_or_default();
    let pkg_cmd = pkg.spec.buildcmd.trim();
    let env_cmd = builder.map(|b| b.command.trim()).unwrap_or_default();
    let cmd = if pkg_cmd.is_empty() { env_cmd } else { pkg_cmd };
    if !cmd.is_empty() && !DEFAULT_COMMANDS.contains(&cmd) {
        return Ok(Recipe::Command(
            cmd.split_whitespace().map(str::to_owned).collect(),
        ));
    }
    let env_name = &env.metadata.name;
    if image.is_empty() {
        return Err(format!(
            "environment '{env_name}' has no builder, so package '{}' cannot be built. Give the environment a builder \
             (fission env update --name {env_name} --builder fission/python-builder or fission/node-builder) and run \
             'fission pkg rebuild --name {}', or give the package a build command with --buildcmd.",
            pkg.metadata.name, pkg.metadata.name
        ));
    }
    match builtin_builder(image) {
        Some(rt) => Ok(Recipe::Builtin(rt)),
        None => Err(format!(
            "builder image '{image}' of environment '{env_name}' is not supported: the built-in builders are selected by \
             fission/node-builder and fission/python-builder (any registry prefix, tag or version suffix); or give the \
             package a build command with --buildcmd"
        )),
    }
}

impl Recipe {
    /// How the build is described in its log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Builtin(BuiltinRuntime::NodeJs) => "the built-in Node.js builder".to_owned(),
            Self::Builtin(BuiltinRuntime::Python) => "the built-in Python builder".to_owned(),
            Self::Command(argv) => format!("build command '{}'", argv.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use fission_core::resources::{Builder, EnvironmentSpec, PackageSpec};

    use super::*;

    fn env(image: &str, command: &str) -> Environment {
        let builder = (!image.is_empty() || !command.is_empty()).then(|| Builder {
            image: image.to_owned(),
            command: command.to_owned(),
            ..Builder::default()
        });
        Environment::new(
            "default",
            "e",
            EnvironmentSpec {
                builder,
                ..EnvironmentSpec::default()
            },
        )
    }

    fn pkg(buildcmd: &str) -> Package {
        Package::new(
            "default",
            "p",
            PackageSpec {
                buildcmd: buildcmd.to_owned(),
                ..PackageSpec::default()
            },
        )
    }

    #[test]
    fn the_builder_image_selects_a_builtin_builder_for_the_default_command() {
        for cmd in ["", "build", "/build", "/usr/local/bin/build"] {
            assert_eq!(
                select(&pkg(""), &env("fission/python-builder", cmd)),
                Ok(Recipe::Builtin(BuiltinRuntime::Python))
            );
            assert_eq!(
                select(&pkg(cmd), &env("ghcr.io/fission/node-builder-22", "build")),
                Ok(Recipe::Builtin(BuiltinRuntime::NodeJs))
            );
        }
    }

    #[test]
    fn the_package_command_wins_over_the_environment_command() {
        let r = select(
            &pkg("./build.sh  --fast"),
            &env("fission/python-builder", "make all"),
        );
        assert_eq!(
            r,
            Ok(Recipe::Command(vec!["./build.sh".into(), "--fast".into()]))
        );
        let r = select(&pkg(""), &env("fission/python-builder", "make all"));
        assert_eq!(r, Ok(Recipe::Command(vec!["make".into(), "all".into()])));
    }

    #[test]
    fn custom_commands_build_without_a_builder_image() {
        assert_eq!(
            select(&pkg("sh build.sh"), &env("", "")),
            Ok(Recipe::Command(vec!["sh".into(), "build.sh".into()]))
        );
    }

    #[test]
    fn no_builder_and_no_command_is_explained() {
        let err = select(&pkg(""), &env("", "")).expect_err("no builder");
        assert!(err.contains("environment 'e' has no builder"), "{err}");
        let err = select(&pkg("build"), &env("", "")).expect_err("no builder");
        assert!(err.contains("has no builder"), "{err}");
        let err = select(&pkg(""), &env("example/builder", "build")).expect_err("unsupported");
        assert!(err.contains("builder image 'example/builder'"), "{err}");
    }
}
