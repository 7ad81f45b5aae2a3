//! The address plan: `pool prefix | rack | host | vm`, its validation, and the MACs and MAC routes
//! it yields.

use serde::{Deserialize, Serialize};

use crate::mac::{Mac, MacPrefix};

/// A validated address plan. Build it with [`Plan::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub pool: MacPrefix,
    pub rack_bits: u8,
    pub host_bits: u8,
    pub rack: u64,
    pub host: u64,
    /// The pool may be a universally administered prefix (an OUI the operator owns).
    #[serde(default)]
    pub allow_universal: bool,
    /// VLANs the rack's MAC routes are needed in (none: untagged only).
    #[serde(default)]
    pub vlans: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "pool {0} is a multicast prefix (first octet has bit 0 set); outside MACs must be unicast"
    )]
    Multicast(MacPrefix),
    #[error(
        "pool {0} is universally administered (first octet lacks bit 1); use a locally administered \
         prefix such as 02:00:5e:00:00:00/24, or --allow-universal for an OUI you own"
    )]
    Universal(MacPrefix),
    #[error(
        "pool /{pool} + rack bits {rack} + host bits {host} = {} bits, more than the 48 of a MAC",
        u32::from(*pool) + u32::from(*rack) + u32::from(*host)
    )]
    TooWide { pool: u8, rack: u8, host: u8 },
    #[error(
        "pool /{pool} + rack bits {rack} + host bits {host} fill all 48 bits: no bit is left for VM \
         addresses"
    )]
    NoVmBits { pool: u8, rack: u8, host: u8 },
    #[error("rack id {id} does not fit in {bits} rack bits (at most {})", max_id(*bits))]
    RackTooBig { id: u64, bits: u8 },
    #[error("host id {id} does not fit in {bits} host bits (at most {})", max_id(*bits))]
    HostTooBig { id: u64, bits: u8 },
    #[error("VLAN id {0} is outside 1..=4094")]
    Vlan(u16),
    #[error(
        "the pool prefix must cover the multicast and local bits (length at least 8), got /{0}"
    )]
    ShortPool(u8),
}

fn max_id(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl Plan {
    pub fn new(
        pool: MacPrefix,
        rack_bits: u8,
        host_bits: u8,
        rack: u64,
        host: u64,
        allow_universal: bool,
        mut vlans: Vec<u16>,
    ) -> Result<Self, PlanError> {
        if pool.len < 8 {
            return Err(PlanError::ShortPool(pool.len));
        }
        if pool.mac.is_multicast() {
            return Err(PlanError::Multicast(pool));
        }
        if !pool.mac.is_local() && !allow_universal {
            return Err(PlanError::Universal(pool));
        }
        let used = u32::from(pool.len) + u32::from(rack_bits) + u32::from(host_bits);
        let widths = (pool.len, rack_bits, host_bits);
        if used > 48 {
            return Err(PlanError::TooWide {
                pool: widths.0,
                rack: widths.1,
                host: widths.2,
            });
        }
        if used == 48 {
            return Err(PlanError::NoVmBits {
                pool: widths.0,
                rack: widths.1,
                host: widths.2,
            });
        }
        if rack > max_id(rack_bits) {
            return Err(PlanError::RackTooBig {
                id: rack,
                bits: rack_bits,
            });
        }
        if host > max_id(host_bits) {
            return Err(PlanError::HostTooBig {
                id: host,
                bits: host_bits,
            });
        }
        if let Some(&v) = vlans.iter().find(|&&v| v == 0 || v > 4094) {
            return Err(PlanError::Vlan(v));
        }
        vlans.sort_unstable();
        vlans.dedup();
        Ok(Self {
            pool,
            rack_bits,
            host_bits,
            rack,
            host,
            allow_universal,
            vlans,
        })
    }

    pub fn vm_bits(&self) -> u8 {
        48 - self.pool.len - self.rack_bits - self.host_bits
    }

    /// Outside MACs in this host's pool.
    pub fn capacity(&self) -> u64 {
        1 << self.vm_bits()
    }

    /// The rack's MAC route: `pool/rack`.
    pub fn rack_route(&self) -> MacPrefix {
        let len = self.pool.len + self.rack_bits;
        let v = self.pool.mac.to_u64() | (self.rack << (48 - u32::from(len)));
        MacPrefix::new(Mac::from_u64(v), len)
    }

    /// This host's pool: `pool/rack/host`.
    pub fn host_pool(&self) -> MacPrefix {
        let len = self.pool.len + self.rack_bits + self.host_bits;
        let v = self.rack_route().mac.to_u64() | (self.host << (48 - u32::from(len)));
        MacPrefix::new(Mac::from_u64(v), len)
    }

    /// The outside MAC with this VM number (below [`Plan::capacity`]).
    pub fn mac_at(&self, vm: u64) -> Mac {
        debug_assert!(vm < self.capacity());
        Mac::from_u64(self.host_pool().mac.to_u64() | vm)
    }

    /// The VM number of an outside MAC of this host's pool.
    pub fn index_of(&self, mac: Mac) -> Option<u64> {
        let pool = self.host_pool();
        pool.contains(mac)
            .then(|| mac.to_u64() & !crate::mac::mask(pool.len) & ((1 << 48) - 1))
    }

    /// The aggregate MAC routes this host's rack needs: in the core, `pool/rack` towards the rack;
    /// in the rack's top-of-rack switch, `pool/rack/host` towards this host, and the pool and the
    /// default MAC route towards the core. One set per VLAN when VLANs are configured.
    pub fn routes(&self) -> Vec<Route> {
        let vlans: Vec<Option<u16>> = if self.vlans.is_empty() {
            vec![None]
        } else {
            self.vlans.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for vlan in vlans {
            out.push(Route {
                scope: Scope::Core,
                prefix: self.rack_route(),
                via: format!("rack {}", self.rack),
                rack: self.rack,
                host: None,
                vlan,
            });
            out.push(Route {
                scope: Scope::Tor,
                prefix: self.host_pool(),
                via: format!("host {}", self.host),
                rack: self.rack,
                host: Some(self.host),
                vlan,
            });
            // The whole pool up to the core: without it other racks' outside MACs fall under
            // no specific route at the ToR and are learned one by one, like a legacy host's.
            out.push(Route {
                scope: Scope::Tor,
                prefix: self.pool,
                via: "core".into(),
                rack: self.rack,
                host: None,
                vlan,
            });
            out.push(Route {
                scope: Scope::Tor,
                prefix: MacPrefix::new(Mac::default(), 0),
                via: "core".into(),
                rack: self.rack,
                host: None,
                vlan,
            });
        }
        out
    }
}

/// Where a MAC route is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The core switches: one route per rack.
    Core,
    /// The rack's top-of-rack switch.
    Tor,
}

/// A MAC route: frames to `prefix` (in `vlan`) go towards `via`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub scope: Scope,
    pub prefix: MacPrefix,
    pub via: String,
    pub rack: u64,
    pub host: Option<u64>,
    pub vlan: Option<u16>,
}

