//! A reference model of the translation rules, written from the specification alone: plain Rust
//! over a byte slice, sharing no code with the kernel programs (mat-ebpf) nor the pool matching of
//! mat-common. The differential test runs it side by side with the real programs.
//!
//! One function per direction: [`from_vm`] (port_from_vm, port_from_vm_xdp, uplink_out) and
//! [`to_vm`] (port_to_vm, uplink_in).

use std::collections::HashMap;

use mat_common::{counters::Outcome, maps::BindingKey};

pub type Mac = [u8; 6];

const ETH_LEN: usize = 14;
const TAG_LEN: usize = 4;
const ARP_LEN: usize = 28;
const MAX_TAGS: usize = 2;

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_RARP: u16 = 0x8035;
const ETHERTYPE_IPV4: u16 = 0x0800;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

/// Where the program runs: a VM port checks spoofs and reflections, the uplink does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Port,
    Uplink,
}

/// An outside pool: the first `len` bits of `prefix` (a `len` above 48 counts as 48).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub prefix: Mac,
    pub len: u8,
}

impl Pool {
    pub const fn new(prefix: Mac, len: u8) -> Self {
        Self { prefix, len }
    }

    /// Whether the first `len` bits of `mac` equal those of the prefix, compared bit by bit.
    pub fn contains(&self, mac: &Mac) -> bool {
        let len = usize::from(self.len.min(48));
        (0..len).all(|bit| {
            let (byte, shift) = (bit / 8, 7 - bit % 8);
            (mac[byte] >> shift) & 1 == (self.prefix[byte] >> shift) & 1
        })
    }
}

/// The two binding tables, as `Dataplane::bind` fills them.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    from_vm: HashMap<BindingKey, Mac>,
    to_vm: HashMap<BindingKey, Mac>,
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    /// `inside <-> outside` on `ifindex`: (ifindex, inside) -> outside and (ifindex, outside) ->
    /// inside.
    pub fn bind(&mut self, ifindex: u32, inside: Mac, outside: Mac) {
        self.to_vm.insert(BindingKey::new(ifindex, outside), inside);
        self.from_vm
            .insert(BindingKey::new(ifindex, inside), outside);
    }

    /// The outside MAC of `inside` on `ifindex`.
    pub fn outside(&self, ifindex: u32, inside: &Mac) -> Option<Mac> {
        self.from_vm
            .get(&BindingKey::new(ifindex, *inside))
            .copied()
    }

    /// The inside MAC of `outside` on `ifindex`.
    pub fn inside(&self, ifindex: u32, outside: &Mac) -> Option<Mac> {
        self.to_vm.get(&BindingKey::new(ifindex, *outside)).copied()
    }
}

/// What the rules do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The counter the frame adds to (with the program's hook).
    pub outcome: Outcome,
    /// The frame as it leaves, or `None` when it is dropped.
    pub frame: Option<Vec<u8>>,
    /// An entry for the learned-address map: (ifindex, inside MAC) -> IPv4.
    pub learned: Option<(BindingKey, [u8; 4])>,
}

impl Verdict {
    fn pass(outcome: Outcome, frame: Vec<u8>) -> Self {
        Self {
            outcome,
            frame: Some(frame),
            learned: None,
        }
    }

    fn drop(outcome: Outcome) -> Self {
        Self {
            outcome,
            frame: None,
            learned: None,
        }
    }
}

/// Unicast and not all zero: the only addresses ever looked up.
pub fn bindable(mac: &Mac) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|&b| b != 0)
}

/// Whether `mac` lies in any of `pools`.
pub fn in_pools(pools: &[Pool], mac: &Mac) -> bool {
    pools.iter().any(|p| p.contains(mac))
}

fn mac_at(frame: &[u8], offset: usize) -> Mac {
    frame[offset..offset + 6].try_into().expect("6 bytes")
}

fn u16_at(frame: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([frame[offset], frame[offset + 1]])
}

fn put_mac(frame: &mut [u8], offset: usize, mac: Mac) {
    frame[offset..offset + 6].copy_from_slice(&mac);
}

/// Where the ARP/RARP body is after the Ethernet header and the tags.
enum Walk {
    /// A VLAN tag is cut short.
    Truncated,
    /// The frame carries no ARP or RARP (after at most two tags).
    NotArp,
    /// An ARP or RARP body starts at this offset (it may be cut short).
    Arp(usize),
}

/// Offset of an Ethernet/IPv4 ARP or RARP body, `Ok(None)` when there is none, `Err(())` when
/// a VLAN tag or the body is cut short.
fn ether_ipv4_arp(frame: &[u8]) -> Result<Option<usize>, ()> {
    match walk(frame) {
        Walk::Truncated => Err(()),
        Walk::NotArp => Ok(None),
        Walk::Arp(offset) if offset + ARP_LEN > frame.len() => Err(()),
        Walk::Arp(offset) => Ok(ether_ipv4(&frame[offset..]).then_some(offset)),
    }
}

fn walk(frame: &[u8]) -> Walk {
    let mut ether_type = u16_at(frame, 12);
    let mut offset = ETH_LEN;
    let mut tags = 0;
    while (ether_type == TPID_8021Q || ether_type == TPID_8021AD) && tags < MAX_TAGS {
        if offset + TAG_LEN > frame.len() {
            return Walk::Truncated;
        }
        ether_type = u16_at(frame, offset + 2);
        offset += TAG_LEN;
        tags += 1;
    }
    if ether_type == ETHERTYPE_ARP || ether_type == ETHERTYPE_RARP {
        Walk::Arp(offset)
    } else {
        Walk::NotArp
    }
}

