//! The demo's namespaces, bridge, links and processes, and their removal.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Options, host_address, hub_address};
use crate::cmd;

const PREFIX: &str = "llama-demo-";
pub const HUB: &str = "llama-demo-hub";

pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

pub struct Topology {
    hosts: Vec<Host>,
    children: Vec<(String, Child)>,
    log_dir: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::checked(Command::new("ip").args(args)).map(drop)
}

/// Sets a sysctl inside namespace `ns` (through /proc/sys, which shows the
/// writer's own namespace's values).
fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let echo = format!("echo {value} > {path}");
    cmd::checked(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &echo]))
        .with_context(|| format!("sysctl {key}={value} in {ns}"))
        .map(drop)
}

/// Removes what an earlier demo left (killed with SIGKILL, say).
fn remove_stale() {
    let Some(list) = cmd::output(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if !name.starts_with(PREFIX) {
            continue;
        }
        if let Some(pids) = cmd::output(Command::new("ip").args(["netns", "pids", name])) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: plain kill(2) on a pid that lives in our demo namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = ip(&["netns", "del", name]);
    }
}

impl Topology {
    pub fn create(opts: &Options) -> Result<Self> {
        remove_stale();
        let log_dir = cmd::target_dir().join("demo");
        let _ = fs::remove_dir_all(&log_dir);
        fs::create_dir_all(&log_dir)?;
        let mut topo = Topology {
            hosts: Vec::new(),
            children: Vec::new(),
            log_dir,
        };

        ip(&["netns", "add", HUB])?;
        ip(&["-n", HUB, "link", "set", "lo", "up"])?;
        ip(&["-n", HUB, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            HUB,
            "addr",
            "add",
            &format!("{}/24", hub_address()),
            "dev",
            "br0",
        ])?;
        ip(&["-n", HUB, "link", "set", "br0", "up"])?;
        // The hub routes between the hosts, and must not tell them to talk
        // directly (ICMP redirects): see the module documentation.
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            ("net.ipv4.conf.br0.send_redirects", "0"),
        ] {
            sysctl(HUB, key, value)?;
        }

