//! Incremental Internet checksum updates (RFC 1624) done by hand on the packet, identical in XDP
//! and TC. Words are read in the CPU's order on both sides; one's-complement sums do not care.

use crate::mac::Mac;

/// The checksum `csum` after a field changes from `old` to `new` (a MAC on a 16-bit boundary of
/// the checksummed data: three words).
#[inline(always)]
pub fn replace_mac(csum: u16, old: Mac, new: Mac) -> u16 {
    let (o, n) = (old.words(), new.words());
    let mut sum = u32::from(!csum);
    for i in 0..3 {
        sum += u32::from(!o[i]) + u32::from(n[i]);
    }
    !fold(sum)
}

/// The checksum `csum` after one 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn replace_word(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
