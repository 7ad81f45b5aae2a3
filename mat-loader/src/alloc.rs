//! Outside-MAC allocation from the host pool, with hold-down.
//!
//! Never-used MACs go first, in order; then released MACs whose hold-down has passed, least
//! recently released first. A VM port (VM name + inside MAC) that comes back while its old MAC is
//! still unused gets that MAC again, hold-down or not: no other owner can be confused by it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{mac::Mac, plan::Plan};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocator {
    /// VM numbers from here up were never handed out.
    pub next_fresh: u64,
    /// Released outside MACs, least recently released first.
    pub released: VecDeque<Released>,
}

/// An outside MAC back in the pool, and whose it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Released {
    /// Its place in the reuse queue (increasing with every release; the store's order key).
    #[serde(default)]
    pub seq: u64,
    pub outside: Mac,
    pub vm: String,
    pub inside: Mac,
    /// When it was released, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// How an allocation was satisfied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A MAC never used before.
    Fresh,
    /// The VM port's own MAC from its last attachment.
    Returned,
    /// Another VM's MAC, after its hold-down.
    Reused,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pool exhausted: all {capacity} outside MACs are bound ({bound}) or held down ({held}){}",
    next_in_ms.map(|ms| format!("; the next one frees up in {:.1} s", ms as f64 / 1000.0)).unwrap_or_default()
)]
pub struct Exhausted {
    pub capacity: u64,
    pub bound: u64,
    pub held: u64,
    pub next_in_ms: Option<u64>,
}

/// How an allocation changes the allocator: one MAC out of the reuse queue, or the next fresh one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    Released(Released),
    Fresh(u64),
}

impl Allocator {
    /// Chooses an outside MAC for (vm, inside) without changing anything; `bound` is how many are
    /// bound now (for the error). [`Allocator::take`] then makes the choice.
    pub fn choose(
        &self,
        plan: &Plan,
        vm: &str,
        inside: Mac,
        now_ms: u64,
        hold_ms: u64,
        bound: u64,
    ) -> Result<(Mac, Source, Taken), Exhausted> {
        if let Some(r) = self
            .released
            .iter()
            .find(|r| r.vm == vm && r.inside == inside)
        {
            return Ok((r.outside, Source::Returned, Taken::Released(r.clone())));
        }
        if self.next_fresh < plan.capacity() {
            let mac = plan.mac_at(self.next_fresh);
            return Ok((mac, Source::Fresh, Taken::Fresh(self.next_fresh)));
        }
        match self.released.front() {
            Some(r) if r.at_ms.saturating_add(hold_ms) <= now_ms => {
                Ok((r.outside, Source::Reused, Taken::Released(r.clone())))
            }
            front => Err(Exhausted {
                capacity: plan.capacity(),
                bound,
                held: self.released.len() as u64,
                next_in_ms: front.map(|r| r.at_ms.saturating_add(hold_ms) - now_ms),
            }),
        }
    }

    /// The place in the queue of the next release.
    pub fn next_seq(&self) -> u64 {
        self.released.back().map_or(0, |r| r.seq + 1)
    }

    /// The queue entry a release of `outside` now would add (at the end of the queue).
    pub fn next_release(&self, outside: Mac, vm: &str, inside: Mac, now_ms: u64) -> Released {
        Released {
            seq: self.next_seq(),
            outside,
            vm: vm.to_owned(),
            inside,
            at_ms: now_ms,
        }
    }

    /// Puts a released MAC in its place in the queue (ordered by `seq`).
    pub fn insert(&mut self, r: Released) {
        let at = self.released.partition_point(|q| q.seq < r.seq);
        self.released.insert(at, r);
    }

    /// Takes `outside` out of the queue.
    pub fn unrelease(&mut self, outside: Mac) {
        if let Some(i) = self.released.iter().position(|r| r.outside == outside) {
            self.released.remove(i);
        }
    }

