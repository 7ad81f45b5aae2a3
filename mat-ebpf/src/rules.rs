//! The translation rules of DESIGN.md, written once for every program over [`Bindings`] (the
//! port table on a VM port, the MAC-keyed maps on the uplink). Directions are from the VM's
//! point of view. The Ethernet header is the fast path; ARP, ND and DHCP are looked into only
//! when the ethertype can carry them.

use core::ptr::addr_of_mut;

use mat_common::counters::Outcome;
use network_types::eth::EthHdr;

use crate::{
    arp,
    bindings::{Bindings, outside_of},
    dhcp,
    frame::Frame,
    mac::Mac,
    maps, nd,
    parse::{self, L3},
};

/// From the VM: Ethernet source inside -> outside, then ARP, ND and DHCP.
#[inline(always)]
pub fn from_vm<F: Frame, B: Bindings>(f: &mut F, b: &B) -> Outcome {
    let Some(eth) = f.ptr_at::<EthHdr>(0) else {
        return Outcome::Malformed;
    };
    // SAFETY: `eth` is bounds checked; all accesses below stay inside the Ethernet header.
    let (src_p, ether_type) = unsafe {
        (
            addr_of_mut!((*eth).src_addr).cast::<u8>(),
            (*eth).ether_type,
        )
    };
    // SAFETY: as above.
    let src = unsafe { Mac::read(src_p) };
    let bound = b.binding(src);
    match bound {
        Some(bd) => {
            // SAFETY: `bd` points at a live map value; `src_p` as above.
            unsafe { outside_of(bd).write(src_p) };
            maps::announce_if_pending(bd, b.ifindex(), src);
        }
        None if b.secured().is_some() => return Outcome::PortSecurityDropped,
        None if B::PORT && src.can_bind() && maps::in_pool(src) => return Outcome::SpoofDropped,
        None => {}
    }
    let outcome = if bound.is_some() {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    if !parse::may_carry_more(ether_type) {
        return outcome;
    }
    match parse::l3(f) {
        Err(()) => Outcome::Malformed,
        Ok(L3::Arp(at)) => arp::from_vm(f, b, at, src, bound).unwrap_or(outcome),
        Ok(L3::Ipv6(at)) => nd::from_vm(f, b, at, src, bound).unwrap_or(outcome),
        // Only a bound VM's requests: the host's own DHCP on the uplink stays as it is.
        Ok(L3::Ipv4(at)) if bound.is_some() => {
            dhcp::from_vm(f, b, at).map_or(outcome, |()| Outcome::DhcpRewritten)
        }
        // Tags the walk cannot pass could hide an ARP or ND body with the inside MAC.
        Ok(L3::TooDeep) if B::PORT => Outcome::Malformed,
        Ok(_) => outcome,
    }
}

/// To the VM: Ethernet destination outside -> inside, then ARP, ND and DHCP.
#[inline(always)]
pub fn to_vm<F: Frame, B: Bindings>(f: &mut F, b: &B) -> Outcome {
    let Some(eth) = f.ptr_at::<EthHdr>(0) else {
        return Outcome::Malformed;
    };
    // SAFETY: `eth` is bounds checked; all accesses below stay inside the Ethernet header.
    let (dst_p, src_p, ether_type) = unsafe {
        (
            addr_of_mut!((*eth).dst_addr).cast::<u8>(),
            addr_of_mut!((*eth).src_addr) as *const u8,
            (*eth).ether_type,
        )
    };
    // SAFETY: as above.
    let (dst, src) = unsafe { (Mac::read(dst_p), Mac::read(src_p)) };
    let inside = b.inside_of(dst);
    if let Some(inside) = inside {
        // SAFETY: as above.
        unsafe { inside.write(dst_p) };
    }
    let outcome = if inside.is_some() {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    if !parse::may_carry_more(ether_type) {
        return outcome;
    }
    match parse::l3(f) {
        Err(()) => Outcome::Malformed,
        Ok(L3::Arp(at)) => arp::to_vm(f, b, at, dst, inside).unwrap_or(outcome),
        Ok(L3::Ipv6(at)) => nd::to_vm(f, b, at, src).unwrap_or(outcome),
        Ok(L3::Ipv4(at)) => dhcp::to_vm(f, b, at).map_or(outcome, |()| Outcome::DhcpRewritten),
        Ok(_) => outcome,
    }
}
