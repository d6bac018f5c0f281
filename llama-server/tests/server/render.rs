//! Collector config rendering: structure (docs/collector-config.md), the requester's rewrite,
//! injection attempts through tags and group names, and the cached fast path
//! producing exactly the bytes of a whole-document library rendering.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::SystemTime};

use llama_server::{
    entry::{Entry, Probe, Tags},
    render::{RenderParams, render_config, render_reference},
    settings::CollectorDefaults,
};
use proptest::prelude::*;
use serde_yaml_ng::Value;

fn entry(addr: &str, group: &str, tags: &[(&str, &str)]) -> Arc<Entry> {
    let id: SocketAddr = addr.parse().unwrap();
    let tags = Tags::new(
        tags.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    );
    let probe = Probe::new(id, group.into(), 60.0, tags);
    Arc::new(Entry::new(Arc::new(probe), SystemTime::now(), 0))
}

fn member(addr: &str, group: &str, short: &str, name: &str, extra: &[(&str, &str)]) -> Arc<Entry> {
    let mut tags = vec![
        ("version", "0.1.0"),
        ("probe_shortname", short),
        ("probe_name", name),
    ];
    tags.extend_from_slice(extra);
    entry(addr, group, &tags)
}

fn params(c: &CollectorDefaults) -> RenderParams<'_> {
    RenderParams {
        interval: 10,
        collector: c,
    }
}

/// Renders both ways, checks they are identical, returns the parsed YAML.
fn render(group: &str, members: &[Arc<Entry>], me: usize) -> Value {
    let c = CollectorDefaults::default();
    let fast = render_config(group, members, &members[me], &params(&c));
    let reference = render_reference(group, members, &members[me], &params(&c));
    assert_eq!(
        fast, reference,
        "fast path differs from the library's rendering"
    );
    // Twice: the second time every target comes from the cache.
    assert_eq!(
        render_config(group, members, &members[me], &params(&c)),
        reference
    );
    serde_yaml_ng::from_str(&fast).unwrap_or_else(|e| panic!("invalid YAML ({e}):\n{fast}"))
}

fn targets<'a>(doc: &'a Value, group: &str) -> &'a Vec<Value> {
    doc["targets"][group]
        .as_sequence()
        .unwrap_or_else(|| panic!("no targets.{group}: {doc:?}"))
}

