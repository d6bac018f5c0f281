//! The LLAMA probe wire format (docs/probe.md): a protobuf `llama.Probe`
//! decoded and encoded by hand, without allocation, so the same code serves
//! the userspace reflector's hot path, the collector and the fuzz target.
//!
//! ```text
//! message Probe {
//!   bytes  signature = 1;  // 10 random bytes
//!   bytes  tos       = 2;  // one byte: the TOS the reply must carry
//!   uint64 sent      = 3;  // ns since the Unix epoch, sender's clock
//!   uint64 rcvd      = 4;
//!   uint64 rtt       = 5;
//!   bool   lost      = 6;
//!   bytes  padding   = 7;
//! }
//! ```

/// Length of the signature the reference collector sends.
pub const SIGNATURE_LEN: usize = 10;
/// Zero bytes of padding the reference collector sends.
pub const PADDING_LEN: usize = 1000;
/// Offset of the tos byte in a canonical probe (`0a 0a <sig:10> 12 01 <tos>`).
pub const CANONICAL_TOS_OFFSET: usize = 2 + SIGNATURE_LEN + 2;
/// The canonical prefix before the signature and before the tos byte.
pub const CANONICAL_PREFIX: [u8; 2] = [0x0a, SIGNATURE_LEN as u8];
/// The two bytes that introduce the tos field in a canonical probe.
pub const CANONICAL_TOS_TAG: [u8; 2] = [0x12, 0x01];

/// Why a datagram is not a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// A varint ran past the end of the datagram, past 10 bytes, or
    /// overflows 64 bits (a tenth byte above 1, which Go's protowire and
    /// prost reject too).
    TruncatedVarint,
    /// A length-delimited field claims more bytes than the datagram has.
    TruncatedField,
    /// A known field arrived with the wrong wire type.
    WrongWireType { field: u64 },
    /// Field number 0 or above 2^29 - 1, a wire type protobuf does not
    /// define, or a group that does not end properly (an end-group tag
    /// without a start, for another field, or nested too deep).
    InvalidTag,
    /// No signature (field 1): nothing to match a reply against, so not a probe.
    MissingSignature,
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::TruncatedVarint => f.write_str("truncated varint"),
            ProbeError::TruncatedField => f.write_str("length-delimited field runs past the end"),
            ProbeError::WrongWireType { field } => {
                write!(f, "field {field} has the wrong wire type")
            }
            ProbeError::InvalidTag => f.write_str("invalid field tag"),
            ProbeError::MissingSignature => f.write_str("no signature field"),
        }
    }
}

/// A decoded probe borrowing from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe<'a> {
    pub signature: &'a [u8],
    /// The tos field's bytes (one byte in every probe the reference sends).
    pub tos_field: Option<&'a [u8]>,
    pub sent: u64,
    pub rcvd: u64,
    pub rtt: u64,
    pub lost: bool,
    pub padding_len: usize,
}

impl Probe<'_> {
    /// The TOS the reply must carry: the first byte of field 2; 0 when the
    /// field is absent or empty (the Go reflector crashed there instead).
    pub fn tos(&self) -> u8 {
        self.tos_field.and_then(|t| t.first().copied()).unwrap_or(0)
    }
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProbeError> {
    let mut value: u64 = 0;
    for shift in 0..10 {
        let byte = *buf.get(*pos).ok_or(ProbeError::TruncatedVarint)?;
        *pos += 1;
        // The tenth byte may only contribute one bit: more overflows 64
        // bits, and the reference decoders reject it.
        if shift == 9 && byte > 1 {
            return Err(ProbeError::TruncatedVarint);
        }
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProbeError::TruncatedVarint)
}

fn read_len<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], ProbeError> {
    let len = read_varint(buf, pos)?;
    let len = usize::try_from(len).map_err(|_| ProbeError::TruncatedField)?;
    let end = pos.checked_add(len).ok_or(ProbeError::TruncatedField)?;
    let bytes = buf.get(*pos..end).ok_or(ProbeError::TruncatedField)?;
    *pos = end;
    Ok(bytes)
}

