//! The switch's decision, shared by the TC and XDP entries: learn the source, then route, forward
//! to a learned port, or flood.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use mat_common::switch::{DEFAULT_AGEING_NS, Event, Outcome, REFRESH_NS};

use crate::maps::{self, LpmKey};

const VLAN_8021Q: u16 = 0x8100;
const VLAN_8021AD: u16 = 0x88a8;

/// The addresses a switch looks at, as (VLAN, MAC) key words (see [`LpmKey::new`]).
pub struct Frame {
    dst: (u32, u32),
    src: (u32, u32),
    vlan: u16,
    dst_group: bool,
    src_unicast: bool,
}

impl Frame {
    /// Reads the Ethernet header at `start`; the VLAN is the offloaded tag's when TC has one,
    /// else the outer 802.1Q or 802.1ad tag's, else 0. `None` for a frame shorter than its
    /// headers.
    #[inline(always)]
    pub fn parse(start: usize, end: usize, offloaded_tci: Option<u32>) -> Option<Frame> {
        if start + 14 > end {
            return None;
        }
        // SAFETY: 14 bytes checked above (see mat-ebpf's mac.rs on the 2-byte alignment).
        let (dst_a, dst_b, src_a, src_b, ether_type) = unsafe {
            (
                (start as *const u16).read(),
                ((start + 2) as *const u32).read(),
                ((start + 6) as *const u16).read(),
                ((start + 8) as *const u32).read(),
                u16::from_be(((start + 12) as *const u16).read()),
            )
        };
        let vlan = match offloaded_tci {
            Some(tci) => (tci & 0xfff) as u16,
            None if ether_type == VLAN_8021Q || ether_type == VLAN_8021AD => {
                if start + 18 > end {
                    return None;
                }
                // SAFETY: 18 bytes checked above.
                u16::from_be(unsafe { ((start + 14) as *const u16).read() }) & 0xfff
            }
            None => 0,
        };
        let v = u32::from(vlan.to_be());
        Some(Frame {
            dst: (v | u32::from(dst_a) << 16, dst_b),
            src: (v | u32::from(src_a) << 16, src_b),
            vlan,
            // The group bit is bit 0 of the first octet: the low byte of a little-endian read.
            dst_group: dst_a & 1 != 0,
            src_unicast: src_a & 1 == 0 && (src_a != 0 || src_b != 0),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send to `ifindex` (the port in `slot`).
    Unicast,
    /// Copy to every other port that carries `vlan`.
    Flood,
    Drop,
}

/// No slot (an ingress that is no port, a frame no route sent).
pub const NONE: u32 = u32::MAX;

/// Every field is always set: the verifier refuses to spill a register that an enum variant
/// left undefined.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: Action,
    pub ifindex: u32,
    pub slot: u32,
    pub outcome: Outcome,
    /// The route that sent it, or [`NONE`].
    pub route: u32,
    pub vlan: u16,
    /// The ingress port's slot, or [`NONE`].
    pub in_slot: u32,
}

impl Verdict {
    #[inline(always)]
    fn drop(in_slot: u32) -> Self {
        Verdict {
            action: Action::Drop,
            ifindex: 0,
            slot: NONE,
            outcome: Outcome::Dropped,
            route: NONE,
            vlan: 0,
            in_slot,
        }
    }

    #[inline(always)]
    fn flood(in_slot: u32, vlan: u16) -> Self {
        Verdict {
            action: Action::Flood,
            ifindex: 0,
            slot: NONE,
            outcome: Outcome::Flooded,
            route: NONE,
            vlan,
            in_slot,
        }
    }
}

/// Slots in use in the port table.
#[inline(always)]
pub fn ports() -> u32 {
    maps::CONFIG.get(0).map_or(0, |c| c.ports)
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Learns the frame's source and decides where it goes. Counts the source learned; the caller
/// counts the frame ([`account`]) once it acts on the verdict.
#[inline(always)]
pub fn decide(f: &Frame, ifindex: u32) -> Verdict {
    // SAFETY: the value is a plain u32 in the map.
    let Some(&in_slot) = (unsafe { maps::PORT_SLOTS.get(ifindex) }) else {
        return Verdict::drop(NONE);
    };
    if !maps::PORTS.get(in_slot).is_some_and(|p| p.carries(f.vlan)) {
        return Verdict::drop(in_slot);
    }
    let ageing = match maps::CONFIG.get(0) {
        Some(c) if c.ageing_ns != 0 => c.ageing_ns,
        _ => DEFAULT_AGEING_NS,
    };
    let mut t = 0;

    if f.src_unicast {
        let k = LpmKey::new(f.src.0, f.src.1);
        if k.route().is_none_or(|r| r.mac_len == 0) {
            t = now();
            match k.learned() {
                // SAFETY: `e` points into a map value for this program's run.
                Some(e) => unsafe {
                    let moved = (*e).port != in_slot;
                    if moved || t.wrapping_sub((*e).seen_ns) >= REFRESH_NS {
                        (*e).port = in_slot;
                        (*e).seen_ns = t;
                    }
                    if moved {
                        maps::count(Event::SourceLearned as u32);
                    }
                },
                None => {
                    if k.learn(in_slot, t) {
                        maps::count(Event::SourceLearned as u32);
                    }
                }
            }
        }
    }

    if f.dst_group {
        return Verdict::flood(in_slot, f.vlan);
    }
    let k = LpmKey::new(f.dst.0, f.dst.1);
    let route = k.route();
    if let Some(r) = route
        && r.mac_len != 0
    {
        return unicast(in_slot, r.port, ifindex, f.vlan, Outcome::Routed, r.slot);
    }
    if let Some(e) = k.learned() {
        if t == 0 {
            t = now();
        }
        // SAFETY: `e` points into a map value for this program's run.
        let (port, seen) = unsafe { ((*e).port, (*e).seen_ns) };
        if t.wrapping_sub(seen) < ageing {
            return unicast(in_slot, port, ifindex, f.vlan, Outcome::Learned, NONE);
        }
    }
    if let Some(r) = route {
        // The VLAN's default route: after learned MACs, so legacy hosts behind this switch's
        // other ports stay reachable.
        return unicast(in_slot, r.port, ifindex, f.vlan, Outcome::Routed, r.slot);
    }
    Verdict::flood(in_slot, f.vlan)
}

#[inline(always)]
fn unicast(
    in_slot: u32,
    slot: u32,
    ingress: u32,
    vlan: u16,
    outcome: Outcome,
    route: u32,
) -> Verdict {
    match maps::PORTS.get(slot) {
        Some(p) if p.ifindex != 0 && p.ifindex != ingress && p.carries(vlan) => Verdict {
            action: Action::Unicast,
            ifindex: p.ifindex,
            slot,
            outcome,
            route,
            vlan,
            in_slot,
        },
        _ => Verdict::drop(in_slot),
    }
}

/// Counts a frame the switch acted on: its outcome, its route, the ports it crossed (a flood's
/// copies are counted by the caller as it sends them).
#[inline(always)]
pub fn account(v: &Verdict) {
    if v.in_slot != NONE {
        maps::count_rx(v.in_slot);
    }
    maps::count(v.outcome as u32);
    if v.action == Action::Unicast {
        maps::count_tx(v.slot);
        if v.route != NONE {
            maps::count_route(v.route);
        }
    }
}
