//! The kernel programs and the attachment modes that combine them.

use aya::programs::TcAttachType;
use mat_common::counters::Hook;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    PortFromVm,
    PortToVm,
    PortFromVmXdp,
    UplinkOut,
    UplinkIn,
    /// Does nothing (XDP_PASS): the benchmark floor for XDP programs. Never attached.
    FloorXdp,
    /// Does nothing (TC_ACT_OK): the benchmark floor for TC programs. Never attached.
    FloorTc,
}

/// Where a program hooks in.
pub(crate) enum Hookpoint {
    Tc(TcAttachType),
    Xdp,
}

impl Program {
    /// The programs that translate.
    pub const ALL: [Program; 5] = [
        Program::PortFromVm,
        Program::PortToVm,
        Program::PortFromVmXdp,
        Program::UplinkOut,
        Program::UplinkIn,
    ];

    /// The function name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Program::PortFromVm => "port_from_vm",
            Program::PortToVm => "port_to_vm",
            Program::PortFromVmXdp => "port_from_vm_xdp",
            Program::UplinkOut => "uplink_out",
            Program::UplinkIn => "uplink_in",
            Program::FloorXdp => "floor_xdp",
            Program::FloorTc => "floor_tc",
        }
    }

    /// The counters it adds to (none for the floors).
    pub const fn hook(self) -> Option<Hook> {
        Some(match self {
            Program::PortFromVm => Hook::PortFromVmTc,
            Program::PortToVm => Hook::PortToVmTc,
            Program::PortFromVmXdp => Hook::PortFromVmXdp,
            Program::UplinkOut => Hook::UplinkOutTc,
            Program::UplinkIn => Hook::UplinkInXdp,
            Program::FloorXdp | Program::FloorTc => return None,
        })
    }

    /// Whether it runs on a VM port (rather than on an uplink).
    pub const fn on_port(self) -> bool {
        matches!(
            self,
            Program::PortFromVm | Program::PortToVm | Program::PortFromVmXdp
        )
    }

    pub(crate) const fn hookpoint(self) -> Hookpoint {
        match self {
            Program::PortFromVm => Hookpoint::Tc(TcAttachType::Ingress),
            Program::PortToVm | Program::UplinkOut | Program::FloorTc => {
                Hookpoint::Tc(TcAttachType::Egress)
            }
            Program::PortFromVmXdp | Program::UplinkIn | Program::FloorXdp => Hookpoint::Xdp,
        }
    }
}

/// How an interface is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A VM port (tap or veth), TC both ways: the default.
    Port,
    /// A VM port with XDP for frames from the VM and TC for frames to it.
    PortXdp,
    /// The host's uplink: TC egress out, XDP in, keyed by MAC only.
    Uplink,
}

impl Mode {
    pub const fn programs(self) -> [Program; 2] {
        match self {
            Mode::Port => [Program::PortFromVm, Program::PortToVm],
            Mode::PortXdp => [Program::PortFromVmXdp, Program::PortToVm],
            Mode::Uplink => [Program::UplinkOut, Program::UplinkIn],
        }
    }
}