    /// Released MACs still in hold-down.
    pub fn held(&self, now_ms: u64, hold_ms: u64) -> impl Iterator<Item = &Released> {
        self.released
            .iter()
            .filter(move |r| r.at_ms.saturating_add(hold_ms) > now_ms)
    }

    /// Released MACs past their hold-down (free again).
    pub fn expired(&self, now_ms: u64, hold_ms: u64) -> impl Iterator<Item = &Released> {
        self.released
            .iter()
            .filter(move |r| r.at_ms.saturating_add(hold_ms) <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(vm_bits: u8) -> Plan {
        Plan::new(
            "02:00:5e:00:00:00/24".parse().unwrap(),
            8,
            16 - vm_bits,
            1,
            3,
            false,
            vec![],
        )
        .unwrap()
    }

    fn mac(i: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, i])
    }

    /// Chooses and takes, as the host does.
    fn allocate(
        a: &mut Allocator,
        p: &Plan,
        vm: &str,
        inside: Mac,
        now_ms: u64,
        hold_ms: u64,
        bound: u64,
    ) -> Result<(Mac, Source), Exhausted> {
        let (mac, source, taken) = a.choose(p, vm, inside, now_ms, hold_ms, bound)?;
        match taken {
            Taken::Released(r) => a.unrelease(r.outside),
            Taken::Fresh(i) => a.next_fresh = i + 1,
        }
        Ok((mac, source))
    }

    fn release(a: &mut Allocator, outside: Mac, vm: &str, inside: Mac, now_ms: u64) {
        let r = a.next_release(outside, vm, inside, now_ms);
        a.insert(r);
    }

    #[test]
    fn fresh_then_lru_after_hold_down() {
        let p = plan(2);
        let mut a = Allocator::default();
        let hold = 300_000;
        let got: Vec<Mac> = (0..4)
            .map(|i| allocate(&mut a, &p, "", mac(i), 0, hold, 0).unwrap().0)
            .collect();
        assert_eq!(got, (0..4).map(|i| p.mac_at(i)).collect::<Vec<_>>());
        let e = allocate(&mut a, &p, "", mac(9), 0, hold, 4).unwrap_err();
        assert_eq!((e.bound, e.held, e.next_in_ms), (4, 0, None));
        release(&mut a, got[2], "", mac(2), 1_000);
        release(&mut a, got[0], "", mac(0), 2_000);
        let e = allocate(&mut a, &p, "", mac(9), 2_000, hold, 2).unwrap_err();
        assert_eq!((e.held, e.next_in_ms), (2, Some(299_000)));
        assert!(e.to_string().contains("299.0 s"), "{e}");
        // After the hold-down: least recently released first.
        assert_eq!(
            allocate(&mut a, &p, "", mac(9), 301_000, hold, 2).unwrap(),
            (got[2], Source::Reused)
        );
        assert!(allocate(&mut a, &p, "", mac(8), 301_000, hold, 3).is_err());
        assert_eq!(
            allocate(&mut a, &p, "", mac(8), 302_000, hold, 3).unwrap(),
            (got[0], Source::Reused)
        );
    }

    #[test]
    fn same_vm_port_gets_its_mac_back() {
        let p = plan(4);
        let mut a = Allocator::default();
        let (m1, _) = allocate(&mut a, &p, "web", mac(1), 0, 1000, 0).unwrap();
        let (m2, _) = allocate(&mut a, &p, "db", mac(2), 0, 1000, 1).unwrap();
        release(&mut a, m1, "web", mac(1), 10);
        release(&mut a, m2, "db", mac(2), 20);
        // Another VM with the same inside MAC is another VM port.
        let (m3, s) = allocate(&mut a, &p, "other", mac(1), 30, 1000, 0).unwrap();
        assert_eq!((m3, s), (p.mac_at(2), Source::Fresh));
        assert_eq!(
            allocate(&mut a, &p, "web", mac(1), 40, 1000, 1).unwrap(),
            (m1, Source::Returned)
        );
        assert_eq!(a.held(40, 1000).count(), 1);
        assert_eq!(a.expired(2000, 1000).count(), 1);
    }
}
