//! One guest: qemu (software emulation) booting Debian's kernel with our
//! initramfs, its serial console written to a file, its network a tap in
//! the [`Link`]'s namespace. Waits are bounded; a guest that hangs, fails
//! or powers off early ends the run with the reason and the console's tail.
//! qemu dies with this process (SIGKILL as parent-death signal) and is
//! killed when the [`Guest`] drops.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use llama_testkit::ChildGuard;

use super::{arch::GuestArch, net::Link};

/// Queue pairs of the guest's NIC: one for the stack and one for XDP_TX
/// per guest CPU (one CPU). With fewer, virtio_net shares the stack's
/// queues with XDP under a lock ("XDP_TX and XDP_REDIRECT will operate in
/// a slower locked tx mode"), a fallback real NICs rarely take.
const QUEUES: u32 = 2;

/// Lines of console shown when a guest fails.
const CONSOLE_TAIL: usize = 60;

pub struct Boot<'a> {
    pub arch: GuestArch,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// The reflector mode the guest's agent runs (`llama.mode=`).
    pub mode: &'a str,
    pub console: PathBuf,
}

pub struct Guest {
    qemu: ChildGuard,
    pub console: PathBuf,
    pub started: Instant,
}

impl Guest {
    /// Starts qemu inside `link`'s namespace.
    pub fn start(boot: &Boot, link: &Link) -> Result<Self> {
        let log = fs::File::create(&boot.console)
            .with_context(|| format!("create {}", boot.console.display()))?;
        let mut qemu = Command::new(boot.arch.qemu());
        qemu.args(boot.arch.machine_args())
            .args(["-m", "256", "-smp", "1", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(boot.kernel)
            .arg("-initrd")
            .arg(boot.initramfs)
            .arg("-append")
            .arg(format!(
                "console={} panic=-1 llama.mode={}",
                boot.arch.console(),
                boot.mode
            ))
            .args([
                "-netdev",
                &format!(
                    "tap,id=n0,ifname={},script=no,downscript=no,queues={QUEUES}",
                    super::net::TAP
                ),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mq=on,vectors={}", 2 * QUEUES + 2),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            qemu.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut qemu = link
            .ns
            .spawn(qemu)
            .with_context(|| format!("start {}", boot.arch.qemu()))?;
        // Where to look while it runs (and what the cleanup test watches).
        eprintln!(
            "{} {}: qemu pid {} in namespace {}, console {}",
            boot.arch,
            boot.mode,
            qemu.child().id(),
            link.ns.name(),
            boot.console.display()
        );
        Ok(Self {
            qemu,
            console: boot.console.clone(),
            started: Instant::now(),
        })
    }

    /// The console so far, escape sequences and carriage returns removed.
    pub fn console_text(&self) -> String {
        let raw = fs::read(&self.console).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    /// Waits until a console line contains `marker`; fails when the guest
    /// reports a failure, exits, or `timeout` passes.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                return Ok(line.to_owned());
            }
            if let Some(line) = text.lines().find(|l| l.contains("llama-vm: FAILED")) {
                bail!("{}\n{}", line.trim(), self.tail());
            }
            if let Ok(Some(status)) = self.qemu.child().try_wait() {
                bail!(
                    "the guest stopped ({status}) before `{marker}`\n{}",
                    self.tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no `{marker}` on the guest's console within {timeout:?}\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last console lines and where the whole log is, for error messages.
    pub fn tail(&self) -> String {
        let text = self.console_text();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(CONSOLE_TAIL);
        format!(
            "--- last {} console lines ({}) ---\n{}",
            lines.len() - start,
            self.console.display(),
            lines[start..].join("\n")
        )
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn strips_colours_and_carriage_returns() {
        assert_eq!(strip_ansi("\u{1b}[32m INFO\u{1b}[0m x\r\n"), " INFO x\n");
    }
}
