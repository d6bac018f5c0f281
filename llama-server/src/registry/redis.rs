//! The Redis store: the registry in a Redis (7+) or Valkey server that any
//! number of `llama-server` replicas share, so any of them answers any
//! request with the same result and a replica can die without losing a
//! registration.
//!
//! Layout (`<p>` is the key prefix, `<g>` a group name):
//! - `<p>:groups` set of group names; `<p>:entries` the number of entries
//!   (kept by the scripts, set exactly by each reap); `<p>:seq` a sequence
//!   for registration order and group versions.
//! - per group, `<p>:{<g>}:seen` (sorted set: id → deadline, ms since the
//!   epoch: last registration + keepalive), `:data` (id → the probe's
//!   keepalive and tags as JSON), `:order` (id → registration number),
//!   `:names` (shortname → id), `:short` (id → shortname) and `:version`
//!   (a number that changes whenever the group's membership or data does;
//!   refreshes keep it).
//!
//! Writes are Lua scripts ([`REGISTER`], [`REMOVE`]), so the limits and the
//! shortname rule hold when replicas register concurrently. An entry whose
//! deadline passed is invisible at once; the reap removes it. Every group
//! key carries a TTL longer than its longest keepalive, so a group nobody
//! reaps disappears by itself.
//!
//! A lease (`<p>:lease:<name>`, holder and TTL) lets one replica do what
//! must be done once: scraping.
//!
//! Reads of a group cost one round trip while its version is unchanged:
//! the probes (and their rendered targets) are cached per version and only
//! the deadlines are read, and for [`FRESH_FOR`] after a read only the
//! version is. When Redis cannot be reached, writes fail (the
//! API answers 503) and group reads are served from that cache for at most
//! `stale_for`; each change between reachable and not is logged once.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use redis::{
    AsyncCommands, Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Counts, Members, ReapReport, ShortnameRule, Store, StoreFuture, StoreLimits};
use crate::{
    entry::{Entry, Id, Probe, Tags},
    error::Error,
};

/// Inserts or refreshes one entry (see the script for its keys).
const REGISTER: &str = include_str!("redis/register.lua");
/// Removes entries of one group, and the group once empty.
const REMOVE: &str = include_str!("redis/remove.lua");
/// Takes or keeps a lease.
const LEASE: &str = include_str!("redis/lease.lua");
/// How long a group's keys outlive the keepalive of its newest entry.
const KEY_GRACE_MS: u64 = 60_000;
/// Ids per removal script call: one call blocks Redis while it runs.
const REMOVE_BATCH: usize = 256;
/// How long a group read is reused while the group's version holds: a
/// config then costs one `GET` of the version, and registration times and
/// expiries show at most this late.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// How to reach Redis and how long to trust the cache without it.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[user:pass@]host[:port][/db]` or `redis+unix:///path`.
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis.
    pub prefix: String,
    /// Bound on every Redis operation (connect included).
    pub timeout: Duration,
    /// How long group reads may be served from the cache while Redis is
    /// unreachable.
    pub stale_for: Duration,
}

impl std::fmt::Debug for RedisOptions {
    // By hand: the URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("stale_for", &self.stale_for)
            .finish()
    }
}

/// The probe data kept in `:data`: what the agent registered besides its id
/// and group.
#[derive(Serialize, Deserialize)]
struct StoredProbe {
    /// Keepalive, seconds.
    k: f64,
    /// Tags, sorted by key.
    t: Vec<(String, String)>,
}

/// A group as last read.
struct Cached {
    version: u64,
    /// id → (probe, registration number).
    probes: HashMap<Id, (Arc<Probe>, u64)>,
    /// The entries of the last read, reused while their deadline holds.
    entries: HashMap<Id, Arc<Entry>>,
    members: Members,
    read_at: Instant,
}

/// The keys of one group.
struct Keys([String; 9]);

