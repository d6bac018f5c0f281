//! Property tests (run by `cargo test`, so in CI) for the probe parser and
//! the userspace reflector's decision: arbitrary bytes and mutated canonical
//! probes never panic, and every verdict agrees with an independent decoder
//! (prost) on what the bytes mean.

use std::net::{IpAddr, SocketAddr};

use llama_agent::reflector::decide::{Decision, Ignore, decide};
use llama_common::probe::{self, ProbeError};
use proptest::prelude::*;
use prost::Message;

use crate::support::packets;

/// `llama.Probe` as prost decodes it: the reference definition.
#[derive(Clone, PartialEq, prost::Message)]
struct RefProbe {
    #[prost(bytes = "vec", tag = "1")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    tos: Vec<u8>,
    #[prost(uint64, tag = "3")]
    sent: u64,
    #[prost(uint64, tag = "4")]
    rcvd: u64,
    #[prost(uint64, tag = "5")]
    rtt: u64,
    #[prost(bool, tag = "6")]
    lost: bool,
    #[prost(bytes = "vec", tag = "7")]
    padding: Vec<u8>,
}

fn src() -> SocketAddr {
    "10.0.0.1:40000".parse().expect("literal")
}

fn dst() -> IpAddr {
    "10.0.0.2".parse().expect("literal")
}

/// The cross-check: our parser and prost agree on `bytes`.
fn check_against_reference(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = probe::parse(bytes);
    let reference = RefProbe::decode(bytes);
    match (&ours, &reference) {
        (Ok(p), Ok(r)) => {
            prop_assert_eq!(p.signature, r.signature.as_slice());
            prop_assert_eq!(p.tos(), r.tos.first().copied().unwrap_or(0));
            prop_assert_eq!(p.sent, r.sent);
            prop_assert_eq!(p.rcvd, r.rcvd);
            prop_assert_eq!(p.rtt, r.rtt);
            prop_assert_eq!(p.lost, r.lost);
            prop_assert_eq!(p.padding_len, r.padding.len());
        }
        // Absent and empty bytes fields look alike to prost; we require
        // the field to be present.
        (Err(ProbeError::MissingSignature), Ok(r)) => prop_assert!(r.signature.is_empty()),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => prop_assert!(false, "we accept what prost rejects ({e})"),
        (Err(e), Ok(_)) => prop_assert!(false, "we reject ({e}) what prost accepts"),
    }
    // The decision follows the parse exactly.
    let decision = decide(bytes, src(), dst());
    match ours {
        Ok(p) => prop_assert_eq!(decision, Decision::Reflect { tos: p.tos() }),
        Err(e) => prop_assert_eq!(decision, Decision::Ignore(Ignore::NotProbe(e))),
    }
    Ok(())
}

fn canonical() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 10]>(), any::<u8>(), any::<u64>())
        .prop_map(|(sig, tos, sent)| packets::canonical_probe(sig, tos, sent))
}

/// A canonical probe with a few bytes overwritten, inserted, removed or cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        canonical(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    )
        .prop_map(|(mut p, edits)| {
            for (at, byte, op) in edits {
                if p.is_empty() {
                    break;
                }
                // Mostly hit the interesting head of the message.
                let i = at.index(p.len().min(40));
                match op {
                    0 => p[i] = byte,
                    1 => p.insert(i, byte),
                    2 => {
                        p.remove(i);
                    }
                    _ => p.truncate(i),
                }
            }
            p
        })
}

/// Any valid encoding: fields in any order, repeated, with unknown fields.
fn reencoded() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|v| (1u32, v)),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(|v| (2u32, v)),
        any::<u64>().prop_map(|v| (3u32, v.to_le_bytes().to_vec())),
        any::<u64>().prop_map(|v| (6u32, v.to_le_bytes().to_vec())),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|v| (7u32, v)),
        (8u32..1000, prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(f, v)| (f, v)),
    ];
    prop::collection::vec(field, 0..8).prop_map(|fields| {
        let mut out = Vec::new();
        for (f, v) in fields {
            match f {
                3 | 6 => {
                    let n = u64::from_le_bytes(v.try_into().unwrap_or([0; 8]));
                    prost::encoding::encode_key(f, prost::encoding::WireType::Varint, &mut out);
                    prost::encoding::encode_varint(n, &mut out);
                }
                _ => {
                    prost::encoding::encode_key(
                        f,
                        prost::encoding::WireType::LengthDelimited,
                        &mut out,
                    );
                    prost::encoding::encode_varint(v.len() as u64, &mut out);
                    out.extend_from_slice(&v);
                }
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_against_reference(&bytes)?;
    }

    #[test]
    fn mutated_canonical_probes(bytes in mutated()) {
        check_against_reference(&bytes)?;
    }

    #[test]
    fn valid_encodings_in_any_order(bytes in reencoded()) {
        check_against_reference(&bytes)?;
    }

    #[test]
    fn canonical_probes_reflect_with_their_tos(
        sig in any::<[u8; 10]>(), tos in any::<u8>(), sent in any::<u64>()
    ) {
        let p = packets::canonical_probe(sig, tos, sent);
        prop_assert!(probe::is_canonical_prefix(&p));
        prop_assert_eq!(decide(&p, src(), dst()), Decision::Reflect { tos });
        check_against_reference(&p)?;
    }
}

#[test]
fn named_malformed_inputs() {
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty datagram", Vec::new()),
        ("truncated varint", vec![0x18, 0x80, 0x80]),
        ("truncated length", vec![0x0a, 0x80]),
        ("length past the end", vec![0x0a, 0x0a, 1, 2, 3]),
        (
            "64 KiB of garbage",
            (0..65507u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("64 KiB of 0xff", vec![0xff; 65507]),
    ];
    // A probe without field 2 (this kills the original Go reflector) is a
    // valid probe: answered with TOS 0.
    let mut no_tos = vec![0x0a, 0x0a];
    no_tos.extend_from_slice(b"0123456789");
    no_tos.extend_from_slice(&[0x18, 0x01]);
    assert_eq!(decide(&no_tos, src(), dst()), Decision::Reflect { tos: 0 });
    cases.push(("probe without tos", no_tos));
    for (name, bytes) in &cases {
        check_against_reference(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
