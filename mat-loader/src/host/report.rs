//! What the host shows: bindings, the address plan and its pool, routes, ports and counters.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    time::UNIX_EPOCH,
};

use super::{Host, PortState, now_ms};
use crate::{
    Counters,
    decode::{self, DecodeView, HeldDown, Status},
    mac::Mac,
    plan::Route,
    refusal::Refusal,
    state::Binding,
    views::{BindingView, BoundView, FreeView, HeldView, ListView, ModeView, PlanView},
};

impl Host {
    pub(super) fn view(
        &self,
        b: &Binding,
        learned: Option<&HashMap<(u32, Mac), Ipv4Addr>>,
    ) -> BindingView {
        let learned6 = self.learned6.get(&(b.ifindex, b.inside));
        let since = UNIX_EPOCH + std::time::Duration::from_secs(b.since);
        let learned = match learned {
            Some(all) => all.get(&(self.dp_ifindex(b.ifindex), b.inside)).copied(),
            None => self
                .dp
                .learned_for(self.dp_ifindex(b.ifindex), b.inside.0)
                .ok()
                .flatten(),
        };
        BindingView {
            vm: b.vm.clone(),
            port: b.port.clone(),
            ifindex: b.ifindex,
            inside: b.inside,
            outside: b.outside,
            ips: b.ips.clone(),
            learned: learned
                .map(IpAddr::V4)
                .into_iter()
                .chain(learned6.into_iter().flatten().map(|&ip| IpAddr::V6(ip)))
                .collect(),
            since: b.since,
            since_rfc3339: humantime::format_rfc3339_seconds(since).to_string(),
            port_security: b.port_security,
        }
    }

    pub fn list(&self) -> ListView {
        let learned: HashMap<(u32, Mac), Ipv4Addr> = self
            .dp
            .learned()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ip)| ((k.ifindex, Mac(k.mac)), ip))
            .collect();
        let mut bindings: Vec<BindingView> = self
            .state
            .bindings
            .iter()
            .map(|b| self.view(b, Some(&learned)))
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
        let ranges = match fresh {
            0 => vec![],
            1 => vec![p.mac_at(a.next_fresh).to_string()],
            _ => vec![format!(
                "{}-{}",
                p.mac_at(a.next_fresh),
                p.mac_at(p.capacity() - 1)
            )],
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
            mode: self.mode(),
            duplicates: 0,
            recent_duplicates: Vec::new(),
        }
    }

    /// Where the host translates (the daemon adds what it watches).
    pub fn mode(&self) -> ModeView {
        let u = self.uplink.as_ref();
        ModeView {
            mode: crate::uplink::mode_name(u).to_owned(),
            uplink: u.map(|u| u.name.clone()),
            uplink_ifindex: self.uplink_ifindex,
            uplink_xdp: u.map(|u| u.xdp.name().to_owned()),
            watching: Vec::new(),
        }
    }

    /// Which rack, host and VM slot `mac` is and, when it is this host's, who holds it.
    pub fn decode(&self, mac: Mac) -> Result<DecodeView, Refusal> {
        let mut v = decode::slot(&self.state.plan, mac)?;
        if v.status != Status::Unchecked {
            return Ok(v);
        }
        let now = now_ms();
        if let Some(b) = self.state.bindings.iter().find(|b| b.outside == mac) {
            v.status = Status::Bound;
            v.binding = Some(self.view(b, None));
        } else if let Some(r) = self
            .state
            .alloc
            .held(now, self.hold_ms)
            .find(|r| r.outside == mac)
        {
            let until = r.at_ms + self.hold_ms;
            v.status = Status::HeldDown;
            v.held = Some(HeldDown {
                vm: r.vm.clone(),
                inside: r.inside,
                released_ms: r.at_ms,
                released_rfc3339: decode::rfc3339_ms(r.at_ms),
                until_ms: until,
                until_rfc3339: decode::rfc3339_ms(until),
                remaining_ms: until - now,
            });
        } else {
            v.status = Status::Free;
        }
        Ok(v)
    }

    pub fn routes(&self) -> Vec<Route> {
        self.state.plan.routes()
    }

    /// The data plane's counters.
    pub fn counters(&self) -> Result<Counters, crate::Error> {
        self.dp.counters()
    }

    /// The managed ports with their programs and binding counts.
    pub fn ports(&self) -> Vec<PortState> {
        self.state
            .ports
            .iter()
            .map(|p| PortState {
                name: p.name.clone(),
                ifindex: p.ifindex,
                programs: self.dp.attached(p.ifindex),
                bindings: self
                    .state
                    .bindings
                    .iter()
                    .filter(|b| b.ifindex == p.ifindex)
                    .count(),
            })
            .collect()
    }

    /// This host's own outside MACs: pool | rack | host.
    pub fn host_prefix(&self) -> crate::mac::MacPrefix {
        self.state.plan.host_pool()
    }

    pub fn host_pool(&self) -> String {
        self.state.plan.host_pool().to_string()
    }

    pub fn binding_count(&self) -> usize {
        self.state.bindings.len()
    }

    /// The names of the managed ports.
    pub fn port_names(&self) -> HashSet<&str> {
        self.state.ports.iter().map(|p| p.name.as_str()).collect()
    }
}
