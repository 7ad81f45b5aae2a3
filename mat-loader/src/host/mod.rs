//! The host: one hypervisor's pool, bindings, data plane and durable state, and the rules that
//! keep them equal. Typed requests in, typed results or a [`Refusal`] out.
//!
//! Every change follows one order: compute the request's [`Change`]s against the state, make
//! them durable in one store transaction, apply them to the state, then to the maps. A refused
//! request changes nothing; one the maps refuse is undone on disk and in memory. After a crash,
//! [`Host::reconcile`] corrects the maps to the state on disk.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{SystemTime, UNIX_EPOCH},
};

mod doctor;
mod events;
mod hotplug;
mod lifecycle;
mod report;

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::{
    Dataplane, Mode, Program,
    alloc::{Released, Source},
    announce::{self, Announce},
    common::{
        maps::{
            BINDING_ANNOUNCE, BINDING_PORT_SECURITY, SETTING_DHCP_TRANSLATE, SETTING_MONITOR,
            UPLINK_IFINDEX,
        },
        pool::PoolPrefix,
    },
    mac::Mac,
    plan::Plan,
    ports::{self, LinkInfo, VmPorts},
    refusal::{Code, Refusal},
    state::{Binding, Change, Port, State},
    store::Store,
    uplink::{self, Uplink},
    views::{AttachView, AttachVmView, BindingView, DetachView},
};

/// Bind a VM's inside MAC on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    pub port: String,
    pub inside: Mac,
    /// The VM's name ("" for none): with the inside MAC, it names the VM port across attaches.
    pub vm: String,
    /// Addresses to announce from the outside MAC (IPv4 and IPv6).
    pub ips: Vec<IpAddr>,
    /// Accept a port that does not look like a VM port (not a tap or veth).
    pub force: bool,
    /// Whether the port may only claim the inside MAC (`None`: the host's default).
    pub port_security: Option<bool>,
}

/// How a host runs, beside its plan.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a released outside MAC is held before reuse, in milliseconds.
    pub hold_ms: u64,
    pub vm_ports: VmPorts,
    /// Port security for bindings that do not say otherwise.
    pub port_security: bool,
    /// DHCPv4: translate chaddr rather than keep it and set the broadcast flag.
    pub dhcp_translate: bool,
    /// Uplink mode: translate on this uplink instead of on each VM port.
    pub uplink: Option<Uplink>,
}

/// IPv6 addresses learned per binding from the VM's own ND, most recent last.
const LEARNED6_MAX: usize = 8;

/// Which bindings to release: every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detach {
    pub port: Option<String>,
    pub inside: Option<Mac>,
    pub vm: Option<String>,
}

/// A managed port, as `mat stats` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortState {
    pub name: String,
    pub ifindex: u32,
    pub programs: Vec<Program>,
    pub bindings: usize,
}

