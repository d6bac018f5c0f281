//! Test harness for llama's tests: network namespaces, veth pairs and
//! addresses, a hub-and-hosts LAN of namespaces ([`lan`]), running code or
//! processes inside a namespace, a privilege check that skips (or, under
//! CI, fails) when the test cannot run, bounded waiting ([`wait`]), small
//! HTTP helpers ([`http`]), a socket that sees the TOS and TTL of replies
//! ([`reply_socket`]) and the workspace's binaries ([`binary`]).
//!
//! Every namespace is named `llt-<pid>-<n>` and removed on drop (a panicking
//! test unwinds through the drop). Ctrl-C/SIGTERM while a test runs removes
//! the namespaces of this process before exiting, and any namespace left by a
//! process that died without cleaning up (SIGKILL) is swept the next time the
//! harness creates one. Removing a namespace removes the veths inside it.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Mutex, Once,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

pub mod binary;
pub mod dist;
pub mod http;
pub mod lan;
pub mod reply_socket;
pub mod wait;

pub use binary::workspace_binary;
pub use http::{free_port, http_get, http_get_ok, http_request};
pub use lan::{Lan, LanHost};
/// The signals [`ChildGuard::signal`] sends.
pub use nix::sys::signal::Signal;
pub use reply_socket::{Reply, ReplySocket};
pub use wait::{
    WAIT, eventually, eventually_every, eventually_ok, until, wait_for, wait_for_explained,
    wait_for_within, wait_until,
};

const PREFIX: &str = "llt-";

static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static NEXT: AtomicU32 = AtomicU32::new(0);
static INIT: Once = Once::new();

/// Whether tests that need privileges or tools must run (CI, or `cargo
/// xtask test` as root) rather than be skipped.
pub fn privileged_required() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "true" || v == "1");
    set("CI") || set("LLAMA_REQUIRE_PRIVILEGED")
}

