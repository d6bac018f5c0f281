//! The container images of `cargo xtask image`, run with podman in network
//! namespaces (`--network ns:/run/netns/NAME`):
//! - InfluxDB, the server and an agent with the XDP reflector in one
//!   namespace, a userspace-only agent with no capabilities at all in the
//!   other; the agents register, probe each other with 0 % loss (the XDP
//!   agent's probes answered by XDP), and the server's scraper writes
//!   `raw_stats` to InfluxDB with every field and tag the Grafana dashboard
//!   queries;
//! - the XDP agent's capability set is minimal: with CAP_BPF, CAP_NET_ADMIN
//!   and CAP_PERFMON (and the seccomp profile) XDP attaches; without any one
//!   of them, or with the runtime's default seccomp profile, it does not;
//! - every saved archive loads as its image, for its platform, carrying the
//!   dist binary byte for byte (the arm64 and arm/v7 images cannot run here:
//!   their binaries run under qemu-user in the dist_qemu test).

use llama_testkit::{
    NetNs, TwoHosts, cannot_run,
    dist::{self, Arch, XDP_CAPABILITIES},
    privileged, wait_for_explained,
};
use serde_json::Value;

use crate::support::{
    EVERY, WAIT, dashboards,
    http::get,
    podman::{Container, images_available},
};

fn network(ns: &NetNs) -> String {
    format!("ns:/run/netns/{}", ns.name())
}

/// Images and the seccomp profile present (or the test is skipped / fails).
fn prerequisites(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    let images = ["llama-agent", "llama-server", "llama-influxdb"]
        .map(|c| dist::image(c, Arch::X86_64))
        .to_vec();
    if !images_available(test, &images) {
        return false;
    }
    let profile = dist::seccomp_profile();
    profile.is_file()
        || cannot_run(
            test,
            &format!(
                "{} is missing; run `cargo xtask image` (`cargo xtask test` does)",
                profile.display()
            ),
        )
}

/// The two hosts a container test runs in, when it can run here
/// ([`prerequisites`]).
fn hosts_for(test: &str) -> Option<TwoHosts> {
    prerequisites(test).then(|| TwoHosts::new().expect("two hosts"))
}

fn seccomp_option() -> String {
    format!("seccomp={}", dist::seccomp_profile().display())
}

fn xdp_cap_args(caps: &[&str]) -> Vec<String> {
    let mut args = vec!["--cap-drop=all".to_owned()];
    if !caps.is_empty() {
        args.push(format!("--cap-add={}", caps.join(",")));
    }
    args
}

