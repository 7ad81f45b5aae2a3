//! The daemon's synchronous heart: the state, the data plane and the rules that keep them equal.
//!
//! Every change follows one order: compute the new state on a copy, write it to disk (durable),
//! then change the maps, then adopt the copy. A refused or failed request leaves state, disk and
//! maps as they were. After a crash, [`Core::reconcile`] corrects the maps to the state on disk.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use mat_loader::{
    common::{
        maps::{BindingKey, BINDING_ANNOUNCE, UPLINK_IFINDEX},
        pool::PoolPrefix,
    },
    Dataplane, Mode, Program,
};
use tracing::{info, warn};

use crate::{
    links,
    mac::Mac,
    plan::Plan,
    proto::{
        AttachView, AttachVmView, BindingView, BoundView, Code, DetachView, FreeView, HeldView,
        ListView, PlanView, Refusal, RoutesView, VmPort,
    },
    state::{Binding, Port, State, Store},
};

/// Addresses to announce from an outside MAC, out of the bridge of the port `ifindex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub ifindex: u32,
    pub outside: Mac,
    pub ips: Vec<Ipv4Addr>,
}

pub struct Core {
    pub dp: Dataplane,
    store: Store,
    pub state: State,
    pub hold_ms: u64,
}

type Reply = Result<serde_json::Value, Refusal>;

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(Code::Internal, e.to_string())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether two plans hand out the same MACs (VLANs do not matter to allocation).
fn same_layout(a: &Plan, b: &Plan) -> bool {
    (a.pool, a.rack_bits, a.host_bits, a.rack, a.host)
        == (b.pool, b.rack_bits, b.host_bits, b.rack, b.host)
}

impl Core {
    /// Loads the state (or starts one) for `plan`, and takes the data plane.
    pub fn open(store: Store, dp: Dataplane, plan: Plan, hold_ms: u64) -> Result<Self> {
        let state = match store.load()? {
            None => State::new(plan),
            Some(s) if s.plan == plan => s,
            Some(s) if same_layout(&s.plan, &plan) => {
                info!(old = ?s.plan, new = ?plan, "plan changed outside the MAC layout");
                State { plan, ..s }
            }
            Some(s) if s.bindings.is_empty() && s.alloc.released.is_empty() => {
                info!(old = ?s.plan, new = ?plan, "new address plan; nothing was allocated");
                State::new(plan)
            }
            Some(s) => anyhow::bail!(
                "the state in {} was made with pool {} (rack {}, host {}) and has {} bindings and \
                 {} held-down MACs; the configured plan gives pool {}: detach everything with the \
                 old plan first, or point --state-dir elsewhere",
                store.dir().display(),
                s.plan.host_pool(),
                s.plan.rack,
                s.plan.host,
                s.bindings.len(),
                s.alloc.released.len(),
                plan.host_pool()
            ),
        };
        let mut core = Self {
            dp,
            store,
            state,
            hold_ms,
        };
        let pool = core.state.plan.pool;
        core.dp
            .set_pools(&[PoolPrefix::new(pool.mac.0, pool.len)])
            .context("setting the outside pool")?;
        Ok(core)
    }

    /// Makes `next` the state: on disk first, then in memory.
    fn commit(&mut self, next: State) -> Result<(), Refusal> {
        self.store
            .save(&next)
            .map_err(|e| internal(format!("{e:#}")))?;
        self.state = next;
        Ok(())
    }

