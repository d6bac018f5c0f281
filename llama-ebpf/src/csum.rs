//! Incremental Internet checksum update (RFC 1624, eqn. 3).
//!
//! The one's-complement sum does not depend on byte order as long as every
//! word is taken the same way, so the raw (network-order) 16-bit words are
//! used as loaded, without swapping.

/// Folds a 32-bit accumulator into 16 bits with end-around carry.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The new checksum after two 16-bit words of the covered data changed from
/// `old_a`/`old_b` to `new_a`/`new_b`: HC' = ~(~HC + ~m + m') for each word.
#[inline(always)]
pub fn replace2(check: u16, old_a: u16, new_a: u16, old_b: u16, new_b: u16) -> u16 {
    let sum = u32::from(!check)
        + u32::from(!old_a)
        + u32::from(new_a)
        + u32::from(!old_b)
        + u32::from(new_b);
    !fold(sum)
}
