//! The `skald` binary: `skald server` runs a node; every other subcommand is the
//! admin / produce / consume / bench tool built on `skald-client`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "skald",
    version,
    about = "Kafka-compatible partitioned log cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a Skald node (a single combined broker + controller on the embedded defaults).
    Server(ServerArgs),
    #[command(flatten)]
    Tool(skald_client::cli::Command),
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// A server.properties-style file with Kafka's property names.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set one property, e.g. `--override log.dirs=/tmp/x`; wins over the file and over the
    /// `SKALD_<KEY>` environment variables (`SKALD_LOG_DIRS=/tmp/x`). Repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => run_server(args),
        Command::Tool(command) => skald_client::cli::main(command),
    }
}

fn run_server(args: ServerArgs) -> std::process::ExitCode {
    init_tracing();
    let config = match skald_broker::ServerConfig::load_with_env(
        args.config.as_deref(),
        std::env::vars_os(),
        &args.overrides,
    ) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("skald: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    match skald_broker::run_until_signal(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("server failed: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
