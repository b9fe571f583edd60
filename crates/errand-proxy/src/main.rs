//! `errand`: the Worker Pattern as a reverse proxy in front of any slow HTTP upstream.
//!
//! Layout: [`cli`] (flags), [`settings`] (flags + `--config` → errand's `Config`, with
//! errors naming what is wrong), [`server`] (start, workers, shutdown), [`connection`] (each
//! client connection: TLS, HTTP/1.1 or HTTP/2), [`tls`] (certificates, reloaded; the
//! upstream's TLS client), [`framing`] (a connection guard against ambiguous request
//! framing), [`stall`] (the send timeout against clients that stop reading), [`upstream`]
//! (the upstream client, used by the front and the workers), [`admin`] (the admin listener:
//! metrics, JSON API; and the `stats` / `purge` verbs that call it). The pattern itself is the `errand`
//! library.

mod admin;
mod backend;
mod cli;
mod connection;
mod framing;
mod server;
mod settings;
mod stall;
mod tls;
mod upstream;
mod verbs;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let mut filter =
        EnvFilter::try_from_env("ERRAND_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if let cli::Command::Serve(serve) = &cli.command
        && serve.log_requests
        && let Ok(directive) = "errand::request=debug".parse()
    {
        filter = filter.add_directive(directive);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("errand: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Serve(args) => server::serve(args).await,
            cli::Command::Work(args) => server::work(args).await,
            cli::Command::Migrate(args) => server::migrate(args).await,
            cli::Command::Stats(args) => verbs::stats_verb(args).await,
            cli::Command::Purge(args) => verbs::purge_verb(args).await,
            cli::Command::Retry(args) => verbs::retry_verb(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("errand: {e:#}");
            ExitCode::FAILURE
        }
    }
}
