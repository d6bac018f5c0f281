//! The llama agent binary: parses flags, installs logging and hands over to
//! the library.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "llama-agent",
    version,
    about = "llama agent: reflector, collector and control loop"
)]
struct Cli {
    /// Debug logging (RUST_LOG overrides).
    #[arg(
        short,
        long,
        global = true,
        env = "APP_VERBOSE",
        default_value_t = false
    )]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a standalone collector from a configuration file, like the
    /// original collector binary (SIGHUP reloads the file).
    Collect(llama_agent::collector::cli::CollectArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default = if cli.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .init();
    match cli.command {
        Command::Collect(args) => llama_agent::collector::cli::run(args)?,
    }
    Ok(())
}
