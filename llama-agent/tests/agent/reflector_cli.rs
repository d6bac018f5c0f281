//! `llama-agent reflect` as a process: attach, SIGKILL (the program goes
//! away with the process), restart, a second agent on the same interface
//! (refused; `auto` falls back to userspace, loudly), SIGTERM (detaches).

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use llama_agent::xdp::{AttachMode, XdpReflector};
use llama_common::ReflectorConfig;
use llama_testkit::{ChildGuard, NetNs, TwoHosts, WAIT, wait_until};
use nix::sys::signal::Signal;

use crate::support::{client::Client, packets, xdp_ready};

/// `llama-agent reflect` in a namespace, its output collected line by line
/// (also used by `reflector_ebpf_log`).
pub(crate) struct Agent {
    guard: ChildGuard,
    lines: Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Agent {
    pub(crate) fn start(ns: &NetNs, args: &[&str]) -> Self {
        Self::start_logging(ns, args, "info")
    }

    /// [`Agent::start`] with `RUST_LOG` set to `rust_log`.
    pub(crate) fn start_logging(ns: &NetNs, args: &[&str], rust_log: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-agent"));
        cmd.arg("reflect")
            .args(args)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ns.spawn(cmd).expect("spawn llama-agent");
        let (tx, lines) = mpsc::channel();
        let child = guard.child();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            guard,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `needle`.
    pub(crate) fn expect_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line containing {needle:?}; output so far:\n{}",
            self.seen.join("\n")
        );
    }

    pub(crate) fn signal(&mut self, sig: Signal) {
        self.guard.signal(sig).expect("signal the agent");
    }

    /// Waits for the process to exit and returns whether it succeeded.
    pub(crate) fn wait_exit(&mut self) -> bool {
        let Some(status) = self.guard.wait_timeout(WAIT) else {
            panic!("agent did not exit:\n{}", self.seen.join("\n"));
        };
        // Drain what is left of the output.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        status.success()
    }
}

/// The XDP programs on `dev` as `ip link` shows them (`xdp`, `xdpgeneric`).
fn xdp_on(ns: &NetNs, dev: &str) -> Vec<String> {
    let out = ns
        .ip_output(&["-d", "link", "show", "dev", dev])
        .expect("ip link");
    let mut found: Vec<String> = out
        .split_whitespace()
        .filter(|w| ["xdp", "xdpgeneric", "xdpdrv", "xdpoffload"].contains(w))
        .map(str::to_owned)
        .collect();
    found.dedup();
    found
}

fn probe_answered(hosts: &TwoHosts) -> bool {
    hosts.left.run(|| {
        let c = Client::bind(SocketAddr::new(IpAddr::V4(hosts.left_v4), 0));
        let probe = packets::canonical_probe(*b"cli-probe!", 0x20, 5);
        (0..3).any(|_| {
            c.send(&probe, SocketAddr::new(IpAddr::V4(hosts.right_v4), 8100));
            c.recv(Duration::from_secs(2))
                .is_some_and(|r| r.payload == probe && r.tos == Some(0x20))
        })
    })
}

#[test]
fn kill_restart_second_agent_and_sigterm() {
    if !xdp_ready("kill_restart_second_agent_and_sigterm") {
        return;
    }
    let hosts = TwoHosts::new().expect("namespaces");
    let dev = hosts.veth.b.clone();
    // Native mode on veth: full checksums from the sender, a program on the peer.
    let out = hosts
        .left
        .exec("ethtool", &["-K", &hosts.veth.a, "tx", "off"])
        .expect("ethtool");
    assert!(out.status.success());
    let a = hosts.veth.a.clone();
    let _peer = hosts.left.run(|| {
        let mut p = XdpReflector::load(ReflectorConfig::new(0)).expect("peer program");
        p.attach(&a, AttachMode::Native).expect("attach peer");
        p
    });

    // 1. Native mode, working.
    let mut first = Agent::start(&hosts.right, &["--mode", "xdp", "--interface", &dev]);
    first.expect_line(&format!("{dev}: xdp native"));
    first.expect_line("reflector running");
    assert_eq!(xdp_on(&hosts.right, &dev), vec!["xdp"]);
    assert!(probe_answered(&hosts), "native mode answers");

    // 2. SIGKILL: no handler runs, yet the program goes with the process.
    first.signal(Signal::SIGKILL);
    assert!(!first.wait_exit());
    wait_until("the killed agent's program is gone", WAIT, || {
        xdp_on(&hosts.right, &dev).is_empty()
    });

    // 3. The next start attaches fine (auto takes generic on veth).
    let mut second = Agent::start(&hosts.right, &["--mode", "auto", "--interface", &dev]);
    second.expect_line(&format!("{dev}: xdp generic"));
    second.expect_line("reflector running");
    assert_eq!(xdp_on(&hosts.right, &dev), vec!["xdpgeneric"]);
    assert!(probe_answered(&hosts));

    // 4. A concurrent `--mode xdp` agent is refused clearly and exits.
    let mut refused = Agent::start(&hosts.right, &["--mode", "xdp-skb", "--interface", &dev]);
    assert!(
        !refused.wait_exit(),
        "must fail while the interface is taken"
    );
    refused.expect_line("another XDP program is already attached");

    // 5. A concurrent `auto` agent falls back to userspace, loudly, and runs.
    let mut third = Agent::start(&hosts.right, &["--mode", "auto", "--interface", &dev]);
    let line = third.expect_line(&format!("{dev}: userspace (attach failed"));
    assert!(line.contains("WARN"), "fallback must be a warning: {line}");
    assert!(line.contains("second agent"), "{line}");
    third.expect_line("reflector running");
    assert_eq!(
        xdp_on(&hosts.right, &dev),
        vec!["xdpgeneric"],
        "never two programs"
    );

    // 6. SIGTERM detaches and exits cleanly; the other agent keeps answering.
    second.signal(Signal::SIGTERM);
    assert!(
        second.wait_exit(),
        "clean exit on SIGTERM:\n{}",
        second.seen.join("\n")
    );
    second.expect_line(&format!("{dev}: xdp detached"));
    assert!(xdp_on(&hosts.right, &dev).is_empty(), "detached on SIGTERM");
    assert!(probe_answered(&hosts), "the userspace agent still answers");
    third.signal(Signal::SIGINT);
    assert!(third.wait_exit(), "clean exit on SIGINT");
    third.expect_line("reflector stopped");
}

#[test]
fn bad_flags_are_refused() {
    let bin = env!("CARGO_BIN_EXE_llama-agent");
    for args in [
        vec!["reflect", "--mode", "turbo"],
        vec!["reflect", "--allow", "10.0.0.0/33"],
        vec!["reflect", "--port", "70000"],
        vec!["reflect", "--allow", "peers", "--mode", "userspace"],
    ] {
        let out = Command::new(bin)
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run agent");
        assert!(!out.status.success(), "{args:?} must fail");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}
