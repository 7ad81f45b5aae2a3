//! The host's ports over their lifetime: reconciling the pinned data plane with the state at start, and the one
//! policy for a port that appears, is renamed or disappears (on a link event, on the periodic
//! check, or found missing at start).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::{Host, flags, now_ms};
use crate::{
    Mode, Program,
    common::maps::{BINDING_ANNOUNCE, BINDING_PORT_SECURITY, BindingKey},
    mac::Mac,
    ports::{self, LinkInfo},
    refusal::Refusal,
    state::{Change, Port},
    uplink::XdpMode,
};

/// How the binding maps differ from the state (see [`Host::map_diff`]).
#[derive(Debug, Default)]
pub(super) struct MapDiff {
    /// Entries no binding of the state has: (port's ifindex, inside MAC, outside MAC).
    pub extra: Vec<(u32, Mac, Mac)>,
    /// Bindings of the state (their index) whose entries are missing or wrong, and whether an
    /// entry for the port and inside MAC is there (with other values: wrong).
    pub missing: Vec<(usize, bool)>,
}

impl Host {
    /// Brings everything in line with the state on disk: ports that went away while no daemon ran
    /// are released, programs attached where needed and removed where not, and the maps
    /// corrected entry by entry (entries already right are not touched, so forwarding never
    /// stops).
    pub fn reconcile(&mut self) -> Result<()> {
        for p in self.vanished_ports() {
            self.port_gone(&p, "missing at start")
                .map_err(|r| anyhow::anyhow!("{r}"))?;
            crate::metrics::corrected("vanished_port", 1);
        }
        // One listing of the pinned links instead of a look at each port's pins (seven stats
        // and an interface lookup per port, most of a restart's time at 4,096 ports): a port
        // with exactly its two programs pinned needs nothing, attach would return at once.
        let pinned = self.dp.links()?;
        let mut on: HashMap<u32, Vec<Program>> = HashMap::new();
        for &(i, p) in &pinned {
            on.entry(i).or_default().push(p);
        }
        let wanted = Mode::Port.programs();
        for p in &self.state.ports {
            let has = on.get(&p.ifindex).map_or(&[][..], Vec::as_slice);
            if has.len() == wanted.len() && wanted.iter().all(|w| has.contains(w)) {
                continue;
            }
            // One port that cannot take the programs (another mode on it, say) must not keep the
            // daemon, and every other port, from running.
            match self.dp.attach(&p.name, Mode::Port) {
                Ok(()) => crate::metrics::corrected("port_programs", 1),
                Err(e) => warn!(port = p.name, error = %e, "attaching the programs at start"),
            }
        }
        self.attach_uplink()?;
        let ours: HashSet<u32> = self.state.ports.iter().map(|p| p.ifindex).collect();
        // Uplink programs elsewhere than on this run's uplink: a former uplink, or uplink mode
        // left for port mode.
        let mut stray: Vec<u32> = pinned
            .into_iter()
            .filter(|&(i, p)| {
                if p.on_port() {
                    !ours.contains(&i)
                } else {
                    self.uplink_ifindex != Some(i)
                }
            })
            .map(|(i, _)| i)
            .collect();
        stray.sort_unstable();
        stray.dedup();
        for i in stray {
            info!(
                ifindex = i,
                "detaching from an interface that is neither a port in the state nor the uplink"
            );
            self.dp.detach(i)?;
            crate::metrics::corrected("port_programs", 1);
        }
        self.fix_maps()
    }

    /// Uplink mode: the uplink programs on the uplink (kept when already pinned there). The
    /// daemon cannot run in uplink mode without them.
    fn attach_uplink(&mut self) -> Result<()> {
        let Some(u) = self.uplink.clone() else {
            return Ok(());
        };
        let ifindex = ports::ifindex(&u.name)
            .ok_or_else(|| anyhow::anyhow!("the uplink {} does not exist", u.name))?;
        self.dp
            .attach_uplink(&u.name, u.xdp == XdpMode::Generic)
            .with_context(|| {
                format!(
                    "attaching the uplink programs to {} (XDP {}{})",
                    u.name,
                    u.xdp.name(),
                    if u.xdp == XdpMode::Native {
                        "; --uplink-xdp generic where the driver has no native XDP"
                    } else {
                        ""
                    }
                )
            })?;
        self.uplink_ifindex = Some(ifindex);
        info!(uplink = u.name, ifindex, xdp = u.xdp.name(), "uplink mode");
        Ok(())
    }

