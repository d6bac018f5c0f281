//! `cargo xtask bench <name>`: benchmarks that measure their baseline in the
//! same run where one exists, and write figures with their method to
//! `docs/benchmarks/<name>.md`.

pub mod collector;
pub mod reflector;
pub mod server;

use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Name {
    /// XDP test-run cost and veth throughput/CPU per mode.
    Reflector,
    /// Collector CPU per 1,000 probes/s and false loss at 1k/10k/50k probes/s.
    Collector,
    /// Registrations/s, config and list latency, RSS, reap time.
    Server,
}

#[derive(Args, Debug)]
pub struct Options {
    /// Which benchmark.
    #[arg(value_enum)]
    pub name: Name,
    /// Shorter windows (a smoke run; figures are noisier).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    match opts.name {
        Name::Reflector => reflector::run(opts.quick),
        Name::Collector => collector::run(opts.quick),
        Name::Server => server::run(opts.quick),
    }
}