/// Decodes `datagram` as a `llama.Probe`. Accepts every valid protobuf
/// encoding (any field order, repeated fields where the last wins, unknown
/// fields skipped), as the Go reference's `proto.Unmarshal` does, and requires
/// a signature. Never panics.
pub fn parse(datagram: &[u8]) -> Result<Probe<'_>, ProbeError> {
    let mut probe = Probe {
        signature: &[],
        tos_field: None,
        sent: 0,
        rcvd: 0,
        rtt: 0,
        lost: false,
        padding_len: 0,
    };
    let mut has_signature = false;
    let mut pos = 0;
    while pos < datagram.len() {
        let (field, wire) = read_tag(datagram, &mut pos)?;
        match (field, wire) {
            (1, 2) => {
                probe.signature = read_len(datagram, &mut pos)?;
                has_signature = true;
            }
            (2, 2) => probe.tos_field = Some(read_len(datagram, &mut pos)?),
            (7, 2) => probe.padding_len = read_len(datagram, &mut pos)?.len(),
            (3, 0) => probe.sent = read_varint(datagram, &mut pos)?,
            (4, 0) => probe.rcvd = read_varint(datagram, &mut pos)?,
            (5, 0) => probe.rtt = read_varint(datagram, &mut pos)?,
            (6, 0) => probe.lost = read_varint(datagram, &mut pos)? != 0,
            (1..=7, _) => return Err(ProbeError::WrongWireType { field }),
            // Unknown fields are skipped by wire type.
            (_, 0) => {
                read_varint(datagram, &mut pos)?;
            }
            (_, 1) => pos = skip(datagram, pos, 8)?,
            (_, 2) => {
                read_len(datagram, &mut pos)?;
            }
            (_, 5) => pos = skip(datagram, pos, 4)?,
            (_, 3) => pos = skip_group(datagram, pos, field, MAX_GROUP_DEPTH)?,
            _ => return Err(ProbeError::InvalidTag),
        }
    }
    if !has_signature {
        return Err(ProbeError::MissingSignature);
    }
    Ok(probe)
}

/// Largest field number protobuf allows.
const MAX_FIELD: u64 = (1 << 29) - 1;
/// Nesting limit for skipped groups (prost's recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

/// Reads a field key: (field number, wire type).
fn read_tag(buf: &[u8], pos: &mut usize) -> Result<(u64, u8), ProbeError> {
    let tag = read_varint(buf, pos)?;
    let field = tag >> 3;
    if field == 0 || field > MAX_FIELD {
        return Err(ProbeError::InvalidTag);
    }
    Ok((field, (tag & 7) as u8))
}

/// Skips an unknown group (deprecated wire types 3/4, which Go's
/// `proto.Unmarshal` and prost still accept as unknown fields) of `field`
/// whose start tag was just read; returns the position after its end tag.
fn skip_group(buf: &[u8], mut pos: usize, field: u64, depth: u32) -> Result<usize, ProbeError> {
    let depth = depth.checked_sub(1).ok_or(ProbeError::InvalidTag)?;
    loop {
        if pos >= buf.len() {
            return Err(ProbeError::TruncatedField);
        }
        let (inner, wire) = read_tag(buf, &mut pos)?;
        match wire {
            0 => {
                read_varint(buf, &mut pos)?;
            }
            1 => pos = skip(buf, pos, 8)?,
            2 => {
                read_len(buf, &mut pos)?;
            }
            3 => pos = skip_group(buf, pos, inner, depth)?,
            4 if inner == field => return Ok(pos),
            5 => pos = skip(buf, pos, 4)?,
            _ => return Err(ProbeError::InvalidTag),
        }
    }
}

fn skip(buf: &[u8], pos: usize, n: usize) -> Result<usize, ProbeError> {
    let end = pos.checked_add(n).ok_or(ProbeError::TruncatedField)?;
    if end > buf.len() {
        return Err(ProbeError::TruncatedField);
    }
    Ok(end)
}

/// Length of a canonical probe whose `sent` varint takes `sent_len` bytes.
pub const fn canonical_len(sent_len: usize) -> usize {
    // sig field + tos field + sent field + padding field (3a e8 07 + 1000)
    (2 + SIGNATURE_LEN) + 3 + (1 + sent_len) + (3 + PADDING_LEN)
}

