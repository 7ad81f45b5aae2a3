//! The translation rules of DESIGN.md, written once for every program. Directions are from the
//! VM's point of view.

use core::ptr::addr_of_mut;

use mat_common::counters::Outcome;
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
    let mut outside = None;
    if src.can_bind() {
        match maps::from_vm(ifindex, src) {
            Some(b) => {
                // SAFETY: `b` points at a live map value; `src_p` as above.
                let out = unsafe { Mac::read((*b).mac.as_ptr()) };
                unsafe { out.write(src_p) };
                maps::announce_if_pending(b, ifindex, src);
                outside = Some(out);
            }
            None if mode == Mode::Port && maps::in_pool(src) => return Outcome::SpoofDropped,
            None => {}
        }
    }
    let outcome = if outside.is_some() {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    if !parse::may_carry_arp(ether_type) {
        return outcome;
    }
    arp_from_vm(f, ifindex, mode, src, outside).unwrap_or(outcome)
}

/// The ARP/RARP part of [`from_vm`]; `None` when no ARP field changed. `src` is the frame's
/// original source and `outside` its translation, reused when the ARP names the same MAC.
#[inline(always)]
fn arp_from_vm<F: Frame>(
    f: &mut F,
    ifindex: u32,
    mode: Mode,
    src: Mac,
    outside: Option<Mac>,
) -> Option<Outcome> {
    let offset = match parse::arp_offset(f) {
        Ok(Some(offset)) => offset,
        Ok(None) => return None,
        Err(()) => return Some(Outcome::Malformed),
    };
    let Some(arp) = parse::arp_at(f, offset) else {
        return Some(Outcome::Malformed);
    };
    if !parse::is_ether_ipv4(arp) {
        return None;
    }
    // SAFETY: `arp` is bounds checked for the whole ARP body.
    let (sha_p, tha_p, spa) = unsafe {
        (
            addr_of_mut!((*arp).sha) as *mut u8,
            addr_of_mut!((*arp).tha) as *mut u8,
            (*arp).spa,
        )
    };
    // SAFETY: as above.
    let (sha, tha) = unsafe { (Mac::read(sha_p), Mac::read(tha_p)) };
    let sha_out = translate_from_vm(ifindex, sha, src, outside);
    match sha_out {
        Some(out) => {
            // SAFETY: as above.
            unsafe { out.write(sha_p) };
            if spa != [0; 4] {
                maps::learn(ifindex, sha, spa);
            }
        }
        // An unbound sender from the outside pool claims another VM's MAC.
        None if mode == Mode::Port && sha.can_bind() && maps::in_pool(sha) => {
            return Some(Outcome::SpoofDropped)
        }
        None => {}
    }
    let tha_out = translate_from_vm(ifindex, tha, sha, sha_out);
    if let Some(out) = tha_out {
        // SAFETY: as above.
        unsafe { out.write(tha_p) };
    }
    (sha_out.is_some() || tha_out.is_some()).then_some(Outcome::ArpRewritten)
}

/// `mac`'s outside MAC, reusing `known -> known_out` when it is the same address.
#[inline(always)]
fn translate_from_vm(ifindex: u32, mac: Mac, known: Mac, known_out: Option<Mac>) -> Option<Mac> {
    if mac == known {
        return known_out;
    }
    if !mac.can_bind() {
        return None;
    }
    // SAFETY: the lookup returns a pointer to a live map value.
    maps::from_vm(ifindex, mac).map(|b| unsafe { Mac::read((*b).mac.as_ptr()) })
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
    let offset = match parse::arp_offset(f) {
        Ok(Some(offset)) => offset,
        Ok(None) => return None,
        Err(()) => return Some(Outcome::Malformed),
    };
    let Some(arp) = parse::arp_at(f, offset) else {
        return Some(Outcome::Malformed);
    };
    if !parse::is_ether_ipv4(arp) {
        return None;
    }
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
