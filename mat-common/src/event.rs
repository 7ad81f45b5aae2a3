//! Events the data plane sends to the control plane through the ring buffer.

/// What an [`Event`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A VM's ARP showed a new IPv4 address for its inside MAC (`ipv4` holds it; the from-VM
    /// binding keeps it too).
    Learned = 1,
    /// The first frame from a binding flagged [`crate::maps::BINDING_ANNOUNCE`]: the VM runs.
    Active = 2,
    /// A VM's Neighbor Discovery claimed an IPv6 address for its inside MAC (`ipv6` holds it).
    Learned6 = 3,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    pub ifindex: u32,
    /// The VM's inside MAC.
    pub mac: crate::MacAddr,
    pub _pad: [u8; 2],
    /// IPv4 address in network order (`Learned`).
    pub ipv4: [u8; 4],
    /// IPv6 address in network order (`Learned6`).
    pub ipv6: [u8; 16],
}

impl Event {
    pub fn kind(&self) -> Option<EventKind> {
        match self.kind {
            1 => Some(EventKind::Learned),
            2 => Some(EventKind::Active),
            3 => Some(EventKind::Learned6),
            _ => None,
        }
    }
}
