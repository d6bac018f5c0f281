//! Formatting: `cargo fmt` (stable rustfmt, `rustfmt.toml`) plus the import
//! layout, which only nightly rustfmt can apply: one `use` per crate
//! (`imports_granularity = "Crate"`) in three groups, std, external crates,
//! then this crate (`group_imports = "StdExternalCrate"`).
//!
//! The two import options are passed on the command line rather than kept
//! in `rustfmt.toml`, where stable `cargo fmt` would print a warning for
//! each of them on every run. `cargo xtask fmt` applies both passes;
//! `cargo xtask test` checks both.

use std::process::Command;

use anyhow::Result;

use crate::{build_ebpf, cmd};

/// The nightly-only options of the import layout.
const IMPORT_LAYOUT: &str = "imports_granularity=Crate,group_imports=StdExternalCrate";

/// Formats every crate: stable rustfmt, then the import layout.
pub fn apply() -> Result<()> {
    ensure_rustfmt()?;
    cmd::run(stable().args(["fmt", "--all"]))?;
    cmd::run(nightly().args(["fmt", "--all", "--", "--config", IMPORT_LAYOUT]))
}

/// Fails when a file is not formatted as [`apply`] would format it.
pub fn check() -> Result<()> {
    ensure_rustfmt()?;
    cmd::run(stable().args(["fmt", "--all", "--check"]))?;
    cmd::run(nightly().args(["fmt", "--all", "--check", "--", "--config", IMPORT_LAYOUT]))
        .map_err(|e| e.context("imports are not in the project's layout: run `cargo xtask fmt`"))
}

fn ensure_rustfmt() -> Result<()> {
    if cmd::output(Command::new("cargo").args(["fmt", "--version"])).is_none() {
        cmd::run(Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    build_ebpf::ensure_nightly()?;
    build_ebpf::ensure_nightly_component("rustfmt")
}

fn stable() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(cmd::workspace_root());
    c
}

fn nightly() -> Command {
    let mut c = build_ebpf::nightly_cargo();
    c.current_dir(cmd::workspace_root());
    c
}