        for i in 1..=opts.hosts {
            let name = format!("h{i}");
            let ns = format!("{PREFIX}{name}");
            let addr = host_address(i);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The host end is created inside the host namespace as eth0, the
            // bridge end inside the hub, so nothing touches the machine's own.
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &name, "netns",
                HUB,
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            let hub = hub_address().to_string();
            ip(&["-n", &ns, "route", "add", &hub, "dev", "eth0"])?;
            ip(&["-n", &ns, "route", "add", "default", "via", &hub])?;
            ip(&["-n", HUB, "link", "set", &name, "master", "br0"])?;
            ip(&["-n", HUB, "link", "set", &name, "up"])?;
            topo.hosts.push(Host { name, ns, ip: addr });
        }
        topo.inject_loss(&opts.loss)?;
        topo.start_processes(opts)?;
        Ok(topo)
    }

    fn inject_loss(&self, loss: &[(String, u8)]) -> Result<()> {
        if loss.is_empty() {
            return Ok(());
        }
        let mut rules = String::from(
            "table inet llama_demo {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
        );
        for (host, pct) in loss {
            let Some(h) = self.hosts.iter().find(|h| h.name == *host) else {
                bail!("no host {host}");
            };
            // Only UDP: probes and replies. Registration (TCP) stays reliable.
            rules.push_str(&format!(
                "    ip saddr {} meta l4proto udp numgen random mod 100 < {pct} drop\n",
                h.ip
            ));
            eprintln!("injecting {pct}% random UDP loss on {host}'s link");
        }
        rules.push_str("  }\n}\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", HUB, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("run nft")?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        if !child.wait()?.success() {
            bail!("nft rejected the loss rules:\n{rules}");
        }
        Ok(())
    }

    fn start_processes(&mut self, opts: &Options) -> Result<()> {
        let bin = cmd::target_dir().join("debug");
        let server_url = format!("http://{}:5000", hub_address());
        // Denser probing than the original template (4 ports, 2 cycles/s)
        // for a few hosts, so that a few seconds per interval measure loss to
        // a few percent; lighter for many hosts (see Options::cycles_per_second).
        let cps = opts.cycles_per_second();
        let server_config = self.log_dir.join("server.yaml");
        fs::write(
            &server_config,
            format!(
                "# written by cargo xtask demo\nreap_interval: 1\ncollector:\n  port_count: 4\n  cps: {cps:?}\n  timeout_ms: 1000\n"
            ),
        )?;
        let n = self.hosts.len() as f64;
        eprintln!(
            "probe rate: 4 ports x {cps} cycles/s to each of {n} hosts from each: {:.0} probes/s in total",
            n * n * 4.0 * cps
        );
        let mut server = Command::new(bin.join("llama-server"));
        server.arg("--config").arg(&server_config);
        server.args([
            "--host",
            &hub_address().to_string(),
            "--port",
            "5000",
            "--interval",
            &opts.interval.to_string(),
            "--keepalive",
            "60",
        ]);
        self.spawn("server", HUB, server)?;
        wait_for_log(
            &self.log_dir.join("server.log"),
            "listening",
            Duration::from_secs(20),
        )
        .context("llama-server did not start")?;
        eprintln!("llama-server listening on {server_url} (namespace {HUB})");

        let hosts: Vec<(String, String, Ipv4Addr)> = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.ns.clone(), h.ip))
            .collect();
        for (name, ns, addr) in hosts {
            let state = self.log_dir.join(format!("{name}-state"));
            let mut agent = Command::new(bin.join("llama-agent"));
            agent
                .args(["run", "--server", &server_url, "--group", "demo"])
                .args(["--ip", &addr.to_string(), "--probe-shortname", &name])
                .args(["--probe-name", &format!("llama demo {name}")])
                .args(["--mode", &opts.mode, "--interface", "eth0"])
                .args([
                    "--register-interval",
                    "5",
                    "--poll-interval",
                    "2",
                    "--keepalive",
                    "30",
                ])
                .arg("--state-dir")
                .arg(&state);
            self.spawn(&name, &ns, agent)?;
        }
        for h in &self.hosts {
            let log = self.log_dir.join(format!("{}.log", h.name));
            match wait_for_log(&log, "eth0:", Duration::from_secs(20)) {
                Ok(line) => eprintln!("{} ({}): {}", h.name, h.ip, line.trim()),
                Err(e) => bail!("agent {} did not report its reflector mode: {e}", h.name),
            }
        }
        Ok(())
    }

    fn spawn(&mut self, label: &str, ns: &str, mut command: Command) -> Result<()> {
        let log_path = self.log_dir.join(format!("{label}.log"));
        let log = File::create(&log_path)?;
        let netns = File::open(format!("/var/run/netns/{ns}"))?;
        let fd = netns.as_raw_fd();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("NO_COLOR", "1");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo's processes die with it, even on SIGKILL.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("start {label}"))?;
        drop(netns);
        self.children.push((label.to_owned(), child));
        Ok(())
    }

    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Fails if a process died, with the end of its log.
    pub fn check_processes(&mut self) -> Result<()> {
        for (label, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(self.log_dir.join(format!("{label}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                bail!(
                    "{label} exited ({status}); last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// An HTTP client whose sockets live in the hub namespace (where the
    /// agents' API addresses are reachable). Moves the calling thread there.
    pub fn hub_http_client(&self) -> Result<reqwest::blocking::Client> {
        let netns = File::open(format!("/var/run/netns/{HUB}"))?;
        // SAFETY: setns on the calling thread with a valid namespace fd.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("enter the hub namespace");
        }
        crate::cmd::install_crypto_provider();
        Ok(reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()?)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, child) in &self.children {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        for (label, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("{label} did not stop within 6 s of SIGTERM: killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.ns]);
        }
        let _ = ip(&["netns", "del", HUB]);
    }
}

/// Waits until a line containing `needle` appears in `path`; returns it.
fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(file) = File::open(path)
            && let Some(line) = BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.contains(needle))
        {
            return Ok(line);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = fs::read_to_string(path).unwrap_or_default();
    bail!(
        "no line containing {needle:?} in {} after {timeout:?}:\n{log}",
        path.display()
    )
}
