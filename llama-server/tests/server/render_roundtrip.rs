//! Round trip through the agent: members register with the server
//! (`POST /api/v1/register`), every member fetches its collector config
//! (`GET /api/v1/config/<group>`), and the agent's own loader
//! ([`CollectorConfig::from_yaml`]) reads each rendered document back. The
//! loaded config must hold exactly the registered members as targets (the
//! requester on loopback), every tag byte for byte, the server's interval and
//! collector defaults, and nothing a hostile tag or group name tried to add.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{Router, http::StatusCode};
use llama_agent::config::{CollectorConfig, Format, LoadOptions};
use llama_server::{
    Settings,
    entry::{Entry, Probe, Tags},
    render::{RenderParams, SERVER_TAGS, render_config, render_reference},
    settings::{CollectorDefaults, Limits},
};
use proptest::prelude::*;
use serde_json::json;
use support::*;

use crate::support::app as support;

/// The address the injection attempts try to add as a target.
const INJECTED: IpAddr = IpAddr::V4(Ipv4Addr::new(6, 6, 6, 6));

/// Tag values (and keys, and names) that would break a config written by
/// string formatting.
const HOSTILE: &[&str] = &[
    "- ip: 6.6.6.6",
    "- ip: 6.6.6.6\n  port: 8100\n  tags: {}",
    "x\n  - ip: 6.6.6.6\n    port: 1",
    "x\n    - ip: 6.6.6.6\n      port: 8100",
    "\n- ip: 6.6.6.6\n",
    "x\u{2028}- ip: 6.6.6.6",
    "x\u{2029}  - ip: 6.6.6.6\u{2029}    port: 8100",
    "x\u{85}- ip: 6.6.6.6",
    "x\r- ip: 6.6.6.6",
    "x\r\n  - ip: 6.6.6.6\r\n    port: 8100",
    "{ip: 6.6.6.6, port: 8100}",
    "[{ip: 6.6.6.6}]",
    "a: b",
    "key: value: more",
    ":",
    "::1",
    "\"quoted\" 'single'",
    "'",
    "\"",
    "it's",
    "# comment",
    "trailing newline\n",
    "\n\nleading newlines",
    "  leading and trailing spaces  ",
    "tab\there",
    "null",
    "~",
    "true",
    "no",
    "0x1F",
    "1e3",
    "08100",
    "&anchor",
    "*alias",
    "!tag",
    "!!str x",
    "|",
    ">-",
    "%directive",
    "---",
    "...",
    "nul\u{0}char",
    "bell\u{7}",
    "unicode ✓ 日本",
    "\u{feff}bom",
    "\u{2028}",
    "ls\u{2028}ps\u{2029}nel\u{85}",
];

/// One registration.
struct Member {
    id: SocketAddr,
    group: String,
    /// Every registered tag, including the three required ones.
    tags: BTreeMap<String, String>,
}

