//! The MAC-route switch (mat-switch-ebpf and mat-switch): map names, keys, values and counters.
//! The switch is a separate kernel object from the hypervisor's data plane: nothing here is part
//! of [`crate::maps::LAYOUT`].

/// Routes: LPM trie on (VLAN, destination MAC) -> [`Route`].
pub const ROUTES: &str = "SW_ROUTES";
/// Learned unicast MACs outside every routed prefix: LRU hash [`VlanMac`] -> [`Learned`].
pub const LEARNED: &str = "SW_LEARNED";
/// The switch's ports by slot: array of [`Port`] (ifindex 0: empty slot).
pub const PORTS: &str = "SW_PORTS";
/// Ifindex -> slot, for the ingress port.
pub const PORT_SLOTS: &str = "SW_PORT_SLOTS";
/// Settings: array of one [`Config`].
pub const CONFIG: &str = "SW_CONFIG";
/// Per-CPU outcome counters, indexed by [`Outcome`].
pub const COUNTERS: &str = "SW_COUNTERS";
/// Per-CPU frames per route, indexed by [`Route::slot`].
pub const ROUTE_COUNTERS: &str = "SW_ROUTE_COUNTERS";
/// Per-CPU frames per port, `2 * slot` received, `2 * slot + 1` sent.
pub const PORT_COUNTERS: &str = "SW_PORT_COUNTERS";

/// Ports one switch can have (the flood loop walks them all).
pub const MAX_PORTS: u32 = 64;
/// Routes one switch can hold (racks x VLANs for a core, hosts x VLANs + defaults for a ToR).
pub const MAX_ROUTES: u32 = 16384;
/// Learned MACs (least recently used evicted first).
pub const MAX_LEARNED: u32 = 65536;
/// Default ageing of learned MACs, as a Linux bridge's FDB.
pub const DEFAULT_AGEING_NS: u64 = 300_000_000_000;
/// A learned entry seen again on the same port is rewritten at most this often.
pub const REFRESH_NS: u64 = 1_000_000_000;
/// Bits of the LPM key before the MAC: the VLAN is always matched whole.
pub const VLAN_BITS: u32 = 16;

/// (VLAN, MAC): the LPM data of [`ROUTES`] and the key of [`LEARNED`]. VLAN id big-endian
/// (0 = untagged), then the MAC, so the 8 bytes compare as one big-endian number. Route prefix
/// lengths count from the VLAN's first bit: a route for `mac/len` in a VLAN has prefix length
/// `16 + len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VlanMac {
    pub vlan: [u8; 2],
    pub mac: crate::MacAddr,
}

impl VlanMac {
    pub const fn new(vlan: u16, mac: crate::MacAddr) -> Self {
        Self {
            vlan: vlan.to_be_bytes(),
            mac,
        }
    }

    pub const fn vlan(&self) -> u16 {
        u16::from_be_bytes(self.vlan)
    }
}

/// Where a route sends frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Route {
    /// Egress port slot (index into [`PORTS`]).
    pub port: u32,
    /// Index into [`ROUTE_COUNTERS`].
    pub slot: u32,
    /// The MAC prefix length (0: the VLAN's default route, which learned MACs override).
    pub mac_len: u32,
    pub _pad: u32,
}

/// A learned MAC: the port it was last seen on, and when (CLOCK_MONOTONIC ns, as
/// `bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Learned {
    pub port: u32,
    pub _pad: u32,
    pub seen_ns: u64,
}

/// A switch port: its interface and the VLANs it carries (bit `v` of the bitmap; 0 = untagged).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub ifindex: u32,
    pub _pad: u32,
    pub vlans: [u64; 64],
}

impl Port {
    /// A port carrying every VLAN.
    pub const fn trunk(ifindex: u32) -> Self {
        Self {
            ifindex,
            _pad: 0,
            vlans: [u64::MAX; 64],
        }
    }

    #[inline(always)]
    pub const fn carries(&self, vlan: u16) -> bool {
        let v = (vlan & 0xfff) as usize;
        self.vlans[v >> 6] >> (v & 63) & 1 != 0
    }
}

/// Switch settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Learned MACs older than this are ignored (0: [`DEFAULT_AGEING_NS`]).
    pub ageing_ns: u64,
    /// Slots in use in [`PORTS`] are below this (the flood loop stops there).
    pub ports: u32,
    pub _pad: u32,
}

/// What happened to a frame; each frame counts exactly one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Unicast covered by a route: sent to the route's port.
    Routed = 0,
    /// Unicast no specific route covers, to a learned MAC: sent to its port.
    Learned = 1,
    /// Broadcast, multicast or unknown unicast: copied to every other port carrying the VLAN.
    Flooded = 2,
    /// Malformed, from a port that does not carry the VLAN, or back out its ingress port.
    Dropped = 3,
}

/// Counters beside the outcomes (not per frame).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A source MAC learned, or moved to another port.
    SourceLearned = 4,
    /// Copies sent by floods.
    FloodCopies = 5,
}

pub const OUTCOMES: [Outcome; 4] = [
    Outcome::Routed,
    Outcome::Learned,
    Outcome::Flooded,
    Outcome::Dropped,
];

/// Entries in [`COUNTERS`].
pub const COUNTER_ENTRIES: u32 = 6;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::VlanMac {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Route {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Learned {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Port {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Config {}
}
