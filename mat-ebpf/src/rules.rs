//! The translation rules of DESIGN.md, written once for every program. Directions are from the
//! VM's point of view.

use core::ptr::addr_of_mut;

use mat_common::{counters::Outcome, maps::Binding};
use network_types::eth::EthHdr;

use crate::{frame::Frame, mac::Mac, maps, parse};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a VM port: spoof check, reflection check.
    Port,
    /// On the uplink: bindings keyed by MAC only, no per-port checks.
    Uplink,
}

/// From the VM: Ethernet source and ARP/RARP sender and target inside -> outside.
#[inline(always)]
pub fn from_vm<F: Frame>(f: &mut F, ifindex: u32, mode: Mode) -> Outcome {
    let Some(eth) = f.ptr_at::<EthHdr>(0) else {
        return Outcome::Malformed;
    };
    // SAFETY: `eth` is bounds checked; all accesses below stay inside the Ethernet header.
    let (src_p, ether_type) =
        unsafe { (addr_of_mut!((*eth).src_addr) as *mut u8, (*eth).ether_type) };
    // SAFETY: as above.
    let src = unsafe { Mac::read(src_p) };
    let bound = lookup_from_vm(ifindex, src);
    match bound {
        Some(b) => {
            // SAFETY: `b` points at a live map value; `src_p` as above.
            unsafe { outside_of(b).write(src_p) };
            maps::announce_if_pending(b, ifindex, src);
        }
        None if mode == Mode::Port && src.can_bind() && maps::in_pool(src) => {
            return Outcome::SpoofDropped
        }
        None => {}
    }
    let outcome = if bound.is_some() {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    if !parse::may_carry_arp(ether_type) {
        return outcome;
    }
    arp_from_vm(f, ifindex, mode, src, bound).unwrap_or(outcome)
}

/// The ARP/RARP part of [`from_vm`]; `None` when no ARP field changed. `src` is the frame's
/// original source and `bound` its binding, reused when the ARP names the same MAC.
#[inline(always)]
fn arp_from_vm<F: Frame>(
    f: &mut F,
    ifindex: u32,
    mode: Mode,
    src: Mac,
    bound: Option<*mut Binding>,
) -> Option<Outcome> {
    let arp = match parse::ether_ipv4_arp(f) {
        Ok(Some(arp)) => arp,
        Ok(None) => return None,
        Err(()) => return Some(Outcome::Malformed),
    };
    // SAFETY: `arp` is bounds checked for the whole ARP body; the IPv4 address is 2-byte aligned
    // like the MACs (see mac.rs).
    let (sha_p, tha_p, spa) = unsafe {
        (
            addr_of_mut!((*arp).sha) as *mut u8,
            addr_of_mut!((*arp).tha) as *mut u8,
            (addr_of_mut!((*arp).spa) as *const u32).read(),
        )
    };
    // SAFETY: as above.
    let (sha, tha) = unsafe { (Mac::read(sha_p), Mac::read(tha_p)) };
    let sha_bound = if sha == src {
        bound
    } else {
        lookup_from_vm(ifindex, sha)
    };
    let sha_out = match sha_bound {
        Some(b) => {
            // SAFETY: `b` points at a live map value; `sha_p` as above.
            let out = unsafe { outside_of(b) };
            unsafe { out.write(sha_p) };
            if spa != 0 {
                maps::learn(b, ifindex, sha, spa);
            }
            Some(out)
        }
        // An unbound sender from the outside pool claims another VM's MAC.
        None if mode == Mode::Port && sha.can_bind() && maps::in_pool(sha) => {
            return Some(Outcome::SpoofDropped)
        }
        None => None,
    };
    let tha_out = if tha == sha {
        sha_out
    } else {
        // SAFETY: the lookup returns a pointer to a live map value.
        lookup_from_vm(ifindex, tha).map(|b| unsafe { outside_of(b) })
    };
    if let Some(out) = tha_out {
        // SAFETY: as above.
        unsafe { out.write(tha_p) };
    }
    (sha_out.is_some() || tha_out.is_some()).then_some(Outcome::ArpRewritten)
}

/// `mac`'s from-VM binding on `ifindex`; only addresses that can be bound are looked up.
#[inline(always)]
fn lookup_from_vm(ifindex: u32, mac: Mac) -> Option<*mut Binding> {
    if !mac.can_bind() {
        return None;
    }
    maps::from_vm(ifindex, mac)
}

/// The outside MAC a from-VM binding holds.
///
/// # Safety
/// `b` must point at a live map value.
#[inline(always)]
unsafe fn outside_of(b: *const Binding) -> Mac {
    Mac::read((*b).mac.as_ptr())
}

/// To the VM: Ethernet destination and ARP/RARP target outside -> inside.
#[inline(always)]
pub fn to_vm<F: Frame>(f: &mut F, ifindex: u32, mode: Mode) -> Outcome {
    let Some(eth) = f.ptr_at::<EthHdr>(0) else {
        return Outcome::Malformed;
    };
    // SAFETY: `eth` is bounds checked; all accesses below stay inside the Ethernet header.
    let (dst_p, ether_type) =
        unsafe { (addr_of_mut!((*eth).dst_addr) as *mut u8, (*eth).ether_type) };
    // SAFETY: as above.
    let dst = unsafe { Mac::read(dst_p) };
    let inside = lookup_to_vm(ifindex, dst);
    if let Some(inside) = inside {
        // SAFETY: as above.
        unsafe { inside.write(dst_p) };
    }
    let outcome = if inside.is_some() {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    if !parse::may_carry_arp(ether_type) {
        return outcome;
    }
    arp_to_vm(f, ifindex, mode, dst, inside).unwrap_or(outcome)
}

/// The ARP/RARP part of [`to_vm`]; `None` when no ARP field changed.
#[inline(always)]
fn arp_to_vm<F: Frame>(
    f: &mut F,
    ifindex: u32,
    mode: Mode,
    dst: Mac,
    inside: Option<Mac>,
) -> Option<Outcome> {
    let arp = match parse::ether_ipv4_arp(f) {
        Ok(Some(arp)) => arp,
        Ok(None) => return None,
        Err(()) => return Some(Outcome::Malformed),
    };
    // SAFETY: `arp` is bounds checked for the whole ARP body.
    let (sha_p, tha_p) = unsafe {
        (
            addr_of_mut!((*arp).sha) as *const u8,
            addr_of_mut!((*arp).tha) as *mut u8,
        )
    };
    // SAFETY: as above.
    let (sha, tha) = unsafe { (Mac::read(sha_p), Mac::read(tha_p)) };
    // The VM's own announcement, flooded back to it through the bridge.
    if mode == Mode::Port && sha.can_bind() && maps::to_vm(ifindex, sha).is_some() {
        return Some(Outcome::Reflected);
    }
    let tha_in = translate_to_vm(ifindex, tha, dst, inside)?;
    // SAFETY: as above.
    unsafe { tha_in.write(tha_p) };
    Some(Outcome::ArpRewritten)
}

/// `mac`'s inside MAC, reusing `known -> known_in` (already looked up) when it is the same address.
#[inline(always)]
fn translate_to_vm(ifindex: u32, mac: Mac, known: Mac, known_in: Option<Mac>) -> Option<Mac> {
    if mac == known {
        return known_in;
    }
    lookup_to_vm(ifindex, mac)
}

#[inline(always)]
fn lookup_to_vm(ifindex: u32, mac: Mac) -> Option<Mac> {
    if !mac.can_bind() {
        return None;
    }
    // SAFETY: the lookup returns a pointer to a live map value.
    maps::to_vm(ifindex, mac).map(|b| unsafe { Mac::read((*b).mac.as_ptr()) })
}
