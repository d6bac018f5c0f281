//! The compose file, the Kubernetes manifests and docker/Dockerfile agree
//! with the binaries and with `cargo xtask image`: they name images it
//! builds, files that exist, environment variables the binaries' `--help`
//! lists, the ports the binaries use and the minimal capabilities.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use llama_testkit::{
    dist::{self, Arch, XDP_CAPABILITIES},
    privileged,
};
use serde_yaml_ng::Value;

use crate::support::{
    help::{binaries_available, help},
    podman, read, workspace,
};

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
    let test = "manifests::compose_file_names_real_images_files_and_variables";
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
    let test = "manifests::kubernetes_manifests_match_the_binaries";
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
