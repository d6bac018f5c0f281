//! Every validation rule of the collector configuration rejects bad input
//! with an error that names the offending key or value (and never panics).

use llama_agent::config::{CollectorConfig, ConfigError, LoadOptions};

/// A valid full configuration; each test breaks one thing in it.
const BASE: &str = "
summarization: {interval: 10, handlers: 2}
api: {bind: 0.0.0.0:8100}
ports:
  p: {ip: 0.0.0.0, port: 0, tos: 0, timeout: 1000}
port_groups:
  g: [{port: p, count: 2}]
rate_limits:
  r: {cps: 4.0}
tests:
  - {targets: t, port_group: g, rate_limit: r}
targets:
  t:
    - {ip: 127.0.0.1, port: 8100, tags: {a: b}}
";

fn load(yaml: &str) -> Result<CollectorConfig, ConfigError> {
    CollectorConfig::from_yaml(yaml, &LoadOptions::default())
}

fn err(yaml: &str) -> (ConfigError, String) {
    let e = load(yaml).expect_err("must be rejected");
    let msg = e.to_string();
    (e, msg)
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_is_valid() {
    load(BASE).expect("BASE is valid");
}

#[test]
fn unknown_port_group() {
    let (e, msg) = err(&replace("port_group: g,", "port_group: nope,"));
    assert!(
        matches!(e, ConfigError::UnknownPortGroup { test: 0, ref name } if name == "nope"),
        "{e:?}"
    );
    assert!(msg.contains("unknown port group `nope`"), "{msg}");
}

#[test]
fn unknown_rate_limit() {
    let (e, msg) = err(&replace("rate_limit: r}", "rate_limit: slow}"));
    assert!(
        matches!(e, ConfigError::UnknownRateLimit { ref name, .. } if name == "slow"),
        "{e:?}"
    );
    assert!(msg.contains("unknown rate limit `slow`"), "{msg}");
}

#[test]
fn unknown_target_set() {
    let (e, msg) = err(&replace("{targets: t,", "{targets: others,"));
    assert!(
        matches!(e, ConfigError::UnknownTargetSet { ref name, .. } if name == "others"),
        "{e:?}"
    );
    assert!(msg.contains("unknown target set `others`"), "{msg}");
}

#[test]
fn unknown_port_in_group() {
    let (e, msg) = err(&replace("[{port: p, count: 2}]", "[{port: q, count: 2}]"));
    assert!(matches!(e, ConfigError::UnknownPort { .. }), "{e:?}");
    assert!(msg.contains("port_groups.g: unknown port `q`"), "{msg}");
}

#[test]
fn cps_must_be_positive() {
    for bad in ["0", "-1.5", "0.0", ".nan", ".inf"] {
        let (e, msg) = err(&replace("cps: 4.0", &format!("cps: {bad}")));
        assert!(matches!(e, ConfigError::BadCps { .. }), "{bad}: {e:?}");
        assert!(msg.contains("rate_limits.r: cps must be"), "{msg}");
    }
}

#[test]
fn timeout_must_be_positive() {
    for bad in ["0", "-5"] {
        let (e, msg) = err(&replace("timeout: 1000", &format!("timeout: {bad}")));
        assert!(matches!(e, ConfigError::BadTimeout { .. }), "{e:?}");
        assert!(msg.contains("ports.p: timeout must be > 0"), "{msg}");
    }
    // A missing timeout is the Go zero value: also rejected.
    let (e, _) = err(&replace(", timeout: 1000", ""));
    assert!(
        matches!(e, ConfigError::BadTimeout { timeout: 0, .. }),
        "{e:?}"
    );
}

#[test]
fn bad_ip_addresses() {
    let (e, msg) = err(&replace("ip: 0.0.0.0,", "ip: 300.1.1.1,"));
    assert!(matches!(e, ConfigError::BadIp { .. }), "{e:?}");
    assert!(
        msg.contains("ports.p: `300.1.1.1` is not an IP address"),
        "{msg}"
    );
    let (e, msg) = err(&replace("ip: 127.0.0.1,", "ip: '10.0.0.1.5',"));
    assert!(matches!(e, ConfigError::BadIp { .. }), "{e:?}");
    assert!(msg.contains("targets.t[0]"), "{msg}");
    let (e, _) = err(&replace("ip: 127.0.0.1,", "ip: 'fd00::zz',"));
    assert!(matches!(e, ConfigError::BadIp { .. }), "{e:?}");
    let (e, _) = err(&replace("ip: 127.0.0.1,", "ip: '',"));
    assert!(matches!(e, ConfigError::BadIp { .. }), "{e:?}");
}

#[test]
fn unresolvable_host_name() {
    // `.invalid` is reserved (RFC 2606) and never resolves.
    let (e, msg) = err(&replace("ip: 127.0.0.1,", "ip: no-such-host.invalid,"));
    assert!(matches!(e, ConfigError::Resolve { .. }), "{e:?}");
    assert!(
        msg.contains("cannot resolve host `no-such-host.invalid`"),
        "{msg}"
    );
}

#[test]
fn bad_ports() {
    let (e, msg) = err(&replace("port: 8100,", "port: 70000,"));
    assert!(
        matches!(e, ConfigError::BadPort { value: 70000, .. }),
        "{e:?}"
    );
    assert!(
        msg.contains("targets.t[0]: port must be 1..=65535, got 70000"),
        "{msg}"
    );
    let (e, _) = err(&replace("port: 8100,", "port: 0,"));
    assert!(matches!(e, ConfigError::BadPort { value: 0, .. }), "{e:?}");
    let (e, msg) = err(&replace("port: 0,", "port: -1,"));
    assert!(matches!(e, ConfigError::BadPort { value: -1, .. }), "{e:?}");
    assert!(msg.contains("ports.p: port must be 0..=65535"), "{msg}");
    // Not a number at all: a YAML type error that names the key.
    let (e, msg) = err(&replace("port: 8100,", "port: http,"));
    assert!(matches!(e, ConfigError::Yaml(_)), "{e:?}");
    assert!(msg.contains("port"), "{msg}");
}

#[test]
fn empty_target_set() {
    let yaml = BASE
        .replace("    - {ip: 127.0.0.1, port: 8100, tags: {a: b}}\n", "")
        .replace("  t:\n", "  t: []\n");
    let (e, msg) = err(&yaml);
    assert!(
        matches!(e, ConfigError::EmptyTargetSet { ref name } if name == "t"),
        "{e:?}"
    );
    assert!(msg.contains("targets.t: the target set is empty"), "{msg}");
    // An empty legacy file has no targets either.
    assert!(matches!(load("# nothing\n"), Err(ConfigError::Empty)));
}

#[test]
fn other_range_checks() {
    let (e, _) = err(&replace("tos: 0", "tos: 256"));
    assert!(matches!(e, ConfigError::BadTos { tos: 256, .. }), "{e:?}");
    let (e, _) = err(&replace("count: 2", "count: 0"));
    assert!(matches!(e, ConfigError::BadCount { count: 0, .. }), "{e:?}");
    let (e, _) = err(&replace("interval: 10", "interval: 0"));
    assert!(matches!(e, ConfigError::BadInterval(0)), "{e:?}");
    let (e, _) = err(&replace("bind: 0.0.0.0:8100", "bind: 'not an address'"));
    assert!(matches!(e, ConfigError::BadBind(_)), "{e:?}");
}

#[test]
fn specific_bind_address_cannot_reach_other_family() {
    let (e, msg) =
        err(&replace("ip: 127.0.0.1,", "ip: '::1',").replace("ip: 0.0.0.0,", "ip: 127.0.0.1,"));
    assert!(matches!(e, ConfigError::FamilyMismatch { .. }), "{e:?}");
    assert!(
        msg.contains("cannot send to IPv6 target [::1]:8100"),
        "{msg}"
    );
}

#[test]
fn malformed_documents_are_errors_not_panics() {
    for doc in [
        "[1, 2, 3]",
        "just a string",
        "127.0.0.1: [not, tags]",
        "127.0.0.1: {tag: [nested]}",
        "tests: {not: a list}",
        "ports: {p: {port: {}}}",
        "{{{{",
        "summarization: {interval: 99999999999999999999999}",
    ] {
        assert!(load(doc).is_err(), "{doc:?} must be rejected");
    }
}

/// The agent's limits (docs/collector-config.md, "Limits"): each is checked
/// before anything it bounds is allocated, and named in the error.
#[test]
fn configs_over_the_agents_limits_are_refused() {
    use llama_agent::config::Limits;
    let cases: &[(&str, &str, &str)] = &[
        ("cps: 4.0", "cps: 1e9", "--max-probe-rate"),
        (
            "timeout: 1000",
            "timeout: 9000000000000000",
            "--max-timeout",
        ),
        ("count: 2", "count: 1000000000000", "--max-sockets"),
        ("count: 2", "count: 9223372036854775807", "--max-sockets"),
        // 2 sockets × 600 cps to one address: under the total, over the
        // per-address limit.
        ("cps: 4.0", "cps: 600", "--max-target-rate"),
        ("ip: 127.0.0.1", "ip: 224.0.0.1", "is a multicast address"),
        ("ip: 127.0.0.1", "ip: \"ff02::1\"", "is a multicast address"),
        (
            "ip: 127.0.0.1",
            "ip: 255.255.255.255",
            "is the broadcast address",
        ),
        ("ip: 127.0.0.1", "ip: 0.0.0.0", "is the unspecified address"),
        ("ip: 127.0.0.1", "ip: \"::\"", "is the unspecified address"),
    ];
    for (from, to, want) in cases {
        let (_, msg) = err(&replace(from, to));
        assert!(msg.contains(want), "{to}: {msg}");
    }
    // Too many targets, refused before any is resolved: host names that
    // would each need a lookup.
    let many: String = (0..5_001)
        .map(|i| format!("    - {{ip: host{i}.invalid, port: 8100}}\n"))
        .collect();
    let (e, msg) = err(&format!("{BASE}{many}"));
    assert!(
        matches!(e, ConfigError::TooManyTargets { count: 5_002, .. }),
        "{e:?}"
    );
    assert!(msg.contains("--max-targets"), "{msg}");
    // The same target set probed by many tests counts once per test.
    let tests: String = (0..3)
        .map(|_| "  - {targets: t, port_group: g, rate_limit: r}\n")
        .collect();
    let yaml = replace(
        "tests:\n  - {targets: t, port_group: g, rate_limit: r}\n",
        &format!("tests:\n{tests}"),
    );
    let tight = Limits {
        max_targets: 2,
        ..Limits::default()
    };
    let opts = LoadOptions {
        limits: tight,
        ..LoadOptions::default()
    };
    let e = CollectorConfig::from_yaml(&yaml, &opts).unwrap_err();
    assert!(
        matches!(e, ConfigError::TooManyTargets { count: 3, .. }),
        "{e:?}"
    );
    // And the limits are configurable: the base config at 8 probes/s is
    // refused under a limit of 5.
    let opts = LoadOptions {
        limits: Limits {
            max_probe_rate: 5.0,
            ..Limits::default()
        },
        ..LoadOptions::default()
    };
    let e = CollectorConfig::from_yaml(BASE, &opts).unwrap_err();
    assert!(matches!(e, ConfigError::ProbeRateTooHigh { .. }), "{e:?}");
}
