//! The static binaries of `cargo xtask dist`, run as users run them: the
//! foreign ones under qemu-user (binfmt_misc is not assumed: the emulator is
//! called explicitly), the native one directly. For each architecture, in a
//! namespace of its own:
//! - `--version` of both binaries;
//! - a userspace reflector and a collector probing it over 127.0.0.1 and ::1
//!   with TOS 0xb8: 0 % loss, and nftables counts every probe and every reply
//!   on the wire with DSCP EF (0xb8) and none without;
//! - the server answering the service-discovery API (register, list, config,
//!   scraper, interval, my_ip_address, errors), and an agent of the same
//!   architecture registering with it and probing itself through the
//!   config it pulled; its start-up line says whether XDP is embedded.

use std::{fs::File, process::Stdio, time::Duration};

use llama_testkit::{
    NetNs,
    dist::{self, Arch},
    privileged, wait_for_explained,
};
use serde_json::Value;

use crate::support::{
    EVERY, WAIT,
    http::{get, request},
    tool_available,
};

#[test]
fn x86_64_binaries_run() {
    check(Arch::X86_64);
}

#[test]
fn aarch64_binaries_run_under_qemu() {
    check(Arch::Aarch64);
}

#[test]
fn armv7_binaries_run_under_qemu() {
    check(Arch::Armv7);
}

fn check(arch: Arch) {
    let test = format!("dist_qemu::{}", arch.name());
    if !privileged(&test) || !dist::available(&test, &[arch]) || !emulator_available(&test, arch) {
        return;
    }
    for name in dist::BINARIES {
        let out = dist::command(arch, name)
            .arg("--version")
            .output()
            .expect("run --version");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.trim() == format!("{name} {}", dist::VERSION),
            "{name} --version on {}: {text}",
            arch.name()
        );
    }
    let ns = NetNs::new().expect("netns");
    let logs = tempdir(&test);
    reflector_and_collector(arch, &ns, &logs);
    server_and_agent(arch, &ns, &logs);
    let _ = std::fs::remove_dir_all(&logs);
}

fn emulator_available(test: &str, arch: Arch) -> bool {
    arch.emulator().is_none_or(|qemu| {
        tool_available(
            test,
            qemu,
            "apt-get install qemu-user; `cargo xtask test` does",
        )
    })
}

fn tempdir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "llama-{}-{}",
        test.replace("::", "-"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Starts `binary(arch, name) args…` in `ns`, stdout and stderr to `log`.
fn spawn(
    ns: &NetNs,
    arch: Arch,
    name: &str,
    args: &[&str],
    log: &std::path::Path,
) -> llama_testkit::ChildGuard {
    let file = File::create(log).expect("log file");
    let mut cmd = dist::command(arch, name);
    cmd.args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file);
    ns.spawn(cmd).expect("spawn")
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// nftables counters of UDP probes (to 8100) and replies (from 8100) on
/// loopback, split by whether they carry DSCP EF (TOS 0xb8).
const TOS_RULES: &str = "
table inet llama_tos {
  counter probes_ef {}
  counter probes_other {}
  counter replies_ef {}
  counter replies_other {}
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 8100 ip dscp ef counter name probes_ef
    udp dport 8100 ip dscp != ef counter name probes_other
    udp dport 8100 ip6 dscp ef counter name probes_ef
    udp dport 8100 ip6 dscp != ef counter name probes_other
    udp sport 8100 ip dscp ef counter name replies_ef
    udp sport 8100 ip dscp != ef counter name replies_other
    udp sport 8100 ip6 dscp ef counter name replies_ef
    udp sport 8100 ip6 dscp != ef counter name replies_other
  }
}
";

fn tos_counters(ns: &NetNs) -> Value {
    let out = ns
        .exec(
            "nft",
            &["-j", "list", "counters", "table", "inet", "llama_tos"],
        )
        .expect("nft list counters");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    let mut counts = serde_json::Map::new();
    for item in json["nftables"].as_array().expect("nftables array") {
        if let Some(c) = item.get("counter") {
            counts.insert(
                c["name"].as_str().expect("name").to_owned(),
                c["packets"].clone(),
            );
        }
    }
    Value::Object(counts)
}

