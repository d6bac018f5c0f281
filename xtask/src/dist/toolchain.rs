//! What the static builds need, and how each target is built.
//!
//! **Linker: `rust-lld`, not Debian's cross GCCs.** Rust's musl targets ship
//! their own musl (`libc.a`, crt objects, `libunwind.a`) and link it
//! "self-contained"; `rust-lld`, which comes with every rustup toolchain,
//! links that for any architecture. So a target needs no cross linker, and
//! nothing comes from apt.
//!
//! **C compiler: zig.** One crate compiles C and assembly: `ring`, the
//! crypto provider of the TLS build (rustls), through the `cc` crate. A
//! target C compiler is needed for that, and zig is one for every
//! architecture: `CC_<triple>` and `AR_<triple>` point at small wrapper
//! scripts (written next to the zig tools) that run `cargo-zigbuild zig cc
//! -- -target <zig target>`, which drops the LLVM-style `--target` the `cc`
//! crate adds. Only ring's objects come from zig; linking stays with
//! `rust-lld` and Rust's own musl.
//!
//! **Fallback: std from source with zig.** Some rustup mirrors (this
//! project's CI among them) do not carry the prebuilt standard library for
//! every target — here `armv7-unknown-linux-musleabihf`. When `rustup target
//! add` fails, the target is built with nightly's `-Z build-std` (nightly and
//! `rust-src` are already needed for the XDP object), and linked by
//! `cargo-zigbuild` with zig as the C toolchain (it sets the C compiler for
//! ring itself): zig carries musl, its crt objects and libunwind for every
//! architecture, so it replaces the missing self-contained files.
//!
//! Both zig tools come from PyPI as pinned wheels (`ziglang`,
//! `cargo-zigbuild`), installed once into `~/.cache/llama/zigbuild-<ver>/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::Arch;
use crate::{build_ebpf, cmd};

/// Pinned PyPI wheels of the std-from-source fallback.
const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";
const ZIGLANG_VERSION: &str = "0.17.1";

/// How each requested target gets its standard library.
#[derive(Debug, Default)]
pub struct Plan {
    /// Targets whose prebuilt std `rustup target add` installed.
    pub prebuilt_std: Vec<Arch>,
    /// Targets whose std is built from source (nightly + zig).
    pub std_from_source: Vec<Arch>,
    /// Where the zig tools were installed, when any target needs them.
    zigbuild: Option<PathBuf>,
}

/// Installs what each of `archs` needs and says how it will be built.
pub fn plan(archs: &[Arch]) -> Result<Plan> {
    let mut plan = Plan::default();
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    for &arch in archs {
        let triple = arch.triple();
        if installed.lines().any(|l| l.trim() == triple) || rustup_target_add(triple) {
            plan.prebuilt_std.push(arch);
        } else {
            eprintln!(
                "no prebuilt standard library for {triple} from this rustup mirror: building it from source (nightly -Z build-std, linked by zig)"
            );
            plan.std_from_source.push(arch);
        }
    }
    if !archs.is_empty() {
        plan.zigbuild = Some(ensure_zigbuild()?);
    }
    Ok(plan)
}

