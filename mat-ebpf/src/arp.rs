//! ARP and RARP (Ethernet/IPv4 only): sender and target hardware addresses.

use core::ptr::addr_of_mut;

use mat_common::{counters::Outcome, maps::Binding};

use crate::{
    bindings::{Bindings, outside_of},
    frame::Frame,
    mac::Mac,
    maps, parse,
};

/// From the VM: sender and target inside -> outside; the sender's IPv4 address is learned.
/// `src` is the frame's original source and `bound` its binding, reused when the ARP names the
/// same MAC. `None` when no ARP field changed.
#[inline(always)]
pub fn from_vm<F: Frame, B: Bindings>(
    f: &mut F,
    b: &B,
    offset: usize,
    src: Mac,
    bound: Option<*mut Binding>,
) -> Option<Outcome> {
    let arp = match parse::ether_ipv4_arp(f, offset) {
        Ok(Some(arp)) => arp,
        // Another hardware or protocol: its body cannot be read, so a port that may only claim
        // its own MAC may not send it.
        Ok(None) if b.secured().is_some() => return Some(Outcome::PortSecurityDropped),
        Ok(None) => return None,
        Err(()) => return Some(Outcome::Malformed),
    };
    // SAFETY: `arp` is bounds checked for the whole ARP body; the IPv4 address is 2-byte aligned
    // like the MACs (see mac.rs).
    let (sha_p, tha_p, spa) = unsafe {
        (
            addr_of_mut!((*arp).sha).cast::<u8>(),
            addr_of_mut!((*arp).tha).cast::<u8>(),
            (addr_of_mut!((*arp).spa) as *const u32).read(),
        )
    };
    // SAFETY: as above.
    let (sha, tha) = unsafe { (Mac::read(sha_p), Mac::read(tha_p)) };
    let sha_bound = if sha == src { bound } else { b.binding(sha) };
    let sha_out = match sha_bound {
        Some(bd) => {
            // SAFETY: `bd` points at a live map value; `sha_p` as above.
            let out = unsafe { outside_of(bd) };
            unsafe { out.write(sha_p) };
            if spa != 0 {
                maps::learn(bd, b.ifindex(), sha, spa);
            }
            Some(out)
        }
        None if b.secured().is_some() => return Some(Outcome::PortSecurityDropped),
        // An unbound sender from the outside pool claims another VM's MAC.
        None if B::PORT && sha.can_bind() && maps::in_pool(sha) => {
            return Some(Outcome::SpoofDropped);
        }
        None => None,
    };
    let tha_out = if tha == sha {
        sha_out
    } else {
        // SAFETY: the lookup returns a pointer to a live map value.
        b.binding(tha).map(|bd| unsafe { outside_of(bd) })
    };
    if let Some(out) = tha_out {
        // SAFETY: as above.
        unsafe { out.write(tha_p) };
    }
    (sha_out.is_some() || tha_out.is_some()).then_some(Outcome::ArpRewritten)
}

/// To the VM: target outside -> inside; the VM's own announcement coming back is dropped.
/// `dst` is the frame's original destination and `inside` its translation, reused when the
/// target is the same MAC. `None` when no ARP field changed.
#[inline(always)]
pub fn to_vm<F: Frame, B: Bindings>(
    f: &mut F,
    b: &B,
    offset: usize,
    dst: Mac,
    inside: Option<Mac>,
) -> Option<Outcome> {
    let arp = match parse::ether_ipv4_arp(f, offset) {
        Ok(Some(arp)) => arp,
        Ok(None) => return None,
        Err(()) => return Some(Outcome::Malformed),
    };
    // SAFETY: `arp` is bounds checked for the whole ARP body.
    let (sha_p, tha_p) = unsafe {
        (
            addr_of_mut!((*arp).sha) as *const u8,
            addr_of_mut!((*arp).tha).cast::<u8>(),
        )
    };
    // SAFETY: as above.
    let (sha, tha) = unsafe { (Mac::read(sha_p), Mac::read(tha_p)) };
    if B::PORT && b.is_own_outside(sha) {
        return Some(Outcome::Reflected);
    }
    let tha_in = if tha == dst { inside } else { b.inside_of(tha) }?;
    // SAFETY: as above.
    unsafe { tha_in.write(tha_p) };
    Some(Outcome::ArpRewritten)
}
