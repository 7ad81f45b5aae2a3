//! The header walk shared by every program: Ethernet, up to two VLAN tags, ARP/RARP.

use network_types::{arp::ArpHdr, eth::EthHdr, vlan::VlanHdr};

use crate::frame::Frame;

// Ethertypes as they sit in the frame (network order).
const ARP: u16 = 0x0806u16.to_be();
const RARP: u16 = 0x8035u16.to_be();
const VLAN_8021Q: u16 = 0x8100u16.to_be();
const VLAN_8021AD: u16 = 0x88a8u16.to_be();

/// At most this many VLAN tags, counting one that TC sees offloaded into metadata.
const MAX_TAGS: usize = 2;

/// The one test on the fast path: whether a frame with this outer ethertype can hold an ARP/RARP
/// body. Everything else is done once the Ethernet header is translated.
#[inline(always)]
pub fn may_carry_arp(ether_type: u16) -> bool {
    ether_type == ARP || ether_type == RARP || ether_type == VLAN_8021Q || ether_type == VLAN_8021AD
}

fn is_vlan(ether_type: u16) -> bool {
    ether_type == VLAN_8021Q || ether_type == VLAN_8021AD
}

/// The frame's Ethernet/IPv4 ARP or RARP body (past up to two VLAN tags, made linear),
/// `Ok(None)` if it carries none (or one for other hardware or protocols), `Err(())` if a VLAN tag
/// or the body is cut short.
#[inline(always)]
pub fn ether_ipv4_arp<F: Frame>(f: &mut F) -> Result<Option<*mut ArpHdr>, ()> {
    let Some(offset) = arp_offset(f)? else {
        return Ok(None);
    };
    let arp = arp_at(f, offset).ok_or(())?;
    Ok(is_ether_ipv4(arp).then_some(arp))
}

/// Offset of the ARP/RARP body past any VLAN tags, `Ok(None)` if the frame carries none, and
/// `Err(())` if a VLAN tag is cut short.
#[inline(always)]
fn arp_offset<F: Frame>(f: &F) -> Result<Option<usize>, ()> {
    let eth = f.ptr_at::<EthHdr>(0).ok_or(())?;
    // SAFETY: bounds checked by `ptr_at`.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut offset = EthHdr::LEN;
    let mut tags = f.offloaded_tags();
    while is_vlan(ether_type) && tags < MAX_TAGS {
        let vlan = f.ptr_at::<VlanHdr>(offset).ok_or(())?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = unsafe { (*vlan).ether_type };
        offset += VlanHdr::LEN;
        tags += 1;
    }
    Ok((ether_type == ARP || ether_type == RARP).then_some(offset))
}

/// The ARP/RARP body at `offset`, made linear first; `None` if the frame is cut short.
#[inline(always)]
fn arp_at<F: Frame>(f: &mut F, offset: usize) -> Option<*mut ArpHdr> {
    if !f.pull(offset + ArpHdr::LEN) {
        return None;
    }
    f.ptr_at::<ArpHdr>(offset)
}

/// The only ARP the rules touch: Ethernet hardware addresses, IPv4 protocol addresses.
#[inline(always)]
fn is_ether_ipv4(arp: *const ArpHdr) -> bool {
    // SAFETY: the caller got `arp` from `arp_at`.
    unsafe {
        (*arp).htype == 1u16.to_be_bytes()
            && (*arp).ptype == 0x0800u16.to_be_bytes()
            && (*arp).hlen == 6
            && (*arp).plen == 4
    }
}