    /// Brings everything in line with the state on disk: ports that went away while no daemon ran
    /// are released, programs attached where needed and removed where not, and the maps
    /// corrected entry by entry (entries already right are not touched, so forwarding never
    /// stops). Returns what to announce (nothing: a restart announces nothing by itself).
    pub fn reconcile(&mut self) -> Result<()> {
        for p in self.vanished_ports() {
            self.port_gone(&p.name, p.ifindex, "missing at start")
                .map_err(|r| anyhow::anyhow!("{r}"))?;
        }
        for p in self.state.ports.clone() {
            // One port that cannot take the programs (another mode on it, say) must not keep the
            // daemon, and every other port, from running.
            if let Err(e) = self.dp.attach(&p.name, Mode::Port) {
                warn!(port = p.name, error = %e, "attaching the programs at start");
            }
        }
        let ours: HashSet<u32> = self.state.ports.iter().map(|p| p.ifindex).collect();
        let mut stray: Vec<u32> = self
            .dp
            .links()?
            .into_iter()
            .filter(|&(i, p)| {
                !ours.contains(&i)
                    && matches!(
                        p,
                        Program::PortFromVm | Program::PortToVm | Program::PortFromVmXdp
                    )
            })
            .map(|(i, _)| i)
            .collect();
        stray.sort_unstable();
        stray.dedup();
        for i in stray {
            info!(
                ifindex = i,
                "detaching from a port that is not in the state"
            );
            self.dp.detach(i)?;
        }
        self.fix_maps()
    }

    /// Corrects the binding maps to the state.
    fn fix_maps(&mut self) -> Result<()> {
        let from: HashMap<(u32, Mac), Mac> = self
            .state
            .bindings
            .iter()
            .map(|b| ((b.ifindex, b.inside), b.outside))
            .collect();
        let to: HashMap<(u32, Mac), Mac> = self
            .state
            .bindings
            .iter()
            .map(|b| ((b.ifindex, b.outside), b.inside))
            .collect();
        let mut removed = 0;
        for (k, v) in self.dp.bindings()? {
            if k.ifindex == UPLINK_IFINDEX {
                continue;
            }
            if from.get(&(k.ifindex, Mac(k.mac))) != Some(&Mac(v.mac)) {
                self.dp.unbind(k.ifindex, k.mac, v.mac)?;
                removed += 1;
            }
        }
        for (k, v) in self.dp.reverse_bindings()? {
            if k.ifindex == UPLINK_IFINDEX {
                continue;
            }
            if to.get(&(k.ifindex, Mac(k.mac))) != Some(&Mac(v.mac)) {
                self.dp.unbind(k.ifindex, v.mac, k.mac)?;
                removed += 1;
            }
        }
        let have_from: HashMap<BindingKey, Mac> = self
            .dp
            .bindings()?
            .into_iter()
            .map(|(k, v)| (k, Mac(v.mac)))
            .collect();
        let have_to: HashMap<BindingKey, Mac> = self
            .dp
            .reverse_bindings()?
            .into_iter()
            .map(|(k, v)| (k, Mac(v.mac)))
            .collect();
        let mut added = 0;
        for b in &self.state.bindings {
            let ok_from =
                have_from.get(&BindingKey::new(b.ifindex, b.inside.0)) == Some(&b.outside);
            let ok_to = have_to.get(&BindingKey::new(b.ifindex, b.outside.0)) == Some(&b.inside);
            if !(ok_from && ok_to) {
                self.dp
                    .bind(b.ifindex, b.inside.0, b.outside.0, BINDING_ANNOUNCE)?;
                added += 1;
            }
        }
        info!(
            bindings = self.state.bindings.len(),
            ports = self.state.ports.len(),
            removed,
            added,
            "maps reconciled with the state"
        );
        Ok(())
    }

    /// Releases every binding of a port that no longer exists and forgets the port.
    pub fn port_gone(&mut self, name: &str, ifindex: u32, why: &str) -> Result<(), Refusal> {
        let Some(pos) = self
            .state
            .ports
            .iter()
            .position(|p| p.name == name && p.ifindex == ifindex)
        else {
            return Ok(());
        };
        let now = now_ms();
        let mut next = self.state.clone();
        next.ports.remove(pos);
        let (gone, kept): (Vec<Binding>, Vec<Binding>) = next
            .bindings
            .into_iter()
            .partition(|b| b.ifindex == ifindex);
        next.bindings = kept;
        for b in &gone {
            next.alloc.release(b.outside, &b.vm, b.inside, now);
        }
        self.commit(next)?;
        for b in &gone {
            if let Err(e) = self.dp.unbind(ifindex, b.inside.0, b.outside.0) {
                warn!(port = name, error = %e, "removing a binding of a vanished port");
            }
        }
        if let Err(e) = self.dp.detach(ifindex) {
            warn!(port = name, error = %e, "unpinning the links of a vanished port");
        }
        warn!(
            port = name,
            ifindex,
            released = gone.len(),
            why,
            "port went away; its bindings are released into hold-down"
        );
        Ok(())
    }

