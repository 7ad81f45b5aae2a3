//! IPv6 Neighbor Discovery: the link-layer address options of RS, RA, NS, NA and Redirect, after
//! up to four Hop-by-Hop, Destination Options and Routing headers, with the ICMPv6 checksum
//! updated incrementally. Fragments pass untouched (receivers drop fragmented ND, RFC 6980).
//!
//! The walk reads and writes through [`Frame::load8`] and [`Frame::store8`]: every offset here
//! comes from the frame, and a helper checks it at run time.

use mat_common::{counters::Outcome, maps::Binding};

use crate::{
    bindings::{Bindings, outside_of},
    csum,
    frame::Frame,
    mac::Mac,
    maps, parse,
};

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const ICMPV6: u8 = 58;
const DEST_OPTS: u8 = 60;

const RS: u8 = 133;
const RA: u8 = 134;
const NS: u8 = 135;
const NA: u8 = 136;
const REDIRECT: u8 = 137;

const SOURCE_LL: u8 = 1;
const TARGET_LL: u8 = 2;

const IPV6_LEN: usize = 40;
/// Extension headers walked before the ICMPv6 header, and options walked in a message.
const MAX_EXT: usize = 4;
const MAX_OPTS: usize = 8;
/// ND messages fit in one Ethernet frame; offsets past this are not walked (a verifier bound).
const MAX_OFFSET: usize = 0x3fff;

/// An ND message found in a frame.
struct Message {
    /// Offset of the IPv6 header, of the ICMPv6 header, and the end of the message.
    ip: usize,
    icmp: usize,
    end: usize,
    kind: u8,
    /// The ICMPv6 checksum as it sits in memory.
    csum: u16,
    /// The address the message claims for its sender (an NS's source, an NA's target), when
    /// read in place; else read later.
    claimed: Option<[u32; 4]>,
}

/// Why no ND message was found.
enum Miss {
    /// Not ND, or a fragment: pass untouched.
    Pass,
    /// Cut short, or (from a VM port) an extension chain longer than the walk.
    Malformed,
}

/// What to do with one link-layer option.
enum Step {
    Keep,
    Replace(Mac),
    Stop(Outcome),
}

