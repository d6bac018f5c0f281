//! Thin entry point of `llama-agent`: parse flags, set up logging, run.

use anyhow::Context;
use clap::{Parser, Subcommand};
use llama_agent::{
    control::ControlMetrics,
    daemon::SHUTDOWN_BOUND,
    duration,
    settings::{RunArgs, Settings, state_dir},
    xdp,
};
use llama_common::LogLevel;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// llama agent: reflects probes (XDP in the kernel, or userspace), probes its
/// peers, and keeps its registration and targets in sync with the server.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand the agent runs, exactly as `run` would.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default).
    Run(Box<RunArgs>),
    /// Only answer LLAMA probes (XDP where possible, userspace elsewhere)
    /// until SIGINT/SIGTERM, like the original reflector binary.
    Reflect(llama_agent::reflector::cli::ReflectArgs),
    /// Only run a collector from a configuration file, like the original
    /// collector binary (SIGHUP reloads the file).
    Collect(llama_agent::collector::cli::CollectArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => *args,
        Some(Command::Reflect(args)) => {
            let setup = args.setup().unwrap_or_else(|e| usage_error(&e));
            init_tracing(args.verbose, setup.ebpf_log);
            return llama_agent::reflector::cli::run(&args, &setup);
        }
        Some(Command::Collect(args)) => {
            init_tracing(args.verbose, LogLevel::Off);
            return Ok(llama_agent::collector::cli::run(args)?);
        }
        None => cli.run,
    };
    // A bad level is refused by `validate` just below.
    init_tracing(
        args.verbose,
        args.reflector.ebpf_log_level().unwrap_or_default(),
    );
    let settings = args.validate().unwrap_or_else(|e| usage_error(&e));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone())?;
    // Only an agent with a server has state to keep (standalone has its file).
    let state_dir = if settings.servers.is_empty() {
        None
    } else {
        state_dir::resolve(settings.state_dir.as_deref())?
    };
    log_startup(&settings, state_dir.as_deref());
    let metrics = ControlMetrics::new();
    let work = llama_agent::daemon::run(settings, state_dir, metrics, shutdown.clone());
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return Ok(result?),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(SHUTDOWN_BOUND, work).await {
        Ok(result) => result?,
        Err(_) => warn!("shutdown took longer than {SHUTDOWN_BOUND:?}; exiting anyway"),
    }
    info!("stopped");
    Ok(())
}

/// A bad flag is a usage error: one line and clap's exit code, no backtrace
/// (RUST_BACKTRACE is often set in containers).
fn usage_error(e: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(2);
}

/// The subscriber: `RUST_LOG`, else info (debug with `-v`); `--ebpf-log`
/// opens the XDP program's lines (target `llama_ebpf`) to its level on top,
/// so they show whatever the rest of the filter says.
fn init_tracing(verbose: bool, ebpf_log: LogLevel) {
    let level = if verbose { "debug" } else { "info" };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    if ebpf_log != LogLevel::Off
        && let Ok(directive) = format!("{}={}", xdp::log::TARGET, ebpf_log.name()).parse()
    {
        filter = filter.add_directive(directive);
    }
    tracing_subscriber::fmt()
        // Colour codes only on a terminal: docker logs and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(filter)
        .init();
    if let Some(reason) = llama_agent::xdp::unavailable_reason() {
        warn!("{reason}");
    }
}

/// The one start-up line an operator greps for.
fn log_startup(s: &Settings, state_dir: Option<&std::path::Path>) {
    let xdp = llama_agent::xdp::unavailable_reason().unwrap_or_else(|| "embedded".to_owned());
    info!(
        server = %servers(s),
        group = %s.group,
        port = s.port,
        probe_name = %s.probe_name,
        probe_shortname = %s.probe_shortname,
        mode = %s.reflector.mode,
        interfaces = %if s.reflector.interfaces.is_empty() { "all".into() } else { s.reflector.interfaces.join(",") },
        ebpf_log = s.reflector.ebpf_log.name(),
        xdp_object = %xdp,
        register_every = %duration::display(s.register_interval),
        poll_every = %duration::display(s.poll_interval),
        state_dir = state_dir.map_or("none".into(), |p| p.display().to_string()),
        "llama-agent starting"
    );
    if !s.servers.is_empty() && state_dir.is_none() {
        warn!(
            "no writable state directory (tried {} and the XDG/home fallbacks): a restart while the server is down starts without targets",
            state_dir::DEFAULT
        );
    }
}

/// The server list as given, or that there is none.
fn servers(s: &Settings) -> String {
    if s.servers.is_empty() {
        return "none (standalone)".into();
    }
    let urls: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
    urls.join(",")
}

/// Cancel `token` on SIGINT or SIGTERM. The handlers are installed before
/// this returns (not when the task first runs), so a signal that arrives
/// right after the start-up line is never lost to the default action.
fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT: stopping"),
            _ = term.recv() => info!("SIGTERM: stopping"),
        }
        token.cancel();
    });
    Ok(())
}
