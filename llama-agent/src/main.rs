//! Thin entry point of `llama-agent`: parse flags, set up logging, run.

use clap::{Parser, Subcommand};
use tracing::{info, warn};

/// llama agent: reflects probes (XDP in the kernel, or userspace), probes its
/// peers, and keeps its registration and targets in sync with the server.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Debug logging.
    #[arg(short, long, env = "APP_VERBOSE", default_value_t = false)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer LLAMA probes (XDP where possible, userspace elsewhere) until
    /// SIGINT/SIGTERM.
    Reflect(llama_agent::reflector::cli::ReflectArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = if cli.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    match llama_agent::xdp::embedded_object() {
        Some(object) => info!(bytes = object.len(), "XDP reflector object embedded"),
        None => warn!(
            "built without the XDP object: userspace-only reflector (build it with `cargo xtask build-ebpf --release`)"
        ),
    }
    match cli.command {
        Some(Command::Reflect(args)) => llama_agent::reflector::cli::run(args),
        None => Ok(()),
    }
}
