//! Collector configs for `GET /api/v1/config/<group>`: the full format of
//! docs/collector-config.md, with every member of the group as a target
//! carrying its tags plus `dst_name`, `dst_shortname`, `src_name`,
//! `src_shortname` and `group`, and the requester itself rewritten to the
//! loopback address.
//!
//! Every scalar is written by the YAML library (serde_yaml_ng), so a tag
//! value holding newlines, colons or quotes stays one value and cannot add a
//! target. Emitting a 1,000-target document through the library costs ~4 ms,
//! though, and only three lines of each target depend on the requester. So
//! each probe's target is rendered once by the library and kept with the
//! probe; a request renders the document head, the requester's target and its
//! two `src_*` lines (library again) and splices the cached targets in at the
//! indentation the library itself uses. The result is byte-identical to
//! rendering the whole document in one go ([`render_reference`], which the
//! tests compare against and which is used if the head ever comes out in an
//! unexpected shape).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::{
    entry::{Entry, Probe},
    settings::CollectorDefaults,
};

/// Tags the server sets on every target; a registered tag of the same name
/// is replaced.
pub const SERVER_TAGS: [&str; 5] = [
    "dst_name",
    "dst_shortname",
    "group",
    "src_name",
    "src_shortname",
];

/// The name of the port, port group, rate limit used by the one test.
const DEFAULT: &str = "default";

/// What a config depends on besides the group's members.
#[derive(Debug, Clone, Copy)]
pub struct RenderParams<'a> {
    /// `summarization.interval`, seconds.
    pub interval: u64,
    pub collector: &'a CollectorDefaults,
}

#[derive(Serialize)]
struct Document<'a> {
    summarization: Summarization,
    api: Api<'a>,
    ports: BTreeMap<&'a str, PortSpec<'a>>,
    port_groups: BTreeMap<&'a str, Vec<PortGroupMember<'a>>>,
    rate_limits: BTreeMap<&'a str, RateLimit>,
    tests: Vec<TestSpec<'a>>,
    targets: BTreeMap<&'a str, Vec<Target<'a>>>,
}

#[derive(Serialize)]
struct Summarization {
    interval: u64,
    handlers: u32,
}

#[derive(Serialize)]
struct Api<'a> {
    bind: &'a str,
}

#[derive(Serialize)]
struct PortSpec<'a> {
    ip: &'a str,
    port: u16,
    tos: u8,
    timeout: u64,
}

#[derive(Serialize)]
struct PortGroupMember<'a> {
    port: &'a str,
    count: u32,
}

#[derive(Serialize)]
struct RateLimit {
    cps: f64,
}

#[derive(Serialize)]
struct TestSpec<'a> {
    targets: &'a str,
    port_group: &'a str,
    rate_limit: &'a str,
}

#[derive(Serialize)]
struct Target<'a> {
    ip: String,
    port: u16,
    tags: TargetTags<'a>,
}

/// A target's tags: the probe's own, then the server's (`src_*` last, so the
/// cached form can be completed by appending them).
struct TargetTags<'a> {
    probe: &'a Probe,
    src: Option<SrcTags<'a>>,
}

#[derive(Serialize, Clone, Copy)]
struct SrcTags<'a> {
    src_name: &'a str,
    src_shortname: &'a str,
}

impl Serialize for TargetTags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.probe;
        let own = p.tags.iter().filter(|(k, _)| !SERVER_TAGS.contains(k));
        let mut map = s.serialize_map(None)?;
        for (k, v) in own {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("dst_name", p.name())?;
        map.serialize_entry("dst_shortname", p.shortname())?;
        map.serialize_entry("group", &*p.group)?;
        if let Some(src) = self.src {
            map.serialize_entry("src_name", src.src_name)?;
            map.serialize_entry("src_shortname", src.src_shortname)?;
        }
        map.end()
    }
}

fn loopback(of: IpAddr) -> IpAddr {
    match of {
        IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    }
}

fn target<'a>(e: &'a Entry, requester: &'a Entry) -> Target<'a> {
    let me = Arc::ptr_eq(&e.probe, &requester.probe) || e.probe.id == requester.probe.id;
    let ip = if me {
        loopback(e.probe.ip())
    } else {
        e.probe.ip()
    };
    Target {
        ip: ip.to_string(),
        port: e.probe.port(),
        tags: TargetTags {
            probe: &e.probe,
            src: Some(src_of(requester)),
        },
    }
}

fn src_of(requester: &Entry) -> SrcTags<'_> {
    SrcTags {
        src_name: requester.probe.name(),
        src_shortname: requester.probe.shortname(),
    }
}