fn rustup_target_add(triple: &str) -> bool {
    eprintln!("+ rustup target add {triple}");
    Command::new("rustup")
        .args(["target", "add", triple])
        .env("RUST_BACKTRACE", "0")
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo build` for the targets with a prebuilt std, in one invocation so
/// build scripts and proc macros are compiled once for all of them.
pub fn prebuilt_std_cargo(plan: &Plan) -> Result<Command> {
    prebuilt_std_cargo_with(plan, &["build"])
}

/// [`prebuilt_std_cargo`] with another cargo subcommand (`test --no-run`).
pub fn prebuilt_std_cargo_with(plan: &Plan, subcommand: &[&str]) -> Result<Command> {
    let zigbuild = plan
        .zigbuild
        .as_ref()
        .context("the zig tools were not installed")?;
    let mut cargo = Command::new("cargo");
    cargo.args(subcommand);
    for &arch in &plan.prebuilt_std {
        let triple = arch.triple();
        cargo.args(["--target", triple]);
        cargo.env(linker_var(triple), "rust-lld");
        let (cc, ar) = zig_c_wrappers(zigbuild, arch)?;
        cargo.env(cc_var("CC", triple), cc);
        cargo.env(cc_var("AR", triple), ar);
    }
    Ok(cargo)
}

/// zig's name of an architecture's musl target (and CPU, for armv7).
fn zig_target(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-linux-musl",
        Arch::Aarch64 => "aarch64-linux-musl",
        Arch::Armv7 => "arm-linux-musleabihf -mcpu=generic+v7a+vfp3d16",
    }
}

/// Writes the `cc` and `ar` wrapper scripts of `arch` into the zig tools'
/// folder and returns their paths.
fn zig_c_wrappers(zigbuild: &Path, arch: Arch) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = zigbuild.join("wrappers");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let env = format!("PYTHONPATH='{}'", zigbuild.display());
    let cc = dir.join(format!("cc-{}", arch.triple()));
    let cc_script = format!(
        "#!/bin/sh\n{env} exec '{}' zig cc -- -target {} \"$@\"\n",
        zigbuild.join("bin/cargo-zigbuild").display(),
        zig_target(arch)
    );
    let ar = dir.join("ar");
    let ar_script = format!("#!/bin/sh\n{env} exec python3 -m ziglang ar \"$@\"\n");
    for (path, script) in [(&cc, cc_script), (&ar, ar_script)] {
        std::fs::write(path, script).with_context(|| format!("write {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok((cc, ar))
}

/// `CC_<triple>` / `AR_<triple>` as the `cc` crate reads them.
fn cc_var(tool: &str, triple: &str) -> String {
    format!("{tool}_{}", triple.replace('-', "_"))
}

/// `cargo +nightly zigbuild -Z build-std` for one target.
pub fn std_from_source_cargo(arch: Arch, plan: &Plan) -> Result<Command> {
    let zigbuild = plan
        .zigbuild
        .as_ref()
        .context("the zig tools were not installed")?;
    let mut cargo = build_ebpf::nightly_cargo();
    cargo
        .args([
            "zigbuild",
            "--target",
            arch.triple(),
            "-Z",
            "build-std=std,panic_unwind",
        ])
        .env("PATH", build_ebpf::prepend_path(&zigbuild.join("bin")))
        .env("PYTHONPATH", zigbuild)
        // zig supplies the crt objects and libc; rustc must not look for its
        // own (absent) self-contained copies.
        .env(
            rustflags_var(arch.triple()),
            "-C link-self-contained=no -A linker-messages",
        );
    Ok(cargo)
}

fn linker_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        triple.to_uppercase().replace('-', "_")
    )
}

fn rustflags_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_uppercase().replace('-', "_")
    )
}

/// Installs cargo-zigbuild and zig (PyPI wheels) once; returns their folder.
fn ensure_zigbuild() -> Result<PathBuf> {
    let dir = build_ebpf::cache_dir()?.join(format!(
        "zigbuild-{CARGO_ZIGBUILD_VERSION}-zig{ZIGLANG_VERSION}"
    ));
    let works = |dir: &PathBuf| {
        cmd::output(
            Command::new(dir.join("bin/cargo-zigbuild"))
                .arg("--version")
                .env("PYTHONPATH", dir),
        )
        .is_some()
            && cmd::output(
                Command::new("python3")
                    .args(["-m", "ziglang", "version"])
                    .env("PYTHONPATH", dir),
            )
            .is_some()
    };
    if works(&dir) {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    cmd::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg(format!("cargo-zigbuild=={CARGO_ZIGBUILD_VERSION}"))
            .arg(format!("ziglang=={ZIGLANG_VERSION}")),
    )
    .context("installing cargo-zigbuild and zig from PyPI failed (needs python3 with pip)")?;
    if !works(&dir) {
        anyhow::bail!("cargo-zigbuild or zig in {} does not run", dir.display());
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_variable_names() {
        assert_eq!(
            linker_var("armv7-unknown-linux-musleabihf"),
            "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER"
        );
        assert_eq!(
            cc_var("CC", "aarch64-unknown-linux-musl"),
            "CC_aarch64_unknown_linux_musl"
        );
        assert_eq!(
            rustflags_var("x86_64-unknown-linux-musl"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS"
        );
    }
}