/// A percent-encoded query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The first column of every row of an InfluxQL answer.
fn influx_column(ns: &NetNs, query: &str) -> Option<Vec<String>> {
    let body = get(
        ns,
        "127.0.0.1:8086",
        &format!("/query?db=llama&q={}", encode(query)),
    )?;
    let json: Value = serde_json::from_str(&body).ok()?;
    let values = json["results"][0]["series"][0]["values"].as_array()?;
    Some(
        values
            .iter()
            .map(|row| match &row[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
    )
}

#[test]
fn server_influxdb_and_two_agents_in_containers() {
    let Some(hosts) = hosts_for("container::server_influxdb_and_two_agents_in_containers") else {
        return;
    };
    // Each agent attaches XDP to the interface of its default route.
    hosts
        .left
        .add_route("default", &format!("via {}", hosts.right_v4))
        .expect("route");
    hosts
        .right
        .add_route("default", &format!("via {}", hosts.left_v4))
        .expect("route");
    let (left, right) = (network(&hosts.left), network(&hosts.right));
    let server_url = format!("http://{}:5000", hosts.left_v4);

    let influxdb = Container::run(
        "influxdb",
        &[
            "--network",
            &left,
            &dist::image("llama-influxdb", Arch::X86_64),
        ],
    );
    let server = Container::run(
        "server",
        &[
            "--network",
            &left,
            "--cap-drop=all",
            "--user",
            "65534:65534",
            "--read-only",
            "-e",
            "LLAMA_INTERVAL=2",
            "-e",
            "INFLUXDB_HOST=127.0.0.1",
            &dist::image("llama-server", Arch::X86_64),
        ],
    );
    let agent_env = |shortname: &str| {
        vec![
            "-e".to_owned(),
            format!("LLAMA_SERVER={server_url}"),
            "-e".to_owned(),
            "LLAMA_GROUP=containers".to_owned(),
            "-e".to_owned(),
            format!("PROBE_SHORTNAME={shortname}"),
            "-e".to_owned(),
            "LLAMA_REGISTER_INTERVAL=1s".to_owned(),
            "-e".to_owned(),
            "LLAMA_POLL_INTERVAL=1s".to_owned(),
        ]
    };
    let agent_image = dist::image("llama-agent", Arch::X86_64);
    let mut xdp_args = vec!["--network".to_owned(), left.clone()];
    xdp_args.extend(xdp_cap_args(&XDP_CAPABILITIES));
    xdp_args.extend(["--security-opt".to_owned(), seccomp_option()]);
    xdp_args.extend(agent_env("xdp"));
    xdp_args.push(agent_image.clone());
    let xdp_agent = Container::run(
        "agent-xdp",
        &xdp_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut user_args = vec!["--network".to_owned(), right.clone()];
    user_args.extend(xdp_cap_args(&[]));
    user_args.extend(agent_env("user"));
    user_args.push(agent_image);
    let user_agent = Container::run(
        "agent-user",
        &user_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let all_logs = || {
        format!(
            "server:\n{}\nagent-xdp:\n{}\nagent-user:\n{}\ninfluxdb:\n{}",
            server.logs(),
            xdp_agent.logs(),
            user_agent.logs(),
            influxdb.logs()
        )
    };
    let server_addr = format!("{}:5000", hosts.left_v4);
    let (xdp_id, user_id) = (
        format!("{}:8100", hosts.left_v4),
        format!("{}:8100", hosts.right_v4),
    );
    wait_for_explained(
        "both agents registered",
        WAIT,
        EVERY,
        || {
            let group: Value =
                serde_json::from_str(&get(&hosts.left, &server_addr, "/api/v1/list/containers")?)
                    .ok()?;
            (group[&xdp_id].is_object() && group[&user_id].is_object()).then_some(())
        },
        all_logs,
    );
    let xdp_log = xdp_agent.logs();
    assert!(
        xdp_log.contains(&format!("{}: xdp generic", hosts.veth.a))
            || xdp_log.contains(&format!("{}: xdp native", hosts.veth.a)),
        "XDP attaches with {XDP_CAPABILITIES:?}:\n{xdp_log}"
    );
    let user_log = user_agent.logs();
    assert!(
        user_log.contains(&format!("{}: userspace (XDP unavailable", hosts.veth.b)),
        "no capabilities: userspace reflector:\n{user_log}"
    );

    // Each agent's path to the other, answered (by XDP on the left), over
    // one segment: 0 hops.
    let clean_path = |ns: &NetNs, api: String, dst: String| {
        wait_for_explained(
            &format!("a clean interval from {api} to {dst}"),
            WAIT,
            EVERY,
            || {
                let points: Vec<Value> =
                    serde_json::from_str(&get(ns, &api, "/influxdata")?).ok()?;
                points
                    .iter()
                    .any(|p| {
                        p["measurement"] == "raw_stats"
                            && p["tags"]["dst_ip"] == dst.as_str()
                            && p["fields"]["sent"].as_f64().is_some_and(|s| s > 0.0)
                            && p["fields"]["loss"].as_f64() == Some(0.0)
                            && p["fields"]["hops"].as_f64() == Some(0.0)
                    })
                    .then_some(())
            },
            all_logs,
        )
    };
    clean_path(&hosts.left, xdp_id.clone(), hosts.right_v4.to_string());
    clean_path(&hosts.right, user_id.clone(), hosts.left_v4.to_string());
    let metrics = get(&hosts.left, &xdp_id, "/metrics").expect("/metrics");
    let reflected_by_xdp = metrics
        .lines()
        .filter(|l| l.contains("path=\"xdp\"") && l.contains("counter=\"reflected\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(
        reflected_by_xdp > 0.0,
        "XDP answered the userspace agent's probes:\n{metrics}"
    );
    // The Prometheus dashboard names metrics and labels this agent exports.
    let exposed = dashboards::parse_promql(&metrics);
    let wanted = dashboards::prom_names();
    for metric in &wanted.metrics {
        assert!(
            exposed.metrics.contains(metric),
            "dashboard metric {metric} not exported:\n{metrics}"
        );
    }
    for label in &wanted.labels {
        assert!(
            exposed.labels.contains(label) || dashboards::TARGET_LABELS.contains(&label.as_str()),
            "dashboard label {label} not exported:\n{metrics}"
        );
    }

    // The scraper's points in InfluxDB carry everything the dashboard asks
    // for (`hops` is only in points of intervals with replies: wait for it).
    let wanted = dashboards::influx_names();
    let fields = wait_for_explained(
        "raw_stats in InfluxDB",
        WAIT,
        EVERY,
        || {
            let fields = influx_column(&hosts.left, "SHOW FIELD KEYS FROM \"raw_stats\"")?;
            let tags = influx_column(&hosts.left, "SHOW TAG KEYS FROM \"raw_stats\"")?;
            let groups = influx_column(
                &hosts.left,
                "SHOW TAG VALUES FROM \"raw_stats\" WITH KEY = \"group\"",
            );
            (groups.is_some()
                && tags.iter().any(|t| t == "dst_name")
                && wanted.fields.iter().all(|f| fields.contains(f)))
            .then_some((fields, tags))
        },
        all_logs,
    );
    let (fields, tags) = fields;
    assert_eq!(
        wanted.measurements,
        ["raw_stats".to_owned()].into_iter().collect(),
        "the dashboard reads the original measurement"
    );
    for field in &wanted.fields {
        assert!(
            fields.contains(field),
            "dashboard field {field} not written: {fields:?}"
        );
    }
    for tag in &wanted.tags {
        assert!(
            tags.contains(tag),
            "dashboard tag {tag} not written: {tags:?}"
        );
    }
}

/// Starts `reflect --mode xdp-skb` on the veth in `ns` with `caps` and the
/// seccomp profile (or the runtime default); `Ok` when XDP attached, `Err`
/// with the logs when the agent gave up.
fn attach_xdp(ns: &NetNs, iface: &str, caps: &[&str], our_seccomp: bool) -> Result<(), String> {
    let mut args = vec!["--network".to_owned(), network(ns)];
    args.extend(xdp_cap_args(caps));
    if our_seccomp {
        args.extend(["--security-opt".to_owned(), seccomp_option()]);
    }
    args.push(dist::image("llama-agent", Arch::X86_64));
    args.extend(
        [
            "reflect",
            "--mode",
            "xdp-skb",
            "--interface",
            iface,
            "--stats-interval",
            "0",
        ]
        .map(str::to_owned),
    );
    let container = Container::run("caps", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let attached = format!("{iface}: xdp generic");
    let mut verdict = None;
    wait_for_explained(
        "the agent to attach XDP or give up",
        WAIT,
        EVERY,
        || {
            let logs = container.logs();
            verdict = if logs.contains(&attached) {
                Some(Ok(()))
            } else if !container.running() {
                Some(Err(container.logs()))
            } else {
                None
            };
            verdict.clone()
        },
        || container.logs(),
    )
}

#[test]
fn xdp_needs_bpf_net_admin_and_perfmon_and_nothing_else() {
    let Some(hosts) = hosts_for("container::xdp_needs_bpf_net_admin_and_perfmon_and_nothing_else")
    else {
        return;
    };
    let iface = hosts.veth.a.clone();
    attach_xdp(&hosts.left, &iface, &XDP_CAPABILITIES, true)
        .unwrap_or_else(|logs| panic!("XDP with {XDP_CAPABILITIES:?}:\n{logs}"));
    for missing in XDP_CAPABILITIES {
        let fewer: Vec<&str> = XDP_CAPABILITIES
            .into_iter()
            .filter(|c| *c != missing)
            .collect();
        let logs = attach_xdp(&hosts.left, &iface, &fewer, true)
            .expect_err(&format!("XDP must not attach without {missing}"));
        assert!(
            logs.contains("xdp-skb"),
            "a clear error naming the mode:\n{logs}"
        );
    }
    let logs = attach_xdp(&hosts.left, &iface, &XDP_CAPABILITIES, false)
        .expect_err("the runtime's default seccomp profile blocks bpf() without CAP_SYS_ADMIN");
    assert!(logs.contains("xdp-skb"), "{logs}");
}

#[test]
fn image_archives_load_and_carry_the_dist_binaries() {
    let test = "container::image_archives_load_and_carry_the_dist_binaries";
    if !prerequisites(test) || !dist::available(test, &Arch::ALL) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("llama-archives-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for component in dist::BINARIES {
        for arch in Arch::ALL {
            let archive = dist::image_archive(component, arch);
            let image = dist::image(component, arch);
            let out = dist::podman()
                .args(["load", "--input"])
                .arg(&archive)
                .output()
                .expect("podman load");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(&image),
                "{} loads as {image}: {text}{}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let platform = dist::podman()
                .args([
                    "image",
                    "inspect",
                    "--format",
                    "{{.Os}}/{{.Architecture}}",
                    &image,
                ])
                .output()
                .expect("inspect");
            let platform = String::from_utf8_lossy(&platform.stdout).trim().to_owned();
            assert!(
                arch.oci_platform().starts_with(&platform),
                "{image}: {platform}"
            );
            // The binary inside is the dist binary, byte for byte.
            let created = Container::create(&format!("{component}-{}", arch.name()), &[&image]);
            let copy = dir.join(&created.name);
            let cp = dist::podman()
                .args([
                    "cp",
                    &format!("{}:/usr/local/bin/{component}", created.name),
                ])
                .arg(&copy)
                .status();
            drop(created);
            assert!(cp.is_ok_and(|s| s.success()), "podman cp from {image}");
            assert!(
                std::fs::read(&copy).expect("copied binary")
                    == std::fs::read(dist::binary(arch, component)).expect("dist binary"),
                "{image} carries {}",
                dist::binary(arch, component).display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