fn document<'a>(
    group: &'a str,
    targets: Vec<Target<'a>>,
    params: &RenderParams<'a>,
) -> Document<'a> {
    let c = params.collector;
    Document {
        summarization: Summarization {
            interval: params.interval,
            handlers: c.handlers,
        },
        api: Api { bind: &c.api_bind },
        ports: BTreeMap::from([(
            DEFAULT,
            PortSpec {
                ip: &c.port_ip,
                port: 0,
                tos: c.tos,
                timeout: c.timeout_ms,
            },
        )]),
        port_groups: BTreeMap::from([(
            DEFAULT,
            vec![PortGroupMember {
                port: DEFAULT,
                count: c.port_count,
            }],
        )]),
        rate_limits: BTreeMap::from([(DEFAULT, RateLimit { cps: c.cps })]),
        tests: vec![TestSpec {
            targets: group,
            port_group: DEFAULT,
            rate_limit: DEFAULT,
        }],
        targets: BTreeMap::from([(group, targets)]),
    }
}

fn yaml<T: Serialize + ?Sized>(v: &T) -> String {
    // Our types are strings, numbers, maps and sequences with string keys:
    // serialization cannot fail, but an empty document is a safe answer.
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

/// Renders the whole config in one library call (the definition of the
/// output; the fast path must produce the same bytes).
pub fn render_reference(
    group: &str,
    members: &[Arc<Entry>],
    requester: &Entry,
    params: &RenderParams<'_>,
) -> String {
    let targets = members.iter().map(|e| target(e, requester)).collect();
    yaml(&document(group, targets, params))
}

/// Whether `c` ends a line for YAML 1.1 (which the library follows): the
/// emitter writes these raw inside block and single-quoted scalars and
/// indents the line after them.
fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Appends `text` with every non-empty line indented by `n` spaces, exactly
/// as the library would have written it `n` columns further right.
fn push_indented(out: &mut String, text: &str, n: usize) {
    let mut at_line_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if at_line_start && !is_break(c) {
            out.extend(std::iter::repeat_n(' ', n));
        }
        out.push(c);
        // `\r\n` is one break.
        at_line_start = is_break(c) && !(c == '\r' && chars.peek() == Some(&'\n'));
        if c == '\r' && chars.peek() == Some(&'\n') {
            at_line_start = false;
        }
    }
}

/// Indentation of a target (a sequence item) under `targets: {<group>: ...}`
/// in the library's output.
const TARGET_INDENT: usize = 2;
/// Indentation of a target's tags relative to the item.
const TAG_INDENT: usize = 4;

/// The probe's target without the requester's `src_*` tags, as it appears in
/// the full document (cached in the probe).
fn cached_target(probe: &Probe) -> &str {
    probe.target_yaml.get_or_init(|| {
        let t = Target {
            ip: probe.ip().to_string(),
            port: probe.port(),
            tags: TargetTags { probe, src: None },
        };
        let mut out = String::new();
        push_indented(&mut out, &yaml(&[t]), TARGET_INDENT);
        out.into_boxed_str()
    })
}

/// Renders the config of `group` for `requester` (one of `members`).
pub fn render_config(
    group: &str,
    members: &[Arc<Entry>],
    requester: &Entry,
    params: &RenderParams<'_>,
) -> String {
    let head = yaml(&document(group, Vec::new(), params));
    // The library writes the empty target list as `  <group>: []` on the last
    // line; anything else (a long key written as `? key`) takes the slow
    // path, which is correct by construction.
    let simple_key = |h: &str| {
        let last = h.rsplit('\n').next().unwrap_or("");
        last.strip_prefix("  ")
            .is_some_and(|k| !k.is_empty() && !k.starts_with([' ', '?', ':']))
    };
    let Some(head) = head.strip_suffix(": []\n").filter(|h| simple_key(h)) else {
        return render_reference(group, members, requester, params);
    };
    let src = src_of(requester);
    let mut src_lines = String::new();
    push_indented(&mut src_lines, &yaml(&src), TARGET_INDENT + TAG_INDENT);
    let per_target = members
        .first()
        .map_or(0, |e| cached_target(&e.probe).len() + src_lines.len());
    let mut out = String::with_capacity(head.len() + 1 + members.len() * (per_target + 16));
    out.push_str(head);
    out.push_str(":\n");
    for e in members {
        if e.probe.id == requester.probe.id {
            push_indented(&mut out, &yaml(&[target(e, requester)]), TARGET_INDENT);
        } else {
            out.push_str(cached_target(&e.probe));
            out.push_str(&src_lines);
        }
    }
    out
}