    /// How the binding maps differ from the state (outside MAC and port security; each binding
    /// in its port's slot, or in uplink mode in the MAC-keyed maps, so that entries of the other
    /// mode are extra): the one rule for "the maps equal the store", which reconcile corrects
    /// and `mat doctor` reports.
    pub(super) fn map_diff(&self) -> Result<MapDiff> {
        let from: HashMap<(u32, Mac), (Mac, bool)> = self
            .state
            .bindings
            .iter()
            .map(|b| {
                (
                    (self.dp_ifindex(b.ifindex), b.inside),
                    (b.outside, b.port_security),
                )
            })
            .collect();
        let to: HashMap<(u32, Mac), Mac> = self
            .state
            .bindings
            .iter()
            .map(|b| ((self.dp_ifindex(b.ifindex), b.outside), b.inside))
            .collect();
        // An entry of a binding the state has (port and inside MAC) but with another outside MAC
        // or flags is not extra: binding it again overwrites it in place, so that the port
        // never goes untranslated in between (a removal first would let the VM's frames out
        // with its inside MAC, and drop those to it, until the bind).
        let mut diff = MapDiff::default();
        let mut present = HashSet::new();
        let mut have_from = HashMap::new();
        for (k, v) in self.dp.bindings()? {
            present.insert((k.ifindex, Mac(k.mac)));
            let secured = v.flags & BINDING_PORT_SECURITY != 0;
            match from.get(&(k.ifindex, Mac(k.mac))) {
                Some(&want) if want == (Mac(v.mac), secured) => {
                    have_from.insert(k, Mac(v.mac));
                }
                Some(_) => {}
                None => diff.extra.push((k.ifindex, Mac(k.mac), Mac(v.mac))),
            }
        }
        let mut have_to = HashMap::new();
        for (k, v) in self.dp.reverse_bindings()? {
            if to.get(&(k.ifindex, Mac(k.mac))) == Some(&Mac(v.mac)) {
                have_to.insert(k, Mac(v.mac));
            } else {
                if !from.contains_key(&(k.ifindex, Mac(v.mac))) {
                    diff.extra.push((k.ifindex, Mac(v.mac), Mac(k.mac)));
                }
                have_from.remove(&BindingKey::new(k.ifindex, v.mac));
            }
        }
        // A port-table slot is read both ways: once is enough.
        diff.extra.sort_unstable();
        diff.extra.dedup();
        for (i, b) in self.state.bindings.iter().enumerate() {
            let at = self.dp_ifindex(b.ifindex);
            let ok_from = have_from.get(&BindingKey::new(at, b.inside.0)) == Some(&b.outside);
            let ok_to = have_to.get(&BindingKey::new(at, b.outside.0)) == Some(&b.inside);
            if !(ok_from && ok_to) {
                diff.missing.push((i, present.contains(&(at, b.inside))));
            }
        }
        Ok(diff)
    }

    /// Corrects the binding maps to the state, entry by entry.
    fn fix_maps(&mut self) -> Result<()> {
        let diff = self.map_diff()?;
        for &(ifindex, inside, outside) in &diff.extra {
            self.dp.unbind(ifindex, inside.0, outside.0)?;
        }
        for &(i, _) in &diff.missing {
            let b = &self.state.bindings[i];
            self.dp.bind(
                self.dp_ifindex(b.ifindex),
                b.inside.0,
                b.outside.0,
                flags(b, BINDING_ANNOUNCE),
            )?;
        }
        crate::metrics::corrected("map_entry", (diff.extra.len() + diff.missing.len()) as u64);
        info!(
            bindings = self.state.bindings.len(),
            ports = self.state.ports.len(),
            removed = diff.extra.len(),
            added = diff.missing.len(),
            "maps reconciled with the state"
        );
        Ok(())
    }

