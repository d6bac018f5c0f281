//! The reflector's BPF_PROG_TEST_RUN table (`reflector_xdp_testrun`: exact
//! output bytes and actions, frame by frame) run inside a guest, so the
//! program is checked as that kernel's verifier and JIT (arm64's, in the
//! aarch64 guest) build it. The agent's integration-test binary is
//! cross-built static (musl) with `dist`'s toolchain and the release XDP
//! object, put into the initramfs, and run by `/init` in `testrun` mode.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::arch::GuestArch;
use crate::{build_ebpf, cmd, dist};

/// The test filter run in the guest.
pub const FILTER: &str = "reflector_xdp_testrun";

/// Builds the agent's integration-test binary for `arch`; returns its path.
pub fn build(arch: GuestArch) -> Result<PathBuf> {
    let object = build_ebpf::build_release()?;
    let plan = dist::toolchain::plan(&[arch.dist()])?;
    if !plan.std_from_source.is_empty() {
        bail!("{arch}: test binaries need a target with a prebuilt std");
    }
    let mut cargo = dist::toolchain::prebuilt_std_cargo_with(&plan, &["test", "--no-run"])?;
    cargo
        .current_dir(cmd::workspace_root())
        .env("CARGO_TARGET_DIR", dist::cargo_target_dir()?)
        .env("LLAMA_EBPF_OBJECT", &object)
        .args([
            "--release",
            "--locked",
            "-p",
            "llama-agent",
            "--test",
            "agent",
            "--message-format",
            "json-render-diagnostics",
        ]);
    eprintln!("+ {}", cmd::describe(&cargo));
    let out = cmd::checked(&mut cargo)?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo test --no-run named no test executable")
}

/// Checks the guest's test output (the console): the filtered tests ran,
/// all passed. Returns the summary line.
pub fn check(console: &str) -> Result<String> {
    let line = console
        .lines()
        .find(|l| l.contains("test result:"))
        .context("no `test result:` line")?;
    let passed = line
        .split(';')
        .find_map(|p| p.trim().strip_suffix(" passed"))
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    if !line.contains("test result: ok") || passed == 0 {
        bail!("{}", line.trim());
    }
    Ok(line.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn needs_passing_tests() {
        let ok = "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 200 filtered out";
        assert!(check(ok).is_ok());
        assert!(check("test result: ok. 0 passed; 0 failed; 0 ignored").is_err());
        assert!(check("test result: FAILED. 3 passed; 1 failed; 0 ignored").is_err());
        assert!(check("nothing").is_err());
    }
}