/// Maximum length of a canonical probe (a 10-byte `sent` varint).
pub const CANONICAL_MAX_LEN: usize = canonical_len(10);

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Writes the canonical encoding the reference collector emits (fields 1, 2,
/// 3, 7; 1000 zero bytes of padding) into `out` and returns its length
/// (1028 bytes for any `sent` in this century). `out` must hold
/// [`CANONICAL_MAX_LEN`] bytes; returns `None` if it does not.
pub fn encode_canonical(
    out: &mut [u8],
    signature: &[u8; SIGNATURE_LEN],
    tos: u8,
    sent: u64,
) -> Option<usize> {
    let len = canonical_len(varint_len(sent));
    let out = out.get_mut(..len)?;
    out[0..2].copy_from_slice(&CANONICAL_PREFIX);
    out[2..12].copy_from_slice(signature);
    out[12..14].copy_from_slice(&CANONICAL_TOS_TAG);
    out[14] = tos;
    out[15] = 0x18;
    let mut pos = 16;
    let mut v = sent;
    while v >= 0x80 {
        out[pos] = (v as u8) | 0x80;
        v >>= 7;
        pos += 1;
    }
    out[pos] = v as u8;
    pos += 1;
    out[pos..pos + 3].copy_from_slice(&[0x3a, 0xe8, 0x07]);
    pos += 3;
    out[pos..pos + PADDING_LEN].fill(0);
    Some(pos + PADDING_LEN)
}

/// Whether `payload` starts like a canonical probe (field 1 with 10 bytes,
/// then field 2 with one byte): the only shape the XDP fast path reflects.
pub fn is_canonical_prefix(payload: &[u8]) -> bool {
    payload.len() > CANONICAL_TOS_OFFSET
        && payload[0..2] == CANONICAL_PREFIX
        && payload[12..14] == CANONICAL_TOS_TAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_probe_is_1028_bytes_and_parses_back() {
        let mut buf = [0u8; CANONICAL_MAX_LEN];
        let sig = *b"0123456789";
        let sent = 1_764_000_000_000_000_000u64;
        let n = encode_canonical(&mut buf, &sig, 0xb8, sent).expect("fits");
        assert_eq!(n, 1028);
        assert_eq!(&buf[..2], &[0x0a, 0x0a]);
        assert_eq!(&buf[12..15], &[0x12, 0x01, 0xb8]);
        assert_eq!(buf[15], 0x18);
        assert_eq!(&buf[25..28], &[0x3a, 0xe8, 0x07]);
        assert!(is_canonical_prefix(&buf[..n]));
        let p = parse(&buf[..n]).expect("parses");
        assert_eq!(p.signature, &sig);
        assert_eq!(p.tos(), 0xb8);
        assert_eq!(p.sent, sent);
        assert_eq!(p.padding_len, PADDING_LEN);
    }

    #[test]
    fn malformed_inputs_are_rejected_not_panicking() {
        assert_eq!(parse(&[]), Err(ProbeError::MissingSignature));
        assert_eq!(parse(&[0x0a, 0x0a, 1, 2]), Err(ProbeError::TruncatedField));
        assert_eq!(parse(&[0x18, 0xff]), Err(ProbeError::TruncatedVarint));
        assert_eq!(parse(&[0x18; 1]), Err(ProbeError::TruncatedVarint));
        assert_eq!(
            parse(&[0x08, 0x01]),
            Err(ProbeError::WrongWireType { field: 1 })
        );
        assert_eq!(parse(&[0x00]), Err(ProbeError::InvalidTag));
        assert_eq!(parse(&[0x0b]), Err(ProbeError::WrongWireType { field: 1 }));
        // 0x4b: field 9 start-group with no end.
        assert_eq!(parse(&[0x4b]), Err(ProbeError::TruncatedField));
        // A lone end-group, and one for another field.
        assert_eq!(parse(&[0x4c]), Err(ProbeError::InvalidTag));
        assert_eq!(parse(&[0x4b, 0x54]), Err(ProbeError::InvalidTag));
        // Overflowing tenth varint byte; field number past 2^29 - 1.
        let overflow = [
            0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        assert_eq!(parse(&overflow), Err(ProbeError::TruncatedVarint));
        assert_eq!(
            parse(&[0xf8, 0xff, 0xff, 0xff, 0x1f, 0x00]),
            Err(ProbeError::InvalidTag)
        );
        // Groups nested deeper than the limit.
        let mut deep = [0x4bu8; 101].to_vec();
        deep.extend_from_slice(&[0x4c; 101]);
        assert_eq!(parse(&deep), Err(ProbeError::InvalidTag));
        let huge_len = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(parse(&huge_len), Err(ProbeError::TruncatedField));
        let garbage = [0xffu8; 65536];
        assert!(parse(&garbage).is_err());
    }

    #[test]
    fn probe_without_tos_parses_with_tos_zero() {
        let p = parse(&[0x0a, 0x02, 0xaa, 0xbb, 0x18, 0x05]).expect("valid");
        assert_eq!(p.tos_field, None);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.sent, 5);
    }

    #[test]
    fn unknown_groups_are_skipped() {
        // field 9 group { field 10 varint 1, field 11 group {} }, then signature.
        let d = [0x4b, 0x50, 0x01, 0x5b, 0x5c, 0x4c, 0x0a, 0x01, 0x7f];
        let p = parse(&d).expect("valid");
        assert_eq!(p.signature, &[0x7f]);
        // A known field as a group is the wrong wire type.
        assert_eq!(
            parse(&[0x0b, 0x0c]),
            Err(ProbeError::WrongWireType { field: 1 })
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32
        let mut d = [0u8; 32];
        let v = [
            0x48, 0x01, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5a, 0x01, 0x00, 0x65, 1, 2, 3, 4, 0x0a,
            0x01, 0x7f,
        ];
        d[..v.len()].copy_from_slice(&v);
        let p = parse(&d[..v.len()]).expect("valid");
        assert_eq!(p.signature, &[0x7f]);
    }
}
