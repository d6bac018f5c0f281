//! Where `cargo xtask dist` and `cargo xtask image` put what they build, in
//! one place, so xtask (which writes them) and the tests that run them
//! (under qemu-user, in containers) agree on the layout:
//!
//! ```text
//! <target>/dist/<triple>/llama-agent     static release binaries
//! <target>/dist/<triple>/llama-server
//! <target>/dist/SHA256SUMS               `sha256sum -c` format, paths relative to dist/
//! <target>/dist/images/*.tar             container images (docker-archive)
//! ```
//!
//! `<target>` is `$CARGO_TARGET_DIR` or the workspace's `target/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The binaries every target ships.
pub const BINARIES: [&str; 2] = ["llama-agent", "llama-server"];

/// The capabilities the XDP agent needs, no more: CAP_BPF (maps, program
/// load), CAP_NET_ADMIN (attach to an interface) and CAP_PERFMON (the
/// verifier refuses the program's packet-pointer arithmetic without it:
/// "pointer arithmetic with it prohibited for !root"). The container test
/// proves each is needed; the systemd unit, the compose file and the
/// Kubernetes DaemonSet grant exactly these.
pub const XDP_CAPABILITIES: [&str; 3] = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"];

/// The workspace version: the images' tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A CPU architecture we ship static binaries and images for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Aarch64,
    Armv7,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Armv7];

    /// The name users pass to `cargo xtask dist --target`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The Rust target triple (static musl).
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
            Arch::Armv7 => "armv7-unknown-linux-musleabihf",
        }
    }

    /// Whether the agent for this architecture embeds the XDP reflector.
    pub fn has_xdp(self) -> bool {
        matches!(self, Arch::X86_64 | Arch::Aarch64)
    }

    /// The OCI platform of its container images.
    pub fn oci_platform(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux/amd64",
            Arch::Aarch64 => "linux/arm64",
            Arch::Armv7 => "linux/arm/v7",
        }
    }

    /// The suffix of its per-architecture image tags (`0.1.0-arm64`).
    pub fn image_suffix(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armv7",
        }
    }

    /// The qemu-user emulator that runs its binaries here, or `None` when
    /// this machine runs them natively.
    pub fn emulator(self) -> Option<&'static str> {
        let native = match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            "arm" => Some(Arch::Armv7),
            _ => None,
        };
        if native == Some(self) {
            return None;
        }
        Some(match self {
            Arch::X86_64 => "qemu-x86_64",
            Arch::Aarch64 => "qemu-aarch64",
            Arch::Armv7 => "qemu-arm",
        })
    }
}

/// The cargo target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("llama-testkit lives in the workspace")
        .to_path_buf();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// `<target>/dist`.
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// The release binary `name` (one of [`BINARIES`]) for `arch`.
pub fn binary(arch: Arch, name: &str) -> PathBuf {
    dist_dir().join(arch.triple()).join(name)
}

/// The SHA-256 list of every binary in `dist/`.
pub fn checksums() -> PathBuf {
    dist_dir().join("SHA256SUMS")
}

/// Where `cargo xtask image` writes the image archives.
pub fn images_dir() -> PathBuf {
    dist_dir().join("images")
}

/// The local name of an image built by `cargo xtask image` for `arch`:
/// `localhost/<component>:<version>-<suffix>`. `component` is
/// `llama-agent`, `llama-server` or `llama-influxdb`.
pub fn image(component: &str, arch: Arch) -> String {
    format!("localhost/{component}:{VERSION}-{}", arch.image_suffix())
}

/// The archive `cargo xtask image` saves `image(component, arch)` to.
pub fn image_archive(component: &str, arch: Arch) -> PathBuf {
    images_dir().join(format!("{component}-{VERSION}-{}.tar", arch.image_suffix()))
}

/// The seccomp profile `cargo xtask image` writes for the XDP agent: the
/// container runtime's default profile, plus `bpf()` for holders of CAP_BPF.
pub fn seccomp_profile() -> PathBuf {
    images_dir().join("llama-agent-seccomp.json")
}

/// Settings for podman on hosts without systemd as init and with limits
/// that cannot be raised (this project's CI): no default ulimits, cgroupfs.
const CONTAINERS_CONF: &str =
    "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n";

/// `podman --runtime runc` with [`CONTAINERS_CONF`] (written next to the
/// images): runc rather than crun, which fails on hybrid cgroup hosts.
pub fn podman() -> Command {
    let conf = images_dir().join("containers.conf");
    if std::fs::read_to_string(&conf).ok().as_deref() != Some(CONTAINERS_CONF) {
        let _ = std::fs::create_dir_all(images_dir());
        let _ = std::fs::write(&conf, CONTAINERS_CONF);
    }
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf).args(["--runtime", "runc"]);
    c
}

/// A command running `binary(arch, name)`, under its emulator if needed.
pub fn command(arch: Arch, name: &str) -> Command {
    let path = binary(arch, name);
    match arch.emulator() {
        Some(qemu) => {
            let mut c = Command::new(qemu);
            c.arg(path);
            c
        }
        None => Command::new(path),
    }
}

/// Whether the dist binaries of `archs` exist. When they do not, prints why
/// and returns `false` (the test should return); under CI, where `cargo
/// xtask test` builds them first, it panics instead.
pub fn available(test: &str, archs: &[Arch]) -> bool {
    let missing: Vec<String> = archs
        .iter()
        .flat_map(|&a| BINARIES.iter().map(move |b| binary(a, b)))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    crate::cannot_run(
        test,
        &format!(
            "no dist binaries ({}); run `cargo xtask dist --target all` (`cargo xtask test` does)",
            missing.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_paths_are_stable() {
        for arch in Arch::ALL {
            assert_eq!(Arch::from_name(arch.name()), Some(arch));
            assert!(
                binary(arch, "llama-agent")
                    .ends_with(format!("dist/{}/llama-agent", arch.triple()))
            );
        }
        assert_eq!(Arch::from_name("mips"), None);
        assert_eq!(
            image("llama-agent", Arch::Armv7),
            format!("localhost/llama-agent:{VERSION}-armv7")
        );
    }
}
