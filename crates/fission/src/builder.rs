//! `fission builder`: the builder container of a builder pod (Fission's `/builder`), see
//! `fission-builder-server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// Flags as Fission's builder takes them (`/builder /packages`).
#[derive(Debug, clap::Args)]
pub(crate) struct BuilderArgs {
    /// The volume shared with the fetcher, holding sources and deployments.
    #[arg(default_value = "/packages")]
    shared_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8001")]
    listen: SocketAddr,
}

pub(crate) async fn run(args: BuilderArgs) -> anyhow::Result<()> {
    let _log = crate::server::init_tracing()?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        stop.cancel();
    });
    fission_builder_server::run(
        fission_builder_server::Config::new(args.shared_dir),
        args.listen,
        shutdown,
    )
    .await
    .context("builder stopped")
}
