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
    /// A frame was dropped, reported while `mat monitor` watches: a [`DropEvent`], not an
    /// [`Event`].
    Dropped = 4,
}

/// Bytes of a dropped frame's head a [`DropEvent`] carries.
pub const DROP_HEAD: usize = 64;

/// A dropped frame ([`EventKind::Dropped`]): where, why, and its first bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// [`EventKind::Dropped`] as u32, where [`Event::kind`] sits.
    pub kind: u32,
    pub ifindex: u32,
    /// A [`crate::counters::Hook`] and the [`crate::counters::Outcome`] that dropped it.
    pub hook: u8,
    pub outcome: u8,
    /// The frame's length, and how many of its bytes `head` holds.
    pub len: u16,
    pub captured: u16,
    pub _pad: [u8; 2],
    pub head: [u8; DROP_HEAD],
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
            4 => Some(EventKind::Dropped),
            _ => None,
        }
    }
}
