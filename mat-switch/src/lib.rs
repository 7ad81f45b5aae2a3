//! The MAC-route switch's user space: create a switch over a set of ports (load its own kernel
//! object, pin its maps and links under a directory of its own), manage its routes, read its
//! counters and learned table. The `mat-switch` binary is a thin `main` over this library.
//!
//! A switch is a directory on a BPF filesystem (`/sys/fs/bpf/mat-switch/NAME` by default)
//! holding the maps of `mat_common::switch` and `links/<ifindex>-<program>`; every operation
//! opens it again, so no process has to stay up for the switch to forward.

mod error;
mod switch;
pub mod views;

pub use error::Error;
pub use mat_common::switch as common;
pub use switch::{PortSpec, RouteSpec, Switch, VlanSet, parse_vlans};

/// The program names in the object.
pub mod switch_program {
    /// The switch (TC ingress of every port).
    pub const TC: &str = "switch_tc";
    /// The XDP unicast path (measurements only).
    pub const XDP: &str = "switch_xdp";
    /// XDP_PASS, for the far end of a veth the XDP path redirects into.
    pub const PASS_XDP: &str = "pass_xdp";
}

/// Where switches are pinned unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mat-switch";

/// The kernel object, built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mat-switch"));