/// Reports that `test` cannot run here, because `why`: prints `SKIPPED …`
/// and returns `false` (the test should return early), or panics where
/// skipping is forbidden ([`privileged_required`]), so a skipped suite
/// cannot pass as green in CI.
pub fn cannot_run(test: &str, why: &str) -> bool {
    if privileged_required() {
        panic!("{test}: cannot run: {why} (CI=true forbids skipping)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// Returns whether the calling test may use namespaces, veths and BPF. When it
/// may not, prints why and returns `false` (the test should return early); in
/// CI (`CI=true`) it panics instead, so a skipped suite cannot pass as green.
pub fn privileged(test: &str) -> bool {
    let euid = nix::unistd::geteuid();
    let missing = if !euid.is_root() {
        Some(format!("not root (euid {euid})"))
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` command (iproute2) is not installed".to_owned())
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) => cannot_run(
            test,
            &format!("privileged test: {why}; run `cargo xtask test` as root"),
        ),
    }
}

fn ip(args: &[&str]) -> io::Result<Output> {
    Command::new("ip").args(args).stdin(Stdio::null()).output()
}

fn ip_ok(args: &[&str]) -> io::Result<()> {
    let out = ip(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn init() {
    INIT.call_once(|| {
        sweep_stale();
        // Ctrl-C / SIGTERM: remove our namespaces, then die as the signal would.
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]) {
            thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let names: Vec<String> = LIVE
                        .lock()
                        .map(|l| l.iter().cloned().collect())
                        .unwrap_or_default();
                    for name in names {
                        let _ = ip(&["netns", "del", &name]);
                    }
                    std::process::exit(128 + sig);
                }
            });
        }
    });
}

/// Removes `llt-<pid>-*` namespaces whose process no longer exists.
fn sweep_stale() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn unique_suffix() -> (u32, u32) {
    (std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace owned by the test; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace with `lo` up.
    pub fn new() -> io::Result<Self> {
        init();
        let (pid, n) = unique_suffix();
        let name = format!("{PREFIX}{pid}-{n}");
        ip_ok(&["netns", "add", &name])?;
        LIVE.lock().expect("netns registry").insert(name.clone());
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip <args>` inside the namespace, failing on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip_ok(&full)
    }

    /// Runs `ip <args>` inside the namespace and returns its stdout.
    pub fn ip_output(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        let out = ip(&full)?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds `cidr` (e.g. `10.77.0.1/24`, `fd00::1/64`) to `dev`. IPv6
    /// addresses skip duplicate address detection so they are usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> io::Result<()> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])
        }
    }

    /// Adds a route, e.g. `add_route("default", "via 10.77.0.1")`.
    pub fn add_route(&self, dest: &str, spec: &str) -> io::Result<()> {
        let mut args = vec!["route", "add", dest];
        args.extend(spec.split_whitespace());
        self.ip(&args)
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs a command inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Starts a process inside the namespace; it is killed when the returned
    /// guard drops.
    pub fn spawn(&self, mut cmd: Command) -> io::Result<ChildGuard> {
        // setns in the child between fork and exec keeps the program's own
        // argv (so tests can re-run their own binary) and needs no `ip`.
        let file = self.file()?;
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        let fd = file.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(file);
        Ok(ChildGuard { child: Some(child) })
    }

    fn file(&self) -> io::Result<File> {
        File::open(format!("/var/run/netns/{}", self.name))
    }

    /// Runs `f` on a thread that has entered the namespace, and returns its
    /// result. Sockets, BPF attachments and runtimes created inside `f` belong
    /// to the namespace; a panic in `f` is propagated.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.file().expect("open netns file");
        thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
                drop(file);
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&self.name);
        }
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`: it is killed and reaped on drop unless handed over.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// Sends `signal` to the child.
    pub fn signal(&mut self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        let pid = i32::try_from(self.child().id()).map_err(io::Error::other)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(io::Error::from)
    }

    /// The child's exit status once it has exited, waiting at most
    /// `timeout`; `None` if it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait::wait_for_within(timeout, || self.child().try_wait().ok().flatten())
    }

    /// Hands the child over without killing it.
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("child present until drop")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A veth pair whose ends live in two namespaces (or both in one).
#[derive(Debug, Clone)]
pub struct Veth {
    /// Name of the end in the first namespace.
    pub a: String,
    /// Name of the end in the second namespace.
    pub b: String,
}

impl Veth {
    /// Creates a veth pair with one end in `ns_a` and the other in `ns_b`,
    /// both up. Names are unique per process and call, at most 15 bytes.
    pub fn new(ns_a: &NetNs, ns_b: &NetNs) -> io::Result<Self> {
        init();
        let (pid, n) = unique_suffix();
        let a = format!("lv{pid:x}x{n:x}a");
        let b = format!("lv{pid:x}x{n:x}b");
        debug_assert!(a.len() <= 15);
        // Create inside ns_a directly so nothing ever lives in the host namespace.
        ns_a.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            ns_b.name(),
        ])?;
        ns_a.ip(&["link", "set", &a, "up"])?;
        ns_b.ip(&["link", "set", &b, "up"])?;
        Ok(Self { a, b })
    }
}

/// Two namespaces joined by a veth pair with IPv4 (10.200.0.1/24, .2) and
/// IPv6 (fd00:11a:a::1/64, ::2) addresses: the usual two-host topology.
#[derive(Debug)]
pub struct TwoHosts {
    pub left: NetNs,
    pub right: NetNs,
    pub veth: Veth,
    pub left_v4: std::net::Ipv4Addr,
    pub right_v4: std::net::Ipv4Addr,
    pub left_v6: std::net::Ipv6Addr,
    pub right_v6: std::net::Ipv6Addr,
}

impl TwoHosts {
    /// Builds the pair. Since each pair lives in its own namespaces, the same
    /// addresses can be reused by every test without colliding.
    pub fn new() -> io::Result<Self> {
        let left = NetNs::new()?;
        let right = NetNs::new()?;
        let veth = Veth::new(&left, &right)?;
        let left_v4 = std::net::Ipv4Addr::new(10, 200, 0, 1);
        let right_v4 = std::net::Ipv4Addr::new(10, 200, 0, 2);
        let left_v6: std::net::Ipv6Addr = "fd00:11a:a::1".parse().expect("literal");
        let right_v6: std::net::Ipv6Addr = "fd00:11a:a::2".parse().expect("literal");
        left.add_addr(&veth.a, &format!("{left_v4}/24"))?;
        right.add_addr(&veth.b, &format!("{right_v4}/24"))?;
        left.add_addr(&veth.a, &format!("{left_v6}/64"))?;
        right.add_addr(&veth.b, &format!("{right_v6}/64"))?;
        Ok(Self {
            left,
            right,
            veth,
            left_v4,
            right_v4,
            left_v6,
            right_v6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_lifecycle_and_veth() {
        if !privileged("testkit::namespace_lifecycle_and_veth") {
            return;
        }
        let hosts = TwoHosts::new().expect("two hosts");
        let name = hosts.left.name().to_owned();
        // The namespaces are isolated: the veth end is visible only in its own.
        assert!(
            hosts
                .left
                .ip_output(&["link", "show", &hosts.veth.a])
                .is_ok()
        );
        assert!(
            hosts
                .left
                .ip_output(&["link", "show", &hosts.veth.b])
                .is_err()
        );
        // Code run inside sees the namespace's interfaces.
        let a = hosts.veth.a.clone();
        let idx = hosts.left.run(move || {
            let c = std::ffi::CString::new(a).expect("no NUL");
            // SAFETY: valid C string.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        });
        assert_ne!(idx, 0, "veth end must be visible from inside the namespace");
        // Connectivity across the pair.
        let ping = hosts
            .left
            .exec("ping", &["-c", "1", "-W", "5", &hosts.right_v4.to_string()])
            .expect("run ping");
        assert!(
            ping.status.success(),
            "ping: {}{}",
            String::from_utf8_lossy(&ping.stdout),
            String::from_utf8_lossy(&ping.stderr)
        );
        drop(hosts);
        let list =
            String::from_utf8_lossy(&ip(&["netns", "list"]).expect("ip").stdout).into_owned();
        assert!(
            !list.contains(&name),
            "namespace {name} must be gone after drop: {list}"
        );
    }

    #[test]
    fn panic_inside_namespace_cleans_up() {
        if !privileged("testkit::panic_inside_namespace_cleans_up") {
            return;
        }
        let name = std::sync::Mutex::new(String::new());
        let result = std::panic::catch_unwind(|| {
            let ns = NetNs::new().expect("netns");
            *name.lock().expect("lock") = ns.name().to_owned();
            ns.run(|| panic!("boom"));
        });
        assert!(result.is_err());
        let name = name.into_inner().expect("lock");
        assert!(
            !Path::new(&format!("/var/run/netns/{name}")).exists(),
            "{name} must be removed"
        );
    }

    #[test]
    fn stale_namespace_of_dead_process_is_swept() {
        if !privileged("testkit::stale_namespace_of_dead_process_is_swept") {
            return;
        }
        // PIDs never exceed /proc/sys/kernel/pid_max (<= 2^22), so this one is dead.
        let stale = format!("{PREFIX}4294967-0");
        ip_ok(&["netns", "add", &stale]).expect("add stale netns");
        sweep_stale();
        assert!(!Path::new(&format!("/var/run/netns/{stale}")).exists());
    }
}
