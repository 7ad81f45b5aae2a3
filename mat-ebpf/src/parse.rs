//! The header walk shared by every program: Ethernet, up to two VLAN tags, then the one layer-3
//! header the rules look into (ARP/RARP, IPv4 for DHCP, IPv6 for ND).

use network_types::{arp::ArpHdr, eth::EthHdr, vlan::VlanHdr};

use crate::frame::Frame;

// Ethertypes as they sit in the frame (network order).
const ARP: u16 = 0x0806u16.to_be();
const RARP: u16 = 0x8035u16.to_be();
const IPV4: u16 = 0x0800u16.to_be();
const IPV6: u16 = 0x86ddu16.to_be();
const VLAN_8021Q: u16 = 0x8100u16.to_be();
const VLAN_8021AD: u16 = 0x88a8u16.to_be();

/// At most this many VLAN tags, counting one that TC sees offloaded into metadata.
const MAX_TAGS: usize = 2;

/// What follows the Ethernet header and its tags.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// ARP or RARP body at this offset.
    Arp(usize),
    Ipv4(usize),
    Ipv6(usize),
    /// Nothing the rules look into.
    Other,
    /// More tags than the walk takes: whatever is behind them was not seen.
    TooDeep,
}

/// The one test on the fast path: whether a frame with this outer ethertype can carry anything
/// past the Ethernet header that the rules rewrite.
#[inline(always)]
pub fn may_carry_more(ether_type: u16) -> bool {
    ether_type == IPV4
        || ether_type == IPV6
        || ether_type == ARP
        || ether_type == RARP
        || is_vlan(ether_type)
}

fn is_vlan(ether_type: u16) -> bool {
    ether_type == VLAN_8021Q || ether_type == VLAN_8021AD
}

/// Walks the VLAN tags; `Err(())` if one is cut short.
#[inline(always)]
pub fn l3<F: Frame>(f: &F) -> Result<L3, ()> {
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
    Ok(match ether_type {
        ARP | RARP => L3::Arp(offset),
        IPV4 => L3::Ipv4(offset),
        IPV6 => L3::Ipv6(offset),
        t if is_vlan(t) => L3::TooDeep,
        _ => L3::Other,
    })
}

/// A `T` at `offset`, made linear first; `None` if the frame is cut short.
#[inline(always)]
pub fn pulled<F: Frame, T>(f: &mut F, offset: usize) -> Option<*mut T> {
    if !f.pull(offset + core::mem::size_of::<T>()) {
        return None;
    }
    f.ptr_at::<T>(offset)
}

/// The Ethernet/IPv4 ARP or RARP body at `offset`: `Ok(None)` for one of other hardware or
/// protocols, `Err(())` if the body is cut short.
#[inline(always)]
pub fn ether_ipv4_arp<F: Frame>(f: &mut F, offset: usize) -> Result<Option<*mut ArpHdr>, ()> {
    let arp = pulled::<F, ArpHdr>(f, offset).ok_or(())?;
    Ok(is_ether_ipv4(arp).then_some(arp))
}

/// The only ARP the rules touch: Ethernet hardware addresses, IPv4 protocol addresses.
#[inline(always)]
fn is_ether_ipv4(arp: *const ArpHdr) -> bool {
    // SAFETY: the caller got `arp` from `pulled`.
    unsafe {
        (*arp).htype == 1u16.to_be_bytes()
            && (*arp).ptype == 0x0800u16.to_be_bytes()
            && (*arp).hlen == 6
            && (*arp).plen == 4
    }
}
