//! `cargo xtask dist`: static release binaries of `llama-agent` and
//! `llama-server` for x86_64, aarch64 and armv7 (musl), in a layout other
//! tasks and tests can rely on (`llama_testkit::dist`):
//! `target/dist/<triple>/{llama-agent,llama-server}` and
//! `target/dist/SHA256SUMS`.
//!
//! How they are built (see [`toolchain`] for the details and the why):
//! - Rust's own musl targets, so the binaries are static and run on any
//!   distribution (Raspberry Pi OS included); Rust's bundled `rust-lld` links
//!   against the target's self-contained musl, and zig (a pinned PyPI wheel)
//!   compiles the one C dependency, ring (TLS). Nothing comes from apt.
//! - The XDP object (`cargo xtask build-ebpf`) is embedded in the
//!   x86_64 and aarch64 agents (`LLAMA_EBPF_OBJECT`); `dist` checks that it is
//!   there, and that the armv7 agent (userspace-only) has none.
//! - Cargo's target directory for these builds is
//!   `~/.cache/llama/dist-target` (`LLAMA_DIST_TARGET_DIR` overrides it), not
//!   the workspace's `target/`: CI starts from a fresh clone every time, and
//!   three release builds of every dependency are most of the cost, so they
//!   are kept where a fresh clone finds them. Only the workspace's own crates
//!   are rebuilt then — always, when the directory was last used by another
//!   checkout (see `forget_other_checkouts_crates`).

pub mod toolchain;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::Args;
pub use llama_testkit::dist::Arch;
use llama_testkit::dist::{self as layout, BINARIES};

use crate::{build_ebpf, cmd};

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Which architecture to build: x86_64, aarch64, armv7 or all.
    #[arg(long, default_value = "all", value_parser = parse_target)]
    pub target: Targets,
}

/// The architectures one `dist` run builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(pub Vec<Arch>);

fn parse_target(s: &str) -> Result<Targets, String> {
    if s == "all" {
        return Ok(Targets(Arch::ALL.to_vec()));
    }
    Arch::from_name(s)
        .map(|a| Targets(vec![a]))
        .ok_or_else(|| format!("unknown target `{s}`: x86_64, aarch64, armv7 or all"))
}

/// The shipped files of one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    pub arch: Arch,
    pub agent: PathBuf,
    pub server: PathBuf,
}

/// Where `dist` puts the binaries of `arch` (whether or not they exist yet).
pub fn artifacts(arch: Arch) -> Artifacts {
    Artifacts {
        arch,
        agent: layout::binary(arch, "llama-agent"),
        server: layout::binary(arch, "llama-server"),
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let built = build(&opts.target.0)?;
    for a in &built {
        for path in [&a.agent, &a.server] {
            let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            println!(
                "{:<8} {:>6.1} MiB  {}",
                a.arch.name(),
                size as f64 / 1048576.0,
                path.display()
            );
        }
    }
    println!("{}", layout::checksums().display());
    eprintln!("dist: {:.0?}", started.elapsed());
    Ok(())
}

/// Builds the binaries of `archs` and returns their paths.
pub fn build(archs: &[Arch]) -> Result<Vec<Artifacts>> {
    let object = if archs.iter().any(|a| a.has_xdp()) {
        Some(build_ebpf::build_release()?)
    } else {
        build_ebpf::ensure_nightly()?;
        None
    };
    let cargo_target = cargo_target_dir()?;
    forget_other_checkouts_crates(&cargo_target, &cmd::workspace_root())?;
    let plan = toolchain::plan(archs)?;
    if !plan.prebuilt_std.is_empty() {
        let mut cargo = toolchain::prebuilt_std_cargo(&plan)?;
        configure(&mut cargo, &cargo_target, object.as_deref());
        cmd::run(&mut cargo)?;
    }
    for &arch in &plan.std_from_source {
        let mut cargo = toolchain::std_from_source_cargo(arch, &plan)?;
        configure(&mut cargo, &cargo_target, object.as_deref());
        cmd::run(&mut cargo)?;
    }

    let object_bytes = match &object {
        Some(path) => Some(fs::read(path).with_context(|| format!("read {}", path.display()))?),
        None => None,
    };
    let mut built = Vec::new();
    for &arch in archs {
        let out = artifacts(arch);
        for (name, dest) in BINARIES.iter().zip([&out.agent, &out.server]) {
            let src = cargo_target.join(arch.triple()).join("release").join(name);
            install(&src, dest)?;
        }
        check_xdp_embedding(&out, object_bytes.as_deref())?;
        built.push(out);
    }
    write_checksums()?;
    Ok(built)
}

/// Makes cargo rebuild the workspace's own crates when the shared target
/// directory was last used by another checkout of the project.
///
/// Cargo names and fingerprints path packages relative to their workspace,
/// so two checkouts share entries here, and it judges freshness by source
/// mtimes: sources of this checkout that are older than the other
/// checkout's build (a second git worktree at another commit, say) would
/// count as built, and a binary would mix crates of both. Deleting the
/// workspace crates' fingerprints forces them to build again; dependencies,
/// the expensive part, stay cached.
fn forget_other_checkouts_crates(cargo_target: &Path, workspace: &Path) -> Result<()> {
    let stamp = cargo_target.join("llama-checkout");
    let this = workspace.display().to_string();
    if fs::read_to_string(&stamp).is_ok_and(|last| last == this) {
        return Ok(());
    }
    // Host units (build scripts) live in `release/`, target units in
    // `<triple>/release/`.
    let mut profiles = vec![cargo_target.join("release")];
    if let Ok(triples) = fs::read_dir(cargo_target) {
        profiles.extend(triples.flatten().map(|t| t.path().join("release")));
    }
    for profile in profiles {
        let Ok(entries) = fs::read_dir(profile.join(".fingerprint")) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("llama-") {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("remove {}", entry.path().display()))?;
            }
        }
    }
    fs::create_dir_all(cargo_target)
        .with_context(|| format!("create {}", cargo_target.display()))?;
    fs::write(&stamp, this).with_context(|| format!("write {}", stamp.display()))
}

