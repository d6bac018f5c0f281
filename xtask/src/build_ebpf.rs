//! `cargo xtask build-ebpf`: the XDP object, and the toolchain it needs.
//!
//! The kernel side builds on nightly (`-Z build-std=core` for
//! `bpfel-unknown-none`) and links with bpf-linker, which must be built
//! against the same LLVM major version as that nightly. We build bpf-linker
//! against the nightly's own `libLLVM.so` (a prefix folder whose `lib/libLLVM.so`
//! points at the sysroot's copy) and keep it in a cache folder keyed by the
//! LLVM major, `~/.cache/llama/bpf-linker-llvm<N>/`, so it is built once per
//! machine and never mismatches a later nightly.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cmd;

/// bpf-linker version we build (supports the LLVM 22 of the installed nightly).
const BPF_LINKER_VERSION: &str = "0.13.0";
const TARGET: &str = "bpfel-unknown-none";

#[derive(Args, Debug, Clone, Default)]
pub struct Options {
    /// Build the debug profile instead of the release one. The agent embeds
    /// only the release object (and the tests use it), so a debug object is
    /// for reading the unoptimised program, not for running it.
    #[arg(long, conflicts_with = "release")]
    pub debug: bool,
    /// The release profile: the default, accepted for scripts that ask.
    #[arg(long, hide = true)]
    pub release: bool,
}

/// Ensures the toolchain, builds the object and returns its path.
pub fn build(opts: &Options) -> Result<PathBuf> {
    build_in(!opts.debug, &[], &cmd::target_dir())
}

/// [`build`] of the release object, the one the agent embeds.
pub fn build_release() -> Result<PathBuf> {
    build(&Options::default())
}

/// The release object with the debug log (`--ebpf-log`) compiled out, the
/// benchmark's baseline: built in a target folder of its own so that it
/// never replaces the object the agent embeds.
pub fn build_without_log() -> Result<PathBuf> {
    build_in(
        true,
        &["--no-default-features"],
        &cmd::target_dir().join("ebpf-nolog"),
    )
}

fn build_in(release: bool, args: &[&str], target_dir: &Path) -> Result<PathBuf> {
    let toolchain = Toolchain::ensure()?;
    let linker_bin = toolchain.ensure_bpf_linker()?;

    let mut cargo = ebpf_cargo("build");
    cargo
        .env("PATH", prepend_path(&linker_bin))
        .env("LD_LIBRARY_PATH", toolchain.sysroot.join("lib"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(args);
    if release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo)?;

    let profile = if release { "release" } else { "debug" };
    let object = target_dir.join(TARGET).join(profile).join("llama-ebpf");
    if !object.is_file() {
        bail!("the build succeeded but {} is missing", object.display());
    }
    Ok(object)
}

/// Lints the XDP program with nightly clippy for its own target, warnings
/// denied (the stable clippy run cannot build it).
pub fn clippy() -> Result<()> {
    Toolchain::ensure()?;
    ensure_nightly_component("clippy")?;
    cmd::run(ebpf_cargo("clippy").args(["--release", "--", "-D", "warnings"]))
}

/// `cargo +nightly <subcommand>` for the XDP crate and its target.
fn ebpf_cargo(subcommand: &str) -> Command {
    let mut cargo = nightly_cargo();
    cargo.current_dir(cmd::workspace_root()).args([
        subcommand,
        "--package",
        "llama-ebpf",
        "--target",
        TARGET,
        "-Z",
        "build-std=core",
    ]);
    cargo
}

/// Installs the nightly toolchain (with rust-src) unless it is there.
pub fn ensure_nightly() -> Result<()> {
    Toolchain::ensure().map(drop)
}

/// Installs the nightly toolchain's component `name` unless it is there.
pub fn ensure_nightly_component(name: &str) -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with(name)) {
        return Ok(());
    }
    cmd::run(Command::new("rustup").args(["component", "add", name, "--toolchain", "nightly"]))
        .with_context(|| format!("`rustup component add {name} --toolchain nightly` failed"))
}

/// `cargo +nightly` with the outer (stable) cargo's variables removed, so the
/// nested build picks its own compiler.
pub fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly");
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
    ] {
        c.env_remove(var);
    }
    c
}

pub(crate) fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).expect("PATH entries contain no separator")
}

struct Toolchain {
    sysroot: PathBuf,
    llvm_major: u32,
}

impl Toolchain {
    /// Checks (and installs where rustup can) nightly and its rust-src.
    fn ensure() -> Result<Self> {
        if cmd::output(Command::new("rustup").arg("--version")).is_none() {
            bail!(
                "rustup is not installed: the eBPF build needs rustup with a nightly toolchain (https://rustup.rs), then re-run"
            );
        }
        let toolchains =
            cmd::output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
        if !toolchains.lines().any(|l| l.starts_with("nightly")) {
            cmd::run(Command::new("rustup").args([
                "toolchain", "install", "nightly", "--profile", "minimal", "--component", "rust-src",
            ]))
            .context("installing the nightly toolchain failed; install it with `rustup toolchain install nightly --component rust-src`")?;
        }
        ensure_nightly_component("rust-src")?;
        let verbose = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))
            .context("`rustc +nightly -vV` failed")?;
        let llvm_major = verbose
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.trim().parse().ok())
            .context("cannot read the LLVM version of the nightly toolchain")?;
        let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
            .context("`rustc +nightly --print sysroot` failed")?;
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            llvm_major,
        })
    }

    /// The folder holding a bpf-linker built for this LLVM; builds it if needed.
    fn ensure_bpf_linker(&self) -> Result<PathBuf> {
        let root = cache_dir()?.join(format!("bpf-linker-llvm{}", self.llvm_major));
        let bin_dir = root.join("bin");
        let linker = bin_dir.join("bpf-linker");
        if self.linker_works(&linker) {
            return Ok(bin_dir);
        }
        let libllvm = self.nightly_libllvm()?;
        let prefix = root.join("llvm-prefix");
        fs::create_dir_all(prefix.join("lib"))?;
        let link = prefix.join("lib/libLLVM.so");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("symlink {} -> {}", link.display(), libllvm.display()))?;
        eprintln!(
            "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} (once per machine, about a minute)",
            self.llvm_major
        );
        let mut install = Command::new("cargo");
        install
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{}", self.llvm_major),
            ])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix)
            .env("LD_LIBRARY_PATH", self.sysroot.join("lib"));
        cmd::run(&mut install).context(
            "building bpf-linker failed; it needs a C compiler (apt-get install build-essential) and network access to crates.io",
        )?;
        if !self.linker_works(&linker) {
            bail!("{} was built but does not run", linker.display());
        }
        Ok(bin_dir)
    }

    fn linker_works(&self, linker: &Path) -> bool {
        linker.is_file()
            && cmd::output(
                Command::new(linker)
                    .arg("--version")
                    .env("LD_LIBRARY_PATH", self.sysroot.join("lib")),
            )
            .is_some()
    }

    fn nightly_libllvm(&self) -> Result<PathBuf> {
        let lib = self.sysroot.join("lib");
        let entries = fs::read_dir(&lib).with_context(|| format!("read {}", lib.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("libLLVM") && name.contains(".so") {
                return Ok(entry.path());
            }
        }
        bail!(
            "no libLLVM in {}: this nightly ships without its LLVM library; install a nightly with `rustup toolchain install nightly`",
            lib.display()
        )
    }
}

/// `~/.cache/llama` (or `$XDG_CACHE_HOME/llama`): toolchains built or
/// downloaded once per machine.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("llama"))
}
