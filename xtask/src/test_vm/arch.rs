//! What differs between the guest architectures: Debian's names, qemu's
//! machine, the console device and the virtio modules to load.

use std::fmt;

use crate::dist::Arch;

/// A guest architecture `test-vm` boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    X86_64,
    Aarch64,
}

impl GuestArch {
    pub const ALL: [GuestArch; 2] = [GuestArch::X86_64, GuestArch::Aarch64];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.dist().name() == name)
    }

    /// The static agent built for it by `cargo xtask dist`.
    pub fn dist(self) -> Arch {
        match self {
            GuestArch::X86_64 => Arch::X86_64,
            GuestArch::Aarch64 => Arch::Aarch64,
        }
    }

    /// Debian's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "amd64",
            GuestArch::Aarch64 => "arm64",
        }
    }

    /// The meta-package that points at Debian's current kernel: the small
    /// cloud flavour on x86_64 (virtio guests are what it is for); arm64
    /// has a single flavour.
    pub fn kernel_meta(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "linux-image-cloud-amd64",
            GuestArch::Aarch64 => "linux-image-arm64",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "qemu-system-x86_64",
            GuestArch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Machine and CPU arguments (software emulation: KVM guests hang on
    /// this kind of host).
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            GuestArch::X86_64 => &["-accel", "tcg"],
            GuestArch::Aarch64 => &["-accel", "tcg", "-M", "virt", "-cpu", "cortex-a72"],
        }
    }

    /// The serial console's device name in the guest.
    pub fn console(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "ttyS0",
            GuestArch::Aarch64 => "ttyAMA0",
        }
    }

    /// Kernel modules the guest loads (their dependencies come along, see
    /// [`super::modules`]): the PCI transport for the NIC, its driver, and
    /// veth. Debian builds virtio's core into the arm64 kernel and as
    /// modules on x86_64; the network side is modules on both.
    pub fn modules(self) -> &'static [&'static str] {
        &["virtio_pci", "virtio_net", "veth"]
    }
}

impl fmt::Display for GuestArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dist().name())
    }
}
