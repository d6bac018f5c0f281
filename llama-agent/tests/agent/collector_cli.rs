//! `llama-agent collect` as a process, like the original collector binary:
//! serves the API, reloads its file on SIGHUP (keeping the running
//! configuration when the new file is bad) and exits cleanly on SIGTERM.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use llama_testkit::{NetNs, WAIT, http_get_ok, privileged, wait_for, wait_until};
use nix::sys::signal::Signal;

use crate::support::reflector::{Mode, start_reflector};

const API: &str = "127.0.0.1:5001";

/// `GET path` on the collector's API inside `ns`: the body of a 200 answer.
fn get(ns: &NetNs, addr: &str, path: &'static str) -> Option<String> {
    let addr: SocketAddr = addr.parse().expect("address literal");
    ns.run(move || http_get_ok(addr, path))
}

/// Polls `/influxdata` until `pred` holds.
fn wait_for_body(ns: &NetNs, what: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_for(what, WAIT, || {
        get(ns, API, "/influxdata").filter(|b| pred(b))
    })
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

    wait_until("/status on --api-bind", WAIT, || {
        get(&ns, API, "/status").as_deref() == Some("ok")
    });
    assert!(
        get(&ns, "127.0.0.1:5000", "/status").is_none(),
        "--api-bind overrides api.bind"
    );
    let body = wait_for_body(&ns, "the IPv4 path", |b| {
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
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let body = wait_for_body(&ns, "the reloaded IPv6 path", |b| {
        b.contains("\"dst_ip\":\"::1\"")
    });
    assert!(body.contains("\"src_ip\":\"::1\""), "{body}");

    // A broken file is reported and the running configuration kept.
    std::fs::write(
        &file,
        "tests: [{targets: nope, port_group: default, rate_limit: default}]\n",
    )
    .expect("write");
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.child().try_wait().expect("wait").is_none(),
        "a bad reload must not kill it"
    );
    wait_for_body(&ns, "both paths still measured", |b| {
        b.contains("\"dst_ip\":\"::1\"") && b.contains("\"dst_ip\":\"127.0.0.1\"")
    });

    child.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("collector did not exit on SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