fn tags_of(t: &Value) -> BTreeMap<String, String> {
    t["tags"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn full_format_with_every_section() {
    let members = vec![
        member(
            "10.0.0.1:8100",
            "default",
            "a",
            "a.example.com",
            &[("site", "lv")],
        ),
        member("10.0.0.2:8100", "default", "b", "b.example.com", &[]),
    ];
    let doc = render("default", &members, 1);
    assert_eq!(doc["summarization"]["interval"], 10);
    assert_eq!(doc["summarization"]["handlers"], 2);
    assert_eq!(doc["api"]["bind"], "0.0.0.0:8100");
    let port = &doc["ports"]["default"];
    assert_eq!(
        (port["ip"].as_str(), port["port"].as_u64()),
        (Some("0.0.0.0"), Some(0))
    );
    assert_eq!(
        (port["tos"].as_u64(), port["timeout"].as_u64()),
        (Some(0), Some(1000))
    );
    assert_eq!(doc["port_groups"]["default"][0]["port"], "default");
    assert_eq!(doc["port_groups"]["default"][0]["count"], 4);
    assert_eq!(doc["rate_limits"]["default"]["cps"], 2.0);
    let test = &doc["tests"][0];
    assert_eq!(
        (
            test["targets"].as_str(),
            test["port_group"].as_str(),
            test["rate_limit"].as_str()
        ),
        (Some("default"), Some("default"), Some("default"))
    );
    let t = targets(&doc, "default");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["ip"], "10.0.0.1");
    assert_eq!(t[1]["ip"], "127.0.0.1");
    let a = tags_of(&t[0]);
    let want: BTreeMap<String, String> = [
        ("version", "0.1.0"),
        ("probe_shortname", "a"),
        ("probe_name", "a.example.com"),
        ("site", "lv"),
        ("dst_name", "a.example.com"),
        ("dst_shortname", "a"),
        ("src_name", "b.example.com"),
        ("src_shortname", "b"),
        ("group", "default"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(a, want);
}

#[test]
fn ipv6_members_and_requester() {
    let members = vec![
        member("[2001:db8::1]:8100", "v6", "a", "A", &[]),
        member("[2001:db8::2]:8101", "v6", "b", "B", &[]),
        member("10.0.0.3:8100", "v6", "c", "C", &[]),
    ];
    let doc = render("v6", &members, 0);
    let t = targets(&doc, "v6");
    assert_eq!(t[0]["ip"], "::1");
    assert_eq!(t[1]["ip"], "2001:db8::2");
    assert_eq!(t[1]["port"], 8101);
    assert_eq!(t[2]["ip"], "10.0.0.3");
}

#[test]
fn hostile_tag_values_cannot_inject_targets() {
    let evil = [
        "x\n  - ip: 6.6.6.6\n    port: 1",
        "a: b",
        "\"quoted\" 'single'",
        "- ip: 6.6.6.6",
        "{ip: 6.6.6.6}",
        "[1, 2]",
        "# comment",
        "trailing newline\n",
        "\n\nleading newlines",
        "  leading spaces",
        "tab\there",
        "null",
        "~",
        "true",
        "0x1F",
        "1e3",
        "&anchor",
        "*alias",
        "!tag",
        "|",
        ">",
        "%directive",
        "@at",
        "`tick",
        "...",
        "---",
        "crlf\r\nline",
        "nul\u{0}char",
        "unicode ✓ 日本",
        "\u{feff}bom",
        "\u{2028}ls",
        &"long ".repeat(60),
    ];
    let mut members = vec![member("10.0.0.1:8100", "g", "me", "me.example.com", &[])];
    for (i, v) in evil.iter().enumerate() {
        let addr = format!("10.0.1.{}:8100", i + 1);
        members.push(member(&addr, "g", v, v, &[("site", v), (v, "as-key")]));
    }
    let doc = render("g", &members, 0);
    let t = targets(&doc, "g");
    assert_eq!(
        t.len(),
        evil.len() + 1,
        "one target per member, nothing injected"
    );
    for (i, v) in evil.iter().enumerate() {
        let tags = tags_of(&t[i + 1]);
        assert_eq!(t[i + 1]["ip"], format!("10.0.1.{}", i + 1).as_str());
        assert_eq!(tags["site"], *v, "value survives verbatim");
        assert_eq!(tags["dst_shortname"], *v);
        assert_eq!(tags[*v], "as-key", "key survives verbatim");
    }
    // And as the requester (its src_* tags go into every target).
    for me in [3, 5, 11] {
        let doc = render("g", &members, me);
        let t = targets(&doc, "g");
        assert_eq!(t.len(), evil.len() + 1);
        assert!(
            t.iter()
                .all(|t| tags_of(t)["src_shortname"] == evil[me - 1])
        );
        assert_eq!(t[me]["ip"], "127.0.0.1");
    }
}

#[test]
fn server_tags_replace_registered_ones() {
    let members = vec![
        member(
            "10.0.0.1:8100",
            "g",
            "a",
            "A",
            &[
                ("group", "evil"),
                ("src_name", "evil"),
                ("dst_name", "evil"),
            ],
        ),
        member("10.0.0.2:8100", "g", "b", "B", &[]),
    ];
    let doc = render("g", &members, 1);
    let a = tags_of(&targets(&doc, "g")[0]);
    assert_eq!(
        (
            a["group"].as_str(),
            a["src_name"].as_str(),
            a["dst_name"].as_str()
        ),
        ("g", "B", "A")
    );
}

#[test]
fn odd_group_names_render() {
    for group in [
        "a b",
        "x:y",
        "ünï",
        "'q'",
        "\"dq\"",
        "#g",
        "- g",
        "null",
        &"g".repeat(64),
        &"h".repeat(200),
    ] {
        let members = vec![
            member("10.0.0.1:8100", group, "a", "A", &[]),
            member("10.0.0.2:8100", group, "b", "B", &[]),
        ];
        let doc = render(group, &members, 0);
        assert_eq!(targets(&doc, group).len(), 2, "{group}");
        assert_eq!(doc["tests"][0]["targets"], group);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_tags_round_trip(
        values in proptest::collection::vec(
            prop_oneof![any::<String>(), "[a-z \n\r\t\u{85}\u{2028}\u{2029}:'\"#&*!|>-]{0,24}"],
            1..6,
        ),
        keys in proptest::collection::vec("[a-z_:# -]{1,12}", 0..4),
        me in 0usize..3,
    ) {
        let mut members = Vec::new();
        for i in 0..3 {
            let v = &values[i % values.len()];
            let mut extra: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), v.as_str())).collect();
            extra.push(("custom", v.as_str()));
            members.push(member(&format!("10.0.0.{}:8100", i + 1), "g", &format!("s{i}{v}"), v, &extra));
        }
        let doc = render("g", &members, me);
        let t = targets(&doc, "g");
        prop_assert_eq!(t.len(), 3);
        for (i, target) in t.iter().enumerate() {
            let tags = tags_of(target);
            prop_assert_eq!(&tags["custom"], &values[i % values.len()]);
            prop_assert_eq!(&tags["src_shortname"], &format!("s{me}{}", values[me % values.len()]));
        }
    }
}