/// Ethernet hardware addresses and IPv4 protocol addresses: the only ARP the rules touch.
fn ether_ipv4(arp: &[u8]) -> bool {
    u16_at(arp, 0) == 1 && u16_at(arp, 2) == ETHERTYPE_IPV4 && arp[4] == 6 && arp[5] == 4
}

// Offsets inside the ARP body.
const SHA: usize = 8;
const SPA: usize = 14;
const THA: usize = 18;

/// Frames from the VM (port_from_vm, port_from_vm_xdp, uplink_out): Ethernet source and ARP/RARP
/// sender and target hardware addresses inside -> outside.
pub fn from_vm(
    frame: &[u8],
    ifindex: u32,
    bindings: &Bindings,
    pools: &[Pool],
    mode: Mode,
) -> Verdict {
    if frame.len() < ETH_LEN {
        return Verdict::drop(Outcome::Malformed);
    }
    let mut out = frame.to_vec();

    let src = mac_at(&out, 6);
    let mut translated = false;
    if bindable(&src) {
        match bindings.outside(ifindex, &src) {
            Some(outside) => {
                put_mac(&mut out, 6, outside);
                translated = true;
            }
            None if mode == Mode::Port && in_pools(pools, &src) => {
                return Verdict::drop(Outcome::SpoofDropped)
            }
            None => {}
        }
    }
    let ethernet_outcome = if translated {
        Outcome::Translated
    } else {
        Outcome::Passed
    };

    let offset = match ether_ipv4_arp(&out) {
        Err(()) => return Verdict::drop(Outcome::Malformed),
        Ok(None) => return Verdict::pass(ethernet_outcome, out),
        Ok(Some(offset)) => offset,
    };

    let sha = mac_at(&out, offset + SHA);
    let spa: [u8; 4] = out[offset + SPA..offset + SPA + 4]
        .try_into()
        .expect("4 bytes");
    let tha = mac_at(&out, offset + THA);
    let mut rewritten = false;
    let mut learned = None;
    if bindable(&sha) {
        match bindings.outside(ifindex, &sha) {
            Some(outside) => {
                put_mac(&mut out, offset + SHA, outside);
                rewritten = true;
                if spa != [0; 4] {
                    learned = Some((BindingKey::new(ifindex, sha), spa));
                }
            }
            None if mode == Mode::Port && in_pools(pools, &sha) => {
                return Verdict::drop(Outcome::SpoofDropped)
            }
            None => {}
        }
    }
    if bindable(&tha) {
        if let Some(outside) = bindings.outside(ifindex, &tha) {
            put_mac(&mut out, offset + THA, outside);
            rewritten = true;
        }
    }
    let outcome = if rewritten {
        Outcome::ArpRewritten
    } else {
        ethernet_outcome
    };
    Verdict {
        outcome,
        frame: Some(out),
        learned,
    }
}

/// Frames to the VM (port_to_vm, uplink_in): Ethernet destination and ARP/RARP target hardware
/// address outside -> inside; on a port, the VM's own announcement coming back is dropped.
pub fn to_vm(
    frame: &[u8],
    ifindex: u32,
    bindings: &Bindings,
    _pools: &[Pool],
    mode: Mode,
) -> Verdict {
    if frame.len() < ETH_LEN {
        return Verdict::drop(Outcome::Malformed);
    }
    let mut out = frame.to_vec();

    let dst = mac_at(&out, 0);
    let mut translated = false;
    if bindable(&dst) {
        if let Some(inside) = bindings.inside(ifindex, &dst) {
            put_mac(&mut out, 0, inside);
            translated = true;
        }
    }
    let ethernet_outcome = if translated {
        Outcome::Translated
    } else {
        Outcome::Passed
    };

    let offset = match ether_ipv4_arp(&out) {
        Err(()) => return Verdict::drop(Outcome::Malformed),
        Ok(None) => return Verdict::pass(ethernet_outcome, out),
        Ok(Some(offset)) => offset,
    };

    let sha = mac_at(&out, offset + SHA);
    if mode == Mode::Port && bindable(&sha) && bindings.inside(ifindex, &sha).is_some() {
        return Verdict::drop(Outcome::Reflected);
    }
    let tha = mac_at(&out, offset + THA);
    if bindable(&tha) {
        if let Some(inside) = bindings.inside(ifindex, &tha) {
            put_mac(&mut out, offset + THA, inside);
            return Verdict::pass(Outcome::ArpRewritten, out);
        }
    }
    Verdict::pass(ethernet_outcome, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_prefix_matches_bit_by_bit() {
        let p = Pool::new([0x0a, 0xb8, 0, 0, 0, 0], 13);
        assert!(p.contains(&[0x0a, 0xb8, 0, 0, 0, 1]));
        assert!(p.contains(&[0x0a, 0xbf, 0xff, 0xff, 0xff, 0xff]));
        assert!(!p.contains(&[0x0a, 0xb0, 0, 0, 0, 0]));
        assert!(!p.contains(&[0x0b, 0xb8, 0, 0, 0, 0]));
        assert!(Pool::new([0xff; 6], 0).contains(&[0; 6]));
        assert!(Pool::new([1, 2, 3, 4, 5, 6], 60).contains(&[1, 2, 3, 4, 5, 6]));
        assert!(!Pool::new([1, 2, 3, 4, 5, 6], 48).contains(&[1, 2, 3, 4, 5, 7]));
    }

    #[test]
    fn bindable_is_unicast_and_non_zero() {
        assert!(bindable(&[0x52, 0x54, 0, 0, 0, 1]));
        assert!(bindable(&[0, 0, 0, 0, 0, 1]));
        assert!(!bindable(&[0; 6]));
        assert!(!bindable(&[0xff; 6]));
        assert!(!bindable(&[0x01, 0, 0x5e, 0, 0, 1]));
    }
}
