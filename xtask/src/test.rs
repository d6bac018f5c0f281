//! `cargo xtask test`: everything a fresh machine needs, then every test.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{build_ebpf, cmd, prereqs};

#[derive(Args, Debug)]
pub struct Options {
    /// Extra arguments passed to `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    prereqs::ensure(prereqs::TEST_PACKAGES)?;
    let object = build_ebpf::build(&build_ebpf::Options { release: true })?;
    eprintln!("XDP object: {}", object.display());

    if cmd::output(Command::new("cargo").args(["fmt", "--version"])).is_none() {
        cmd::run(Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    cmd::run(
        Command::new("cargo")
            .current_dir(cmd::workspace_root())
            .args(["fmt", "--all", "--check"]),
    )?;

    let mut test = Command::new("cargo");
    test.current_dir(cmd::workspace_root()).args([
        "test",
        "--workspace",
        "--exclude",
        "llama-ebpf",
    ]);
    // Privileged suites must run, not skip, when driven from here as root.
    if cmd::is_root() {
        test.env("LLAMA_REQUIRE_PRIVILEGED", "1");
    }
    test.args(&opts.cargo_args);
    cmd::run(&mut test)
}