/// The bytes of `v` as they sit in the frame.
#[inline(always)]
fn bytes(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// The MAC of an option whose first 8 bytes are `v` (type, length, MAC).
#[inline(always)]
fn option_mac(v: u64) -> Mac {
    Mac::from_parts((v >> 16) as u32, (v >> 48) as u16)
}

#[inline(always)]
fn with_mac(v: u64, mac: Mac) -> u64 {
    let (hi, lo) = mac.parts();
    (v & 0xffff) | u64::from(hi) << 16 | u64::from(lo) << 48
}

/// Finds the ND message in the IPv6 packet at `ip`.
#[inline(always)]
fn find<F: Frame>(f: &mut F, ip: usize, strict: bool) -> Result<Message, Miss> {
    // The fixed header sits at one of three offsets: read in place (made linear first), so that
    // IPv6 that is not ND costs no helper call, and neither does the common ND message without
    // extension headers.
    let h = parse::pulled::<F, [u8; 8]>(f, ip).ok_or(Miss::Malformed)?;
    // SAFETY: bounds checked by `pulled`.
    let h = unsafe { *h };
    if h[6] != ICMPV6 && h[6] != HOP_BY_HOP && h[6] != ROUTING && h[6] != DEST_OPTS {
        return Err(Miss::Pass);
    }
    // The ICMPv6 header, an NS's source and an NA's target, when the frame has the IPv6 header
    // and an NS's or NA's fixed part in one piece (all values: they outlive later helper calls).
    let (whole, icmp8, source, target) = match parse::pulled::<F, [u8; IPV6_LEN + 24]>(f, ip) {
        // SAFETY: bounds checked by `pulled`.
        Some(p) => unsafe {
            let p = p as *const u8;
            (
                true,
                p.add(IPV6_LEN).cast::<[u8; 8]>().read_unaligned(),
                p.add(8).cast::<[u32; 4]>().read_unaligned(),
                p.add(IPV6_LEN + 8).cast::<[u32; 4]>().read_unaligned(),
            )
        },
        None => (false, [0; 8], [0; 4], [0; 4]),
    };
    let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let mut next = h[6];
    let end = ip + IPV6_LEN + payload;
    if end > f.len() || end > MAX_OFFSET {
        return Err(Miss::Malformed);
    }
    let mut at = ip + IPV6_LEN;
    for _ in 0..MAX_EXT {
        if next != HOP_BY_HOP && next != ROUTING && next != DEST_OPTS {
            break;
        }
        let e = bytes(f.load8(at).ok_or(Miss::Malformed)?);
        next = e[0];
        at = (at + (usize::from(e[1]) + 1) * 8) & MAX_OFFSET;
    }
    if next != ICMPV6 {
        // A chain longer than the walk could hide an ND message; anything else (a fragment
        // header, another protocol) passes.
        let unwalked = next == HOP_BY_HOP || next == ROUTING || next == DEST_OPTS;
        return Err(if strict && unwalked {
            Miss::Malformed
        } else {
            Miss::Pass
        });
    }
    let in_place = whole && at == ip + IPV6_LEN;
    let icmp = if in_place {
        icmp8
    } else {
        bytes(f.load8(at).ok_or(Miss::Malformed)?)
    };
    let kind = icmp[0];
    if !(RS..=REDIRECT).contains(&kind) {
        return Err(Miss::Pass);
    }
    if end < at + fixed_len(kind) {
        return Err(Miss::Malformed);
    }
    let claimed = match kind {
        NS if in_place => Some(source),
        NA if in_place => Some(target),
        _ => None,
    };
    Ok(Message {
        ip,
        icmp: at,
        end,
        kind,
        csum: u16::from_le_bytes([icmp[2], icmp[3]]),
        claimed,
    })
}

/// Bytes of each message before its options.
#[inline(always)]
fn fixed_len(kind: u8) -> usize {
    match kind {
        RS => 8,
        RA => 16,
        NS | NA => 24,
        _ => 40,
    }
}

/// The type of the option that holds the address the sender of a message of `kind` claims for
/// itself (what port security checks): the SLLAO of RS, RA and NS, the TLLAO of NA. An NA's SLLAO
/// is no claim (receivers ignore it), nor is any option of a Redirect (0: none).
#[inline(always)]
fn claim(kind: u8) -> u8 {
    match kind {
        NA => TARGET_LL,
        REDIRECT => 0,
        _ => SOURCE_LL,
    }
}

/// Runs `each(option type, MAC)` on every Ethernet link-layer option of `m`, writing back the
/// MACs it replaces and the checksum; `Ok(true)` when something was replaced, `Ok(false)` when
/// not, `Err(outcome)` to stop: `each` said so, or an option is zero-length or cut, or (when
/// `strict`) there are more options than the walk takes.
#[inline(always)]
fn options<F: Frame>(
    f: &mut F,
    m: &Message,
    strict: bool,
    mut each: impl FnMut(u8, Mac) -> Step,
) -> Result<bool, Outcome> {
    let mut csum = m.csum;
    // Replacements, counted from the original checksum: a MAC whose words sum like the one it
    // replaces leaves the checksum as it was, and is still a rewrite. The count is compared with
    // a value the verifier cannot relate to it (`black_box`), so that the walk's states do not
    // split on it (a flag, or a count from zero, doubles the verifier's work here).
    let mut replaced = u32::from(m.csum);
    let mut at = m.icmp + fixed_len(m.kind);
    let mut done = false;
    for _ in 0..MAX_OPTS {
        // The same range on every path, so that the verifier can prune (a bound for it only).
        at &= MAX_OFFSET;
        if at >= m.end {
            done = true;
            break;
        }
        let v = f.load8(at).ok_or(Outcome::Malformed)?;
        let (kind, len) = (bytes(v)[0], usize::from(bytes(v)[1]) * 8);
        if len == 0 || at + len > m.end {
            return Err(Outcome::Malformed);
        }
        if (kind == SOURCE_LL || kind == TARGET_LL) && len == 8 {
            let mac = option_mac(v);
            match each(kind, mac) {
                Step::Keep => {}
                Step::Replace(new) => {
                    if !f.store8(at, with_mac(v, new)) {
                        return Err(Outcome::Malformed);
                    }
                    csum = csum::replace_mac(csum, mac, new);
                    replaced += 1;
                }
                Step::Stop(o) => return Err(o),
            }
        }
        at += len;
    }
    if strict && !done && at < m.end {
        return Err(Outcome::Malformed);
    }
    if csum == m.csum && replaced == u32::from(core::hint::black_box(m.csum)) {
        return Ok(false);
    }
    if !f.store2(m.icmp + 2, csum) {
        return Err(Outcome::Malformed);
    }
    Ok(true)
}

/// From the VM: options holding the port's inside MAC -> outside MAC; claims of another MAC are
/// port-security drops (or spoofs from an outside pool); the addresses the VM claims for itself
/// (an NS's source, an NA's target) are reported. `bound` is the binding of the frame's source.
/// `None` when nothing changed.
#[inline(always)]
pub fn from_vm<F: Frame, B: Bindings>(
    f: &mut F,
    b: &B,
    ip: usize,
    src: Mac,
    bound: Option<*mut Binding>,
) -> Option<Outcome> {
    let m = match find(f, ip, B::PORT) {
        Ok(m) => m,
        Err(Miss::Pass) => return None,
        Err(Miss::Malformed) => return Some(Outcome::Malformed),
    };
    let secured = b.secured().is_some();
    let claim = claim(m.kind);
    let rewritten = options(f, &m, B::PORT, |opt, mac| match b.binding(mac) {
        // SAFETY: `bd` is a live map value.
        Some(bd) => Step::Replace(unsafe { outside_of(bd) }),
        None if secured && opt == claim => Step::Stop(Outcome::PortSecurityDropped),
        None if B::PORT && mac.can_bind() && maps::in_pool(mac) => {
            Step::Stop(Outcome::SpoofDropped)
        }
        None => Step::Keep,
    });
    let rewritten = match rewritten {
        Ok(r) => r,
        Err(o) => return Some(o),
    };
    if let Some(bd) = bound {
        learn(f, b, &m, src, bd);
    }
    rewritten.then_some(Outcome::NdRewritten)
}

/// Reports the address an NS (other than DAD's, from ::) or an NA claims for the VM.
#[inline(always)]
fn learn<F: Frame, B: Bindings>(f: &F, b: &B, m: &Message, src: Mac, bd: *mut Binding) {
    let at = match m.kind {
        NS => m.ip + 8,
        NA => m.icmp + 8,
        _ => return,
    };
    let addr = if let Some(a) = m.claimed {
        a
    } else {
        let (Some(a), Some(z)) = (f.load8(at), f.load8(at + 8)) else {
            return;
        };
        [a as u32, (a >> 32) as u32, z as u32, (z >> 32) as u32]
    };
    if m.kind == NS && addr == [0; 4] {
        return;
    }
    maps::learn6(bd, b.ifindex(), src, addr);
}

/// To the VM: options holding the port's outside MAC -> inside MAC; the VM's own NS or NA coming
/// back (from its outside MAC `src`) is dropped. `None` when nothing changed.
#[inline(always)]
pub fn to_vm<F: Frame, B: Bindings>(f: &mut F, b: &B, ip: usize, src: Mac) -> Option<Outcome> {
    let m = match find(f, ip, false) {
        Ok(m) => m,
        Err(Miss::Pass) => return None,
        Err(Miss::Malformed) => return Some(Outcome::Malformed),
    };
    if B::PORT && (m.kind == NS || m.kind == NA) && b.is_own_outside(src) {
        return Some(Outcome::Reflected);
    }
    match options(f, &m, false, |_, mac| {
        b.inside_of(mac).map_or(Step::Keep, Step::Replace)
    }) {
        Ok(rewritten) => rewritten.then_some(Outcome::NdRewritten),
        Err(o) => Some(o),
    }
}
