//! Applying a configuration to the running engine, first at start and then
//! on every swap. The new sockets are opened before anything is changed, so
//! a failure leaves the previous configuration running untouched.
//!
//! A socket is identified by its bind address, port and ordinal (the n-th
//! socket with that address and port): one that exists in both the old and
//! the new configuration is kept, with its fd and its source port, so the
//! ECMP paths it measures stay the same. A TOS change is applied to the kept
//! socket in place.
//!
//! The in-flight table is sized from the new rates and timeouts, within
//! [`MAX_RESERVED_RECORDS`] (it grows past that on demand), and compacted
//! when a much smaller configuration replaces a large one, so the memory a
//! large configuration took is given back.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use super::{
    Error, SwapReport,
    clock::{monotonic_ns, realtime_ns},
    engine::{BATCHED_PPS, Engine, TestRun},
    memory,
    schedule::Schedule,
    socket::{ProbeSocket, RxClock, SocketKey},
    summary::PathKey,
    txstamp::{self, TxTimestamps},
};
use crate::config::CollectorConfig;

/// Most in-flight records reserved up front (about 100 bytes each). The
/// configuration limits keep real needs below it; past it the table grows
/// as probes are sent rather than all at once.
const MAX_RESERVED_RECORDS: usize = 1 << 18;

/// Identity of a socket across configurations (TOS excluded).
type Identity = (IpAddr, u16, u32);

fn identity(k: &SocketKey) -> Identity {
    (k.ip, k.port, k.ordinal)
}

