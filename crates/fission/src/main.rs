//! `fission`: the command-line interface and, as `fission server`, the all-in-one server.
//!
//! This binary only parses configuration and wires the components together; everything else
//! lives in the component crates.

mod env;
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fission",
    version,
    about = "Fission: serverless functions, on one machine or on Kubernetes"
)]
struct Top {
    #[command(flatten)]
    global: fission_cli::GlobalArgs,
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// Run the all-in-one server: controller, router and executor in one process.
    Server(server::ServerArgs),
    #[command(flatten)]
    Cli(fission_cli::Command),
}

fn main() -> ExitCode {
    let top = Top::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match top.command {
            TopCommand::Server(args) => server::run(args).await.map_err(|e| {
                // Like a bad flag (clap exits 2): the server cannot start as configured.
                let code = if matches!(e, server::ServerError::Start(_)) {
                    2
                } else {
                    1
                };
                (anyhow::Error::new(e), code)
            }),
            TopCommand::Cli(cmd) => fission_cli::run(top.global, cmd).await.map_err(|e| (e, 1)),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, code)) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(code)
        }
    }
}
