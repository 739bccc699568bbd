//! Environment variables the server reads, each declared once.

/// Data directory.
pub const ENV_DATA_DIR: &str = "FISSION_DATA_DIR";
/// Controller listen address.
pub const ENV_CONTROLLER_LISTEN: &str = "FISSION_CONTROLLER_LISTEN";
/// Router listen address.
pub const ENV_ROUTER_LISTEN: &str = "FISSION_ROUTER_LISTEN";
/// Directory holding the built-in runtimes (`nodejs/`, `python/`).
pub const ENV_ENVIRONMENTS_DIR: &str = "FISSION_ENVIRONMENTS_DIR";
/// Node.js binary used for Node runtimes.
pub const ENV_NODE: &str = "FISSION_NODE";
/// Python binary used for Python runtimes.
pub const ENV_PYTHON: &str = "FISSION_PYTHON";
/// Shutdown grace period.
pub const ENV_GRACE_PERIOD: &str = "FISSION_GRACE_PERIOD";
/// Instance isolation mode.
pub const ENV_SANDBOX: &str = "FISSION_SANDBOX";
/// Most function instances alive at once.
pub const ENV_MAX_INSTANCES: &str = "FISSION_MAX_INSTANCES";
/// Most specializations in progress at once.
pub const ENV_MAX_SPECIALIZATIONS: &str = "FISSION_MAX_SPECIALIZATIONS";
/// Object store backend (`embedded`, `kubernetes`).
pub const ENV_STORE: &str = "FISSION_STORE";
/// Kubeconfig for the Kubernetes store.
pub const ENV_KUBECONFIG: &str = "FISSION_KUBECONFIG";
/// Which components this process runs (`all`, `controller`, `router`, `executor`).
pub const ENV_ROLE: &str = "FISSION_ROLE";
/// Executor API listen address (`--role executor`).
pub const ENV_EXECUTOR_LISTEN: &str = "FISSION_EXECUTOR_LISTEN";
/// The executor API the router calls (`--role router`).
pub const ENV_EXECUTOR_URL: &str = "FISSION_EXECUTOR_URL";
/// The controller executors read archives from (`--role executor`).
pub const ENV_CONTROLLER_URL: &str = "FISSION_CONTROLLER_URL";
/// The router triggers call and the CLI is sent to (`--role controller`).
pub const ENV_ROUTER_URL: &str = "FISSION_ROUTER_URL";
/// API token the controller requires (also what the CLI sends).
pub const ENV_AUTH_TOKEN: &str = "FISSION_AUTH_TOKEN";
/// Run a non-loopback controller without a token.
pub const ENV_INSECURE_NO_AUTH: &str = "FISSION_INSECURE_NO_AUTH";
/// The controller's TLS certificate chain (PEM).
pub const ENV_TLS_CERT: &str = "FISSION_TLS_CERT";
/// The controller's TLS private key (PEM).
pub const ENV_TLS_KEY: &str = "FISSION_TLS_KEY";
/// A separate listener for the router's internal `/fission-function/…` routes.
pub const ENV_ROUTER_INTERNAL_LISTEN: &str = "FISSION_ROUTER_INTERNAL_LISTEN";
