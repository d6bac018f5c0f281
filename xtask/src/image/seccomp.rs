//! The seccomp profile the XDP agent's container needs.
//!
//! Capabilities are not enough in a container: the runtime's default
//! seccomp profile (containers-common as shipped with Debian 12's podman,
//! like older Docker profiles) lets `bpf()` through only for CAP_SYS_ADMIN
//! and answers EPERM to everyone else, so an agent with CAP_BPF still cannot
//! create a map. Rather than run unconfined or grant CAP_SYS_ADMIN, we take
//! the runtime's own default profile and change exactly one thing: `bpf()`
//! is also allowed for a process holding CAP_BPF.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Where Debian's containers-common installs the default profile.
const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";

/// The container runtime's default seccomp profile on this machine.
pub fn runtime_default() -> Result<Value> {
    let path = Path::new(DEFAULT_PROFILE);
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "read {} (installed with podman's containers-common)",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// `profile` with `bpf()` allowed for CAP_BPF holders. The EPERM rule that
/// denied it to everyone without CAP_SYS_ADMIN is narrowed to those holding
/// neither capability; every other rule is kept as it was.
pub fn with_bpf(profile: &Value) -> Result<Value> {
    let mut profile = profile.clone();
    let Some(rules) = profile["syscalls"].as_array_mut() else {
        bail!("the seccomp profile has no `syscalls` list");
    };
    let mut kept = Vec::with_capacity(rules.len() + 2);
    for mut rule in rules.drain(..) {
        let denies = rule["action"].as_str() != Some("SCMP_ACT_ALLOW");
        let names = rule["names"].as_array_mut();
        if let Some(names) = names
            && denies
            && names.iter().any(|n| n == "bpf")
        {
            names.retain(|n| n != "bpf");
            if names.is_empty() {
                continue;
            }
        }
        kept.push(rule);
    }
    kept.push(json!({
        "names": ["bpf"],
        "action": "SCMP_ACT_ALLOW",
        "args": [],
        "comment": "llama-agent: the XDP reflector loads its program and maps with CAP_BPF",
        "includes": {"caps": ["CAP_BPF"]},
        "excludes": {}
    }));
    kept.push(json!({
        "names": ["bpf"],
        "action": "SCMP_ACT_ERRNO",
        "args": [],
        "comment": "llama-agent: bpf() without CAP_BPF or CAP_SYS_ADMIN fails as before",
        "includes": {},
        "excludes": {"caps": ["CAP_BPF", "CAP_SYS_ADMIN"]},
        "errnoRet": 1,
        "errno": "EPERM"
    }));
    *rules = kept;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of containers-common's rules for bpf(), trimmed.
    fn sample() -> Value {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["bpf", "setns"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
                {"names": ["bpf", "setns"], "action": "SCMP_ACT_ERRNO",
                 "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}, "errnoRet": 1},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        })
    }

    fn rules_for<'a>(profile: &'a Value, name: &str) -> Vec<&'a Value> {
        profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == name))
            })
            .collect()
    }

    #[test]
    fn allows_bpf_for_cap_bpf_and_changes_nothing_else() {
        let out = with_bpf(&sample()).expect("transform");
        let bpf = rules_for(&out, "bpf");
        // The CAP_SYS_ADMIN allowance stays, ours is added, the two denials
        // are replaced by one that spares both capabilities.
        assert_eq!(bpf.len(), 3, "{bpf:?}");
        assert!(bpf.iter().any(|r| r["action"] == "SCMP_ACT_ALLOW"
            && r["includes"]["caps"] == json!(["CAP_SYS_ADMIN"])));
        assert!(bpf.iter().any(
            |r| r["action"] == "SCMP_ACT_ALLOW" && r["includes"]["caps"] == json!(["CAP_BPF"])
        ));
        let denials: Vec<_> = bpf
            .iter()
            .filter(|r| r["action"] != "SCMP_ACT_ALLOW")
            .collect();
        assert_eq!(denials.len(), 1);
        assert_eq!(
            denials[0]["excludes"]["caps"],
            json!(["CAP_BPF", "CAP_SYS_ADMIN"])
        );
        // setns keeps both of its rules; read/write untouched.
        assert_eq!(rules_for(&out, "setns").len(), 2);
        assert_eq!(out["syscalls"][0], sample()["syscalls"][0]);
        assert_eq!(out["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn rejects_a_profile_without_rules() {
        assert!(with_bpf(&json!({"defaultAction": "SCMP_ACT_ALLOW"})).is_err());
    }
}
