//! The deployment files agree with the binaries and with each other:
//! - the systemd units pass `systemd-analyze verify`, and the agent's unit
//!   grants exactly the capabilities XDP needs, which really attach XDP for
//!   a non-root process (and each one is needed);
//! - compose and Kubernetes name images `cargo xtask image` builds, files
//!   that exist, environment variables the binaries' `--help` lists, the
//!   ports the binaries use and the minimal capabilities;
//! - the Grafana dashboards query the measurement, fields and tags the
//!   agents and the scraper write (from the code that writes them);
//! - docker/Dockerfile builds the same images as `cargo xtask image`.

#[path = "support/dashboards.rs"]
mod dashboards;
#[path = "support/podman.rs"]
mod podman;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use dashboards::{parse_influxql, parse_promql, workspace};
use llama_testkit::{
    TwoHosts,
    dist::{self, Arch, XDP_CAPABILITIES},
    privileged, privileged_required,
};
use serde_yaml_ng::Value;

fn read(rel: &str) -> String {
    fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// What one binary's `--help` (and its subcommands') says.
struct Help {
    env: BTreeSet<String>,
    text: String,
}

fn help(binary: &str) -> Help {
    let run = |args: &[&str]| {
        let out = dist::command(Arch::X86_64, binary)
            .args(args)
            .output()
            .expect("run --help");
        assert!(out.status.success(), "{binary} {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut text = run(&["--help"]);
    let commands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .and_then(|t| t.split("Options:").next())
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    for c in commands {
        text.push_str(&run(&[&c, "--help"]));
    }
    let env = text
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split('=').next().map(str::to_owned))
        .collect();
    Help { env, text }
}

impl Help {
    /// The `[default: …]` of the option whose flags include `flag`.
    fn default_of(&self, flag: &str) -> Option<String> {
        let mut block = String::new();
        let mut found = None;
        for line in self.text.lines().chain(["-"]) {
            if line.trim_start().starts_with('-') {
                if block.split(&[' ', ','][..]).any(|w| w == flag) {
                    found = block
                        .split("[default: ")
                        .nth(1)
                        .and_then(|d| d.split(']').next())
                        .map(str::to_owned);
                    break;
                }
                block.clear();
            }
            block.push_str(line);
            block.push(' ');
        }
        found
    }
}

fn binaries_available(test: &str) -> bool {
    dist::available(test, &[Arch::X86_64])
}

// ---------------------------------------------------------------- systemd

fn unit(name: &str) -> String {
    read(&format!("deploy/systemd/{name}.service"))
}

/// The values of `key=` in a unit (every occurrence).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let test = "deploy_files::systemd_units_pass_systemd_analyze_verify";
    if !binaries_available(test) {
        return;
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(!privileged_required(), "{test}: systemd-analyze is missing");
        eprintln!("SKIPPED {test}: systemd-analyze is missing");
        return;
    }
    let dir = std::env::temp_dir().join(format!("llama-units-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    for name in dist::BINARIES {
        // The installed path does not exist here; the unit is otherwise unchanged.
        let text = unit(name).replace(
            &format!("ExecStart=/usr/local/bin/{name}"),
            &format!("ExecStart={}", dist::binary(Arch::X86_64, name).display()),
        );
        assert_ne!(
            text,
            unit(name),
            "{name}.service starts /usr/local/bin/{name}"
        );
        let path = dir.join(format!("{name}.service"));
        fs::write(&path, text).expect("write unit");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}.service: {stderr}"
        );
        for var in unit_values(&unit(name), "Environment") {
            let key = var.split('=').next().expect("key");
            assert!(
                help(name).env.contains(key),
                "{name}.service sets unknown {key}"
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Runs the dist agent as systemd would with `caps` as ambient capabilities
/// for user nobody: `Ok` when XDP attached to `iface`, else `Err(output)`.
fn attach_as_nobody(hosts: &TwoHosts, binary: &Path, caps: &[String]) -> Result<(), String> {
    let list = |caps: &[String]| {
        let mut s = "-all".to_owned();
        for c in caps {
            s.push_str(&format!(
                ",+{}",
                c.trim_start_matches("CAP_").to_lowercase()
            ));
        }
        s
    };
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={}", list(caps)))
        .arg(format!("--ambient-caps={}", list(caps)))
        .arg(format!("--bounding-set={}", list(caps)))
        .arg("--")
        .arg(binary)
        .args([
            "reflect",
            "--mode",
            "xdp-skb",
            "--interface",
            &hosts.veth.a,
            "--stats-interval",
            "0",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = hosts.left.spawn(cmd).expect("spawn setpriv");
    // It either attaches and keeps running, or exits with an error.
    let attached = format!("{}: xdp generic", hosts.veth.a);
    let mut out = String::new();
    let stdout = child.child().stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.contains("xdp generic");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if reader.is_finished() {
            out.push_str(&reader.join().expect("reader"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent neither attached nor exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stderr = String::new();
    if out.contains(&attached) {
        return Ok(());
    }
    let _ = child.child().wait();
    if let Some(mut e) = child.child().stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    Err(format!("{out}\n{stderr}"))
}

#[test]
fn agent_unit_capabilities_attach_xdp_and_are_all_needed() {
    let test = "deploy_files::agent_unit_capabilities_attach_xdp_and_are_all_needed";
    if !privileged(test) || !binaries_available(test) {
        return;
    }
    let agent = unit("llama-agent");
    let caps: Vec<String> = unit_values(&agent, "AmbientCapabilities")
        .join(" ")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(caps, XDP_CAPABILITIES, "AmbientCapabilities");
    assert_eq!(
        unit_values(&agent, "CapabilityBoundingSet"),
        [XDP_CAPABILITIES.join(" ")],
        "no capability beyond those"
    );
    assert_eq!(unit_values(&agent, "LimitMEMLOCK"), ["infinity"]);
    assert_eq!(unit_values(&agent, "StateDirectory"), ["llama"]);
    assert!(
        unit_values(&agent, "Environment").contains(&"LLAMA_STATE_DIR=%S/llama".to_owned()),
        "the agent uses the directory systemd creates"
    );

    // A copy any user may execute (the checkout's folders may not be).
    let dir = std::env::temp_dir().join(format!("llama-unit-caps-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let binary = dir.join("llama-agent");
    fs::copy(dist::binary(Arch::X86_64, "llama-agent"), &binary).expect("copy agent");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");

    let hosts = TwoHosts::new().expect("two hosts");
    attach_as_nobody(&hosts, &binary, &caps)
        .unwrap_or_else(|out| panic!("XDP with the unit's {caps:?}:\n{out}"));
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = attach_as_nobody(&hosts, &binary, &fewer)
            .expect_err(&format!("XDP must not attach without {missing}"));
        assert!(out.contains("xdp-skb"), "a clear error:\n{out}");
    }
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- compose

/// `${VAR:-default}` with every variable unset.
fn with_defaults(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, d)| d));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_names_real_images_files_and_variables() {
    let test = "deploy_files::compose_file_names_real_images_files_and_variables";
    if !privileged(test) || !binaries_available(test) {
        return;
    }
    let compose: Value =
        serde_yaml_ng::from_str(&read("docker/compose.yaml")).expect("compose YAML");
    let services = compose["services"].as_mapping().expect("services");
    let component = |image: &str| {
        ["llama-agent", "llama-server", "llama-influxdb"]
            .into_iter()
            .find(|c| image.starts_with(&format!("localhost/{c}:")))
            .unwrap_or_else(|| panic!("{image} is not an image of `cargo xtask image`"))
    };
    let mut images = Vec::new();
    let (agent_help, server_help) = (help("llama-agent"), help("llama-server"));
    let mut xdp_agents = 0;
    for (name, service) in services {
        let name = name.as_str().expect("service name");
        let image = with_defaults(service["image"].as_str().expect("image"));
        let component = component(&image);
        assert_eq!(image, dist::image(component, Arch::X86_64), "{name}");
        images.push(image);
        let env_help = match component {
            "llama-agent" => &agent_help,
            "llama-server" => &server_help,
            _ => continue,
        };
        for key in service["environment"]
            .as_mapping()
            .expect("environment")
            .keys()
        {
            let key = key.as_str().expect("variable name");
            assert!(env_help.env.contains(key), "{name}: {key} is not in --help");
        }
        assert_eq!(
            strings(&service["cap_drop"]),
            ["ALL"],
            "{name} drops every capability"
        );
        let added: Vec<String> = strings(&service["cap_add"])
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        if component == "llama-agent" && !added.is_empty() {
            xdp_agents += 1;
            assert_eq!(added, XDP_CAPABILITIES, "{name}");
            let opts = strings(&service["security_opt"]);
            let profile = opts
                .iter()
                .find_map(|o| o.strip_prefix("seccomp="))
                .unwrap_or_else(|| panic!("{name}: no seccomp profile"));
            let path = workspace().join("docker").join(profile);
            assert_eq!(
                fs::canonicalize(&path).ok(),
                fs::canonicalize(dist::seccomp_profile()).ok(),
                "{name}: {profile} is the profile `cargo xtask image` writes, and it exists"
            );
        } else {
            assert!(added.is_empty(), "{name} needs no capability");
        }
    }
    assert_eq!(xdp_agents, 1, "one XDP agent, one userspace agent");
    assert!(services.contains_key("server") && services.contains_key("influxdb"));
    let server_ports = strings(&services["server"]["ports"]);
    let port = server_help.default_of("--port").expect("--port default");
    assert_eq!(server_ports, [format!("{port}:{port}")]);
    assert!(podman::images_available(test, &images));
}

// ------------------------------------------------------------- kubernetes

fn documents(rel: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&read(rel))
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

/// `env:` names of a container, and the literal values.
fn container_env(container: &Value) -> BTreeMap<String, Option<String>> {
    container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn kubernetes_manifests_match_the_binaries() {
    let test = "deploy_files::kubernetes_manifests_match_the_binaries";
    if !binaries_available(test) {
        return;
    }
    let (agent_help, server_help) = (help("llama-agent"), help("llama-server"));
    let agent_port: u64 = agent_help
        .default_of("--port")
        .expect("--port")
        .parse()
        .expect("port");
    let server_port: u64 = server_help
        .default_of("--port")
        .expect("--port")
        .parse()
        .expect("port");
    let namespace = documents("deploy/kubernetes/namespace.yaml");
    assert_eq!(namespace[0]["kind"], "Namespace");
    let ns = namespace[0]["metadata"]["name"]
        .as_str()
        .expect("namespace")
        .to_owned();

    // Server: a Deployment and the Service the agents use.
    let server_docs = documents("deploy/kubernetes/llama-server.yaml");
    let deployment = server_docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let service = server_docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("Service");
    assert_eq!(
        deployment["spec"]["replicas"].as_u64(),
        Some(1),
        "one registry"
    );
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some(dist::image("llama-server", Arch::X86_64).as_str())
    );
    let env = container_env(container);
    for key in env.keys() {
        assert!(
            server_help.env.contains(key),
            "server: {key} is not in --help"
        );
    }
    let listen: u64 = env
        .get("APP_PORT")
        .cloned()
        .flatten()
        .map_or(server_port, |p| p.parse().expect("APP_PORT"));
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(listen)
    );
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    assert!(container["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(
        service["spec"]["selector"], pod["metadata"]["labels"],
        "the Service selects the server's pods"
    );
    let service_port = service["spec"]["ports"][0]["port"].as_u64().expect("port");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        container["ports"][0]["name"]
    );
    let server_url = format!(
        "http://{}.{ns}.svc.cluster.local:{service_port}",
        service["metadata"]["name"].as_str().expect("name")
    );

    // Agents: one DaemonSet per architecture.
    let daemonsets = documents("deploy/kubernetes/llama-agent.yaml");
    let mut archs = BTreeSet::new();
    for ds in &daemonsets {
        assert_eq!(ds["kind"], "DaemonSet");
        assert_eq!(ds["metadata"]["namespace"].as_str(), Some(ns.as_str()));
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(
            spec["hostNetwork"].as_bool(),
            Some(true),
            "probes use the node's addresses"
        );
        let node_arch = spec["nodeSelector"]["kubernetes.io/arch"]
            .as_str()
            .expect("nodeSelector");
        let arch = match node_arch {
            "amd64" => Arch::X86_64,
            "arm64" => Arch::Aarch64,
            "arm" => Arch::Armv7,
            other => panic!("unexpected node architecture {other}"),
        };
        archs.insert(arch);
        let c = &spec["containers"][0];
        assert_eq!(
            c["image"].as_str(),
            Some(dist::image("llama-agent", arch).as_str())
        );
        let env = container_env(c);
        for key in env.keys() {
            assert!(
                agent_help.env.contains(key),
                "agent: {key} is not in --help"
            );
        }
        assert_eq!(env["LLAMA_SERVER"].as_deref(), Some(server_url.as_str()));
        for p in c["ports"].as_sequence().expect("ports") {
            assert_eq!(p["containerPort"].as_u64(), Some(agent_port));
        }
        let sc = &c["securityContext"];
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
        let added: Vec<String> = strings(&sc["capabilities"]["add"])
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        if arch.has_xdp() {
            assert_eq!(added, XDP_CAPABILITIES, "{node_arch}");
            assert_eq!(sc["seccompProfile"]["type"], "Localhost");
            let profile = sc["seccompProfile"]["localhostProfile"]
                .as_str()
                .expect("profile");
            assert_eq!(
                Some(profile),
                dist::seccomp_profile().file_name().and_then(|f| f.to_str())
            );
        } else {
            assert!(
                added.is_empty(),
                "{node_arch}: userspace-only needs no capability"
            );
        }
        // The state directory is a hostPath mounted where the agent keeps it.
        let state = env["LLAMA_STATE_DIR"].clone().expect("LLAMA_STATE_DIR");
        let mount = &c["volumeMounts"][0];
        assert_eq!(mount["mountPath"].as_str(), Some(state.as_str()));
        let volume = spec["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        assert!(
            volume["hostPath"]["path"].is_string(),
            "state survives the pod"
        );
    }
    assert_eq!(
        archs,
        Arch::ALL.into_iter().collect(),
        "a DaemonSet for every architecture"
    );
}

// -------------------------------------------------------------- dashboards

#[test]
fn dashboards_name_what_the_agents_and_scraper_write() {
    use llama_agent::collector::{
        metrics::Metrics,
        summary::{PathAcc, PathKey},
    };
    // A real summary, as the collector publishes it, with every field.
    let key = PathKey {
        src: "10.0.0.1".parse().expect("literal"),
        dst: "10.0.0.2".parse().expect("literal"),
    };
    let mut acc = PathAcc::new(key, Arc::new(BTreeMap::new()));
    acc.reply(40000, 1_000_000);
    let summary = acc.take().expect("a summary");
    let fields: BTreeSet<String> = llama_agent::api::influx::fields(&summary)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut tags: BTreeSet<String> = llama_server::render::SERVER_TAGS.map(str::to_owned).into();
    tags.extend(["src_ip".to_owned(), "dst_ip".to_owned()]);

    let wanted = dashboards::influx_names();
    assert_eq!(
        wanted.measurements,
        BTreeSet::from([llama_agent::api::influx::MEASUREMENT.to_owned()])
    );
    assert!(
        wanted.fields.is_subset(&fields),
        "{:?} not in {fields:?}",
        wanted.fields
    );
    assert!(
        wanted.tags.is_subset(&tags),
        "{:?} not in {tags:?}",
        wanted.tags
    );

    // The collector's exposition, with the summary published.
    let metrics = Metrics::new("test", "test");
    metrics.publish(std::slice::from_ref(&summary));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("encode");
    let exposed = parse_promql(&text);
    let wanted = dashboards::prom_names();
    for metric in wanted
        .metrics
        .iter()
        .filter(|m| m.starts_with("llama_collector_"))
    {
        assert!(
            exposed.metrics.contains(metric),
            "{metric} is not exported:\n{text}"
        );
    }
    // The reflector's metrics come from a running agent: the container test
    // checks them against a real /metrics.
    assert!(
        wanted
            .metrics
            .iter()
            .all(|m| m.starts_with("llama_collector_") || m.starts_with("llama_reflector_"))
    );
}

#[test]
fn dashboard_parsers_classify_names() {
    let n = parse_influxql(
        r#"SELECT sum("sent") AS "sent", last("loss") FROM "raw_stats" WHERE "group" =~ /x/ GROUP BY "src_name""#,
    );
    assert_eq!(n.measurements, BTreeSet::from(["raw_stats".to_owned()]));
    assert_eq!(
        n.fields,
        BTreeSet::from(["sent".to_owned(), "loss".to_owned()])
    );
    assert_eq!(
        n.tags,
        BTreeSet::from(["group".to_owned(), "src_name".to_owned()])
    );
    let p = parse_promql(r#"100 * max by (src_ip, dst_ip) (llama_a_b{stat="mean", x=~"y"})"#);
    assert_eq!(p.metrics, BTreeSet::from(["llama_a_b".to_owned()]));
    assert_eq!(
        p.labels,
        ["dst_ip", "src_ip", "stat", "x"].map(str::to_owned).into()
    );
}

// -------------------------------------------------------------- Dockerfile

/// The `ENV`, `EXPOSE` and `ENTRYPOINT` lines of a stage (or a whole file).
fn runtime_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            ["ENV ", "EXPOSE ", "ENTRYPOINT "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn dockerfile_builds_what_xtask_image_builds() {
    let dockerfile = read("docker/Dockerfile");
    let stage = |name: &str| -> String {
        let start = dockerfile
            .find(&format!(" AS {name}\n"))
            .unwrap_or_else(|| panic!("no stage {name}"));
        let rest = &dockerfile[start..];
        rest[..rest[1..].find("\nFROM ").map_or(rest.len(), |e| e + 1)].to_owned()
    };
    for (stage_name, containerfile) in [("agent", "agent"), ("server", "server")] {
        assert_eq!(
            runtime_lines(&stage(stage_name)),
            runtime_lines(&read(&format!("docker/{containerfile}.Containerfile"))),
            "docker/Dockerfile's {stage_name} stage and {containerfile}.Containerfile agree"
        );
    }
    let build = stage("build");
    assert!(build.contains("cargo xtask dist --target \"$arch\""));
    for arch in Arch::ALL {
        let platform = arch
            .oci_platform()
            .trim_start_matches("linux/")
            .replace('/', "");
        assert!(
            build.contains(&format!("{platform}) arch={} ;;", arch.name())),
            "docker/Dockerfile maps {platform} to {}",
            arch.name()
        );
    }
}
