//! The guest's root file system: Debian's static busybox, the kernel
//! package's virtio and veth modules, the static agent and an `/init`
//! script, packed as a gzip'd `newc` cpio archive (what the kernel unpacks
//! into its initial RAM file system).
//!
//! `/init` reads its task from the kernel command line (`llama.mode=`),
//! brings up `eth0` with fixed addresses, runs the agent's reflector and
//! prints `llama-vm:` markers the host waits for on the serial console.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{arch::GuestArch, debian::Unpacked, net};
use crate::cmd;

/// What goes into one guest's initramfs.
pub struct Parts<'a> {
    pub arch: GuestArch,
    pub kernel: &'a Unpacked,
    pub busybox: &'a Unpacked,
    pub agent: &'a Path,
    /// The agent's integration-test binary, for `llama.mode=testrun`.
    pub tests: Option<&'a Path>,
}

/// The kernel image inside the unpacked kernel package.
pub fn kernel_image(kernel: &Unpacked) -> Result<PathBuf> {
    let boot = kernel.root.join("boot");
    fs::read_dir(&boot)
        .with_context(|| format!("read {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))
}

/// Builds `<work>/initramfs.gz` and returns its path.
pub fn build(parts: &Parts, work: &Path) -> Result<PathBuf> {
    let root = work.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    }
    for dir in ["bin", "dev", "proc", "sys", "tmp", "modules"] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy(
        &parts.busybox.root.join("bin/busybox"),
        &root.join("bin/busybox"),
    )?;
    copy(parts.agent, &root.join("llama-agent"))?;
    if let Some(tests) = parts.tests {
        copy(tests, &root.join("agent-tests"))?;
    }

    let modules = super::modules::load_order(&modules_dir(parts.kernel)?, parts.arch.modules())
        .with_context(|| format!("{} {}", parts.kernel.package, parts.kernel.version))?;
    let mut order = String::new();
    for src in &modules {
        let name = src.file_name().expect("module paths name a file");
        copy(src, &root.join("modules").join(name))?;
        order.push_str(&name.to_string_lossy());
        order.push('\n');
    }
    fs::write(root.join("modules/order"), order)?;
    let init = root.join("init");
    fs::write(&init, init_script())?;
    chmod_x(&init)?;

    let archive = work.join("initramfs.gz");
    let script = format!(
        "cd '{}' && find . | cpio --quiet -o -H newc -R 0:0 | gzip -1 > '{}'",
        root.display(),
        archive.display()
    );
    cmd::checked(Command::new("sh").args(["-c", &script]))?;
    fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    Ok(archive)
}

fn modules_dir(kernel: &Unpacked) -> Result<PathBuf> {
    let base = kernel.root.join("lib/modules");
    let version = fs::read_dir(&base)
        .with_context(|| format!("read {}", base.display()))?
        .flatten()
        .next()
        .with_context(|| format!("{} is empty", base.display()))?;
    Ok(version.path())
}

fn copy(src: &Path, dest: &Path) -> Result<()> {
    fs::copy(src, dest).with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
    Ok(())
}

fn chmod_x(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The `llama.mode=` whose `/init` loads the modules, says so and then
/// never starts the agent: a stand-in for a guest that hangs.
pub const HUNG_MODE: &str = "hang";

/// The guest's `/init`. The initramfs has no `/dev/console` node (making
/// one needs root at build time), so the script starts without standard
/// streams and takes the console once devtmpfs is mounted.
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
say() {{ echo "llama-vm: $*"; }}
fail() {{ say "FAILED: $*"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sys /sys
say "kernel $(uname -r) $(uname -m)"
for m in $(cat /modules/order); do
    insmod /modules/$m || fail "insmod $m"
done
mode=$(sed -n 's/.*llama\.mode=\([a-z-]*\).*/\1/p' /proc/cmdline)
if [ "$mode" = {hung} ]; then
    say "hanging on purpose"
    while true; do sleep 60; done
fi
if [ "$mode" = testrun ]; then
    # The XDP program through BPF_PROG_TEST_RUN on this kernel's JIT.
    say "bpf_jit_enable=$(cat /proc/sys/net/core/bpf_jit_enable)"
    LLAMA_REQUIRE_PRIVILEGED=1 /agent-tests {filter} --test-threads 1 2>&1 | cat
    say "tests done"
    poweroff -f
fi
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i+1)); [ $i -gt 100 ] && fail "no eth0"
    sleep 0.1
done
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip link set eth0 up || fail "eth0 up"
ip addr add {g4}/24 dev eth0 || fail "ipv4 address"
ip -6 addr add {g6}/64 dev eth0 || fail "ipv6 address"
say "network up"
# Through a pipe: the agent colours its log only on a terminal.
( /llama-agent reflect --mode $mode --interface eth0 --stats-interval 1 2>&1 | cat
  say "FAILED: the agent exited" ) &
say "agent started (mode $mode)"
while true; do sleep 60; done
"#,
        g4 = net::GUEST_V4,
        g6 = net::GUEST_V6,
        filter = super::testrun::FILTER,
        hung = HUNG_MODE,
    )
}
