//! The host's side of the reflection check: canonical LLAMA probes to the
//! guest over IPv4 and IPv6, each asking for a different TOS, sent one at a
//! time and each awaited (so a missing reply is loss, not a queue overflow),
//! plus malformed datagrams that must get no answer.
//!
//! A reply counts when it comes from the guest's probe port, carries the
//! probe's bytes unchanged, arrived with the requested TOS / traffic class
//! and TTL / hop limit 64. The kernel delivers a UDP datagram to a socket
//! only when its IP and UDP checksums verify (the tap hands the guest's
//! frames to the host stack with no checksum offload), so every reply
//! received also had valid checksums.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use llama_common::{DEFAULT_PROBE_PORT, REPLY_TTL, probe};
use llama_testkit::ReplySocket;

/// The TOS values probes ask for, in turn (DSCP classes and ECN bits).
const TOS_VALUES: [u8; 6] = [0x00, 0x28, 0x2e << 2, 0xb8, 0x01, 0xfd];
/// How long one probe's reply may take (a software-emulated guest on a
/// loaded host; a real loss costs this once).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the host listens for (wrong) answers to malformed datagrams.
const QUIET: Duration = Duration::from_secs(2);

/// What one address family's run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: u64,
    pub answered: u64,
    pub problems: Vec<String>,
}

/// Sends `count` probes to `guest` and checks each reply.
pub fn reflect(guest: IpAddr, count: u64) -> Result<Outcome> {
    let socket = open(guest)?;
    let to = SocketAddr::new(guest, DEFAULT_PROBE_PORT);
    let mut outcome = Outcome::default();
    let mut buf = [0u8; probe::CANONICAL_MAX_LEN];
    for i in 0..count {
        let tos = TOS_VALUES[i as usize % TOS_VALUES.len()];
        let mut signature = [0u8; probe::SIGNATURE_LEN];
        signature[..8].copy_from_slice(&(i + 1).to_be_bytes());
        signature[8] = guest.is_ipv6() as u8;
        let sent_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(i);
        let len = probe::encode_canonical(&mut buf, &signature, tos, sent_at)
            .context("encode a probe")?;
        socket.send_to(&buf[..len], to).context("send a probe")?;
        outcome.sent += 1;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        // Skip late replies to earlier probes; stop at this probe's reply.
        while let Some(reply) = socket.recv_before(deadline).context("receive a reply")? {
            if reply.payload.get(2..12) != Some(&signature[..]) {
                continue;
            }
            outcome.answered += 1;
            let what = format!("{} probe {i}", family(guest));
            if reply.from != to {
                outcome
                    .problems
                    .push(format!("{what}: reply from {}", reply.from));
            }
            if reply.payload != buf[..len] {
                outcome.problems.push(format!("{what}: payload changed"));
            }
            if reply.tos != Some(tos) {
                outcome.problems.push(format!(
                    "{what}: asked for TOS {tos:#04x}, reply had {:?}",
                    reply.tos
                ));
            }
            if reply.ttl != Some(REPLY_TTL) {
                outcome.problems.push(format!(
                    "{what}: reply TTL {:?}, not {REPLY_TTL}",
                    reply.ttl
                ));
            }
            break;
        }
    }
    Ok(outcome)
}

/// Sends datagrams to the probe port that are not probes (empty, truncated
/// and wrongly tagged); returns how many and fails if any is answered.
pub fn malformed(guest: IpAddr) -> Result<u64> {
    let socket = open(guest)?;
    let to = SocketAddr::new(guest, DEFAULT_PROBE_PORT);
    let mut canonical = [0u8; probe::CANONICAL_MAX_LEN];
    let len = probe::encode_canonical(&mut canonical, &[7; probe::SIGNATURE_LEN], 0x28, 1)
        .context("encode a probe")?;
    let mut wrong_tag = canonical[..len].to_vec();
    wrong_tag[0] = 0x0b;
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x0a],
        canonical[..probe::CANONICAL_TOS_OFFSET].to_vec(),
        wrong_tag,
        vec![0xff; 64],
    ];
    for case in &cases {
        socket
            .send_to(case, to)
            .context("send a malformed datagram")?;
    }
    if let Some(reply) = socket
        .recv_before(Instant::now() + QUIET)
        .context("receive a reply")?
    {
        bail!(
            "the guest answered a malformed {} datagram ({} bytes)",
            family(guest),
            reply.payload.len()
        );
    }
    Ok(cases.len() as u64)
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn open(guest: IpAddr) -> Result<ReplySocket> {
    let any: SocketAddr = if guest.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    ReplySocket::bind(any).context("bind the probe socket")
}
