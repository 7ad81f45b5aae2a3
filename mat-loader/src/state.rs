//! The daemon's state in memory: the plan it was made with, the ports it manages, the bindings
//! and the allocator; and the changes a request makes to it. A request computes its changes
//! against the state, the store makes them durable in one transaction, then the state and the
//! maps apply them. Each change can be undone ([`State::revert`]) if the maps refuse it.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    alloc::{Allocator, Released, Taken},
    mac::Mac,
    plan::Plan,
};

/// The version of the state's JSON form (`mat state export`, and the `state.json` of releases
/// before the store).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub plan: Plan,
    pub alloc: Allocator,
    /// Ports with MAT's programs attached.
    pub ports: Vec<Port>,
    pub bindings: Vec<Binding>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub port: String,
    pub ifindex: u32,
    /// The VM's name ("" when the caller gave none).
    pub vm: String,
    pub inside: Mac,
    pub outside: Mac,
    /// Addresses the caller gave (IPv4 and IPv6).
    pub ips: Vec<IpAddr>,
    /// The port may only claim the inside MAC (see the data plane's port security).
    #[serde(default = "yes")]
    pub port_security: bool,
    /// When it was bound, in seconds since the Unix epoch.
    pub since: u64,
}

/// One step of a request. A request's changes are durable together or not at all; each has an
/// inverse, which undoes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddPort(Port),
    RemovePort(Port),
    RenamePort {
        ifindex: u32,
        from: String,
        to: String,
    },
    Bind(Binding),
    Unbind(Binding),
    /// A released outside MAC taken out of the reuse queue.
    Reuse(Released),
    /// An outside MAC put into the reuse queue.
    Release(Released),
    /// The first never-used MAC moves.
    NextFresh {
        from: u64,
        to: u64,
    },
}

impl Change {
    /// The change that makes `taken` out of the allocator.
    pub fn take(taken: Taken) -> Self {
        match taken {
            Taken::Released(r) => Change::Reuse(r),
            Taken::Fresh(i) => Change::NextFresh { from: i, to: i + 1 },
        }
    }

    pub fn inverse(&self) -> Self {
        match self.clone() {
            Change::AddPort(p) => Change::RemovePort(p),
            Change::RemovePort(p) => Change::AddPort(p),
            Change::RenamePort { ifindex, from, to } => Change::RenamePort {
                ifindex,
                from: to,
                to: from,
            },
            Change::Bind(b) => Change::Unbind(b),
            Change::Unbind(b) => Change::Bind(b),
            Change::Reuse(r) => Change::Release(r),
            Change::Release(r) => Change::Reuse(r),
            Change::NextFresh { from, to } => Change::NextFresh { from: to, to: from },
        }
    }
}

fn yes() -> bool {
    true
}

impl State {
    pub fn new(plan: Plan) -> Self {
        Self {
            version: VERSION,
            plan,
            alloc: Allocator::default(),
            ports: Vec::new(),
            bindings: Vec::new(),
        }
    }

    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::AddPort(p) => self.ports.push(p.clone()),
            Change::RemovePort(p) => self.ports.retain(|q| q.ifindex != p.ifindex),
            Change::RenamePort { ifindex, to, .. } => self.rename(*ifindex, to),
            Change::Bind(b) => self.bindings.push(b.clone()),
            Change::Unbind(b) => self
                .bindings
                .retain(|q| (q.ifindex, q.inside) != (b.ifindex, b.inside)),
            Change::Reuse(r) => self.alloc.unrelease(r.outside),
            Change::Release(r) => self.alloc.insert(r.clone()),
            Change::NextFresh { to, .. } => self.alloc.next_fresh = *to,
        }
    }

    /// Undoes [`State::apply`] of the same change.
    pub fn revert(&mut self, change: &Change) {
        self.apply(&change.inverse());
    }

    fn rename(&mut self, ifindex: u32, name: &str) {
        for p in self.ports.iter_mut().filter(|p| p.ifindex == ifindex) {
            name.clone_into(&mut p.name);
        }
        for b in self.bindings.iter_mut().filter(|b| b.ifindex == ifindex) {
            name.clone_into(&mut b.port);
        }
    }

    /// Checks what the allocator relies on: every outside MAC is in the host pool, handed out
    /// before, and either bound once or released once.
    pub fn check(&self) -> Result<()> {
        if self.version != VERSION {
            bail!("state version {} (this mat knows {VERSION})", self.version);
        }
        let mut seen = HashSet::new();
        let outside = self
            .bindings
            .iter()
            .map(|b| b.outside)
            .chain(self.alloc.released.iter().map(|r| r.outside));
        for mac in outside {
            let Some(i) = self.plan.index_of(mac) else {
                bail!(
                    "outside MAC {mac} is not in the host pool {}",
                    self.plan.host_pool()
                );
            };
            if i >= self.alloc.next_fresh {
                bail!("outside MAC {mac} was never handed out");
            }
            if !seen.insert(mac) {
                bail!("outside MAC {mac} appears twice");
            }
        }
        // By name once, not a scan of the ports per binding: 65,536 of each are checked at start.
        let by_name: HashMap<&str, u32> = self
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.ifindex))
            .collect();
        let mut inside = HashSet::new();
        let mut ports = HashSet::new();
        for b in &self.bindings {
            if !inside.insert(b.inside) {
                bail!("inside MAC {} is bound twice", b.inside);
            }
            if !ports.insert(&b.port) {
                bail!("port {} is bound twice", b.port);
            }
            if by_name.get(b.port.as_str()) != Some(&b.ifindex) {
                bail!("binding on {} has no matching port", b.port);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_finds_double_use() {
        let mut s = State::new(Plan::example());
        s.alloc.next_fresh = 2;
        s.ports.push(Port {
            name: "a".into(),
            ifindex: 1,
        });
        s.bindings.push(Binding {
            port: "a".into(),
            ifindex: 1,
            vm: String::new(),
            inside: Mac([0x52, 0, 0, 0, 0, 1]),
            outside: s.plan.mac_at(0),
            ips: vec![],
            since: 0,
            port_security: true,
        });
        s.check().unwrap();
        let r = s
            .alloc
            .next_release(s.plan.mac_at(0), "", Mac([0x52, 0, 0, 0, 0, 2]), 0);
        s.apply(&Change::Release(r));
        assert!(s.check().unwrap_err().to_string().contains("twice"));
        s.alloc.released.clear();
        s.bindings[0].outside = s.plan.mac_at(5);
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("never handed out")
        );
    }

    #[test]
    fn revert_undoes_apply() {
        let mut s = State::new(Plan::example());
        let port = Port {
            name: "a".into(),
            ifindex: 1,
        };
        let (outside, _, taken) = s
            .alloc
            .choose(&s.plan, "", Mac([0x52, 0, 0, 0, 0, 1]), 0, 0, 0)
            .unwrap();
        let binding = Binding {
            port: "a".into(),
            ifindex: 1,
            vm: String::new(),
            inside: Mac([0x52, 0, 0, 0, 0, 1]),
            outside,
            ips: vec![],
            since: 0,
            port_security: true,
        };
        let before = s.clone();
        let changes = [
            Change::AddPort(port),
            Change::take(taken),
            Change::Bind(binding.clone()),
            Change::RenamePort {
                ifindex: 1,
                from: "a".into(),
                to: "b".into(),
            },
        ];
        for c in &changes {
            s.apply(c);
        }
        s.check().unwrap();
        assert_eq!(s.bindings[0].port, "b");
        for c in changes.iter().rev() {
            s.revert(c);
        }
        assert_eq!(s, before);
    }
}
