//! The systemd units pass `systemd-analyze verify`, set only variables the
//! binaries know, and the agent's unit grants exactly the capabilities XDP
//! needs: run as user nobody with exactly those ambient capabilities, the
//! dist agent attaches XDP, and without any one of them it does not.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use llama_testkit::{
    TwoHosts, cannot_run,
    dist::{self, Arch, XDP_CAPABILITIES},
    privileged,
};

use crate::support::{
    help::{binaries_available, help},
    read,
};

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
    let test = "systemd_units::systemd_units_pass_systemd_analyze_verify";
    if !binaries_available(test) {
        return;
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        cannot_run(test, "systemd-analyze is missing");
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
    let test = "systemd_units::agent_unit_capabilities_attach_xdp_and_are_all_needed";
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