/// The registry in Redis.
pub struct RedisStore {
    connection: ConnectionManager,
    options: RedisOptions,
    limits: StoreLimits,
    register: Script,
    remove: Script,
    lease: Script,
    cache: Mutex<HashMap<Arc<str>, Cached>>,
    /// Whether the last operation failed (for logging state changes once).
    unreachable: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.options.prefix)
            .finish_non_exhaustive()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_unix_ms(ms: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0.0) as u64)
}

impl RedisStore {
    /// A store on `options.url`. Connects lazily: a server started while
    /// Redis is down runs, answers 503 to what needs Redis, and recovers
    /// without a restart. Errs only on a malformed URL.
    pub fn new(options: RedisOptions, limits: StoreLimits) -> Result<Self, Error> {
        let client = Client::open(options.url.as_str()).map_err(|e| Error::Store(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            // Fail fast and let the next request try again: a request must
            // not wait through a long reconnect schedule.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::Store(e.to_string()))?;
        Ok(Self {
            connection,
            options,
            limits,
            register: Script::new(REGISTER),
            remove: Script::new(REMOVE),
            lease: Script::new(LEASE),
            cache: Mutex::default(),
            unreachable: AtomicBool::new(false),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.options.prefix)
    }

    fn keys(&self, group: &str) -> Keys {
        let p = &self.options.prefix;
        let g = |k: &str| format!("{p}:{{{group}}}:{k}");
        Keys([
            g("seen"),
            g("data"),
            g("order"),
            g("names"),
            g("short"),
            g("version"),
            self.key("groups"),
            self.key("entries"),
            self.key("seq"),
        ])
    }

    /// Runs one Redis operation, bounded by the timeout, logging each
    /// change between reachable and unreachable once.
    async fn op<T, F>(&self, what: &str, fut: F) -> Result<T, Error>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.options.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!(
                "{what}: no answer within {:?}",
                self.options.timeout
            )),
        };
        match result {
            Ok(v) => {
                if self.unreachable.swap(false, Ordering::Relaxed) {
                    info!(url = %redacted(&self.options.url), "Redis store reachable again");
                }
                Ok(v)
            }
            Err(reason) => {
                if !self.unreachable.swap(true, Ordering::Relaxed) {
                    warn!(
                        url = %redacted(&self.options.url),
                        %reason,
                        stale_for = ?self.options.stale_for,
                        "Redis store failing: registrations answer 503, configs come from the cache while it is fresh (logged again when this changes)"
                    );
                }
                Err(Error::Store(reason))
            }
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn register_now(&self, probe: Probe, now: SystemTime) -> Result<Arc<Entry>, Error> {
        let keys = self.keys(&probe.group);
        let stored = StoredProbe {
            k: probe.keepalive,
            t: probe
                .tags
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let data = serde_json::to_string(&stored).map_err(|e| Error::Store(e.to_string()))?;
        let now_ms = unix_ms(now);
        let keepalive_ms = (probe.keepalive * 1000.0).ceil() as u64;
        let rule = match self.limits.shortnames {
            ShortnameRule::NewestWins => "newest",
            ShortnameRule::LiveKeeps => "live",
        };
        let mut invocation = self.register.prepare_invoke();
        for key in &keys.0 {
            invocation.key(key);
        }
        invocation
            .arg(probe.id.to_string())
            .arg(&data)
            .arg(probe.shortname())
            .arg(now_ms)
            .arg(now_ms.saturating_add(keepalive_ms))
            .arg(rule)
            .arg(self.limits.max_group_members)
            .arg(self.limits.max_groups)
            .arg(self.limits.max_entries)
            .arg(&*probe.group)
            .arg(keepalive_ms.saturating_add(KEY_GRACE_MS));
        let mut con = self.connection.clone();
        let answer: Vec<String> = self
            .op("register", invocation.invoke_async(&mut con))
            .await?;
        match answer.first().map(String::as_str) {
            Some("ok") => {
                let order = answer.get(2).and_then(|o| o.parse().ok()).unwrap_or(0);
                Ok(Arc::new(Entry::new(Arc::new(probe), now, order)))
            }
            Some("taken") => Err(Error::ShortnameTaken {
                shortname: probe.shortname().to_owned(),
                group: probe.group.to_string(),
                holder: answer.get(1).cloned().unwrap_or_default(),
            }),
            Some("group_full") => Err(Error::GroupFull {
                group: probe.group.to_string(),
                max: self.limits.max_group_members,
            }),
            Some("groups") => Err(Error::TooManyGroups {
                max: self.limits.max_groups,
            }),
            Some("full") => Err(Error::Full {
                max: self.limits.max_entries,
            }),
            other => Err(Error::Store(format!(
                "register: unexpected answer {other:?}"
            ))),
        }
    }

    /// Removes `ids` of `group` (`expired_only`: those whose deadline
    /// passed at `now`); the group goes once empty. (removed, dropped).
    async fn remove_from(
        &self,
        group: &str,
        ids: &[String],
        expired_only: bool,
        now: SystemTime,
    ) -> Result<(usize, usize), Error> {
        let keys = self.keys(group);
        let mut invocation = self.remove.prepare_invoke();
        for key in &keys.0 {
            invocation.key(key);
        }
        invocation
            .arg(if expired_only { "expired" } else { "any" })
            .arg(unix_ms(now))
            .arg(group);
        for id in ids {
            invocation.arg(id);
        }
        let mut con = self.connection.clone();
        let (removed, dropped): (usize, usize) =
            self.op("remove", invocation.invoke_async(&mut con)).await?;
        Ok((removed, dropped))
    }

    async fn group_names(&self) -> Result<Vec<String>, Error> {
        let mut con = self.connection.clone();
        let mut names: Vec<String> = self
            .op("groups", con.smembers::<_, Vec<String>>(self.key("groups")))
            .await?;
        names.sort();
        Ok(names)
    }

    async fn remove_now(&self, id: Id) -> Result<usize, Error> {
        let id = id.to_string();
        let mut removed = 0;
        for group in self.group_names().await? {
            let mut con = self.connection.clone();
            let seen = self.keys(&group).0[0].clone();
            let member: Option<f64> = self
                .op("remove", con.zscore::<_, _, Option<f64>>(&seen, &id))
                .await?;
            if member.is_some() {
                removed += self
                    .remove_from(&group, std::slice::from_ref(&id), false, SystemTime::now())
                    .await?
                    .0;
            }
        }
        Ok(removed)
    }

    async fn group_now(&self, name: &str) -> Result<Option<Members>, Error> {
        match self.read_group(name).await {
            Ok(members) => Ok(members),
            Err(e) => {
                // Read-only service from the cache while Redis is away.
                let cache = self.cache();
                match cache.get(name) {
                    Some(c) if c.read_at.elapsed() <= self.options.stale_for => {
                        Ok(Some(c.members.clone()))
                    }
                    _ => Err(e),
                }
            }
        }
    }

    async fn read_group(&self, name: &str) -> Result<Option<Members>, Error> {
        let keys = self.keys(name);
        let [seen, data, order, ..] = &keys.0;
        let version_key = &keys.0[5];
        let mut con = self.connection.clone();
        let fresh = {
            let cache = self.cache();
            cache
                .get(name)
                .filter(|c| c.read_at.elapsed() < FRESH_FOR)
                .map(|c| (c.version, c.members.clone()))
        };
        if let Some((cached_version, members)) = fresh {
            let version: Option<u64> = self.op("read group", con.get(version_key)).await?;
            if version == Some(cached_version) {
                return Ok(Some(members));
            }
        }
        let now_ms = unix_ms(SystemTime::now());
        let (version, live): (Option<u64>, Vec<(String, f64)>) = self
            .op(
                "read group",
                redis::pipe()
                    .get(version_key)
                    .zrangebyscore_withscores(seen, now_ms, "+inf")
                    .query_async(&mut con),
            )
            .await?;
        let Some(version) = version else {
            self.cache().remove(name);
            return Ok(None);
        };
        let cached_probes = {
            let cache = self.cache();
            cache
                .get(name)
                .filter(|c| c.version == version)
                .map(|c| (c.probes.clone(), c.entries.clone()))
        };
        let (probes, old_entries) = match cached_probes {
            Some(found) => found,
            None => {
                let (raw, orders): (HashMap<String, String>, HashMap<String, u64>) = self
                    .op(
                        "read group",
                        redis::pipe()
                            .hgetall(data)
                            .hgetall(order)
                            .query_async(&mut con),
                    )
                    .await?;
                let old = self.cache().remove(name);
                (
                    self.decode(name, raw, &orders, old.as_ref()),
                    HashMap::new(),
                )
            }
        };
        let mut entries = HashMap::with_capacity(live.len());
        let mut members: Vec<(u64, Arc<Entry>)> = Vec::with_capacity(live.len());
        for (id, deadline) in live {
            let Ok(id) = id.parse::<Id>() else { continue };
            // Registered after the data was read: it shows at the next read
            // (its registration changed the version).
            let Some((probe, order)) = probes.get(&id) else {
                continue;
            };
            let last_seen = from_unix_ms(deadline - probe.keepalive * 1000.0);
            let entry = match old_entries.get(&id) {
                Some(e) if e.last_seen == last_seen => e.clone(),
                _ => Arc::new(Entry::new(probe.clone(), last_seen, *order)),
            };
            entries.insert(id, entry.clone());
            members.push((*order, entry));
        }
        members.sort_by_key(|(order, _)| *order);
        let members: Members = members.into_iter().map(|(_, e)| e).collect();
        self.cache().insert(
            name.into(),
            Cached {
                version,
                probes,
                entries,
                members: members.clone(),
                read_at: Instant::now(),
            },
        );
        Ok(Some(members))
    }

    /// Probes from a group's `:data` and `:order`, reusing the cached probe
    /// (and its rendered target) of an unchanged entry. A value that does
    /// not decode (written by something else) is skipped.
    fn decode(
        &self,
        group: &str,
        raw: HashMap<String, String>,
        orders: &HashMap<String, u64>,
        old: Option<&Cached>,
    ) -> HashMap<Id, (Arc<Probe>, u64)> {
        let group: Arc<str> = group.into();
        let mut probes = HashMap::with_capacity(raw.len());
        for (id_text, json) in raw {
            let (Ok(id), Ok(stored)) = (
                id_text.parse::<Id>(),
                serde_json::from_str::<StoredProbe>(&json),
            ) else {
                tracing::debug!(group = %group, id = %id_text, "skipping an undecodable Redis entry");
                continue;
            };
            if !(stored.k.is_finite() && stored.k > 0.0) {
                continue;
            }
            let tags = Tags::new(
                stored
                    .t
                    .into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                    .collect(),
            );
            let probe = Probe::new(id, group.clone(), stored.k, tags);
            let probe = match old.and_then(|c| c.probes.get(&id)) {
                Some((cached, _)) if cached.same_data(&probe) => cached.clone(),
                _ => Arc::new(probe),
            };
            let order = orders.get(&id_text).copied().unwrap_or(u64::MAX);
            probes.insert(id, (probe, order));
        }
        probes
    }

    async fn groups_now(&self) -> Result<Vec<(Arc<str>, Members)>, Error> {
        let mut out = Vec::new();
        for name in self.group_names().await? {
            if let Some(members) = self.group_now(&name).await? {
                out.push((Arc::from(name.as_str()), members));
            }
        }
        Ok(out)
    }

    async fn counts_now(&self) -> Result<Counts, Error> {
        let names = self.group_names().await?;
        if names.is_empty() {
            return Ok(Counts::default());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.zcard(&self.keys(name).0[0]);
        }
        let mut con = self.connection.clone();
        let sizes: Vec<usize> = self.op("counts", pipe.query_async(&mut con)).await?;
        Ok(Counts {
            probes: sizes.iter().sum(),
            groups: names.len(),
        })
    }

    async fn reap_now(&self, now: SystemTime) -> Result<ReapReport, Error> {
        let started = Instant::now();
        let mut report = ReapReport::default();
        let now_ms = unix_ms(now);
        let mut total = 0usize;
        for name in self.group_names().await? {
            let seen = self.keys(&name).0[0].clone();
            let mut con = self.connection.clone();
            let (size, expired): (usize, Vec<String>) = self
                .op(
                    "reap",
                    redis::pipe()
                        .zcard(&seen)
                        .zrangebyscore(&seen, "-inf", format!("({now_ms}"))
                        .query_async(&mut con),
                )
                .await?;
            report.scanned += size;
            let mut left = size;
            // An empty id list still drops a group whose keys expired.
            let batches: Vec<&[String]> = if expired.is_empty() {
                vec![&[]]
            } else {
                expired.chunks(REMOVE_BATCH).collect()
            };
            for batch in batches {
                let t = Instant::now();
                let (removed, dropped) = self.remove_from(&name, batch, true, now).await?;
                report.longest_lock = report.longest_lock.max(t.elapsed());
                report.expired += removed;
                report.groups_removed += dropped;
                left = left.saturating_sub(removed);
            }
            total += left;
        }
        let mut con = self.connection.clone();
        let used: Option<u64> = self
            .op("reap", async {
                con.set::<_, _, ()>(self.key("entries"), total).await?;
                redis::cmd("MEMORY")
                    .arg("STATS")
                    .query_async::<redis::Value>(&mut con)
                    .await
                    .map(|stats| dataset_bytes(&stats))
            })
            .await?;
        report.approx_bytes = used.unwrap_or(0);
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// `dataset.bytes` of a `MEMORY STATS` answer (a flat key/value array in
/// RESP2, a map in RESP3): Redis's memory for data, without its overhead.
fn dataset_bytes(stats: &redis::Value) -> Option<u64> {
    let pairs: Vec<(&redis::Value, &redis::Value)> = match stats {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((k, v)),
                _ => None,
            })
            .collect(),
        redis::Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        let key: String = redis::from_redis_value_ref(k).ok()?;
        (key == "dataset.bytes").then(|| redis::from_redis_value_ref(v).ok())?
    })
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Store for RedisStore {
    fn register(&self, probe: Probe, now: SystemTime) -> StoreFuture<'_, Arc<Entry>> {
        Box::pin(self.register_now(probe, now))
    }

    fn remove(&self, id: Id) -> StoreFuture<'_, usize> {
        Box::pin(self.remove_now(id))
    }

    fn group<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Members>> {
        Box::pin(self.group_now(name))
    }

    fn groups(&self) -> StoreFuture<'_, Vec<(Arc<str>, Members)>> {
        Box::pin(self.groups_now())
    }

