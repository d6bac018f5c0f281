//! `cargo xtask image`: container images from the static binaries of
//! `cargo xtask dist`, built with podman on an empty base (`FROM scratch`:
//! no registry is needed, and nothing but the binary is inside).
//!
//! - `localhost/llama-agent:<version>-{amd64,arm64,armv7}` and the same for
//!   `llama-server` (one tag per architecture: podman 4.3 cannot list images
//!   while a local manifest list refers to them);
//! - `localhost/llama-influxdb:<version>-<host arch>`: InfluxDB 1.x from the
//!   host's Debian `influxdb` package, for the compose example;
//! - every image saved as a docker-archive under `target/dist/images/`, for
//!   hosts without a registry (`docker load -i` / `podman load -i`);
//! - `target/dist/images/llama-agent-seccomp.json`: the runtime's default
//!   seccomp profile plus `bpf()` for holders of CAP_BPF (see [`seccomp`]).
//!
//! The Containerfiles are `docker/{agent,server,influxdb}.Containerfile`;
//! this task prepares their build contexts under `target/dist/images/context/`.

mod influxdb;
pub mod seccomp;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Args;
use llama_testkit::dist::{self as layout, Arch, VERSION};

use crate::{cmd, dist, prereqs};

/// What building the images needs from apt.
pub const PACKAGES: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("runc", "runc"),
    ("influxdb", "influxd"),
];

#[derive(Args, Debug, Clone)]
pub struct Options {}

/// One built image.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub archive: PathBuf,
}

pub fn run(_opts: &Options) -> Result<()> {
    let started = Instant::now();
    let binaries = dist::build(&Arch::ALL)?;
    for image in build(&binaries)? {
        let size = fs::metadata(&image.archive).map(|m| m.len()).unwrap_or(0);
        println!(
            "{:<40} {:>6.1} MiB  {}",
            image.name,
            size as f64 / 1048576.0,
            image.archive.display()
        );
    }
    println!("{}", layout::seccomp_profile().display());
    eprintln!("image: {:.0?}", started.elapsed());
    Ok(())
}

/// Builds every image from the dist binaries in `binaries` (all three
/// architectures), saves them and writes the seccomp profile.
pub fn build(binaries: &[dist::Artifacts]) -> Result<Vec<Image>> {
    prereqs::ensure(PACKAGES)?;
    let context_root = layout::images_dir().join("context");
    let mut images = Vec::new();
    for component in ["llama-agent", "llama-server"] {
        for artifacts in binaries {
            let binary = match component {
                "llama-agent" => &artifacts.agent,
                _ => &artifacts.server,
            };
            let context = context_root.join(format!("{component}-{}", artifacts.arch.name()));
            prepare_context(&context, binary, component)?;
            images.push(build_one(component, artifacts.arch, &context)?);
        }
    }
    let host = host_arch()?;
    let context = context_root.join(format!("llama-influxdb-{}", host.name()));
    influxdb::prepare_context(&context)?;
    images.push(build_one("llama-influxdb", host, &context)?);

    let profile = seccomp::with_bpf(&seccomp::runtime_default()?)?;
    fs::write(
        layout::seccomp_profile(),
        serde_json::to_string_pretty(&profile)?,
    )
    .context("write the seccomp profile")?;
    Ok(images)
}

/// The architecture of this machine, whose InfluxDB package we can use.
fn host_arch() -> Result<Arch> {
    Arch::ALL
        .into_iter()
        .find(|a| a.emulator().is_none())
        .context("this machine's architecture has no dist target")
}

/// A fresh context: the binary plus `rootfs/` with the directories the
/// program writes to (there is no shell in the image to create them).
fn prepare_context(context: &Path, binary: &Path, component: &str) -> Result<()> {
    let _ = fs::remove_dir_all(context);
    let rootfs = context.join("rootfs");
    let mut dirs = vec![(rootfs.join("tmp"), 0o1777)];
    if component == "llama-agent" {
        dirs.push((rootfs.join("var/lib/llama"), 0o700));
    }
    for (dir, mode) in dirs {
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
    }
    fs::copy(binary, context.join(component))
        .with_context(|| format!("copy {} into the image context", binary.display()))?;
    Ok(())
}

fn build_one(component: &str, arch: Arch, context: &Path) -> Result<Image> {
    let name = layout::image(component, arch);
    let containerfile = cmd::workspace_root().join("docker").join(format!(
        "{}.Containerfile",
        component.trim_start_matches("llama-")
    ));
    cmd::run(
        layout::podman()
            .args(["build", "--quiet", "--platform", arch.oci_platform()])
            .arg("--build-arg")
            .arg(format!("VERSION={VERSION}"))
            .arg("--file")
            .arg(&containerfile)
            .args(["--tag", &name])
            .arg(context),
    )?;
    let archive = layout::image_archive(component, arch);
    let _ = fs::remove_file(&archive);
    cmd::run(
        layout::podman()
            .args(["save", "--quiet", "--format", "docker-archive", "--output"])
            .arg(&archive)
            .arg(&name),
    )?;
    Ok(Image { name, archive })
}
