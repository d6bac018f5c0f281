//! Registry entries. A [`Probe`] is what an agent registered (address, group,
//! keepalive, tags) and does not change while the agent keeps re-registering
//! the same data; an [`Entry`] is a probe plus the time of its last
//! registration. Both are immutable and shared by `Arc`, so readers take
//! snapshots without holding registry locks.
//!
//! Each entry carries its JSON (the original's stored-entry shape), built once
//! at registration: `/api/v1/register` answers with it and `/api/v1/list`
//! concatenates it, instead of re-serializing thousands of entries per call.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use serde::{Serialize, Serializer, ser::SerializeMap};

use crate::clock;

/// Tags required in every registration (docs/server-api.md).
pub const REQUIRED_TAGS: [&str; 3] = ["version", "probe_shortname", "probe_name"];

/// An entry's id: `ip:port`, `[v6]:port` for IPv6 (the `SocketAddr` form,
/// unambiguous where `::1:8100` would not be).
pub type Id = SocketAddr;

/// Tags sorted by key (unique keys).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Box<[(Box<str>, Box<str>)]>);

impl Tags {
    /// Builds from pairs; a later duplicate key replaces an earlier one.
    pub fn new(mut pairs: Vec<(Box<str>, Box<str>)>) -> Self {
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Tags(pairs.into_boxed_slice())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// What an agent registered.
#[derive(Debug)]
pub struct Probe {
    pub id: Id,
    pub group: Arc<str>,
    /// Seconds; positive and finite (checked at registration).
    pub keepalive: f64,
    pub tags: Tags,
    /// This probe as a collector target, rendered once and reused by every
    /// config of its group (see `render`).
    pub(crate) target_yaml: OnceLock<Box<str>>,
}

impl Probe {
    pub fn new(id: Id, group: Arc<str>, keepalive: f64, tags: Tags) -> Self {
        Probe {
            id,
            group,
            keepalive,
            tags,
            target_yaml: OnceLock::new(),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.id.ip()
    }

    pub fn port(&self) -> u16 {
        self.id.port()
    }

    /// `probe_shortname`, required at registration.
    pub fn shortname(&self) -> &str {
        self.tags.get("probe_shortname").unwrap_or_default()
    }

    /// `probe_name`, required at registration.
    pub fn name(&self) -> &str {
        self.tags.get("probe_name").unwrap_or_default()
    }

    /// Whether `other` registered exactly the same data (so a re-registration
    /// can keep this probe and its rendered target).
    pub fn same_data(&self, other: &Probe) -> bool {
        self.id == other.id
            && self.group == other.group
            && self.keepalive.to_bits() == other.keepalive.to_bits()
            && self.tags == other.tags
    }
}

/// A probe and its last registration.
#[derive(Debug)]
pub struct Entry {
    pub probe: Arc<Probe>,
    pub last_seen: SystemTime,
    /// Unique per registration: tells the reaper whether the entry it decided
    /// to remove was refreshed in the meantime.
    pub seq: u64,
    /// `"<id>":<entry JSON>`: a member of a `/api/v1/list` object, ready to
    /// copy (formatting 10,000 ids per list call was most of its cost).
    member: Box<str>,
    /// Where the entry JSON starts in `member`.
    json_at: usize,
}

/// Serializes a keepalive as the integer it usually is (`300`, not `300.0`).
fn keepalive_number(k: f64) -> serde_json::Value {
    if k.fract() == 0.0 && k.abs() < 9.0e15 {
        serde_json::Value::from(k as i64)
    } else {
        serde_json::Value::from(k)
    }
}

#[derive(Serialize)]
struct EntryJson<'a> {
    ip: String,
    port: u16,
    keepalive: serde_json::Value,
    group: &'a str,
    tags: &'a Tags,
    /// The original's name for the last-registration time.
    create_date: String,
    id: String,
}

impl Entry {
    pub fn new(probe: Arc<Probe>, last_seen: SystemTime, seq: u64) -> Self {
        let view = EntryJson {
            ip: probe.ip().to_string(),
            port: probe.port(),
            keepalive: keepalive_number(probe.keepalive),
            group: &probe.group,
            tags: &probe.tags,
            create_date: clock::create_date(last_seen),
            id: probe.id.to_string(),
        };
        let mut member = format!("\"{}\":", view.id).into_bytes();
        let json_at = member.len();
        // Serializing strings and numbers cannot fail, and serde_json writes
        // UTF-8; the fallbacks only keep this free of panics.
        let _ = serde_json::to_writer(&mut member, &view);
        let member = String::from_utf8(member)
            .unwrap_or_default()
            .into_boxed_str();
        let json_at = json_at.min(member.len());
        Entry {
            probe,
            last_seen,
            seq,
            member,
            json_at,
        }
    }

    /// The entry as the API shows it.
    pub fn json(&self) -> &str {
        &self.member[self.json_at..]
    }

    /// `"<id>":<json>`, this entry as a member of its group's object in
    /// `/api/v1/list`.
    pub fn list_member(&self) -> &str {
        &self.member
    }

    /// Whether the keepalive has run out at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        match now.duration_since(self.last_seen) {
            Ok(age) => age.as_secs_f64() > self.probe.keepalive,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        Tags::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn tags_are_sorted_and_last_duplicate_wins() {
        let t = tags(&[("b", "1"), ("a", "2"), ("b", "3")]);
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![("a", "2"), ("b", "3")]);
        assert_eq!(t.get("b"), Some("3"));
        assert_eq!(t.get("c"), None);
    }

    #[test]
    fn entry_json_has_the_original_shape() {
        let id: Id = "[::1]:8100".parse().unwrap();
        let t = tags(&[
            ("version", "1"),
            ("probe_shortname", "a"),
            ("probe_name", "A"),
        ]);
        let p = Arc::new(Probe::new(id, "g".into(), 300.0, t));
        let e = Entry::new(p, SystemTime::UNIX_EPOCH, 1);
        let v: serde_json::Value = serde_json::from_str(e.json()).unwrap();
        assert_eq!(v["ip"], "::1");
        assert_eq!(v["id"], "[::1]:8100");
        assert_eq!(v["port"], 8100);
        assert_eq!(v["keepalive"], 300);
        assert_eq!(v["group"], "g");
        assert_eq!(v["tags"]["probe_name"], "A");
        assert_eq!(v["create_date"], "1970-01-01T00:00:00.000000");
    }
}
