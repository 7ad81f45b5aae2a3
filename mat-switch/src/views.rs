//! What the switch reports, with stable field names for `--json`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub slot: u32,
    pub name: String,
    pub ifindex: u32,
    /// The VLANs it carries, as `0,10-20`, or `all`.
    pub vlans: String,
    pub rx: u64,
    pub tx: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub vlan: u16,
    pub prefix: String,
    pub port: String,
    /// Frames sent by this route since it was added.
    pub frames: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedView {
    pub vlan: u16,
    pub mac: String,
    pub port: String,
    /// Milliseconds since the MAC was last seen (refreshed at most once a second).
    pub age_ms: u64,
    /// Older than the ageing time: ignored by the switch.
    pub expired: bool,
}

/// Frames per outcome, each frame counted once; and the events beside them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    pub routed: u64,
    pub learned: u64,
    pub flooded: u64,
    pub dropped: u64,
    /// Sources learned or moved to another port.
    pub sources_learned: u64,
    /// Copies sent by floods.
    pub flood_copies: u64,
}

impl CountersView {
    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &CountersView) -> CountersView {
        CountersView {
            routed: self.routed - earlier.routed,
            learned: self.learned - earlier.learned,
            flooded: self.flooded - earlier.flooded,
            dropped: self.dropped - earlier.dropped,
            sources_learned: self.sources_learned - earlier.sources_learned,
            flood_copies: self.flood_copies - earlier.flood_copies,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchView {
    pub name: String,
    pub ageing_s: u64,
    pub ports: Vec<PortView>,
    pub routes: usize,
    pub learned: usize,
    pub counters: CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportView {
    /// Routes installed.
    pub added: usize,
    /// Routes already there, to the same port.
    pub unchanged: usize,
    /// Routes whose `via` no `--via` mapped (or of another scope).
    pub skipped: usize,
}