    /// A port was renamed: follow it.
    pub fn port_renamed(&mut self, ifindex: u32, new: &str) -> Result<(), Refusal> {
        let Some(old) = self
            .state
            .ports
            .iter()
            .find(|p| p.ifindex == ifindex && p.name != new)
            .map(|p| p.name.clone())
        else {
            return Ok(());
        };
        if links::ifname(ifindex).as_deref() != Some(new) {
            return Ok(());
        }
        let mut next = self.state.clone();
        for p in next.ports.iter_mut().filter(|p| p.ifindex == ifindex) {
            p.name = new.to_owned();
        }
        for b in next.bindings.iter_mut().filter(|b| b.ifindex == ifindex) {
            b.port = new.to_owned();
        }
        self.commit(next)?;
        info!(ifindex, old, new, "port renamed");
        Ok(())
    }

    /// Ports in the state whose interface no longer exists under that ifindex and name.
    fn vanished_ports(&self) -> Vec<Port> {
        self.state
            .ports
            .iter()
            .filter(|p| links::ifname(p.ifindex).as_deref() != Some(p.name.as_str()))
            .cloned()
            .collect()
    }

    /// Releases the bindings of ports whose interface is gone (events can be lost).
    pub fn resync(&mut self) {
        for p in self.vanished_ports() {
            if let Err(e) = self.port_gone(&p.name, p.ifindex, "found missing") {
                warn!(port = p.name, error = %e, "releasing a vanished port");
            }
        }
    }

    fn inside_mac(&self, s: &str) -> Result<Mac, Refusal> {
        let mac: Mac = s.parse().map_err(|e: crate::mac::ParseMacError| {
            Refusal::new(Code::InvalidMac, e.to_string())
        })?;
        let bad = |why: &str| Err(Refusal::new(Code::InvalidMac, format!("{mac} is {why}")));
        if mac.is_zero() {
            return bad("the zero MAC");
        }
        if mac.is_broadcast() {
            return bad("the broadcast MAC");
        }
        if mac.is_multicast() {
            return bad("a multicast MAC (first octet has bit 0 set)");
        }
        if self.state.plan.pool.contains(mac) {
            return bad(&format!(
                "inside the outside pool {}; a VM's own MAC must not be an outside MAC",
                self.state.plan.pool
            ));
        }
        Ok(mac)
    }