pub struct Host {
    dp: Dataplane,
    store: Store,
    state: State,
    hold_ms: u64,
    vm_ports: VmPorts,
    port_security: bool,
    /// IPv6 addresses the VMs claimed in their own ND, by (port, inside MAC): the data plane
    /// reports them once each; they are announced again when the VM runs after a migration.
    learned6: HashMap<(u32, Mac), Vec<Ipv6Addr>>,
    /// VMs claiming addresses given to others, for the warning.
    conflicts: announce::Quieted,
    /// Uplink mode, and the uplink's index once its programs are attached.
    uplink: Option<Uplink>,
    uplink_ifindex: Option<u32>,
    /// The data plane's `SETTING_*` flags.
    settings: u32,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The data-plane flags of a binding: `extra` and its port security.
fn flags(b: &Binding, extra: u16) -> u16 {
    if b.port_security {
        extra | BINDING_PORT_SECURITY
    } else {
        extra
    }
}

/// Whether two plans hand out the same MACs (VLANs do not matter to allocation).
fn same_layout(a: &Plan, b: &Plan) -> bool {
    (a.pool, a.rack_bits, a.host_bits, a.rack, a.host)
        == (b.pool, b.rack_bits, b.host_bits, b.rack, b.host)
}

fn unknown_port(port: &str) -> Refusal {
    Refusal::new(Code::UnknownPort, format!("no interface named {port:?}"))
}

impl Host {
    /// Loads the state (or starts one) for `plan`, and takes the data plane.
    pub fn open(mut store: Store, mut dp: Dataplane, plan: Plan, opts: Options) -> Result<Self> {
        let loaded = store.load()?;
        let stored_mode = store.mode()?;
        let mode = uplink::mode_name(opts.uplink.as_ref());
        let bound = loaded.as_ref().map_or(0, |s| s.bindings.len());
        if let Some(why) = uplink::switch_refused(&stored_mode, mode, bound) {
            anyhow::bail!("{why}");
        }
        let state = match loaded {
            None => {
                let s = State::new(plan);
                store.reset(&s)?;
                s
            }
            Some(s) if s.plan == plan => s,
            Some(s) if same_layout(&s.plan, &plan) => {
                info!(old = ?s.plan, new = ?plan, "plan changed outside the MAC layout");
                store.set_plan(&plan)?;
                State { plan, ..s }
            }
            Some(s) if s.bindings.is_empty() && s.alloc.released.is_empty() => {
                info!(old = ?s.plan, new = ?plan, "new address plan; nothing was allocated");
                let s = State {
                    ports: s.ports,
                    ..State::new(plan)
                };
                store.reset(&s)?;
                s
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
        if stored_mode != mode {
            info!(
                from = stored_mode,
                to = mode,
                "translation mode changed; nothing was bound"
            );
            store.set_mode(mode)?;
        }
        let pool = state.plan.pool;
        dp.set_pools(&[PoolPrefix::new(pool.mac.0, pool.len)])
            .context("setting the outside pool")?;
        let settings = if opts.dhcp_translate {
            SETTING_DHCP_TRANSLATE
        } else {
            0
        };
        // A monitor flag left by a daemon that was killed while one watched goes here too.
        dp.set_settings(settings)
            .context("setting the data plane's DHCP mode")?;
        Ok(Self {
            dp,
            store,
            state,
            hold_ms: opts.hold_ms,
            vm_ports: opts.vm_ports,
            port_security: opts.port_security,
            learned6: HashMap::new(),
            conflicts: announce::Quieted::default(),
            uplink: opts.uplink,
            uplink_ifindex: None,
            settings,
        })
    }

    /// Whether the data plane reports dropped frames (while `mat monitor` watches).
    pub fn set_monitor(&mut self, on: bool) -> Result<(), Refusal> {
        self.settings = if on {
            self.settings | SETTING_MONITOR
        } else {
            self.settings & !SETTING_MONITOR
        };
        self.dp
            .set_settings(self.settings)
            .map_err(|e| Refusal::internal(format!("setting the data plane's flags: {e}")))
    }

    /// Where a binding of the port `ifindex` lives in the maps: its port's slot, or in uplink
    /// mode the MAC-keyed maps.
    fn dp_ifindex(&self, ifindex: u32) -> u32 {
        if self.uplink.is_some() {
            UPLINK_IFINDEX
        } else {
            ifindex
        }
    }

    /// The uplink (uplink mode), with its index once its programs are attached.
    pub fn uplink(&self) -> Option<(&Uplink, Option<u32>)> {
        self.uplink.as_ref().map(|u| (u, self.uplink_ifindex))
    }

    /// Makes `changes` durable, applies them to the state, then to the maps. If the maps refuse
    /// a binding, everything is undone (maps, state, disk) and the request is refused.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "a request's changes are handed over to be committed, never reused"
    )]
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), Refusal> {
        if changes.is_empty() {
            return Ok(());
        }
        self.store
            .commit(&changes)
            .map_err(|e| Refusal::internal(format!("{e:#}")))?;
        for c in &changes {
            self.state.apply(c);
        }
        for (i, c) in changes.iter().enumerate() {
            let done = match c {
                Change::Bind(b) => self
                    .dp
                    .bind(
                        self.dp_ifindex(b.ifindex),
                        b.inside.0,
                        b.outside.0,
                        flags(b, BINDING_ANNOUNCE),
                    )
                    .map_err(|e| format!("binding {} on {} in the maps: {e}", b.inside, b.port)),
                Change::Unbind(b) => {
                    self.learned6.remove(&(b.ifindex, b.inside));
                    // The disk no longer has it; a failure here is corrected by reconcile.
                    let at = self.dp_ifindex(b.ifindex);
                    if let Err(e) = self.dp.unbind(at, b.inside.0, b.outside.0) {
                        warn!(port = b.port, error = %e, "removing a binding from the maps");
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(why) = done {
                self.undo(&changes[..=i]);
                return Err(Refusal::internal(why));
            }
        }
        Ok(())
    }

    /// Undoes the first changes of a commit whose maps failed: maps, then disk, then memory.
    fn undo(&mut self, done: &[Change]) {
        let inverse: Vec<Change> = done.iter().rev().map(Change::inverse).collect();
        for c in &inverse {
            let r = match c {
                Change::Bind(b) => self.dp.bind(
                    self.dp_ifindex(b.ifindex),
                    b.inside.0,
                    b.outside.0,
                    flags(b, 0),
                ),
                Change::Unbind(b) => {
                    self.dp
                        .unbind(self.dp_ifindex(b.ifindex), b.inside.0, b.outside.0)
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                warn!(error = %e, "undoing a failed change in the maps");
            }
        }
        if let Err(e) = self.store.commit(&inverse) {
            warn!(error = format!("{e:#}"), "undoing a failed change on disk");
        }
        for c in done.iter().rev() {
            self.state.revert(c);
        }
    }

    /// The changes that release `bindings` into hold-down, in this order.
    fn release(state: &State, bindings: &[Binding], now: u64) -> Vec<Change> {
        let seq = state.alloc.next_seq();
        (seq..)
            .zip(bindings)
            .flat_map(|(seq, b)| {
                [
                    Change::Unbind(b.clone()),
                    Change::Release(Released {
                        seq,
                        outside: b.outside,
                        vm: b.vm.clone(),
                        inside: b.inside,
                        at_ms: now,
                    }),
                ]
            })
            .collect()
    }

    /// The changes that release a port's bindings into hold-down and forget the port.
    fn forget_port(state: &State, port: &Port, now: u64) -> Vec<Change> {
        let bound: Vec<Binding> = state
            .bindings
            .iter()
            .filter(|b| b.ifindex == port.ifindex)
            .cloned()
            .collect();
        let mut changes = Self::release(state, &bound, now);
        changes.push(Change::RemovePort(port.clone()));
        changes
    }

    /// Refuses MACs that cannot be a VM's own.
    fn check_inside(&self, mac: Mac) -> Result<(), Refusal> {
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
        Ok(())
    }

    /// Checks a port for an attach: it exists, and it is a VM port. `link` is what rtnetlink
    /// said of it (the daemon asks before calling in).
    fn check_port(&self, port: &str, link: Option<&LinkInfo>, force: bool) -> Result<u32, Refusal> {
        let Some(link) = link.filter(|l| l.name == port) else {
            return Err(unknown_port(port));
        };
        if self.uplink_ifindex == Some(link.ifindex) {
            return Err(Refusal::new(
                Code::NotVmPort,
                format!("{port} is the uplink MAT translates on"),
            ));
        }
        if let Some(why) = self.vm_ports.refusal(link, force) {
            return Err(Refusal::new(Code::NotVmPort, format!("{port} {why}")));
        }
        Ok(link.ifindex)
    }

    /// The changes that bind `req` on the port `ifindex`, computed against `state`.
    fn bind_changes(
        &self,
        state: &State,
        req: &Attach,
        ifindex: u32,
        now: u64,
    ) -> Result<(Vec<Change>, Binding, Source), Refusal> {
        if let Some(b) = state.bindings.iter().find(|b| b.ifindex == ifindex) {
            return Err(Refusal::new(
                Code::PortBound,
                format!(
                    "port {} is already bound: {} -> {}{}",
                    req.port,
                    b.inside,
                    b.outside,
                    vm_suffix(&b.vm)
                ),
            ));
        }
        if let Some(b) = state.bindings.iter().find(|b| b.inside == req.inside) {
            return Err(Refusal::new(
                Code::MacInUse,
                format!("{} is already bound on port {}", req.inside, b.port),
            ));
        }
        let mut changes = Vec::new();
        // A port of the same name that we knew under another index went away unnoticed.
        if let Some(old) = state.port(&req.port).filter(|p| p.ifindex != ifindex) {
            changes.extend(Self::forget_port(state, old, now));
        }
        let bound = state.bindings.len() as u64;
        let (outside, source, taken) = state
            .alloc
            .choose(&state.plan, &req.vm, req.inside, now, self.hold_ms, bound)
            .map_err(|e| Refusal::new(Code::PoolExhausted, e.to_string()))?;
        changes.push(Change::take(taken));
        let binding = Binding {
            port: req.port.clone(),
            ifindex,
            vm: req.vm.clone(),
            inside: req.inside,
            outside,
            ips: req.ips.clone(),
            since: now / 1000,
            port_security: req.port_security.unwrap_or(self.port_security),
        };
        changes.push(Change::Bind(binding.clone()));
        Ok((changes, binding, source))
    }

    /// Binds a VM's inside MAC on a port; returns the binding and what to announce.
    pub fn attach(
        &mut self,
        mut req: Attach,
        link: Option<&LinkInfo>,
    ) -> Result<(AttachView, Option<Announce>), Refusal> {
        self.check_inside(req.inside)?;
        check_vm_name(&req.vm)?;
        req.ips = checked_ips(&req.ips)?;
        let ifindex = self.check_port(&req.port, link, req.force)?;
        let now = now_ms();
        let (mut changes, binding, source) = self.bind_changes(&self.state, &req, ifindex, now)?;
        if self.state.ports.iter().any(|p| p.ifindex == ifindex) {
            self.commit(changes)?;
        } else {
            // Programs first, so the binding works as soon as it is in the maps.
            self.dp.attach(&req.port, Mode::Port).map_err(|e| {
                Refusal::internal(format!("attaching the programs to {}: {e}", req.port))
            })?;
            changes.insert(
                changes.len() - 2,
                Change::AddPort(Port {
                    name: req.port.clone(),
                    ifindex,
                }),
            );
            if let Err(r) = self.commit(changes) {
                if !self.state.ports.iter().any(|p| p.ifindex == ifindex) {
                    let _ = self.dp.detach(ifindex);
                }
                return Err(r);
            }
        }
        info!(port = req.port, ifindex, vm = req.vm, inside = %req.inside,
              outside = %binding.outside, ?source, "attached");
        let announce = (!binding.ips.is_empty()).then(|| Announce {
            ifindex,
            via: self.uplink_ifindex,
            outside: binding.outside,
            ips: binding.ips.clone(),
            learned: false,
        });
        Ok((
            AttachView {
                binding: self.view(&binding, None),
                source,
            },
            announce,
        ))
    }

    /// Binds a VM's ports keyed by (VM, inside MAC), for the libvirt hook. Kept when already
    /// bound as asked; moved from another port otherwise. The announcement waits for the VM's
    /// first frame (the binding's announce flag). All or nothing: the whole change is computed
    /// first and committed once.
    pub fn attach_vm(
        &mut self,
        vm: &str,
        ports: &[(Attach, Option<LinkInfo>)],
    ) -> Result<AttachVmView, Refusal> {
        if vm.is_empty() || ports.is_empty() {
            return Err(Refusal::new(
                Code::BadRequest,
                "attach_vm needs a VM and at least one port",
            ));
        }
        check_vm_name(vm)?;
        let mut wanted: Vec<(Attach, u32)> = Vec::new();
        for (req, link) in ports {
            self.check_inside(req.inside)?;
            let ifindex = self.check_port(&req.port, link.as_ref(), false)?;
            if wanted
                .iter()
                .any(|(w, i)| *i == ifindex || w.inside == req.inside)
            {
                return Err(Refusal::new(
                    Code::BadRequest,
                    format!("port {} or MAC {} given twice", req.port, req.inside),
                ));
            }
            let req = Attach {
                vm: vm.to_owned(),
                ips: checked_ips(&req.ips)?,
                ..req.clone()
            };
            wanted.push((req, ifindex));
        }
        // The whole change on a scratch copy of the state: later ports see earlier ones.
        let now = now_ms();
        let mut scratch = self.state.clone();
        let mut changes = Vec::new();
        let mut attached = Vec::new();
        let mut kept = Vec::new();
        let mut new_ports = Vec::new();
        for (req, ifindex) in &wanted {
            let step = |c: Vec<Change>, scratch: &mut State, changes: &mut Vec<Change>| {
                for c in c {
                    scratch.apply(&c);
                    changes.push(c);
                }
            };
            if let Some(b) = scratch
                .bindings
                .iter()
                .find(|b| b.ifindex == *ifindex && b.inside == req.inside && b.vm == vm)
            {
                kept.push(b.clone());
                continue;
            }
            // The VM's MAC bound on another port (its tap changed): released there first, so
            // that it gets its outside MAC back.
            if let Some(old) = scratch
                .bindings
                .iter()
                .find(|b| b.vm == vm && b.inside == req.inside)
                .cloned()
            {
                info!(vm, inside = %req.inside, old = old.port, new = req.port, "moving a VM port");
                let c = Self::release(&scratch, &[old], now);
                step(c, &mut scratch, &mut changes);
            }
            let (mut c, binding, source) = self.bind_changes(&scratch, req, *ifindex, now)?;
            if !scratch.ports.iter().any(|p| p.ifindex == *ifindex) {
                c.insert(
                    c.len() - 2,
                    Change::AddPort(Port {
                        name: req.port.clone(),
                        ifindex: *ifindex,
                    }),
                );
                new_ports.push((req.port.clone(), *ifindex));
            }
            step(c, &mut scratch, &mut changes);
            attached.push((binding, source));
        }
        for (i, (name, ifindex)) in new_ports.iter().enumerate() {
            if let Err(e) = self.dp.attach(name, Mode::Port) {
                for (_, ifindex) in &new_ports[..=i] {
                    let _ = self.dp.detach(*ifindex);
                }
                return Err(Refusal::internal(format!(
                    "attaching the programs to {name}: {e}"
                )));
            }
            let _ = ifindex;
        }
        if let Err(r) = self.commit(changes) {
            for (_, ifindex) in &new_ports {
                if !self.state.ports.iter().any(|p| p.ifindex == *ifindex) {
                    let _ = self.dp.detach(*ifindex);
                }
            }
            return Err(r);
        }
        for (b, source) in &attached {
            info!(port = b.port, vm, inside = %b.inside, outside = %b.outside, ?source, "attached");
        }
        Ok(AttachVmView {
            attached: attached
                .iter()
                .map(|(b, source)| AttachView {
                    binding: self.view(b, None),
                    source: *source,
                })
                .collect(),
            kept: kept.iter().map(|b| self.view(b, None)).collect(),
        })
    }

    /// Releases the chosen bindings into hold-down.
    pub fn detach(&mut self, sel: &Detach) -> Result<DetachView, Refusal> {
        if sel.port.is_none() && sel.vm.is_none() {
            return Err(Refusal::new(
                Code::BadRequest,
                "detach needs a port or a VM name",
            ));
        }
        if sel.vm.as_deref() == Some("") {
            return Err(Refusal::new(
                Code::BadRequest,
                "an empty VM name selects nothing; name the port instead",
            ));
        }
        let chosen: Vec<Binding> = self
            .state
            .bindings
            .iter()
            .filter(|b| sel.port.as_ref().is_none_or(|p| &b.port == p))
            .filter(|b| sel.inside.is_none_or(|m| b.inside == m))
            .filter(|b| sel.vm.as_ref().is_none_or(|v| &b.vm == v))
            .cloned()
            .collect();
        if chosen.is_empty() {
            let mut what = Vec::new();
            if let Some(p) = &sel.port {
                what.push(format!("port {p}"));
            }
            if let Some(m) = sel.inside {
                what.push(format!("MAC {m}"));
            }
            if let Some(v) = &sel.vm {
                what.push(format!("VM {v}"));
            }
            return Err(Refusal::new(
                Code::NotBound,
                format!("nothing is bound for {}", what.join(", ")),
            ));
        }
        let now = now_ms();
        let views: Vec<BindingView> = chosen.iter().map(|b| self.view(b, None)).collect();
        self.commit(Self::release(&self.state, &chosen, now))?;
        for b in &chosen {
            info!(port = b.port, vm = b.vm, inside = %b.inside, outside = %b.outside, "detached");
        }
        Ok(DetachView { released: views })
    }

    /// Takes MAT's programs off a port that has no binding and forgets it (an operator's undo of
    /// an attach to the wrong port). A port of a managed bridge gets them back when it changes.
    pub fn release_port(&mut self, port: &str) -> Result<(), Refusal> {
        let ifindex = match self.state.port(port) {
            Some(p) => p.ifindex,
            None => match ports::ifindex(port) {
                Some(i) if self.dp.attached(i).iter().any(|p| p.on_port()) => i,
                Some(_) => {
                    return Err(Refusal::new(
                        Code::NotBound,
                        format!("{port} carries none of MAT's programs"),
                    ));
                }
                None => return Err(unknown_port(port)),
            },
        };
        if let Some(b) = self.state.bindings.iter().find(|b| b.ifindex == ifindex) {
            return Err(Refusal::new(
                Code::PortBound,
                format!(
                    "{port} is bound ({} -> {}{}): detach it first",
                    b.inside,
                    b.outside,
                    vm_suffix(&b.vm)
                ),
            ));
        }
        if let Some(p) = self
            .state
            .ports
            .iter()
            .find(|p| p.ifindex == ifindex)
            .cloned()
        {
            self.commit(vec![Change::RemovePort(p)])?;
        }
        self.dp
            .detach(ifindex)
            .map_err(|e| Refusal::internal(format!("detaching the programs from {port}: {e}")))?;
        info!(port, ifindex, "programs taken off the port");
        Ok(())
    }
}

fn vm_suffix(vm: &str) -> String {
    if vm.is_empty() {
        String::new()
    } else {
        format!(" (VM {vm})")
    }
}

fn check_vm_name(vm: &str) -> Result<(), Refusal> {
    if vm.len() > 256 || vm.chars().any(char::is_control) {
        return Err(Refusal::new(
            Code::BadRequest,
            "a VM name is at most 256 bytes without control characters",
        ));
    }
    Ok(())
}

/// The given addresses, sorted and deduplicated; refused unless every one can be announced.
fn checked_ips(ips: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
    if let Some(ip) = ips.iter().find(|&&ip| !announce::announceable(ip)) {
        return Err(Refusal::new(
            Code::InvalidIp,
            format!("{ip} is not a unicast address a VM can own"),
        ));
    }
    let mut ips = ips.to_vec();
    ips.sort_unstable();
    ips.dedup();
    Ok(ips)
}