impl Member {
    fn new(id: &str, group: &str, short: &str, name: &str, extra: &[(&str, &str)]) -> Self {
        let mut tags: BTreeMap<String, String> = [
            ("version", "0.1.0"),
            ("probe_shortname", short),
            ("probe_name", name),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        // The required tags must be non-empty strings.
        for required in ["probe_shortname", "probe_name"] {
            if tags[required].is_empty() {
                tags.insert(required.to_owned(), "-".to_owned());
            }
        }
        Member {
            id: id.parse().unwrap(),
            group: group.to_owned(),
            tags,
        }
    }
}

/// Limits roomy enough for the long names and values below.
fn settings(interval: u64) -> Settings {
    Settings {
        interval,
        limits: Limits {
            max_tag_key_len: 512,
            max_tag_value_len: 1024,
            max_group_len: 400,
            ..Limits::default()
        },
        ..Settings::default()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn register(app: &Router, m: &Member) {
    let body = json!({
        "ip": m.id.ip().to_string(),
        "port": m.id.port(),
        "group": m.group,
        "tags": m.tags,
    });
    let r = post_json(app, body.to_string(), peer("192.0.2.1:1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", m.id, r.text());
}

async fn fetch(app: &Router, group: &str, requester: SocketAddr) -> String {
    let uri = format!(
        "/api/v1/config/{}?llamaport={}&srcip={}",
        enc(group),
        requester.port(),
        enc(&requester.ip().to_string()),
    );
    let r = get(app, &uri, peer("192.0.2.1:1")).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
    assert_eq!(
        r.headers["content-type"], "text/yaml; charset=utf-8",
        "{uri}"
    );
    r.text()
}

fn load(text: &str) -> CollectorConfig {
    CollectorConfig::from_yaml(text, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("the agent rejects the rendered config ({e}):\n{text}"))
}

fn loopback(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    }
}

/// The tags the server gives `dst` in `src`'s config: the registered ones
/// minus the server's own names, plus the server's.
fn expected_tags(dst: &Member, src: &Member) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = dst
        .tags
        .iter()
        .filter(|(k, _)| !SERVER_TAGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("dst_name", &dst.tags["probe_name"]),
        ("dst_shortname", &dst.tags["probe_shortname"]),
        ("group", &dst.group),
        ("src_name", &src.tags["probe_name"]),
        ("src_shortname", &src.tags["probe_shortname"]),
    ] {
        tags.insert(k.to_owned(), v.clone());
    }
    tags
}

/// Checks a config the agent loaded for `me` against the members of its group.
fn check(cfg: &CollectorConfig, group: &str, members: &[&Member], me: &Member, s: &Settings) {
    let c = &s.collector;
    assert_eq!(cfg.format, Format::Full);
    assert_eq!(cfg.interval, Duration::from_secs(s.interval));
    assert_eq!(cfg.handlers, i64::from(c.handlers));
    assert_eq!(cfg.api_bind, c.api_bind.parse::<SocketAddr>().unwrap());
    assert_eq!(cfg.tests.len(), 1, "one test");
    let test = &cfg.tests[0];
    assert_eq!(test.targets_name, group, "the test probes the group");
    assert_eq!(test.cps, c.cps);
    assert_eq!(test.ports.len(), c.port_count as usize);
    for p in &test.ports {
        assert_eq!(p.spec.ip, c.port_ip.parse::<IpAddr>().unwrap());
        assert_eq!(p.spec.port, 0);
        assert_eq!(p.spec.tos, c.tos);
        assert_eq!(p.spec.timeout, Duration::from_millis(c.timeout_ms));
    }

    assert!(
        test.targets.iter().all(|t| t.addr.ip() != INJECTED),
        "an injected target appeared: {:?}",
        test.targets
    );
    assert_eq!(
        test.targets.len(),
        members.len(),
        "exactly one target per member, nothing injected"
    );
    let want: BTreeMap<SocketAddr, BTreeMap<String, String>> = members
        .iter()
        .map(|m| {
            let addr = if m.id == me.id {
                SocketAddr::new(loopback(m.id.ip()), m.id.port())
            } else {
                m.id
            };
            (addr, expected_tags(m, me))
        })
        .collect();
    assert_eq!(want.len(), members.len(), "test members must be distinct");
    let got: BTreeMap<SocketAddr, BTreeMap<String, String>> = test
        .targets
        .iter()
        .map(|t| {
            assert_eq!(t.host, t.addr.ip().to_string(), "ip written as an address");
            (t.addr, t.tags.clone())
        })
        .collect();
    assert_eq!(got.len(), test.targets.len(), "no duplicate targets");
    for (addr, tags) in &want {
        let Some(have) = got.get(addr) else {
            panic!("target {addr} missing; have {:?}", got.keys());
        };
        assert_eq!(have, tags, "tags of {addr} (requester {})", me.id);
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
}

/// Registers `members` on a fresh server with `settings`, then has every
/// member fetch its group's config and loads it with the agent's loader.
async fn round_trip(s: Settings, members: &[Member]) {
    let (app, _) = app_with(s.clone());
    for m in members {
        register(&app, m).await;
    }
    let mut groups: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members {
        groups.entry(&m.group).or_default().push(m);
    }
    for (group, in_group) in &groups {
        for me in in_group {
            let text = fetch(&app, group, me.id).await;
            check(&load(&text), group, in_group, me, &s);
        }
    }
}

#[tokio::test]
async fn ipv4_members() {
    let members: Vec<Member> = (1..=5)
        .map(|i| {
            let short = format!("m{i}");
            let name = format!("m{i}.example.com");
            Member::new(
                &format!("10.0.0.{i}:8100"),
                "default",
                &short,
                &name,
                &[("site", "lv"), ("rack", "r1")],
            )
        })
        .collect();
    round_trip(settings(10), &members).await;
}

#[tokio::test]
async fn ipv6_and_mixed_members_on_several_ports() {
    let members = [
        Member::new("[2001:db8::1]:8100", "v6", "a", "a.example.com", &[]),
        Member::new("[2001:db8::2]:8101", "v6", "b", "b.example.com", &[]),
        Member::new("[fe80::1]:65535", "v6", "c", "c.example.com", &[]),
        Member::new("10.0.0.4:1", "v6", "d", "d.example.com", &[]),
        Member::new("[2001:db8::1]:8102", "v6", "e", "e.example.com", &[]),
    ];
    round_trip(settings(30), &members).await;
}

#[tokio::test]
async fn requester_is_rewritten_to_loopback() {
    let s = settings(10);
    let members = [
        Member::new("10.0.0.1:8100", "g", "a", "A", &[]),
        Member::new("[2001:db8::2]:8100", "g", "b", "B", &[]),
    ];
    let (app, _) = app_with(s.clone());
    for m in &members {
        register(&app, m).await;
    }
    let v4 = load(&fetch(&app, "g", members[0].id).await);
    let addrs: Vec<SocketAddr> = v4.tests[0].targets.iter().map(|t| t.addr).collect();
    assert!(
        addrs.contains(&"127.0.0.1:8100".parse().unwrap()),
        "{addrs:?}"
    );
    assert!(!addrs.contains(&members[0].id), "{addrs:?}");
    assert!(addrs.contains(&members[1].id), "{addrs:?}");
    let v6 = load(&fetch(&app, "g", members[1].id).await);
    let addrs: Vec<SocketAddr> = v6.tests[0].targets.iter().map(|t| t.addr).collect();
    assert!(addrs.contains(&"[::1]:8100".parse().unwrap()), "{addrs:?}");
    assert!(!addrs.contains(&members[1].id), "{addrs:?}");
    assert!(addrs.contains(&members[0].id), "{addrs:?}");
    // And the full check on both.
    let all: Vec<&Member> = members.iter().collect();
    check(&v4, "g", &all, &members[0], &s);
    check(&v6, "g", &all, &members[1], &s);
}

#[tokio::test]
async fn hostile_tag_values_and_keys_stay_plain_values() {
    let long = "long ".repeat(60);
    let hostile: Vec<&str> = HOSTILE.iter().copied().chain([long.as_str()]).collect();
    let mut members = vec![Member::new(
        "10.0.0.1:8100",
        "g",
        "me",
        "me.example.com",
        &[("site", "lv")],
    )];
    for (i, v) in hostile.iter().enumerate() {
        let id = format!("10.0.1.{}:8100", i + 1);
        // As a value, as a key, as the names (which become dst_*/src_* of
        // every config), and as the value of a tag the server replaces.
        members.push(Member::new(
            &id,
            "g",
            v,
            v,
            &[("site", v), (v, "as-key"), ("group", v), ("src_name", v)],
        ));
    }
    round_trip(settings(10), &members).await;
}

#[tokio::test]
async fn hostile_values_in_every_tag_of_one_member() {
    // One member carrying many hostile tags at once (as many as the tag
    // limit allows), so a value cannot hide behind a well-behaved neighbour.
    let keys: Vec<String> = (0..28).map(|i| format!("t{i:02}")).collect();
    let extra: Vec<(&str, &str)> = keys
        .iter()
        .zip(HOSTILE.iter().cycle().skip(3))
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    let members = [
        Member::new("10.0.0.1:8100", "g", "a\n- ip: 6.6.6.6", "A: b", &extra),
        Member::new("[2001:db8::9]:8100", "g", "b\u{2028}", "'B'", &extra),
        Member::new("10.0.0.3:8100", "g", "c", "c", &[]),
    ];
    round_trip(settings(5), &members).await;
}

#[tokio::test]
async fn odd_and_long_group_names() {
    let groups = [
        "a b".to_owned(),
        "x:y".to_owned(),
        "- ip: 6.6.6.6".to_owned(),
        "{ip: 6.6.6.6}".to_owned(),
        "'q'".to_owned(),
        "\"dq\"".to_owned(),
        "#g".to_owned(),
        "null".to_owned(),
        "8100".to_owned(),
        "ünï ✓".to_owned(),
        "g\u{2028}- ip: 6.6.6.6".to_owned(),
        "g\u{2029}h".to_owned(),
        "g".repeat(64),
        // Longer than the YAML emitter's simple keys (128): `? key` form,
        // which the server renders on its reference path.
        "h".repeat(129),
        "i".repeat(200),
        format!("{}: - ip: 6.6.6.6", "j".repeat(300)),
    ];
    let mut members = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        members.push(Member::new(
            &format!("10.{i}.0.1:8100"),
            g,
            "a",
            "A",
            &[("site", g)],
        ));
        members.push(Member::new(
            &format!("[2001:db8:{i:x}::2]:8100"),
            g,
            "b",
            "B",
            &[],
        ));
    }
    round_trip(settings(10), &members).await;
}

#[tokio::test]
async fn interval_and_collector_settings_carry_over() {
    for interval in [1, 7, 3600] {
        let mut s = settings(interval);
        s.collector = CollectorDefaults {
            handlers: 3,
            port_ip: "::".into(),
            timeout_ms: 250,
            tos: 184,
            port_count: 4,
            cps: 2.5,
            api_bind: "127.0.0.1:9100".into(),
        };
        let members = [
            Member::new("10.0.0.1:8100", "default", "a", "A", &[]),
            Member::new("[2001:db8::2]:8100", "default", "b", "B", &[]),
        ];
        round_trip(s, &members).await;
    }
}

#[tokio::test]
async fn the_check_catches_a_config_written_by_string_formatting() {
    // Control for the tests above: had the server pasted a tag value into
    // the text, the agent would load the injected target (and `check` would
    // fail on the target count and the 6.6.6.6 address).
    let s = settings(10);
    let members = [
        Member::new("10.0.0.1:8100", "g", "a", "A", &[("site", "PLACEHOLDER")]),
        Member::new("10.0.0.2:8100", "g", "b", "B", &[]),
    ];
    let (app, _) = app_with(s.clone());
    for m in &members {
        register(&app, m).await;
    }
    let text = fetch(&app, "g", members[1].id).await;
    assert!(text.contains("site: PLACEHOLDER\n"), "{text}");
    let naive = text.replace(
        "PLACEHOLDER",
        "x\n  - ip: 6.6.6.6\n    port: 8100\n    tags:",
    );
    let cfg = load(&naive);
    assert!(
        cfg.tests[0]
            .targets
            .iter()
            .any(|t| t.addr == SocketAddr::new(INJECTED, 8100)),
        "the naive text should have injected a target:\n{naive}"
    );
    // What `check` rejects: one target more than there are members.
    assert_eq!(cfg.tests[0].targets.len(), members.len() + 1);
}

fn entry(m: &Member) -> Arc<Entry> {
    let tags = Tags::new(
        m.tags
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
    );
    let probe = Probe::new(m.id, m.group.as_str().into(), 60.0, tags);
    Arc::new(Entry::new(Arc::new(probe), SystemTime::now(), 0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary tag values and group names, rendered by both of the
    /// server's paths, load back unchanged.
    #[test]
    fn any_values_load_back_unchanged(
        values in proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "[a-z \n\r\t\u{85}\u{2028}\u{2029}:'\"#&*!|>{}\\[\\],-]{0,32}",
            ],
            1..6,
        ),
        group in "[a-z: '\"#\u{2028}-]{1,40}",
        me in 0usize..3,
    ) {
        let s = settings(10);
        let members: Vec<Member> = (0..3)
            .map(|i| {
                let v = values[i % values.len()].as_str();
                Member::new(
                    &format!("10.0.0.{}:8100", i + 1),
                    &group,
                    &format!("s{i}{v}"),
                    v,
                    &[("custom", v), ("- ip", v)],
                )
            })
            .collect();
        let entries: Vec<Arc<Entry>> = members.iter().map(entry).collect();
        let params = RenderParams { interval: s.interval, collector: &s.collector };
        let all: Vec<&Member> = members.iter().collect();
        for text in [
            render_config(&group, &entries, &entries[me], &params),
            render_reference(&group, &entries, &entries[me], &params),
        ] {
            check(&load(&text), &group, &all, &members[me], &s);
        }
    }
}
