//! The registry and the reaper: expiry, newest-wins duplicates, empty
//! groups, the reaper task with short keepalives, and registrations staying
//! responsive while a reap of 100,000 entries runs.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use llama_server::{
    Settings,
    entry::{Probe, Tags},
    registry::{MemoryStore, Store},
    server::Server,
    state::AppState,
};
use llama_testkit::{WAIT, eventually};
use serde_json::json;

use crate::support::app as support;

fn probe(addr: &str, group: &str, short: &str, keepalive: f64) -> Probe {
    let id: SocketAddr = addr.parse().unwrap();
    let tags = Tags::new(vec![
        ("version".into(), "1".into()),
        ("probe_shortname".into(), short.into()),
        ("probe_name".into(), format!("{short}.example").into()),
    ]);
    Probe::new(id, group.into(), keepalive, tags)
}

/// Registers `probe` at `at`.
async fn put(store: &MemoryStore, probe: Probe, at: SystemTime) {
    store.register(probe, at).await.unwrap();
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn ids(store: &MemoryStore, group: &str) -> Vec<String> {
    let mut v: Vec<String> = store
        .group(group)
        .await
        .unwrap()
        .unwrap_or_default()
        .iter()
        .map(|e| e.probe.id.to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn expired_entries_and_empty_groups_are_removed() {
    let store = MemoryStore::new(1000);
    let t0 = SystemTime::now();
    put(&store, probe("10.0.0.1:8100", "a", "one", 10.0), t0).await;
    put(&store, probe("10.0.0.2:8100", "a", "two", 100.0), t0).await;
    put(&store, probe("10.0.0.3:8100", "b", "three", 10.0), t0).await;
    let r = store.reap(t0 + secs(5)).await.unwrap();
    assert_eq!(
        (r.expired, r.duplicates, r.groups_removed, r.scanned),
        (0, 0, 0, 3)
    );
    let r = store.reap(t0 + secs(11)).await.unwrap();
    assert_eq!((r.expired, r.duplicates, r.groups_removed), (2, 0, 1));
    assert_eq!(ids(&store, "a").await, vec!["10.0.0.2:8100"]);
    assert!(
        store.group("b").await.unwrap().is_none(),
        "empty group dropped"
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.probes, c.groups), (1, 1));
    // A refreshed entry lives on.
    put(
        &store,
        probe("10.0.0.2:8100", "a", "two", 100.0),
        t0 + secs(90),
    )
    .await;
    assert_eq!(store.reap(t0 + secs(150)).await.unwrap().expired, 0);
    assert_eq!(store.reap(t0 + secs(191)).await.unwrap().expired, 1);
    assert_eq!(store.counts().await.unwrap().groups, 0);
}

#[tokio::test]
async fn newest_wins_among_duplicate_shortnames() {
    let store = MemoryStore::new(1000);
    let t0 = SystemTime::now();
    // A probe moved to a new address: both entries share its shortname.
    put(&store, probe("10.0.0.1:8100", "g", "mover", 600.0), t0).await;
    put(
        &store,
        probe("10.0.0.9:8100", "g", "mover", 600.0),
        t0 + secs(1),
    )
    .await;
    put(&store, probe("10.0.0.5:8100", "g", "other", 600.0), t0).await;
    // The same shortname in another group is no duplicate.
    put(&store, probe("10.0.0.1:8100", "h", "mover", 600.0), t0).await;
    let r = store.reap(t0 + secs(2)).await.unwrap();
    assert_eq!((r.expired, r.duplicates), (0, 1));
    assert_eq!(
        ids(&store, "g").await,
        vec!["10.0.0.5:8100", "10.0.0.9:8100"]
    );
    assert_eq!(ids(&store, "h").await, vec!["10.0.0.1:8100"]);
    // The old address comes back and is now the newest: the other goes.
    put(
        &store,
        probe("10.0.0.1:8100", "g", "mover", 600.0),
        t0 + secs(3),
    )
    .await;
    let r = store.reap(t0 + secs(4)).await.unwrap();
    assert_eq!(r.duplicates, 1);
    assert_eq!(
        ids(&store, "g").await,
        vec!["10.0.0.1:8100", "10.0.0.5:8100"]
    );
    // Stable: nothing flaps on the next reaps.
    for i in 5..8 {
        assert_eq!(store.reap(t0 + secs(i)).await.unwrap().duplicates, 0);
    }
}

#[tokio::test]
async fn many_duplicates_keep_exactly_the_newest() {
    let store = MemoryStore::new(10_000);
    let t0 = SystemTime::now();
    for i in 0..500u64 {
        let addr = format!("10.1.{}.{}:8100", i / 250, i % 250);
        store
            .register(
                probe(&addr, "g", &format!("p{}", i % 50), 600.0),
                t0 + Duration::from_millis(i),
            )
            .await
            .unwrap();
    }
    let r = store.reap(t0 + secs(1)).await.unwrap();
    assert_eq!(r.duplicates, 450);
    let members = store.group("g").await.unwrap().unwrap();
    assert_eq!(members.len(), 50);
    // Registered last: i in 450..500.
    for e in &members {
        let last = e.probe.id.ip().to_string();
        let n: Vec<u64> = last.split('.').map(|x| x.parse().unwrap()).collect();
        assert!(
            n[2] * 250 + n[3] >= 450,
            "{last} is not the newest of its shortname"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_task_removes_entries_with_short_keepalives() {
    let settings = Settings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        reap_interval: Duration::from_millis(100),
        // The entries name addresses outside this machine: none may be
        // scraped.
        collect: false,
        ..Settings::default()
    };
    let server = Server::start(AppState::new(settings)).await.unwrap();
    let base = format!("http://{}", server.addrs[0]);
    let client = crate::support::http();
    let register = |body: String| support::register_http(&base, body);
    register(support::reg(
        8100,
        "short",
        json!({"keepalive": 0.3, "ip": "10.0.0.1"}),
    ))
    .await;
    register(support::reg(
        8100,
        "kept",
        json!({"keepalive": 0.3, "ip": "10.0.0.2", "group": "other"}),
    ))
    .await;
    let list = eventually("the short-lived entry to be reaped", WAIT, || async {
        // Keep one probe alive while the other expires.
        register(support::reg(
            8100,
            "kept",
            json!({"keepalive": 0.3, "ip": "10.0.0.2", "group": "other"}),
        ))
        .await;
        let list: serde_json::Value =
            support::get_json(&client, format!("{base}/api/v1/list")).await;
        list.get("default").is_none().then_some(list)
    })
    .await;
    assert!(list["other"].get("10.0.0.2:8100").is_some(), "{list}");
    let m = support::get_json(&client, format!("{base}/metrics.json")).await;
    assert_eq!(m["probe_count_active"], 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_stay_fast_while_100k_entries_are_reaped() {
    const N: u32 = 100_000;
    let store = Arc::new(MemoryStore::new(200_000));
    let t0 = SystemTime::now();
    for i in 0..N {
        let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        // Half in one big group, half spread over 100 groups.
        let group = if i % 2 == 0 {
            "big".to_owned()
        } else {
            format!("g{}", i % 200)
        };
        store
            .register(
                probe(
                    &SocketAddr::new(ip, 8100).to_string(),
                    &group,
                    &format!("p{i}"),
                    10.0,
                ),
                t0,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.counts().await.unwrap().probes, N as usize);

    let reaper = {
        let store = store.clone();
        tokio::spawn(async move { store.reap(t0 + secs(60)).await.unwrap() })
    };
    // Register (fresh, non-expiring entries) until the reap is over; bounded
    // in count and time.
    let mut worst = Duration::ZERO;
    let mut done = 0u32;
    let started = Instant::now();
    while !reaper.is_finished() && done < 200_000 && started.elapsed() < Duration::from_secs(60) {
        let ip = IpAddr::from((0x0b00_0000u32 + done).to_be_bytes());
        let group = if done.is_multiple_of(2) { "big" } else { "g1" };
        let p = probe(
            &SocketAddr::new(ip, 8100).to_string(),
            group,
            &format!("new{done}"),
            1e6,
        );
        let t = Instant::now();
        store.register(p, t0 + secs(60)).await.unwrap();
        worst = worst.max(t.elapsed());
        done += 1;
        if done.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    let report = reaper.await.unwrap();
    assert_eq!(report.expired, N as usize);
    assert_eq!(
        store.counts().await.unwrap().probes,
        done as usize,
        "only the new entries remain"
    );
    assert!(done > 0, "registrations ran during the reap");
    // Loose bounds for a noisy shared machine (the benchmark measures them):
    // the reap holds no lock for long, so no registration waits for long.
    assert!(
        report.longest_lock < Duration::from_millis(500),
        "{report:?}"
    );
    assert!(
        worst < Duration::from_secs(2),
        "a registration waited {worst:?} during the reap"
    );
}

/// A pass over 20,000 one-entry groups while 32 tasks keep registering
/// (each one registration, then a yield to the scheduler, as connection
/// tasks do). On one thread the interleaving is deterministic: every time
/// the reap yields, each flooder registers once. A reap that yields per
/// group (40,000 times) outlasts the whole flood; one that yields per
/// chunk of work ends while the flood still runs.
#[tokio::test(flavor = "current_thread")]
async fn a_reap_over_many_groups_ends_during_a_registration_flood() {
    const GROUPS: u32 = 20_000;
    const FLOODERS: u32 = 32;
    const ROUNDS: u32 = 2_000;
    let store = Arc::new(MemoryStore::new(1_000_000));
    let t0 = SystemTime::now();
    for i in 0..GROUPS {
        let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
        let p = probe(
            &SocketAddr::new(ip, 8100).to_string(),
            &format!("g{i}"),
            &format!("p{i}"),
            10.0,
        );
        store.register(p, t0).await.unwrap();
    }
    let now = t0 + secs(60);
    let flooded = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for f in 0..FLOODERS {
        let (store, flooded) = (store.clone(), flooded.clone());
        flood.spawn(async move {
            for r in 0..ROUNDS {
                let n = f * ROUNDS + r;
                let ip = IpAddr::from((0x0b00_0000u32 + n).to_be_bytes());
                let p = probe(
                    &SocketAddr::new(ip, 8100).to_string(),
                    &format!("flood{}", n % 5000),
                    &format!("f{n}"),
                    1e6,
                );
                store.register(p, now).await.unwrap();
                flooded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
    }
    let report = store.reap(now).await.unwrap();
    let during = flooded.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(report.expired, GROUPS as usize);
    assert_eq!(report.groups_removed, GROUPS as usize);
    assert!(
        during < FLOODERS * ROUNDS,
        "the reap ended only after the whole flood ({during} registrations)"
    );
    while flood.join_next().await.is_some() {}
    assert_eq!(
        store.counts().await.unwrap().probes,
        (FLOODERS * ROUNDS) as usize
    );
}
