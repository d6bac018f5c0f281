//! Both formats of docs/collector-config.md load unchanged, including the original project's two
//! example files, and resolve to the expected tests, sockets and targets.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use llama_agent::config::{CollectorConfig, Format, LoadOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> CollectorConfig {
    CollectorConfig::load(&fixture(name), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn original_full_example_loads() {
    let c = load("complex_example.yaml");
    assert_eq!(c.format, Format::Full);
    assert_eq!(c.interval, Duration::from_secs(30));
    assert_eq!(c.handlers, 2);
    assert_eq!(c.api_bind, "0.0.0.0:5000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.tests.len(), 1);
    let t = &c.tests[0];
    assert_eq!(t.cps, 4.0);
    assert_eq!(t.ports.len(), 4, "count 4 expands to four sockets");
    assert!(
        t.ports
            .iter()
            .enumerate()
            .all(|(i, p)| p.index == i as u32 && p.name == "default")
    );
    let spec = t.ports[0].spec;
    assert_eq!(
        (spec.ip.to_string(), spec.port, spec.tos),
        ("0.0.0.0".into(), 0, 0)
    );
    assert_eq!(spec.timeout, Duration::from_millis(1000));
    let addrs: Vec<String> = t.targets.iter().map(|t| t.addr.to_string()).collect();
    assert_eq!(
        addrs,
        ["127.0.0.1:8100", "127.0.0.2:8100", "127.0.0.3:8100"]
    );
    assert_eq!(t.targets[0].tags.len(), 6);
    assert_eq!(t.targets[0].tags["my_tag"], "foobar");
    assert_eq!(t.targets[1].tags["src_region"], "east");
    assert_eq!(
        t.targets[2].tags.iter().collect::<Vec<_>>(),
        [(&"foo".to_owned(), &"bar".to_owned())]
    );
    // 3 targets x 4 ports x 4 cycles/s
    assert_eq!(c.probes_per_second(), 48.0);
}

#[test]
fn original_legacy_example_loads_as_default_config_with_its_targets() {
    let legacy = load("simple_example.yaml");
    assert_eq!(legacy.format, Format::Legacy);
    let full = load("complex_example.yaml");
    // The two original examples describe the same collector.
    assert_eq!(legacy.interval, full.interval);
    assert_eq!(legacy.api_bind, full.api_bind);
    assert_eq!(legacy.tests[0].ports, full.tests[0].ports);
    assert_eq!(legacy.tests[0].cps, full.tests[0].cps);
    assert_eq!(legacy.tests[0].targets, full.tests[0].targets);
}

#[test]
fn legacy_port_is_configurable() {
    let c = CollectorConfig::from_yaml(
        "10.0.0.1: {name: a}\n",
        &LoadOptions {
            legacy_port: 9000,
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(
        c.tests[0].targets[0].addr,
        "10.0.0.1:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.tests[0].targets[0].tags["name"], "a");
}

#[test]
fn legacy_target_without_tags_and_ipv6_keys() {
    let c = CollectorConfig::from_yaml(
        "127.0.0.1:\n\"::1\":\n    name: six\n    version: 2\n",
        &LoadOptions::default(),
    )
    .expect("valid");
    let t = &c.tests[0].targets;
    assert_eq!(t.len(), 2);
    let six = t.iter().find(|t| t.addr.is_ipv6()).expect("v6 target");
    assert_eq!(six.addr, "[::1]:8100".parse::<SocketAddr>().unwrap());
    assert_eq!(
        six.tags["version"], "2",
        "numeric tag values become strings"
    );
}

#[test]
fn server_issued_config_with_ipv6_hostname_and_unknown_keys() {
    let c = load("server_issued.yaml");
    assert_eq!(c.format, Format::Full);
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.api_bind.port(), 8100);
    assert_eq!(c.tests.len(), 2);
    let mixed = &c.tests[1];
    assert_eq!(mixed.cps, 10.0);
    assert_eq!(mixed.ports.len(), 3);
    assert_eq!(mixed.ports[2].name, "ef");
    assert_eq!(mixed.ports[2].spec.tos, 184);
    assert_eq!(mixed.ports[2].spec.timeout, Duration::from_millis(500));
    assert!(mixed.ports[2].spec.ip.is_ipv6());
    let v6 = &mixed.targets[1];
    assert_eq!(
        v6.addr,
        "[fd00:11a:a::2]:8100".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(v6.tags["version"], "2");
    let named = &mixed.targets[2];
    assert_eq!(named.host, "localhost");
    assert!(
        named.addr.ip().is_loopback(),
        "localhost resolves to loopback: {}",
        named.addr
    );
    assert_eq!(named.addr.port(), 8101);
}

#[test]
fn builtin_default_is_the_original_default() {
    let c = CollectorConfig::original_default().expect("valid");
    assert_eq!(c.tests[0].targets.len(), 1);
    assert_eq!(
        c.tests[0].targets[0].addr,
        "127.0.0.1:8100".parse::<SocketAddr>().unwrap()
    );
    assert!(c.tests[0].targets[0].tags.is_empty());
    assert_eq!(c.probes_per_second(), 16.0);
}

#[test]
fn go_style_bind_and_bracketed_addresses() {
    let yaml = "
summarization: {interval: 5}
api: {bind: ':8100'}
ports: {p: {ip: '[::]', port: 0, tos: 0, timeout: 10}}
port_groups: {g: [{port: p, count: 1}]}
rate_limits: {r: {cps: 0.5}}
tests: [{targets: t, port_group: g, rate_limit: r}]
targets: {t: [{ip: '[fd00::1]', port: 1}]}
";
    let c = CollectorConfig::from_yaml(yaml, &LoadOptions::default()).expect("valid");
    assert_eq!(c.api_bind, "0.0.0.0:8100".parse::<SocketAddr>().unwrap());
    assert_eq!(
        c.tests[0].targets[0].addr,
        "[fd00::1]:1".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.tests[0].cps, 0.5);
}
