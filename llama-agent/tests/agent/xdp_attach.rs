//! The chain from `cargo xtask build-ebpf` to a running program: the embedded
//! object loads, passes the verifier, attaches to a veth inside a namespace in
//! native (driver) and generic (skb) mode, reports the mode, and detaches.
//! Also what happens after a crash: the program goes away with the process,
//! and while an agent still holds an interface a second one is refused.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use llama_agent::xdp::{AttachMode, Error, XdpReflector};
use llama_common::ReflectorConfig;
use llama_testkit::{NetNs, TwoHosts, WAIT, wait_until};

use crate::support::xdp_ready;

/// The XDP program attached to `dev`, as `ip link` reports it: `Some("xdp")`
/// for native mode, `Some("xdpgeneric")` for skb mode, `None` without one.
fn attached_mode(ns: &NetNs, dev: &str) -> Option<String> {
    let out = ns
        .ip_output(&["link", "show", "dev", dev])
        .expect("ip link show");
    let first = out.lines().next().unwrap_or_default();
    ["xdpgeneric", "xdpdrv", "xdpoffload", "xdp"]
        .into_iter()
        .find(|m| first.split_whitespace().any(|w| w == *m))
        .map(str::to_owned)
        .or_else(|| out.contains("prog/xdp").then(|| "xdp".to_owned()))
}

#[test]
fn attaches_in_native_and_generic_mode_and_detaches() {
    if !xdp_ready("attaches_in_native_and_generic_mode_and_detaches") {
        return;
    }
    let hosts = TwoHosts::new().expect("namespaces");
    let dev = hosts.veth.b.clone();
    for (mode, shown) in [
        (AttachMode::Native, "xdp"),
        (AttachMode::Generic, "xdpgeneric"),
    ] {
        let mut reflector = hosts
            .right
            .run(|| XdpReflector::load(ReflectorConfig::new(8100)))
            .expect("object loads and passes the verifier");
        hosts
            .right
            .run(|| reflector.attach(&dev, mode))
            .unwrap_or_else(|e| panic!("attach {mode}: {e}"));
        let got: Vec<_> = reflector
            .attachments()
            .map(|(i, m)| (i.to_owned(), m))
            .collect();
        assert_eq!(got, vec![(dev.clone(), mode)], "reported mode");
        assert_eq!(
            attached_mode(&hosts.right, &dev).as_deref(),
            Some(shown),
            "kernel's view of {mode}"
        );
        assert!(reflector.counters().is_ok(), "counters map readable");
        hosts.right.run(|| reflector.detach(&dev)).expect("detach");
        // The kernel detaches when the link's last file reference goes: a
        // child that another test thread is spawning at that moment holds
        // a copy of every descriptor until its exec closes them, so the
        // program may outlive our close by a few milliseconds.
        wait_until(&format!("detached after {mode}"), WAIT, || {
            attached_mode(&hosts.right, &dev).is_none()
        });
        // Detaching twice is an error, not a crash.
        assert!(matches!(reflector.detach(&dev), Err(Error::NotAttached(_))));
    }
}

#[test]
fn second_agent_is_refused_while_the_first_holds_the_interface() {
    if !xdp_ready("second_agent_is_refused_while_the_first_holds_the_interface") {
        return;
    }
    let ns = NetNs::new().expect("netns");
    let peer = NetNs::new().expect("netns");
    let veth = llama_testkit::Veth::new(&ns, &peer).expect("veth");
    let dev = veth.a.clone();
    ns.run(|| {
        let mut first = XdpReflector::load(ReflectorConfig::new(8100)).expect("load first");
        first
            .attach(&dev, AttachMode::Generic)
            .expect("first attach");
        // A crashed-but-not-dead agent (hung, stopped) still owns its link: a
        // second agent must not stack another program on top of it.
        let mut second = XdpReflector::load(ReflectorConfig::new(8100)).expect("load second");
        match second.attach(&dev, AttachMode::Generic) {
            Err(Error::InterfaceBusy { interface }) => assert_eq!(interface, dev),
            other => panic!("second attach must be refused as busy, got {other:?}"),
        }
        drop(first);
        second
            .attach(&dev, AttachMode::Generic)
            .expect("attach once the first is gone");
    });
}

const CHILD_ENV: &str = "LLAMA_XDP_ATTACH_CHILD_IFACE";

/// Not a test on its own: the body of the child process that
/// `killed_agent_leaves_no_program_behind` starts and kills.
#[test]
fn child_attach_and_wait() {
    let Ok(dev) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut reflector = XdpReflector::load(ReflectorConfig::new(8100)).expect("child load");
    reflector
        .attach(&dev, AttachMode::Native)
        .expect("child attach");
    println!("ATTACHED");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn killed_agent_leaves_no_program_behind() {
    if !xdp_ready("killed_agent_leaves_no_program_behind") {
        return;
    }
    let hosts = TwoHosts::new().expect("namespaces");
    let dev = hosts.veth.b.clone();
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "xdp_attach::child_attach_and_wait",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, &dev)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = hosts.right.spawn(cmd).expect("spawn child");
    let stdout = child.child().stdout.take().expect("piped stdout");
    let attached = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("ATTACHED"));
    assert!(attached, "child must report that it attached");
    assert_eq!(attached_mode(&hosts.right, &dev).as_deref(), Some("xdp"));

    // SIGKILL: no handler runs, no detach call is made.
    child.child().kill().expect("SIGKILL");
    child.child().wait().expect("reap");
    wait_until("the dead agent's program to go", WAIT, || {
        attached_mode(&hosts.right, &dev).is_none()
    });
    // The next agent starts cleanly.
    hosts.right.run(|| {
        let mut next = XdpReflector::load(ReflectorConfig::new(8100)).expect("load");
        next.attach(&dev, AttachMode::Native)
            .expect("attach after the crash");
    });
}