fn reflector_and_collector(arch: Arch, ns: &NetNs, logs: &std::path::Path) {
    let rules = logs.join("tos.nft");
    std::fs::write(&rules, TOS_RULES).expect("write rules");
    let out = ns
        .exec("nft", &["-f", rules.to_str().expect("utf-8 path")])
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reflector_log = logs.join("reflector.log");
    let _reflector = spawn(
        ns,
        arch,
        "llama-agent",
        &[
            "reflect",
            "--mode",
            "userspace",
            "--port",
            "8100",
            "--stats-interval",
            "0",
        ],
        &reflector_log,
    );
    wait_for_explained(
        "the reflector to listen",
        WAIT,
        EVERY,
        || {
            read(&reflector_log)
                .contains("reflector running")
                .then_some(())
        },
        || read(&reflector_log),
    );

    let config = logs.join("collector.yaml");
    std::fs::write(
        &config,
        "summarization: {interval: 1, handlers: 2}
api: {bind: 127.0.0.1:5001}
ports: {default: {ip: '::', port: 0, tos: 184, timeout: 2000}}
port_groups: {default: [{port: default, count: 2}]}
rate_limits: {default: {cps: 10}}
tests: [{targets: default, port_group: default, rate_limit: default}]
targets: {default: [{ip: 127.0.0.1, port: 8100, tags: {name: v4}}, {ip: '::1', port: 8100, tags: {name: v6}}]}
",
    )
    .expect("write config");
    let collector_log = logs.join("collector.log");
    let _collector = spawn(
        ns,
        arch,
        "llama-agent",
        &["collect", "--config", config.to_str().expect("utf-8 path")],
        &collector_log,
    );
    // Two intervals in a row with both paths fully answered.
    let mut clean_intervals = 0;
    let points = wait_for_explained(
        "two intervals with both paths at 0 % loss",
        WAIT,
        EVERY,
        || {
            let body = get(ns, "127.0.0.1:5001", "/influxdata")?;
            let points: Vec<Value> = serde_json::from_str(&body).ok()?;
            // The path points; each is followed by its per-flow points.
            let points: Vec<Value> = points
                .into_iter()
                .filter(|p| p["measurement"] == "raw_stats")
                .collect();
            let clean = points.len() == 2
                && points.iter().all(|p| {
                    p["fields"]["sent"].as_f64().is_some_and(|s| s >= 10.0)
                        && p["fields"]["loss"].as_f64() == Some(0.0)
                });
            clean_intervals = if clean { clean_intervals + 1 } else { 0 };
            std::thread::sleep(Duration::from_millis(900));
            (clean_intervals >= 2).then_some(points)
        },
        || {
            format!(
                "collector:\n{}\nreflector:\n{}",
                read(&collector_log),
                read(&reflector_log)
            )
        },
    );
    let names: Vec<&str> = points
        .iter()
        .filter_map(|p| p["tags"]["name"].as_str())
        .collect();
    assert!(names.contains(&"v4") && names.contains(&"v6"), "{points:?}");

    let metrics = get(ns, "127.0.0.1:5001", "/metrics").expect("/metrics");
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(metric("llama_collector_replies_total") >= 20.0, "{metrics}");
    assert_eq!(
        metric("llama_collector_replies_tos_mismatch_total"),
        0.0,
        "{metrics}"
    );

    let tos = tos_counters(ns);
    let n = |k: &str| {
        tos[k]
            .as_u64()
            .unwrap_or_else(|| panic!("counter {k}: {tos}"))
    };
    assert!(n("probes_ef") >= 20, "probes leave with TOS 0xb8: {tos}");
    assert!(
        n("replies_ef") >= 20,
        "replies carry the probe's TOS: {tos}"
    );
    assert_eq!(n("probes_other"), 0, "{tos}");
    assert_eq!(n("replies_other"), 0, "{tos}");
}