/// Cargo's target directory for dist builds (see the module docs).
pub fn cargo_target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LLAMA_DIST_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(build_ebpf::cache_dir()?.join("dist-target"))
}

fn configure(cargo: &mut Command, target_dir: &Path, object: Option<&Path>) {
    cargo
        .current_dir(cmd::workspace_root())
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "--release",
            "--locked",
            "-p",
            "llama-agent",
            "-p",
            "llama-server",
        ]);
    match object {
        Some(object) => cargo.env("LLAMA_EBPF_OBJECT", object),
        None => cargo.env_remove("LLAMA_EBPF_OBJECT"),
    };
}

fn install(src: &Path, dest: &Path) -> Result<()> {
    if !src.is_file() {
        bail!("the build succeeded but {} is missing", src.display());
    }
    let dir = dest.parent().expect("dist paths have a parent");
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // Copy to a temporary name and rename, so a reader never sees half a file.
    let tmp = dest.with_extension("partial");
    fs::copy(src, &tmp).with_context(|| format!("copy {} to {}", src.display(), tmp.display()))?;
    fs::rename(&tmp, dest).with_context(|| format!("rename to {}", dest.display()))?;
    Ok(())
}

/// The x86_64 and aarch64 agents must carry the XDP object byte for byte;
/// the armv7 agent must not carry one.
fn check_xdp_embedding(out: &Artifacts, object: Option<&[u8]>) -> Result<()> {
    let agent = fs::read(&out.agent).with_context(|| format!("read {}", out.agent.display()))?;
    let embedded = object.is_some_and(|o| contains(&agent, o));
    match (out.arch.has_xdp(), embedded) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => bail!(
            "{} does not embed the XDP object: was LLAMA_EBPF_OBJECT honoured by llama-agent/build.rs?",
            out.agent.display()
        ),
        (false, true) => bail!(
            "{} embeds the XDP object, but {} agents are userspace-only",
            out.agent.display(),
            out.arch.name()
        ),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `SHA256SUMS` over every binary present in `dist/` (`sha256sum -c` format).
fn write_checksums() -> Result<()> {
    let dist = layout::dist_dir();
    let mut files = Vec::new();
    for arch in Arch::ALL {
        for name in BINARIES {
            if layout::binary(arch, name).is_file() {
                files.push(format!("{}/{name}", arch.triple()));
            }
        }
    }
    let sums = cmd::output(Command::new("sha256sum").current_dir(&dist).args(&files))
        .context("`sha256sum` failed (coreutils)")?;
    fs::write(layout::checksums(), sums).context("write SHA256SUMS")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names() {
        assert_eq!(parse_target("all"), Ok(Targets(Arch::ALL.to_vec())));
        assert_eq!(parse_target("armv7"), Ok(Targets(vec![Arch::Armv7])));
        assert!(parse_target("x86").is_err());
    }

    #[test]
    fn finds_an_embedded_object() {
        assert!(contains(b"..\x7fELFobj..", b"\x7fELFobj"));
        assert!(!contains(b"..\x7fELFob", b"\x7fELFobj"));
        assert!(!contains(b"anything", b""));
    }

    #[test]
    fn another_checkouts_workspace_crates_are_rebuilt_and_dependencies_kept() {
        let dir = std::env::temp_dir().join(format!("llama-dist-stamp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let units = [
            "release/.fingerprint/llama-agent-1",
            "release/.fingerprint/serde-1",
            "x86_64-unknown-linux-musl/release/.fingerprint/llama-common-2",
            "x86_64-unknown-linux-musl/release/.fingerprint/tokio-2",
        ];
        let make = || {
            for u in units {
                fs::create_dir_all(dir.join(u)).unwrap();
            }
        };
        let present = || units.map(|u| dir.join(u).exists());

        make();
        forget_other_checkouts_crates(&dir, Path::new("/checkout/a")).unwrap();
        assert_eq!(
            present(),
            [false, true, false, true],
            "first use: unknown checkout"
        );
        make();
        forget_other_checkouts_crates(&dir, Path::new("/checkout/a")).unwrap();
        assert_eq!(present(), [true; 4], "same checkout: everything stays");
        forget_other_checkouts_crates(&dir, Path::new("/checkout/b")).unwrap();
        assert_eq!(present(), [false, true, false, true], "another checkout");
        fs::remove_dir_all(&dir).unwrap();
    }
}
