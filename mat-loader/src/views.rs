//! What the host answers: typed results, with the field names the protocol carries them under.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{alloc::Source, duplicates::Duplicate, mac::Mac, plan::Route};

/// A binding as the daemon shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    pub vm: String,
    pub port: String,
    pub ifindex: u32,
    pub inside: Mac,
    pub outside: Mac,
    /// Addresses the caller gave.
    pub ips: Vec<IpAddr>,
    /// Addresses learned from the VM's own ARP (the latest IPv4) and ND (IPv6).
    pub learned: Vec<IpAddr>,
    /// Whether the port may only claim its inside MAC.
    pub port_security: bool,
    /// Seconds since the Unix epoch, and the same as RFC 3339.
    pub since: u64,
    pub since_rfc3339: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachView {
    #[serde(flatten)]
    pub binding: BindingView,
    pub source: Source,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachVmView {
    /// Bound by this request.
    pub attached: Vec<AttachView>,
    /// Already bound as asked: unchanged.
    pub kept: Vec<BindingView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachView {
    pub released: Vec<BindingView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleasedPortView {
    pub port: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListView {
    pub bindings: Vec<BindingView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoutesView {
    pub routes: Vec<Route>,
}

/// One data-plane counter: a program (and so a direction) and an outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub hook: String,
    /// `from_vm` or `to_vm`.
    pub direction: String,
    pub outcome: String,
    pub packets: u64,
}

/// A managed port: the programs on it and the kernel's packet counts for it (frames from the VM
/// are the port's rx, frames to it its tx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub port: String,
    pub ifindex: u32,
    pub programs: Vec<String>,
    pub bindings: usize,
    pub from_vm_packets: Option<u64>,
    pub to_vm_packets: Option<u64>,
    pub from_vm_dropped: Option<u64>,
    pub to_vm_dropped: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsView {
    #[serde(default)]
    pub mode: ModeView,
    /// Every counter of the data plane, zeros included, summed over CPUs.
    pub counters: Vec<CounterView>,
    pub ports: Vec<PortView>,
    /// Frames from the network that claimed one of this host's outside MACs, and the MACs
    /// most recently claimed (see [`crate::duplicates`]).
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub recent_duplicates: Vec<Duplicate>,
}

/// Where the host translates: on each VM port (`port`) or on one uplink (`uplink`); and the
/// interfaces watched for duplicate outside MACs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeView {
    pub mode: String,
    pub uplink: Option<String>,
    pub uplink_ifindex: Option<u32>,
    /// `native` or `generic`.
    pub uplink_xdp: Option<String>,
    #[serde(default)]
    pub watching: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeldView {
    pub outside: Mac,
    pub vm: String,
    pub inside: Mac,
    pub released_ms: u64,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FreeView {
    pub count: u64,
    /// Never-used MACs, as `first-last` ranges.
    pub ranges: Vec<String>,
    /// Released MACs past their hold-down, next to be reused first.
    pub reusable: Vec<Mac>,
    /// What the next attach of a new VM port would get.
    pub next: Option<Mac>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoundView {
    pub outside: Mac,
    pub vm: String,
    pub port: String,
    pub inside: Mac,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanView {
    pub pool: String,
    pub host_pool: String,
    pub rack_route: String,
    pub rack: u64,
    pub host: u64,
    pub rack_bits: u8,
    pub host_bits: u8,
    pub vm_bits: u8,
    pub capacity: u64,
    pub hold_down_ms: u64,
    pub bound: Vec<BoundView>,
    pub held: Vec<HeldView>,
    pub free: FreeView,
    #[serde(default)]
    pub mode: ModeView,
    /// As in [`StatsView`].
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub recent_duplicates: Vec<Duplicate>,
}