impl Engine {
    pub(super) fn apply(&mut self, cfg: &CollectorConfig) -> Result<SwapReport, Error> {
        // 1. The sockets the new configuration needs, per test and port.
        let mut ordinals: HashMap<(IpAddr, u16), u32> = HashMap::new();
        let mut wanted: Vec<Vec<(Identity, u8)>> = Vec::with_capacity(cfg.tests.len());
        for test in &cfg.tests {
            let mut ports = Vec::with_capacity(test.ports.len());
            for p in &test.ports {
                let n = ordinals.entry((p.spec.ip, p.spec.port)).or_insert(0);
                ports.push(((p.spec.ip, p.spec.port, *n), p.spec.tos));
                *n += 1;
            }
            wanted.push(ports);
        }
        let existing: HashMap<Identity, u32> = self
            .sockets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (identity(&s.key), i as u32)))
            .collect();

        // 2. Open the missing ones; nothing has changed yet if this fails.
        let mut opened: HashMap<Identity, ProbeSocket> = HashMap::new();
        for (ti, test) in cfg.tests.iter().enumerate() {
            for (pi, p) in test.ports.iter().enumerate() {
                let id = wanted[ti][pi].0;
                if existing.contains_key(&id) || opened.contains_key(&id) {
                    continue;
                }
                let mut sock =
                    ProbeSocket::open(&p.spec, id.2).map_err(|source| Error::Socket {
                        ip: p.spec.ip,
                        port: p.spec.port,
                        source,
                    })?;
                if self.shared.tx_timestamps == TxTimestamps::On
                    && sock.rx_clock == RxClock::Timestamping
                {
                    sock.tx = txstamp::enable(&sock.sock);
                }
                opened.insert(id, sock);
            }
        }

        // 3. Close the sockets no longer wanted, forgetting their probes and
        //    those of removed targets (not booked: nobody asked for them).
        let keep: HashSet<Identity> = wanted.iter().flatten().map(|(id, _)| *id).collect();
        let new_targets: HashSet<SocketAddr> = cfg
            .tests
            .iter()
            .flat_map(|t| t.targets.iter().map(|t| t.addr))
            .collect();
        let kept_ids: HashSet<u32> = existing
            .iter()
            .filter(|(id, _)| keep.contains(id))
            .map(|(_, &sid)| sid)
            .collect();
        let dropped = self.inflight.drop_where(&mut self.paths, |sock, dst| {
            !kept_ids.contains(&sock) || !new_targets.contains(&dst)
        });
        let report = SwapReport {
            sockets_kept: kept_ids.len(),
            sockets_opened: opened.len(),
            sockets_closed: existing.len() - kept_ids.len(),
            probes_dropped: dropped,
        };
        for (_, &sid) in existing.iter().filter(|(id, _)| !keep.contains(id)) {
            self.register(sid, false);
            self.sockets[sid as usize] = None;
        }

        // 4. Place the new sockets in free slots.
        let mut ids: HashMap<Identity, u32> = existing
            .into_iter()
            .filter(|(id, _)| keep.contains(id))
            .collect();
        let mut opened: Vec<_> = opened.into_iter().collect();
        opened.sort_by_key(|(id, _)| *id);
        for (id, sock) in opened {
            let slot = match self.sockets.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.sockets.push(None);
                    self.sockets.len() - 1
                }
            };
            tracing::info!("probe socket {} (tos {:#04x})", sock.local, sock.key.tos);
            self.sockets[slot] = Some(sock);
            ids.insert(id, slot as u32);
        }

        // 5. Tests, paths and destinations.
        self.paths.unmark_all();
        let now = monotonic_ns();
        let mut tests = Vec::with_capacity(cfg.tests.len());
        let mut capacity = 0f64;
        // Route lookups per (bind address, destination), not per socket.
        let mut sources: HashMap<(IpAddr, IpAddr), IpAddr> = HashMap::new();
        for (ti, test) in cfg.tests.iter().enumerate() {
            let n = test.targets.len();
            let mut run = TestRun {
                schedule: Schedule::new(test.cps, test.ports.len(), n, now, self.phase()),
                sockets: Vec::with_capacity(test.ports.len()),
                timeouts_ns: Vec::with_capacity(test.ports.len()),
                targets: test.targets.iter().map(|t| t.addr).collect(),
                dests: Vec::with_capacity(test.ports.len() * n),
                paths: Vec::with_capacity(test.ports.len() * n),
            };
            let tags: Vec<_> = test
                .targets
                .iter()
                .map(|t| Arc::new(t.tags.clone()))
                .collect();
            for (pi, p) in test.ports.iter().enumerate() {
                let (id, tos) = wanted[ti][pi];
                let sid = ids[&id];
                let sock = self.sockets[sid as usize]
                    .as_mut()
                    .expect("socket placed above");
                if sock.key.tos != tos
                    && let Err(e) = sock.set_tos(tos)
                {
                    tracing::warn!("cannot change the TOS of {}: {e}", sock.local);
                }
                run.sockets.push(sid);
                let timeout = p.spec.timeout.as_nanos().min(u128::from(u64::MAX)) as u64;
                run.timeouts_ns.push(timeout);
                capacity += test.cps * n as f64 * (timeout.max(1_000_000_000) * 2) as f64 / 1e9;
                for (t, tags) in test.targets.iter().zip(&tags) {
                    run.dests.push(sock.dest(t.addr));
                    let src = *sources
                        .entry((sock.key.ip, t.addr.ip()))
                        .or_insert_with(|| {
                            sock.source_for(t.addr).unwrap_or_else(|| {
                                tracing::warn!("no route from {} to {}", sock.local, t.addr);
                                unspecified(t.addr.ip())
                            })
                        });
                    let key = PathKey {
                        src,
                        dst: t.addr.ip(),
                    };
                    run.paths.push(self.paths.upsert(key, tags.clone()));
                }
            }
            tests.push(run);
        }
        self.tests = tests;
        // Float to integer casts saturate (NaN gives 0): no rate or timeout
        // can turn this into an absurd allocation.
        let want = ((capacity * 1.25) as usize)
            .saturating_add(1024)
            .min(MAX_RESERVED_RECORDS);
        if self.inflight.capacity() > want.saturating_mul(4) {
            self.inflight.compact(want);
            memory::release_free_pages();
        } else {
            self.inflight.reserve(want);
        }

        // 6. Summaries: a new interval applies from the next boundary.
        let interval = cfg.interval.as_nanos().min(u128::from(u64::MAX)) as u64;
        if interval != self.interval_ns {
            self.interval_ns = interval.max(1);
            let real = realtime_ns();
            self.next_publish = real - real % self.interval_ns + self.interval_ns;
        }

        // 7. Wake-up mode for the new rate.
        let pps = cfg.probes_per_second();
        self.batched = pps >= BATCHED_PPS;
        for sid in 0..self.sockets.len() as u32 {
            self.register(sid, !self.batched);
        }
        self.shared.metrics.dropped_on_reload.inc_by(dropped);
        self.shared.metrics.reloads.inc();
        tracing::info!(
            tests = cfg.tests.len(),
            probes_per_second = pps,
            batched = self.batched,
            kept = report.sockets_kept,
            opened = report.sockets_opened,
            closed = report.sockets_closed,
            dropped = report.probes_dropped,
            "collector configuration applied"
        );
        Ok(report)
    }
}

/// The unspecified address of `ip`'s family (a path with no route; the
/// original printed `::` for wildcard sockets).
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}
