//! DHCPv4 (RFC 2131) through MAT. By default a VM's request keeps its own MAC in chaddr, so the
//! lease follows the VM across hosts, and gets the broadcast flag, so that the server's reply is
//! not sent to an inside MAC. With `SETTING_DHCP_TRANSLATE` (for fabrics whose DHCP snooping
//! wants Ethernet source == chaddr), chaddr is translated instead, and back in replies. The UDP
//! checksum is updated (zero stays zero); IPv4 fragments pass untouched.
//!
//! Past the IPv4 header, reads and writes go through [`Frame::load8`] and [`Frame::store8`]
//! (the UDP offset comes from the frame).

use mat_common::maps::SETTING_DHCP_TRANSLATE;

use crate::{
    bindings::{Bindings, outside_of},
    frame::Frame,
    mac::Mac,
    maps,
};

const UDP: u8 = 17;
const SERVER: u16 = 67;
const CLIENT: u16 = 68;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// BOOTP offsets from the start of the UDP payload: secs and flags, chaddr.
const SECS: usize = 8;
const CHADDR: usize = 28;
/// The broadcast bit of `flags`, in its first byte on the wire.
const BROADCAST: u8 = 0x80;

/// A DHCP message: where its IPv4 header and BOOTP part start, where the UDP checksum is, the
/// checksum, and whether it is read and written in place (no IPv4 options: every offset is one
/// of three) or through helper calls. The checksum is always updated through
/// [`Frame::udp_csum_replace`].
struct Message {
    ip: usize,
    bootp: usize,
    csum_at: usize,
    csum: u16,
    in_place: bool,
}

/// Where BOOTP starts in a packet without IPv4 options, from the IPv4 header.
const BOOTP_IN_PLACE: usize = 20 + 8;

impl Message {
    /// The 8 bytes at `off` into BOOTP.
    #[inline(always)]
    fn read8<F: Frame>(&self, f: &F, off: usize) -> Option<u64> {
        if self.in_place {
            let p = f.ptr_at::<[u8; 8]>(self.ip + BOOTP_IN_PLACE + off)?;
            // SAFETY: bounds checked by `ptr_at`.
            Some(u64::from_le_bytes(unsafe { *p }))
        } else {
            f.load8(self.bootp + off)
        }
    }

    #[inline(always)]
    fn write8<F: Frame>(&self, f: &mut F, off: usize, v: u64) -> bool {
        if self.in_place {
            let Some(p) = f.ptr_at::<[u8; 8]>(self.ip + BOOTP_IN_PLACE + off) else {
                return false;
            };
            // SAFETY: bounds checked by `ptr_at`.
            unsafe { *p = v.to_le_bytes() };
            true
        } else {
            f.store8(self.bootp + off, v)
        }
    }
}

/// The BOOTP message of a DHCP packet from port `from` to port `to` with opcode `op` (Ethernet
/// hardware addresses only) in the IPv4 packet at `ip`.
#[inline(always)]
fn find<F: Frame>(f: &F, ip: usize, from: u16, to: u16, op: u8) -> Option<Message> {
    let hdr = f.ptr_at::<[u8; 20]>(ip)?;
    // SAFETY: bounds checked by `ptr_at`.
    let (vihl, frag, proto) = unsafe { ((*hdr)[0], [(*hdr)[6], (*hdr)[7]], (*hdr)[9]) };
    // A fragment (more-fragments bit or an offset) is left alone, as is anything but UDP.
    if vihl >> 4 != 4 || vihl & 0x0f < 5 || proto != UDP || frag[0] & 0x3f != 0 || frag[1] != 0 {
        return None;
    }
    let udp = ip + usize::from(vihl & 0x0f) * 4;
    let bootp = udp + 8;
    // Most packets have no IPv4 options: their UDP header and the start of BOOTP are read in
    // place, so that UDP that is not DHCP costs no helper call.
    let (u, head) = if vihl & 0x0f == 5 {
        let p = f.ptr_at::<[u8; 12]>(ip + 20)?;
        // SAFETY: bounds checked by `ptr_at`.
        let p = unsafe { *p };
        let mut u = [0u8; 8];
        let mut head = [0u8; 8];
        u.copy_from_slice(&p[..8]);
        head[..4].copy_from_slice(&p[8..]);
        (u, head)
    } else {
        (f.load8(udp)?.to_le_bytes(), f.load8(bootp)?.to_le_bytes())
    };
    if u16::from_be_bytes([u[0], u[1]]) != from || u16::from_be_bytes([u[2], u[3]]) != to {
        return None;
    }
    if head[0] != op || head[1] != 1 || head[2] != 6 {
        return None;
    }
    Some(Message {
        ip,
        bootp,
        csum_at: udp + 6,
        csum: u16::from_le_bytes([u[6], u[7]]),
        in_place: vihl & 0x0f == 5,
    })
}

/// Replaces chaddr `old` (first 8 bytes `v`) with `new`.
#[inline(always)]
fn set_chaddr<F: Frame>(f: &mut F, m: &Message, v: u64, old: Mac, new: Mac) -> Option<()> {
    let (hi, lo) = new.parts();
    let v = (v & !0xffff_ffff_ffff) | u64::from(hi) | u64::from(lo) << 32;
    (m.write8(f, CHADDR, v) && f.udp_csum_replace(m.csum_at, m.csum, old.words(), new.words()))
        .then_some(())
}

#[inline(always)]
fn chaddr(v: u64) -> Mac {
    Mac::from_parts(v as u32, (v >> 32) as u16)
}

/// From the VM: a request of a bound VM gets the broadcast flag, or (translating) its chaddr
/// inside -> outside. `None` when nothing changed.
#[inline(always)]
pub fn from_vm<F: Frame, B: Bindings>(f: &mut F, b: &B, ip: usize) -> Option<()> {
    let m = find(f, ip, CLIENT, SERVER, BOOTREQUEST)?;
    if maps::settings() & SETTING_DHCP_TRANSLATE != 0 {
        let v = m.read8(f, CHADDR)?;
        let old = chaddr(v);
        // SAFETY: the binding is a live map value.
        let new = unsafe { outside_of(b.binding(old)?) };
        return set_chaddr(f, &m, v, old, new);
    }
    let v = m.read8(f, SECS)?;
    let mut w = v.to_le_bytes();
    if w[2] & BROADCAST != 0 {
        return None;
    }
    let old = u16::from_le_bytes([w[2], w[3]]);
    w[2] |= BROADCAST;
    let new = u16::from_le_bytes([w[2], w[3]]);
    (m.write8(f, SECS, u64::from_le_bytes(w))
        && f.udp_csum_replace(m.csum_at, m.csum, [old], [new]))
    .then_some(())
}

/// To the VM (translating only): a reply's chaddr outside -> inside. `None` when nothing changed.
#[inline(always)]
pub fn to_vm<F: Frame, B: Bindings>(f: &mut F, b: &B, ip: usize) -> Option<()> {
    if maps::settings() & SETTING_DHCP_TRANSLATE == 0 {
        return None;
    }
    let m = find(f, ip, SERVER, CLIENT, BOOTREPLY)?;
    let v = m.read8(f, CHADDR)?;
    let old = chaddr(v);
    let new = b.inside_of(old)?;
    set_chaddr(f, &m, v, old, new)
}
