//! The data plane's events (addresses the VMs claim, a VM's first frame) turned into
//! announcements.

use std::net::IpAddr;

use tracing::warn;

use super::{Host, LEARNED6_MAX};
use crate::{
    announce::{self, Announce},
    mac::Mac,
};

impl Host {
    /// What to announce for a data-plane event about (port, inside MAC), if it is bound: the
    /// learned address, or (on the VM's first frame) every address it has. A learned address
    /// that is not unicast, or that another binding was given, is not announced (and the conflict
    /// logged, at most once per [`announce::WARN_EVERY`] per binding). Learned IPv6 addresses are
    /// kept (the latest [`LEARNED6_MAX`]) for `mat list` and the next announcement; one given or
    /// learned before is not announced again.
    ///
    /// `at` is where the data plane found the binding: its port, or in uplink mode the uplink's
    /// maps (keyed by MAC only).
    pub fn on_event(&mut self, at: u32, inside: Mac, learned: Option<IpAddr>) -> Option<Announce> {
        let at_port = |b: &&crate::state::Binding| {
            b.inside == inside && (self.uplink.is_some() || b.ifindex == at)
        };
        let b = self.state.bindings.iter().find(at_port)?;
        let ifindex = b.ifindex;
        let ips = if let Some(ip) = learned {
            if !announce::announceable(ip) {
                return None;
            }
            if let Some(owner) = self
                .state
                .bindings
                .iter()
                .find(|o| o.ifindex != ifindex && o.ips.contains(&ip))
            {
                if let Some(claims) = self.conflicts.hit(b.outside, std::time::Instant::now()) {
                    warn!(%ip, port = b.port, vm = b.vm, owner_port = owner.port,
                          owner_vm = owner.vm, claims,
                          "a VM claims an address given to another: not announced");
                }
                return None;
            }
            if let IpAddr::V6(v6) = ip {
                // The data plane remembers only the last address a VM claimed: a VM with a
                // link-local and a global address reports them in turn. One already given or
                // learned is not announced again (its announcement still stands).
                let given = b.ips.contains(&ip);
                let known = self.learned6.entry((ifindex, inside)).or_default();
                let seen = known.contains(&v6);
                known.retain(|&k| k != v6);
                known.push(v6);
                if known.len() > LEARNED6_MAX {
                    known.remove(0);
                }
                if given || seen {
                    return None;
                }
            }
            vec![ip]
        } else {
            let mut ips = b.ips.clone();
            ips.extend(
                self.dp
                    .learned_for(at, inside.0)
                    .ok()
                    .flatten()
                    .map(IpAddr::V4)
                    .filter(|&ip| announce::announceable(ip)),
            );
            ips.extend(
                self.learned6
                    .get(&(ifindex, inside))
                    .into_iter()
                    .flatten()
                    .map(|&ip| IpAddr::V6(ip)),
            );
            ips.sort_unstable();
            ips.dedup();
            ips
        };
        (!ips.is_empty()).then_some(Announce {
            ifindex,
            via: self.uplink_ifindex,
            outside: b.outside,
            ips,
            learned: learned.is_some(),
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