    pub fn attach(
        &mut self,
        port: &str,
        mac: &str,
        vm: Option<&str>,
        ips: &[Ipv4Addr],
    ) -> Result<(serde_json::Value, Option<Announce>), Refusal> {
        let inside = self.inside_mac(mac)?;
        let vm = vm.unwrap_or_default();
        if vm.len() > 256 || vm.chars().any(char::is_control) {
            return Err(Refusal::new(
                Code::BadRequest,
                "a VM name is at most 256 bytes without control characters",
            ));
        }
        let Some(ifindex) = links::ifindex(port) else {
            return Err(Refusal::new(
                Code::UnknownPort,
                format!("no interface named {port:?}"),
            ));
        };
        if port == "lo" {
            return Err(Refusal::new(Code::UnknownPort, "lo is not a VM port"));
        }
        // A port of the same name that we knew under another index went away unnoticed.
        if let Some(old) = self
            .state
            .port(port)
            .filter(|p| p.ifindex != ifindex)
            .cloned()
        {
            self.port_gone(&old.name, old.ifindex, "replaced by a new interface")?;
        }
        if let Some(b) = self.state.bindings.iter().find(|b| b.ifindex == ifindex) {
            return Err(Refusal::new(
                Code::PortBound,
                format!(
                    "port {port} is already bound: {} -> {}{}",
                    b.inside,
                    b.outside,
                    if b.vm.is_empty() {
                        String::new()
                    } else {
                        format!(" (VM {})", b.vm)
                    }
                ),
            ));
        }
        if let Some(b) = self.state.bindings.iter().find(|b| b.inside == inside) {
            return Err(Refusal::new(
                Code::MacInUse,
                format!("{inside} is already bound on port {}", b.port),
            ));
        }
        let now = now_ms();
        let mut next = self.state.clone();
        let bound = next.bindings.len() as u64;
        let (outside, source) = next
            .alloc
            .allocate(&next.plan, vm, inside, now, self.hold_ms, bound)
            .map_err(|e| Refusal::new(Code::PoolExhausted, e.to_string()))?;
        let new_port = next.port(port).is_none();
        if new_port {
            next.ports.push(Port {
                name: port.to_owned(),
                ifindex,
            });
        }
        let mut given = ips.to_vec();
        given.sort_unstable();
        given.dedup();
        let binding = Binding {
            port: port.to_owned(),
            ifindex,
            vm: vm.to_owned(),
            inside,
            outside,
            ips: given.clone(),
            since: now / 1000,
        };
        next.bindings.push(binding.clone());
        // Programs first (idempotent), so the binding works as soon as it is in the maps.
        if let Err(e) = self.dp.attach(port, Mode::Port) {
            if new_port {
                let _ = self.dp.detach(ifindex);
            }
            return Err(internal(format!("attaching the programs to {port}: {e}")));
        }
        let prev = self.state.clone();
        if let Err(r) = self.commit(next) {
            if new_port {
                let _ = self.dp.detach(ifindex);
            }
            return Err(r);
        }
        if let Err(e) = self.dp.bind(ifindex, inside.0, outside.0, BINDING_ANNOUNCE) {
            // Undo: the half-made entries out of the maps, the old state back on disk.
            let _ = self.dp.unbind(ifindex, inside.0, outside.0);
            if let Err(r) = self.commit(prev) {
                warn!(error = %r, "could not undo a failed attach on disk");
            }
            return Err(internal(format!("binding in the maps: {e}")));
        }
        info!(port, ifindex, vm, %inside, %outside, ?source, "attached");
        let view = AttachView {
            binding: self.view(&binding),
            source,
        };
        let announce = (!given.is_empty()).then_some(Announce {
            ifindex,
            outside,
            ips: given,
        });
        Ok((serde_json::to_value(view).expect("serializes"), announce))
    }

