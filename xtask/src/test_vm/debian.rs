//! Debian's own kernel and busybox for a guest architecture: resolved with
//! `apt-cache`, fetched with `apt-get download`, unpacked with `dpkg-deb -x`
//! and cached under `~/.cache/llama/vm/<debian arch>/<package>_<version>/`,
//! so a second run (and CI, which keeps `~/.cache/llama`) downloads nothing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{build_ebpf, cmd};

/// One unpacked package.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub package: String,
    pub version: String,
    /// The package's files, as `dpkg-deb -x` lays them out.
    pub root: PathBuf,
}

/// Makes apt know `arch` (`dpkg --add-architecture` + `apt-get update`)
/// when it is foreign and not yet configured.
pub fn ensure_architecture(arch: &str) -> Result<()> {
    let native = cmd::checked(Command::new("dpkg").arg("--print-architecture"))?;
    if native.trim() == arch {
        return Ok(());
    }
    let foreign = cmd::checked(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|l| l.trim() == arch) {
        return Ok(());
    }
    cmd::run(Command::new("dpkg").args(["--add-architecture", arch]))?;
    cmd::run(Command::new("apt-get").args(["update", "-q"]))
}

/// The concrete package a meta-package (`linux-image-arm64`) depends on
/// today: `linux-image-6.1.0-57-arm64`.
pub fn resolve_meta(meta: &str, arch: &str) -> Result<String> {
    let out = cmd::checked(Command::new("apt-cache").args(["depends", &format!("{meta}:{arch}")]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.split(':').next().unwrap_or(d).trim().to_owned())
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("apt-cache depends {meta}:{arch} names no linux-image package"))
}

/// The candidate version of `package` for `arch`.
pub fn candidate_version(package: &str, arch: &str) -> Result<String> {
    let out = cmd::checked(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        &format!("{package}:{arch}"),
    ]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("apt-cache show {package}:{arch} gives no version"))
}

/// `package` for `arch`, unpacked (from the cache when already there).
pub fn fetch(package: &str, arch: &str) -> Result<Unpacked> {
    let version = candidate_version(package, arch)?;
    // Debian versions may hold ':' (an epoch); keep the directory name plain.
    let dir = cache_dir()?
        .join(arch)
        .join(format!("{package}_{}", version.replace(':', "%3a")));
    let root = dir.join("root");
    let complete = dir.join("complete");
    if !complete.exists() {
        download(package, arch, &version, &dir, &root)?;
        fs::write(&complete, &version).with_context(|| format!("write {}", complete.display()))?;
    }
    Ok(Unpacked {
        package: package.to_owned(),
        version,
        root,
    })
}

fn download(package: &str, arch: &str, version: &str, dir: &Path, root: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    let debs = dir.join("deb");
    fs::create_dir_all(&debs).with_context(|| format!("create {}", debs.display()))?;
    cmd::run(Command::new("apt-get").current_dir(&debs).args([
        "download",
        "-q",
        &format!("{package}:{arch}={version}"),
    ]))?;
    let deb = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    fs::remove_dir_all(&debs).with_context(|| format!("remove {}", debs.display()))?;
    if !root.is_dir() {
        bail!("dpkg-deb -x {} left nothing", deb.display());
    }
    Ok(())
}

/// `~/.cache/llama/vm`.
fn cache_dir() -> Result<PathBuf> {
    Ok(build_ebpf::cache_dir()?.join("vm"))
}