    fn counts(&self) -> StoreFuture<'_, Counts> {
        Box::pin(self.counts_now())
    }

    fn reap(&self, now: SystemTime) -> StoreFuture<'_, ReapReport> {
        Box::pin(self.reap_now(now))
    }

    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut invocation = self.lease.prepare_invoke();
            invocation
                .key(self.key(&format!("lease:{name}")))
                .arg(holder)
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
            let mut con = self.connection.clone();
            let held: i64 = self.op("lease", invocation.invoke_async(&mut con)).await?;
            Ok(held == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_debug_and_logs() {
        let o = RedisOptions {
            url: "redis://user:s3cret@10.0.0.5:6379/0".into(),
            prefix: "llama".into(),
            timeout: Duration::from_secs(1),
            stale_for: Duration::from_secs(1),
        };
        let text = format!("{o:?}");
        assert!(
            !text.contains("s3cret") && text.contains("10.0.0.5"),
            "{text}"
        );
        assert_eq!(
            redacted("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
    }

    #[test]
    fn memory_stats_dataset_bytes() {
        use redis::Value;
        let flat = Value::Array(vec![
            Value::SimpleString("peak.allocated".into()),
            Value::Int(10),
            Value::SimpleString("dataset.bytes".into()),
            Value::Int(1234),
        ]);
        assert_eq!(dataset_bytes(&flat), Some(1234));
        assert_eq!(dataset_bytes(&Value::Nil), None);
    }
}
