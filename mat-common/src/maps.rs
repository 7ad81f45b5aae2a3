//! Map names, sizes and the key and value of the binding maps.

/// Bindings for frames from a VM: (port, inside MAC) -> outside MAC.
pub const FROM_VM: &str = "MAT_FROM_VM";
/// Bindings for frames to a VM: (port, outside MAC) -> inside MAC.
pub const TO_VM: &str = "MAT_TO_VM";
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
pub const LAYOUT: u32 = 2;

/// Entries in each binding map: room for 65,536 VMs plus headroom.
pub const MAX_BINDINGS: u32 = 1 << 17;
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
}

/// Set by the control plane on a from-VM binding: the next frame from the VM raises an
/// [`crate::event::EventKind::Active`] event (the VM runs: time to announce it) and clears the flag.
pub const BINDING_ANNOUNCE: u16 = 1;

impl Binding {
    pub const fn new(mac: crate::MacAddr, flags: u16) -> Self {
        Self {
            mac,
            flags,
            ipv4: [0; 4],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::BindingKey {}
    // SAFETY: plain repr(C) data with no implicit padding.
    unsafe impl aya::Pod for super::Binding {}
}
