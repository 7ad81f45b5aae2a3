//! Uplink mode: the uplink programs on the host's uplink (TC egress out, XDP in) and every
//! binding keyed by MAC only, in the hash maps. VM ports keep the port programs with an empty
//! slot in the port table, which is the guard: a frame whose source (or ARP sender, or ND
//! link-layer option) lies in an outside pool is dropped there (`spoof_dropped`), so a VM cannot
//! send from an outside MAC. Frames between VMs of one bridge never cross the uplink and stay
//! untranslated.
//!
//! The mode the bindings were made in is recorded in the state database: a daemon started in
//! the other mode while bindings exist is refused (the bindings would have to move between the
//! port table and the hash maps under live traffic; detaching them first is the operator's
//! explicit step). The uplink's links are pinned like a port's, so a restart reuses them.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How the uplink's XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (refused where it has no native XDP).
    #[default]
    Native,
    /// In the kernel's generic path, for any driver.
    Generic,
}

impl XdpMode {
    pub const fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// The uplink a host translates on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub xdp: XdpMode,
}

/// The mode's name, as the state database records it.
pub fn mode_name(uplink: Option<&Uplink>) -> &'static str {
    if uplink.is_some() { "uplink" } else { "port" }
}

/// Why a start in mode `wanted` is refused, when the state's `bindings` were made in `stored`.
pub fn switch_refused(stored: &str, wanted: &str, bindings: usize) -> Option<String> {
    (stored != wanted && bindings > 0).then(|| {
        format!(
            "the state has {bindings} bindings made in {stored} mode and this daemon runs in \
             {wanted} mode: their entries would have to move between the port table and the \
             uplink's maps under traffic; detach them (or stop their VMs) in {stored} mode first"
        )
    })
}

#[test]
fn a_switch_is_refused_only_with_bindings() {
    assert_eq!(switch_refused("port", "uplink", 0), None);
    assert_eq!(switch_refused("uplink", "uplink", 3), None);
    let why = switch_refused("port", "uplink", 2).unwrap();
    assert!(why.contains("2 bindings made in port mode"), "{why}");
}