    /// [`crate::proto::Request::AttachVm`]: binds a VM's ports keyed by (VM, inside MAC), for the
    /// libvirt hook. Kept when already bound as asked; moved from another port otherwise. The
    /// announcement waits for the VM's first frame (the binding's announce flag). All or nothing.
    pub fn attach_vm(&mut self, vm: &str, ports: &[VmPort]) -> Reply {
        if vm.is_empty() || ports.is_empty() {
            return Err(Refusal::new(
                Code::BadRequest,
                "attach_vm needs a VM and at least one port",
            ));
        }
        // Every port checked before anything changes.
        let mut wanted = Vec::new();
        for p in ports {
            let inside = self.inside_mac(&p.mac)?;
            let Some(ifindex) = links::ifindex(&p.port) else {
                return Err(Refusal::new(
                    Code::UnknownPort,
                    format!("no interface named {:?}", p.port),
                ));
            };
            if wanted
                .iter()
                .any(|&(_, i, m): &(&VmPort, u32, Mac)| i == ifindex || m == inside)
            {
                return Err(Refusal::new(
                    Code::BadRequest,
                    format!("port {} or MAC {inside} given twice", p.port),
                ));
            }
            wanted.push((p, ifindex, inside));
        }
        let mut attached = Vec::new();
        let mut kept = Vec::new();
        for &(p, ifindex, inside) in &wanted {
            if let Some(b) = self
                .state
                .bindings
                .iter()
                .find(|b| b.ifindex == ifindex && b.inside == inside && b.vm == vm)
            {
                kept.push(self.view(b));
                continue;
            }
            let result = match self
                .state
                .bindings
                .iter()
                .find(|b| b.vm == vm && b.inside == inside)
                .map(|b| b.port.clone())
            {
                Some(old) => self
                    .detach(Some(&old), Some(&p.mac), Some(vm))
                    .map(|_| info!(vm, %inside, old, new = p.port, "moving a VM port")),
                None => Ok(()),
            }
            .and_then(|()| self.attach(&p.port, &p.mac, Some(vm), &p.ips));
            match result {
                // The announcement is left to the VM's first frame.
                Ok((v, _)) => attached.push(
                    serde_json::from_value::<AttachView>(v).expect("attach returns an AttachView"),
                ),
                Err(r) => {
                    for a in &attached {
                        let b = &a.binding;
                        let mac = b.inside.to_string();
                        if let Err(e) = self.detach(Some(&b.port), Some(&mac), Some(vm)) {
                            warn!(port = b.port, error = %e, "undoing a refused attach_vm");
                        }
                    }
                    return Err(r);
                }
            }
        }
        Ok(serde_json::to_value(AttachVmView { attached, kept }).expect("serializes"))
    }

    pub fn detach(&mut self, port: Option<&str>, mac: Option<&str>, vm: Option<&str>) -> Reply {
        if port.is_none() && vm.is_none() {
            return Err(Refusal::new(
                Code::BadRequest,
                "detach needs a port or a VM name",
            ));
        }
        let mac = mac.map(|m| {
            m.parse::<Mac>()
                .map_err(|e| Refusal::new(Code::InvalidMac, e.to_string()))
        });
        let mac = mac.transpose()?;
        let chosen: Vec<Binding> = self
            .state
            .bindings
            .iter()
            .filter(|b| port.is_none_or(|p| b.port == p))
            .filter(|b| mac.is_none_or(|m| b.inside == m))
            .filter(|b| vm.is_none_or(|v| b.vm == v))
            .cloned()
            .collect();
        if chosen.is_empty() {
            let mut what = Vec::new();
            if let Some(p) = port {
                what.push(format!("port {p}"));
            }
            if let Some(m) = mac {
                what.push(format!("MAC {m}"));
            }
            if let Some(v) = vm {
                what.push(format!("VM {v}"));
            }
            return Err(Refusal::new(
                Code::NotBound,
                format!("nothing is bound for {}", what.join(", ")),
            ));
        }
        let now = now_ms();
        let mut next = self.state.clone();
        next.bindings.retain(|b| !chosen.contains(b));
        for b in &chosen {
            next.alloc.release(b.outside, &b.vm, b.inside, now);
        }
        let views: Vec<BindingView> = chosen.iter().map(|b| self.view(b)).collect();
        self.commit(next)?;
        for b in &chosen {
            // The state on disk no longer has it; a failure here is corrected by reconcile.
            if let Err(e) = self.dp.unbind(b.ifindex, b.inside.0, b.outside.0) {
                warn!(port = b.port, error = %e, "removing a binding from the maps");
            }
            info!(port = b.port, vm = b.vm, inside = %b.inside, outside = %b.outside, "detached");
        }
        Ok(serde_json::to_value(DetachView { released: views }).expect("serializes"))
    }