    /// A port is gone: its bindings go into hold-down, its links are unpinned, the port is
    /// forgotten. The one place that decides what a vanished port means.
    fn port_gone(&mut self, port: &Port, why: &str) -> Result<(), Refusal> {
        let changes = Self::forget_port(&self.state, port, now_ms());
        let released = changes.len() - 1;
        self.commit(changes)?;
        if let Err(e) = self.dp.detach(port.ifindex) {
            warn!(port = port.name, error = %e, "unpinning the links of a vanished port");
        }
        warn!(
            port = port.name,
            ifindex = port.ifindex,
            released = released / 2,
            why,
            "port went away; its bindings are released into hold-down"
        );
        Ok(())
    }

    /// The kernel reported the link `ifindex` removed (or leaving its bridge): if the interface
    /// is really gone, its port is released.
    pub fn link_removed(&mut self, ifindex: u32) -> Result<(), Refusal> {
        let Some(p) = self
            .state
            .ports
            .iter()
            .find(|p| p.ifindex == ifindex)
            .cloned()
        else {
            return Ok(());
        };
        match ports::ifname(p.ifindex) {
            ports::Lookup::Gone => self.port_gone(&p, "link removed"),
            ports::Lookup::Found(name) if name != p.name => self.port_gone(&p, "link replaced"),
            _ => Ok(()),
        }
    }

    /// A link was added or changed: follow a rename of a port, and put the programs on a new VM
    /// port of a managed bridge at once, so that the spoof check guards it from its first frame
    /// and its attach only writes a transaction and map entries.
    pub fn link_changed(&mut self, link: &LinkInfo) -> Result<(), Refusal> {
        if self.uplink.as_ref().is_some_and(|u| u.name == link.name)
            && self.uplink_ifindex != Some(link.ifindex)
        {
            // The uplink came back (or was replaced): the programs go on the new one.
            if let Some(old) = self.uplink_ifindex.take() {
                let _ = self.dp.detach(old);
            }
            return self
                .attach_uplink()
                .map_err(|e| Refusal::internal(format!("{e:#}")));
        }
        if let Some(old) = self
            .state
            .ports
            .iter()
            .find(|p| p.ifindex == link.ifindex && p.name != link.name)
            .map(|p| p.name.clone())
        {
            if ports::ifname(link.ifindex) != ports::Lookup::Found(link.name.clone()) {
                return Ok(());
            }
            self.commit(vec![Change::RenamePort {
                ifindex: link.ifindex,
                from: old.clone(),
                to: link.name.clone(),
            }])?;
            info!(ifindex = link.ifindex, old, new = link.name, "port renamed");
            return Ok(());
        }
        if self.vm_ports.managed(link)
            && !self.state.ports.iter().any(|p| p.ifindex == link.ifindex)
        {
            self.add_port(&link.name, link.ifindex)?;
            info!(
                port = link.name,
                ifindex = link.ifindex,
                "guarding a new port of a managed bridge"
            );
        }
        Ok(())
    }

    /// Attaches the programs to a port and records it (the programs first: a port in the state
    /// always has them).
    fn add_port(&mut self, name: &str, ifindex: u32) -> Result<(), Refusal> {
        self.dp
            .attach(name, Mode::Port)
            .map_err(|e| Refusal::internal(format!("attaching the programs to {name}: {e}")))?;
        let r = self.commit(vec![Change::AddPort(Port {
            name: name.to_owned(),
            ifindex,
        })]);
        if r.is_err() {
            let _ = self.dp.detach(ifindex);
        }
        r
    }

    /// Ports in the state whose interface is gone (an error looking one up is not "gone").
    fn vanished_ports(&self) -> Vec<Port> {
        self.state
            .ports
            .iter()
            .filter(|p| match ports::ifname(p.ifindex) {
                ports::Lookup::Gone => true,
                ports::Lookup::Found(name) => name != p.name,
                ports::Lookup::Unknown(e) => {
                    warn!(port = p.name, error = %e, "cannot tell whether a port still exists");
                    false
                }
            })
            .cloned()
            .collect()
    }

    /// Releases the bindings of ports whose interface is gone (events can be lost).
    pub fn resync(&mut self) {
        for p in self.vanished_ports() {
            match self.port_gone(&p, "found missing") {
                Ok(()) => crate::metrics::corrected("vanished_port", 1),
                Err(e) => warn!(port = p.name, error = %e, "releasing a vanished port"),
            }
        }
    }
}
