//! Map names, sizes and the key and value of the binding maps.

/// Uplink-mode bindings for frames from a VM: (0, inside MAC) -> outside MAC.
pub const FROM_VM: &str = "MAT_FROM_VM";
/// Uplink-mode bindings for frames to a VM: (0, outside MAC) -> inside MAC.
pub const TO_VM: &str = "MAT_TO_VM";
/// The port table: one [`PortSlot`] per bound VM port, at `ifindex % PORT_SLOTS`.
pub const PORTS: &str = "MAT_PORTS";
/// Ports whose slot another port holds, by ifindex.
pub const PORT_OVERFLOW: &str = "MAT_PORT_OVERFLOW";
/// The host's data-plane settings ([`Settings`]).
pub const SETTINGS: &str = "MAT_SETTINGS";
/// The outside pools, for the spoof check on VM ports.
pub const POOLS: &str = "MAT_POOLS";
/// Per-CPU counters, indexed by [`crate::counters::index`].
pub const COUNTERS: &str = "MAT_COUNTERS";
/// Ring buffer of [`crate::event::Event`]s for the control plane.
pub const EVENTS: &str = "MAT_EVENTS";

/// The data plane's layout: the maps' keys, values and sizes, the counter layout, and the
/// program set. Bump it with any change to one of them; the loader pins each layout in a
/// directory of its own (`<pin dir>/v<LAYOUT>`) and migrates the one before it. Layout 1 is the
/// unversioned one of the first release (maps and `links/` directly in the pin directory).
pub const LAYOUT: u32 = 3;

/// Entries in each binding map: room for 65,536 VMs plus headroom.
pub const MAX_BINDINGS: u32 = 1 << 17;
/// Slots of the port table: a frame on a bound port costs one array lookup and a compare.
pub const PORT_SLOTS: u32 = 1 << 16;
/// Entries of the overflow table (ports whose ifindex collides modulo [`PORT_SLOTS`]).
pub const PORT_OVERFLOW_ENTRIES: u32 = 1 << 12;

/// Bytes in the event ring buffer (a power of two pages).
pub const EVENTS_BYTES: u32 = 1 << 18;

/// Ports use their ifindex in keys; uplink mode keys by MAC only and uses this ifindex.
pub const UPLINK_IFINDEX: u32 = 0;

/// Key of the binding maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BindingKey {
    pub ifindex: u32,
    pub mac: crate::MacAddr,
    pub _pad: [u8; 2],
}

impl BindingKey {
    pub const fn new(ifindex: u32, mac: crate::MacAddr) -> Self {
        Self {
            ifindex,
            mac,
            _pad: [0; 2],
        }
    }
}

/// Value of the binding maps: the translated MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Binding {
    pub mac: crate::MacAddr,
    /// `BINDING_*` flags.
    pub flags: u16,
    /// From-VM bindings: the IPv4 address (network order) the VM last claimed in its own ARP,
    /// zero until then. Kept in the binding that the ARP path has already looked up, so learning
    /// costs no extra lookup; this makes the from-VM map the learned-address map
    /// (port, inside MAC) -> IPv4.
    pub ipv4: [u8; 4],
    /// A fold of the IPv6 address the VM last claimed in its own ND: an address is reported
    /// once, not on every NS.
    pub ipv6_fold: u32,
}

/// A bound VM port: its inside MAC and its binding (outside MAC, flags, learned addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortSlot {
    /// The port this slot holds (0: empty).
    pub ifindex: u32,
    pub inside: crate::MacAddr,
    pub _pad: [u8; 2],
    pub binding: Binding,
}

/// The single value of the settings map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// `SETTING_*` flags.
    pub flags: u32,
}

/// DHCPv4: translate chaddr (inside -> outside in requests, back in replies) instead of keeping
/// it and setting the broadcast flag.
pub const SETTING_DHCP_TRANSLATE: u32 = 1;
/// Report dropped frames through the event ring ([`crate::event::DropEvent`]): set while a
/// `mat monitor` watches, so that a drop costs one more branch when nobody does.
pub const SETTING_MONITOR: u32 = 2;

/// Set by the control plane on a from-VM binding: the next frame from the VM raises an
/// [`crate::event::EventKind::Active`] event (the VM runs: time to announce it) and clears the flag.
pub const BINDING_ANNOUNCE: u16 = 1;
/// Set by the control plane on a port's binding: the port may only claim its inside MAC
/// (Ethernet source, ARP sender, ND source/target link-layer option).
pub const BINDING_PORT_SECURITY: u16 = 2;

impl Binding {
    pub const fn new(mac: crate::MacAddr, flags: u16) -> Self {
        Self {
            mac,
            flags,
            ipv4: [0; 4],
            ipv6_fold: 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::BindingKey {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Binding {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::PortSlot {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Settings {}
}
