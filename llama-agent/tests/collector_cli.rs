//! `llama-agent collect` as a process, like the original collector binary:
//! serves the API, reloads its file on SIGHUP (keeping the running
//! configuration when the new file is bad) and exits cleanly on SIGTERM.

#[path = "support/reflector.rs"]
mod reflector;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use llama_testkit::{NetNs, privileged};
use nix::{sys::signal::Signal, unistd::Pid};
use reflector::{Mode, start_reflector};

fn http_get(ns: &NetNs, addr: &'static str, path: &'static str) -> Option<String> {
    ns.run(move || {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    })
}

/// Polls `/influxdata` until `pred` holds, for at most 20 s.
fn wait_for(ns: &NetNs, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(body) = http_get(ns, "127.0.0.1:5001", "/influxdata")
            && pred(&body)
        {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_config(path: &std::path::Path, targets: &str) {
    let yaml = format!(
        "
summarization: {{interval: 1, handlers: 2}}
api: {{bind: 127.0.0.1:5000}}
ports: {{default: {{ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}}}}
port_groups: {{default: [{{port: default, count: 2}}]}}
rate_limits: {{default: {{cps: 10}}}}
tests: [{{targets: default, port_group: default, rate_limit: default}}]
targets: {{default: [{targets}]}}
"
    );
    std::fs::write(path, yaml).expect("write config");
}

#[test]
fn standalone_collector_serves_reloads_and_stops() {
    if !privileged("collector_cli::standalone_collector_serves_reloads_and_stops") {
        return;
    }
    let ns = NetNs::new().expect("netns");
    let _refl = start_reflector(&ns, Mode::Userspace, "lo", 8100);
    let dir = std::env::temp_dir().join(format!("llama-collector-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("collector.yaml");
    write_config(&file, "{ip: 127.0.0.1, port: 8100, tags: {name: v4}}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-agent"));
    cmd.args(["collect", "--config"])
        .arg(&file)
        .args(["--api-bind", "127.0.0.1:5001"])
        .env_remove("APP_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ns.spawn(cmd).expect("spawn collector");
    let pid = Pid::from_raw(child.child().id() as i32);

    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&ns, "127.0.0.1:5001", "/status").as_deref() != Some("ok") {
        assert!(
            Instant::now() < deadline,
            "/status never answered on --api-bind"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        http_get(&ns, "127.0.0.1:5000", "/status").is_none(),
        "--api-bind overrides api.bind"
    );
    let body = wait_for(&ns, "the IPv4 path", |b| {
        b.contains("\"dst_ip\":\"127.0.0.1\"")
    });
    assert!(
        body.contains("\"name\":\"v4\"") && body.contains("\"loss\":0.000000"),
        "{body}"
    );

    // SIGHUP: the new file adds an IPv6 target.
    write_config(
        &file,
        "{ip: 127.0.0.1, port: 8100, tags: {name: v4}}, {ip: '::1', port: 8100, tags: {name: v6}}",
    );
    nix::sys::signal::kill(pid, Signal::SIGHUP).expect("SIGHUP");
    let body = wait_for(&ns, "the reloaded IPv6 path", |b| {
        b.contains("\"dst_ip\":\"::1\"")
    });
    assert!(body.contains("\"src_ip\":\"::1\""), "{body}");

    // A broken file is reported and the running configuration kept.
    std::fs::write(
        &file,
        "tests: [{targets: nope, port_group: default, rate_limit: default}]\n",
    )
    .expect("write");
    nix::sys::signal::kill(pid, Signal::SIGHUP).expect("SIGHUP");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.child().try_wait().expect("wait").is_none(),
        "a bad reload must not kill it"
    );
    wait_for(&ns, "both paths still measured", |b| {
        b.contains("\"dst_ip\":\"::1\"") && b.contains("\"dst_ip\":\"127.0.0.1\"")
    });

    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.child().try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "collector did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
