//! Counter layout: one per-CPU u64 per (hook, outcome). Every frame a program sees adds exactly one.

/// The program, and so the direction, that counted a frame.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC ingress of a VM port: frames from the VM.
    PortFromVmTc = 0,
    /// TC egress of a VM port: frames to the VM.
    PortToVmTc = 1,
    /// XDP on a VM port (explicit option): frames from the VM.
    PortFromVmXdp = 2,
    /// TC egress of the uplink: frames towards the network.
    UplinkOutTc = 3,
    /// XDP on the uplink: frames from the network.
    UplinkInXdp = 4,
}

/// What happened to a frame.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An Ethernet address was translated (not an ARP/RARP frame with a rewrite).
    Translated = 0,
    /// An ARP or RARP hardware address was translated.
    ArpRewritten = 1,
    /// Nothing to translate: passed untouched.
    Passed = 2,
    /// From a VM port with a source inside an outside pool: dropped.
    SpoofDropped = 3,
    /// Truncated Ethernet, VLAN or ARP/RARP header: dropped.
    Malformed = 4,
    /// An ARP to a VM that claims the VM's own outside MAC (its announcement coming back), or an
    /// NS or NA from it: dropped.
    Reflected = 5,
    /// A Neighbor Discovery link-layer address option was translated (checksum updated).
    NdRewritten = 6,
    /// A DHCPv4 request's broadcast flag or chaddr, or a reply's chaddr, was changed.
    DhcpRewritten = 7,
    /// From a bound port with port security: a source MAC, ARP sender or ND link-layer option
    /// that is not the port's inside MAC, or an ARP the rules cannot read: dropped.
    PortSecurityDropped = 8,
}

pub const HOOKS: [Hook; 5] = [
    Hook::PortFromVmTc,
    Hook::PortToVmTc,
    Hook::PortFromVmXdp,
    Hook::UplinkOutTc,
    Hook::UplinkInXdp,
];

pub const OUTCOMES: [Outcome; 9] = [
    Outcome::Translated,
    Outcome::ArpRewritten,
    Outcome::Passed,
    Outcome::SpoofDropped,
    Outcome::Malformed,
    Outcome::Reflected,
    Outcome::NdRewritten,
    Outcome::DhcpRewritten,
    Outcome::PortSecurityDropped,
];

/// Entries in the counter map.
pub const ENTRIES: u32 = (HOOKS.len() * OUTCOMES.len()) as u32;

/// Index of a counter in the counter map.
pub const fn index(hook: Hook, outcome: Outcome) -> u32 {
    hook as u32 * OUTCOMES.len() as u32 + outcome as u32
}

impl Hook {
    pub const fn name(self) -> &'static str {
        match self {
            Hook::PortFromVmTc => "port-from-vm-tc",
            Hook::PortToVmTc => "port-to-vm-tc",
            Hook::PortFromVmXdp => "port-from-vm-xdp",
            Hook::UplinkOutTc => "uplink-out-tc",
            Hook::UplinkInXdp => "uplink-in-xdp",
        }
    }

    /// Which way its frames go, from the VM's point of view: `from_vm` or `to_vm`.
    pub const fn direction(self) -> &'static str {
        match self {
            Hook::PortFromVmTc | Hook::PortFromVmXdp | Hook::UplinkOutTc => "from_vm",
            Hook::PortToVmTc | Hook::UplinkInXdp => "to_vm",
        }
    }
}

impl Outcome {
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Translated => "translated",
            Outcome::ArpRewritten => "arp_rewritten",
            Outcome::Passed => "passed",
            Outcome::SpoofDropped => "spoof_dropped",
            Outcome::Malformed => "malformed",
            Outcome::Reflected => "reflected",
            Outcome::NdRewritten => "nd_rewritten",
            Outcome::DhcpRewritten => "dhcp_rewritten",
            Outcome::PortSecurityDropped => "port_security_dropped",
        }
    }

    /// Whether the frame was dropped.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Outcome::SpoofDropped
                | Outcome::Malformed
                | Outcome::Reflected
                | Outcome::PortSecurityDropped
        )
    }
}