/// The plan the unit tests share: pool 02:00:5e:00:00:00/24, 8 rack and 8 host bits, rack 1,
/// host 3.
#[cfg(test)]
impl Plan {
    pub(crate) fn example() -> Plan {
        Plan::new(
            "02:00:5e:00:00:00/24".parse().unwrap(),
            8,
            8,
            1,
            3,
            false,
            vec![],
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> MacPrefix {
        s.parse().unwrap()
    }

    fn example() -> Plan {
        Plan::new(pool("02:00:5e:00:00:00/24"), 8, 8, 1, 3, false, vec![]).unwrap()
    }

    #[test]
    fn layout() {
        let p = example();
        assert_eq!(p.vm_bits(), 8);
        assert_eq!(p.capacity(), 256);
        assert_eq!(p.rack_route().to_string(), "02:00:5e:01:00:00/32");
        assert_eq!(p.host_pool().to_string(), "02:00:5e:01:03:00/40");
        assert_eq!(p.mac_at(0x2a).to_string(), "02:00:5e:01:03:2a");
        assert_eq!(p.index_of(p.mac_at(0x2a)), Some(0x2a));
        assert_eq!(p.index_of("02:00:5e:01:04:2a".parse().unwrap()), None);
    }

    #[test]
    fn odd_widths() {
        let p = Plan::new(pool("0a:b0:00:00:00:00/12"), 10, 14, 1023, 5, false, vec![]).unwrap();
        assert_eq!(p.vm_bits(), 12);
        assert_eq!(p.rack_route().len, 22);
        assert_eq!(p.index_of(p.mac_at(4095)), Some(4095));
        assert!(p.rack_route().contains(p.mac_at(7)));
        assert!(p.pool.contains(p.mac_at(7)));
    }

    #[test]
    fn validation() {
        let p = pool("02:00:5e:00:00:00/24");
        let e = |r: Result<Plan, PlanError>| r.unwrap_err();
        assert!(matches!(
            e(Plan::new(
                pool("03:00:5e:00:00:00/24"),
                8,
                8,
                1,
                3,
                false,
                vec![]
            )),
            PlanError::Multicast(_)
        ));
        assert!(matches!(
            e(Plan::new(
                pool("00:00:5e:00:00:00/24"),
                8,
                8,
                1,
                3,
                false,
                vec![]
            )),
            PlanError::Universal(_)
        ));
        assert!(Plan::new(pool("00:00:5e:00:00:00/24"), 8, 8, 1, 3, true, vec![]).is_ok());
        assert!(matches!(
            e(Plan::new(p, 16, 9, 1, 3, false, vec![])),
            PlanError::TooWide { .. }
        ));
        assert!(matches!(
            e(Plan::new(p, 16, 8, 1, 3, false, vec![])),
            PlanError::NoVmBits { .. }
        ));
        assert!(matches!(
            e(Plan::new(p, 8, 8, 256, 3, false, vec![])),
            PlanError::RackTooBig { .. }
        ));
        assert!(matches!(
            e(Plan::new(p, 8, 2, 1, 4, false, vec![])),
            PlanError::HostTooBig { .. }
        ));
        assert!(matches!(
            e(Plan::new(p, 8, 8, 1, 3, false, vec![4095])),
            PlanError::Vlan(4095)
        ));
        assert!(matches!(
            e(Plan::new(
                pool("02:00:00:00:00:00/7"),
                8,
                8,
                1,
                3,
                false,
                vec![]
            )),
            PlanError::ShortPool(7)
        ));
        // Zero-width racks are allowed: one rack.
        assert!(Plan::new(p, 0, 8, 0, 3, false, vec![]).is_ok());
    }

    #[test]
    fn routes_per_vlan() {
        let p = Plan::new(
            pool("02:00:5e:00:00:00/24"),
            8,
            8,
            1,
            3,
            false,
            vec![20, 10, 20],
        )
        .unwrap();
        let r = p.routes();
        assert_eq!(r.len(), 8);
        assert_eq!(r[0].vlan, Some(10));
        assert_eq!(r[0].scope, Scope::Core);
        assert_eq!(r[0].prefix.to_string(), "02:00:5e:01:00:00/32");
        assert_eq!(r[2].scope, Scope::Tor);
        assert_eq!(r[2].prefix.to_string(), "02:00:5e:00:00:00/24");
        assert_eq!(r[4].vlan, Some(20));
    }
}
