//! `fission fetcher`: the sidecar of pool pods (Fission's `/fetcher`), see `fission-fetcher`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Flags as Fission's fetcher takes them (`-secret-dir /secrets -cfgmap-dir /configs /userfunc`;
/// the double-dash forms are what a pod spec written for this binary uses).
#[derive(Debug, clap::Args)]
pub(crate) struct FetcherArgs {
    /// The directory shared with the runtime container.
    #[arg(default_value = "/userfunc")]
    shared_dir: PathBuf,
    /// Where the function's Secrets are written (`<dir>/<namespace>/<name>/<key>`).
    #[arg(long = "secret-dir", default_value = "/secrets")]
    secret_dir: PathBuf,
    /// Where the function's ConfigMaps are written.
    #[arg(long = "cfgmap-dir", default_value = "/configs")]
    configmap_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8000")]
    listen: SocketAddr,
    /// The controller's URL: Packages, Secrets, ConfigMaps and archives are read from it.
    #[arg(long, env = "FISSION_CONTROLLER_URL")]
    controller_url: String,
    /// The runtime container's URL.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    runtime_url: String,
    /// The controller's API token (the pod gets it from a Secret).
    #[arg(long, env = crate::env::ENV_AUTH_TOKEN, hide_env_values = true)]
    auth_token: Option<String>,
    /// Load the function of --specialize-request before becoming ready (newdeploy pods).
    #[arg(long = "specialize-on-startup", requires = "specialize_request")]
    specialize_on_startup: bool,
    /// The `FunctionSpecializeRequest` JSON to load on startup.
    #[arg(long = "specialize-request")]
    specialize_request: Option<String>,
}

pub(crate) async fn run(args: FetcherArgs) -> anyhow::Result<()> {
    let _log = crate::server::init_tracing()?;
    let config = fission_fetcher::Config {
        shared_dir: args.shared_dir,
        secret_dir: args.secret_dir,
        configmap_dir: args.configmap_dir,
        controller_url: args.controller_url,
        runtime_url: args.runtime_url,
        auth_token: args.auth_token.filter(|t| !t.is_empty()),
        fetch: fission_fetch::FetchConfig::default(),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        stop.cancel();
    });
    if args.specialize_on_startup {
        let request = args.specialize_request.unwrap_or_default();
        let request: fission_fetcher::wire::SpecializeRequest =
            request.parse().context("invalid --specialize-request")?;
        return fission_fetcher::run_specialized(config, args.listen, request, shutdown)
            .await
            .context("fetcher stopped");
    }
    fission_fetcher::run(config, args.listen, shutdown)
        .await
        .context("fetcher stopped")
}