fn server_and_agent(arch: Arch, ns: &NetNs, logs: &std::path::Path) {
    let server_log = logs.join("server.log");
    let _server = spawn(
        ns,
        arch,
        "llama-server",
        &["--host", "127.0.0.1", "--port", "5000", "--interval", "2"],
        &server_log,
    );
    let server = "127.0.0.1:5000";
    wait_for_explained(
        "the server to answer",
        WAIT,
        EVERY,
        || get(ns, server, "/api/v1/interval"),
        || read(&server_log),
    );
    assert_eq!(get(ns, server, "/api/v1/interval").as_deref(), Some("2"));

    let register =
        |body: &str| request(ns, "POST", server, "/api/v1/register", Some(body)).expect("register");
    let ok = register(
        r#"{"port": 8300, "ip": "127.0.0.1", "group": "probes", "keepalive": 600,
            "tags": {"version": "0.0.1", "probe_shortname": "p1", "probe_name": "Probe One", "location": "lab"}}"#,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let bad = register(r#"{"port": 8300, "tags": {"probe_shortname": "p1", "probe_name": "x"}}"#);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("version"),
        "the error names the field: {}",
        bad.body
    );

    let list: Value =
        serde_json::from_str(&get(ns, server, "/api/v1/list").expect("list")).expect("list JSON");
    assert!(list["probes"]["127.0.0.1:8300"].is_object(), "{list}");
    let group: Value =
        serde_json::from_str(&get(ns, server, "/api/v1/list/probes").expect("group"))
            .expect("group JSON");
    assert_eq!(
        group["127.0.0.1:8300"]["tags"]["location"], "lab",
        "{group}"
    );
    let missing = request(ns, "GET", server, "/api/v1/list/nope", None).expect("list/nope");
    assert_eq!(missing.status, 404);
    let missing: Value = serde_json::from_str(&missing.body).expect("error JSON");
    assert_eq!(missing["error"], "unknown group 'nope'");

    let yaml = get(
        ns,
        server,
        "/api/v1/config/probes?llamaport=8300&srcip=127.0.0.1",
    )
    .expect("config");
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("config YAML");
    let targets = config["targets"]
        .as_mapping()
        .and_then(|m| m.values().next())
        .and_then(|t| t.as_sequence())
        .unwrap_or_else(|| panic!("targets in {yaml}"));
    assert_eq!(targets.len(), 1, "{yaml}");
    assert_eq!(targets[0]["ip"].as_str(), Some("127.0.0.1"), "{yaml}");
    assert_eq!(
        targets[0]["tags"]["dst_name"].as_str(),
        Some("Probe One"),
        "{yaml}"
    );
    assert_eq!(
        targets[0]["tags"]["src_shortname"].as_str(),
        Some("p1"),
        "{yaml}"
    );
    assert_eq!(
        get(ns, server, "/api/v1/scraper").as_deref(),
        Some("127.0.0.1")
    );
    let me: Value = serde_json::from_str(&get(ns, server, "/api/v1/my_ip_address").expect("my_ip"))
        .expect("JSON");
    assert_eq!(me["ip"], "127.0.0.1");

    // An agent of the same architecture joins a group of its own and
    // probes itself through the config it pulls.
    let state = logs.join("state");
    let agent_log = logs.join("agent.log");
    let _agent = spawn(
        ns,
        arch,
        "llama-agent",
        &[
            "--server",
            "http://127.0.0.1:5000",
            "--group",
            "self",
            "--mode",
            "userspace",
            "--port",
            "8200",
            "--api-bind",
            "127.0.0.1:8200",
            "--register-interval",
            "1s",
            "--poll-interval",
            "1s",
            "--probe-shortname",
            "a1",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
        ],
        &agent_log,
    );
    wait_for_explained(
        "the agent to register",
        WAIT,
        EVERY,
        || {
            let group: Value = serde_json::from_str(&get(ns, server, "/api/v1/list/self")?).ok()?;
            group["127.0.0.1:8200"].is_object().then_some(())
        },
        || {
            format!(
                "agent:\n{}\nserver:\n{}",
                read(&agent_log),
                read(&server_log)
            )
        },
    );
    wait_for_explained(
        "the agent to probe itself with 0 % loss",
        WAIT,
        EVERY,
        || {
            let points: Vec<Value> =
                serde_json::from_str(&get(ns, "127.0.0.1:8200", "/influxdata")?).ok()?;
            points
                .iter()
                .any(|p| {
                    p["measurement"] == "raw_stats"
                        && p["tags"]["src_shortname"] == "a1"
                        && p["fields"]["sent"].as_f64().is_some_and(|s| s > 0.0)
                        && p["fields"]["loss"].as_f64() == Some(0.0)
                })
                .then_some(())
        },
        || format!("agent:\n{}", read(&agent_log)),
    );
    let log = read(&agent_log);
    let startup = log
        .lines()
        .find(|l| l.contains("llama-agent starting"))
        .unwrap_or_else(|| panic!("no start-up line:\n{log}"));
    if arch.has_xdp() {
        assert!(startup.contains("xdp_object=embedded"), "{startup}");
    } else {
        assert!(
            startup.contains("xdp_object=XDP is not supported on arm: userspace reflector only"),
            "{startup}"
        );
    }
}
