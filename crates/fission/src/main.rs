//! `fission`: the command-line interface and, as `fission server`, the all-in-one server.
//!
//! This binary only parses configuration and wires the components together; everything else
//! lives in the component crates.

mod builder;
mod env;
mod fetcher;
mod otel;
mod pods;
mod server;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fission",
    version,
    about = "Fission: serverless functions, on one machine or on Kubernetes",
    // Without this clap shows the doc comment of the flattened client command enum.
    long_about = None,
    after_help = "Start the server with 'fission server', then e.g. 'fission env create --name nodejs --image fission/node-env'.\n\
Every command's --help lists its own flags first and the global flags under 'Global options'."
)]
struct Top {
    #[command(flatten)]
    global: fission_cli::GlobalArgs,
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
enum TopCommand {
    /// Run the all-in-one server: controller, router and executor in one process.
    Server(server::ServerArgs),
    /// Run the fetcher sidecar of a function pod (Fission's fetcher API on :8000).
    #[command(hide = true)]
    Fetcher(fetcher::FetcherArgs),
    /// Run the builder of a builder pod (Fission's builder API on :8001).
    #[command(hide = true)]
    Builder(builder::BuilderArgs),
    #[command(flatten)]
    Cli(fission_cli::Command),
}

fn main() -> ExitCode {
    let mut cli = Top::command();
    cli.build();
    // Fission's CLI (Go's pflag) also takes `--flag=true|false`; scripts written for it pass them.
    let mut args: Vec<std::ffi::OsString> = fission_cli::go_style_bools(&cli, std::env::args_os());
    // Installed as `/builder` in a builder image, it is Fission's builder: `/builder /packages`.
    if args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "builder")
    {
        args.insert(1, "builder".into());
    }
    let serving = args
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| a == "server");
    let top = match cli
        .try_get_matches_from(args)
        .and_then(|m| Top::from_arg_matches(&m))
    {
        Ok(top) => top,
        // Usage mistakes are errors like any other: `Error: …` on stderr, exit 1 as Fission's CLI
        // (the server keeps clap's 2 for flags it cannot start with, as documented).
        Err(e)
            if e.use_stderr()
                && e.kind() != clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let text = e.render().to_string();
            eprint!("Error: {}", text.strip_prefix("error: ").unwrap_or(&text));
            return ExitCode::from(if serving { 2 } else { 1 });
        }
        Err(e) => e.exit(),
    };
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
            TopCommand::Fetcher(args) => fetcher::run(args).await.map_err(|e| (e, 1)),
            TopCommand::Builder(args) => builder::run(args).await.map_err(|e| (e, 1)),
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