    fn learned(&self) -> HashMap<(u32, Mac), Ipv4Addr> {
        self.dp
            .learned()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ip)| ((k.ifindex, Mac(k.mac)), ip))
            .collect()
    }

    fn view_with(&self, b: &Binding, learned: &HashMap<(u32, Mac), Ipv4Addr>) -> BindingView {
        let since = UNIX_EPOCH + std::time::Duration::from_secs(b.since);
        BindingView {
            vm: b.vm.clone(),
            port: b.port.clone(),
            ifindex: b.ifindex,
            inside: b.inside,
            outside: b.outside,
            ips: b.ips.clone(),
            learned: learned
                .get(&(b.ifindex, b.inside))
                .copied()
                .into_iter()
                .collect(),
            since: b.since,
            since_rfc3339: humantime::format_rfc3339_seconds(since).to_string(),
        }
    }

    fn view(&self, b: &Binding) -> BindingView {
        self.view_with(b, &self.learned())
    }

    pub fn list(&self) -> ListView {
        let learned = self.learned();
        let mut bindings: Vec<BindingView> = self
            .state
            .bindings
            .iter()
            .map(|b| self.view_with(b, &learned))
            .collect();
        bindings.sort_by(|a, b| (&a.port, a.inside).cmp(&(&b.port, b.inside)));
        ListView { bindings }
    }

    pub fn plan(&self) -> PlanView {
        let p = &self.state.plan;
        let now = now_ms();
        let a = &self.state.alloc;
        let mut bound: Vec<BoundView> = self
            .state
            .bindings
            .iter()
            .map(|b| BoundView {
                outside: b.outside,
                vm: b.vm.clone(),
                port: b.port.clone(),
                inside: b.inside,
            })
            .collect();
        bound.sort_by_key(|b| b.outside);
        let held: Vec<HeldView> = a
            .held(now, self.hold_ms)
            .map(|r| HeldView {
                outside: r.outside,
                vm: r.vm.clone(),
                inside: r.inside,
                released_ms: r.at_ms,
                remaining_ms: r.at_ms + self.hold_ms - now,
            })
            .collect();
        let reusable: Vec<Mac> = a.expired(now, self.hold_ms).map(|r| r.outside).collect();
        let fresh = p.capacity() - a.next_fresh;
        let ranges = if fresh == 0 {
            vec![]
        } else if fresh == 1 {
            vec![p.mac_at(a.next_fresh).to_string()]
        } else {
            vec![format!(
                "{}-{}",
                p.mac_at(a.next_fresh),
                p.mac_at(p.capacity() - 1)
            )]
        };
        let next = if fresh > 0 {
            Some(p.mac_at(a.next_fresh))
        } else {
            reusable.first().copied()
        };
        PlanView {
            pool: p.pool.to_string(),
            host_pool: p.host_pool().to_string(),
            rack_route: p.rack_route().to_string(),
            rack: p.rack,
            host: p.host,
            rack_bits: p.rack_bits,
            host_bits: p.host_bits,
            vm_bits: p.vm_bits(),
            capacity: p.capacity(),
            hold_down_ms: self.hold_ms,
            bound,
            held,
            free: FreeView {
                count: fresh + reusable.len() as u64,
                ranges,
                reusable,
                next,
            },
        }
    }

    pub fn routes(&self) -> RoutesView {
        RoutesView {
            routes: self.state.plan.routes(),
        }
    }

    /// What to announce for a data-plane event about (port, inside MAC), if it is bound.
    pub fn on_event(
        &self,
        ifindex: u32,
        inside: Mac,
        learned: Option<Ipv4Addr>,
    ) -> Option<Announce> {
        let b = self
            .state
            .bindings
            .iter()
            .find(|b| b.ifindex == ifindex && b.inside == inside)?;
        let ips = match learned {
            Some(ip) => vec![ip],
            None => {
                let mut ips = b.ips.clone();
                ips.extend(self.learned().get(&(ifindex, inside)));
                ips.sort_unstable();
                ips.dedup();
                ips
            }
        };
        (!ips.is_empty()).then_some(Announce {
            ifindex,
            outside: b.outside,
            ips,
        })
    }

    /// Whether `outside` is still bound on `ifindex` (an announcement stops when it is not).
    pub fn is_bound(&self, ifindex: u32, outside: Mac) -> bool {
        self.state
            .bindings
            .iter()
            .any(|b| b.ifindex == ifindex && b.outside == outside)
    }
}
