//! A switch: its pinned maps and links, and every operation on them.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        ProgramFd, SchedClassifier, TcAttachType, Xdp, XdpFlags,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::TcAttachOptions,
    },
    util::nr_cpus,
};
use mat_common::switch::{
    self as sw, COUNTERS, Config, DEFAULT_AGEING_NS, Learned, MAX_PORTS, MAX_ROUTES, Port, Route,
    VLAN_BITS, VlanMac,
};
use mat_loader::mac::{Mac, MacPrefix};

use crate::{
    Error,
    views::{CountersView, ImportView, LearnedView, PortView, RouteView, SwitchView},
};

use crate::switch_program::{TC as TC_PROGRAM, XDP as XDP_PROGRAM};

/// The VLANs a port carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VlanSet(pub [u64; 64]);

impl VlanSet {
    pub const ALL: VlanSet = VlanSet([u64::MAX; 64]);

    pub fn contains(&self, vlan: u16) -> bool {
        Port {
            ifindex: 0,
            _pad: 0,
            vlans: self.0,
        }
        .carries(vlan)
    }
}

impl fmt::Display for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == VlanSet::ALL {
            return f.write_str("all");
        }
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for v in (0..4096).filter(|&v| self.contains(v)) {
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == v => *hi = v,
                _ => ranges.push((v, v)),
            }
        }
        let parts: Vec<String> = ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `0,10,20-29` (0: untagged) or `all`.
pub fn parse_vlans(s: &str) -> Result<VlanSet, Error> {
    if s == "all" {
        return Ok(VlanSet::ALL);
    }
    let bad = || Error::InvalidVlanList(s.to_owned());
    let mut set = [0u64; 64];
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b > 4094 {
            return Err(bad());
        }
        for v in a..=b {
            set[usize::from(v >> 6)] |= 1 << (v & 63);
        }
    }
    Ok(VlanSet(set))
}

/// A port to create a switch with: `IFNAME` (every VLAN) or `IFNAME@VLANS`.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub vlans: VlanSet,
}

impl FromStr for PortSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, vlans) = match s.split_once('@') {
            Some((n, v)) => (n, parse_vlans(v)?),
            None => (s, VlanSet::ALL),
        };
        Ok(PortSpec {
            name: name.to_owned(),
            vlans,
        })
    }
}

/// A route to add: `prefix` in `vlan` (0: untagged) to the port named `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub vlan: u16,
    pub prefix: MacPrefix,
    pub port: String,
}

pub struct Switch {
    ebpf: Ebpf,
    dir: PathBuf,
    name: String,
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

fn check_vlan(vlan: u32) -> Result<u16, Error> {
    if vlan > 4094 {
        return Err(Error::InvalidVlan(vlan));
    }
    Ok(vlan as u16)
}

fn ifindex(name: &str) -> Result<u32, Error> {
    nix::net::if_::if_nametoindex(name).map_err(|_| Error::UnknownInterface(name.to_owned()))
}

fn ifname(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex).map_or_else(
        |_| format!("if{ifindex}"),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn on_bpffs(dir: &Path) -> bool {
    dir.ancestors()
        .find(|p| p.exists())
        .and_then(|p| nix::sys::statfs::statfs(p).ok())
        .is_some_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

impl Switch {
    /// Creates the switch `name` under `pin_dir` over `ports` (names in the calling thread's
    /// network namespace): loads the object, pins its maps, attaches the TC program to the
    /// ingress of every port (and the XDP unicast path too with `xdp`). Refused with nothing
    /// made when a port is unknown or given twice, or the switch exists.
    pub fn create(
        pin_dir: &Path,
        name: &str,
        ports: &[PortSpec],
        ageing: Duration,
        xdp: bool,
    ) -> Result<Switch, Error> {
        check_name(name)?;
        let dir = pin_dir.join(name);
        if dir.exists() {
            return Err(Error::Exists(dir));
        }
        if ports.len() > MAX_PORTS as usize {
            return Err(Error::TooManyPorts {
                given: ports.len(),
                max: MAX_PORTS,
            });
        }
        let mut seen = BTreeSet::new();
        let mut resolved = Vec::new();
        for p in ports {
            let i = ifindex(&p.name)?;
            if !seen.insert(i) {
                return Err(Error::DuplicatePort(p.name.clone()));
            }
            resolved.push((p, i));
        }
        if !on_bpffs(pin_dir) {
            return Err(Error::NotBpffs {
                path: pin_dir.to_owned(),
            });
        }
        std::fs::create_dir_all(dir.join("links"))?;
        let made = (|| {
            let ebpf = EbpfLoader::new().map_pin_path(&dir).load(crate::OBJECT)?;
            let mut s = Switch {
                ebpf,
                dir: dir.clone(),
                name: name.to_owned(),
            };
            let config = Config {
                ageing_ns: u64::try_from(ageing.as_nanos()).unwrap_or(DEFAULT_AGEING_NS),
                ports: resolved.len() as u32,
                _pad: 0,
            };
            Array::<_, Config>::try_from(s.map_mut(sw::CONFIG))?.set(0, config, 0)?;
            for (slot, (p, i)) in resolved.iter().enumerate() {
                let port = Port {
                    ifindex: *i,
                    _pad: 0,
                    vlans: p.vlans.0,
                };
                Array::<_, Port>::try_from(s.map_mut(sw::PORTS))?.set(slot as u32, port, 0)?;
                HashMap::<_, u32, u32>::try_from(s.map_mut(sw::PORT_SLOTS))?.insert(
                    i,
                    slot as u32,
                    0,
                )?;
            }
            for (p, i) in &resolved {
                s.attach(&p.name, *i, xdp)?;
            }
            Ok(s)
        })();
        if made.is_err() {
            let _ = Switch::remove_dir(&dir);
        }
        made
    }

    /// Opens the switch `name` under `pin_dir`.
    pub fn open(pin_dir: &Path, name: &str) -> Result<Switch, Error> {
        check_name(name)?;
        let dir = pin_dir.join(name);
        if !dir.join(sw::ROUTES).exists() {
            return Err(Error::NotFound(dir));
        }
        let ebpf = EbpfLoader::new().map_pin_path(&dir).load(crate::OBJECT)?;
        Ok(Switch {
            ebpf,
            dir,
            name: name.to_owned(),
        })
    }

    /// Names of the switches under `pin_dir`.
    pub fn list(pin_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(pin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(sw::ROUTES).exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Detaches the switch from its ports and removes its pins: it stops forwarding.
    pub fn destroy(self) -> Result<(), Error> {
        let dir = self.dir.clone();
        drop(self);
        Switch::remove_dir(&dir)
    }

    fn remove_dir(dir: &Path) -> Result<(), Error> {
        if let Ok(links) = std::fs::read_dir(dir.join("links")) {
            for l in links.flatten() {
                // Dropping the last reference to a link detaches its program.
                if let Ok(link) = PinnedLink::from_pin(l.path()) {
                    drop(link.unpin());
                } else {
                    std::fs::remove_file(l.path())?;
                }
            }
            std::fs::remove_dir(dir.join("links"))?;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                std::fs::remove_file(e.path())?;
            }
        }
        std::fs::remove_dir(dir)?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program, loaded into the kernel (for test runs and benchmarks).
    pub fn program(&mut self, name: &str) -> Result<&ProgramFd, Error> {
        let prog = self
            .ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("object lacks program {name}"));
        if prog.fd().is_err() {
            if name == XDP_PROGRAM {
                <&mut Xdp>::try_from(&mut *prog)?.load()?;
            } else {
                <&mut SchedClassifier>::try_from(&mut *prog)?.load()?;
            }
        }
        Ok(prog.fd()?)
    }

    /// Instructions the verifier processed for a program (loading it if needed).
    pub fn verified_instructions(&mut self, name: &str) -> Result<Option<u32>, Error> {
        self.program(name)?;
        let prog = self.ebpf.program(name).expect("loaded above");
        Ok(prog.info()?.verified_instruction_count())
    }

    fn attach(&mut self, ifname: &str, ifindex: u32, xdp: bool) -> Result<(), Error> {
        self.program(TC_PROGRAM)?;
        let tc = <&mut SchedClassifier>::try_from(
            self.ebpf.program_mut(TC_PROGRAM).expect("loaded above"),
        )?;
        let id = tc.attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )?;
        let link: FdLink = tc.take_link(id)?.try_into()?;
        link.pin(self.link_pin(ifindex, TC_PROGRAM))?;
        if xdp {
            self.program(XDP_PROGRAM)?;
            let x = <&mut Xdp>::try_from(self.ebpf.program_mut(XDP_PROGRAM).expect("loaded"))?;
            let id = x.attach(ifname, XdpFlags::default())?;
            let link: FdLink = x.take_link(id)?.try_into()?;
            link.pin(self.link_pin(ifindex, XDP_PROGRAM))?;
        }
        Ok(())
    }

    /// Puts an XDP_PASS program on `ifname` (in the calling thread's namespace: the far end of
    /// a port's veth), so that the XDP path can redirect into the port; pinned with the switch
    /// and removed with it. Measurements only.
    pub fn attach_pass_xdp(&mut self, ifname: &str) -> Result<(), Error> {
        let ifindex = ifindex(ifname)?;
        let prog = self
            .ebpf
            .program_mut(crate::switch_program::PASS_XDP)
            .expect("object has pass_xdp");
        let x = <&mut Xdp>::try_from(prog)?;
        if x.fd().is_err() {
            x.load()?;
        }
        let id = x.attach(ifname, XdpFlags::default())?;
        let link: FdLink = x.take_link(id)?.try_into()?;
        // Far ends live in other namespaces, where ifindexes repeat: number them instead.
        let n = std::fs::read_dir(self.dir.join("links"))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("far-"))
            .count();
        let name = format!("far-{n}-{ifindex}-{}", crate::switch_program::PASS_XDP);
        link.pin(self.dir.join("links").join(name))?;
        Ok(())
    }

    fn link_pin(&self, ifindex: u32, program: &str) -> PathBuf {
        self.dir.join("links").join(format!("{ifindex}-{program}"))
    }

    fn map(&self, name: &str) -> &aya::maps::Map {
        self.ebpf
            .map(name)
            .unwrap_or_else(|| panic!("object lacks map {name}"))
    }

    fn map_mut(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("object lacks map {name}"))
    }

    fn config(&self) -> Result<Config, Error> {
        Ok(Array::<_, Config>::try_from(self.map(sw::CONFIG))?.get(&0, 0)?)
    }

    /// The ports by slot, as (slot, port).
    fn port_table(&self) -> Result<Vec<(u32, Port)>, Error> {
        let ports = Array::<_, Port>::try_from(self.map(sw::PORTS))?;
        let n = self.config()?.ports;
        let mut out = Vec::new();
        for slot in 0..n {
            let p = ports.get(&slot, 0)?;
            if p.ifindex != 0 {
                out.push((slot, p));
            }
        }
        Ok(out)
    }

    fn slot_of(&self, name: &str) -> Result<u32, Error> {
        let i = ifindex(name).map_err(|_| Error::UnknownPort(name.to_owned()))?;
        self.port_table()?
            .into_iter()
            .find(|(_, p)| p.ifindex == i)
            .map(|(s, _)| s)
            .ok_or_else(|| Error::UnknownPort(name.to_owned()))
    }

    fn port_names(&self) -> Result<BTreeMap<u32, String>, Error> {
        Ok(self
            .port_table()?
            .into_iter()
            .map(|(s, p)| (s, ifname(p.ifindex)))
            .collect())
    }

    pub fn ports(&self) -> Result<Vec<PortView>, Error> {
        let c = PerCpuArray::<_, u64>::try_from(self.map(sw::PORT_COUNTERS))?;
        let sum = |i: u32| -> Result<u64, Error> { Ok(c.get(&i, 0)?.iter().sum()) };
        self.port_table()?
            .into_iter()
            .map(|(slot, p)| {
                Ok(PortView {
                    slot,
                    name: ifname(p.ifindex),
                    ifindex: p.ifindex,
                    vlans: VlanSet(p.vlans).to_string(),
                    rx: sum(2 * slot)?,
                    tx: sum(2 * slot + 1)?,
                })
            })
            .collect()
    }

    fn route_entries(&self) -> Result<Vec<(Key<VlanMac>, Route)>, Error> {
        let t = LpmTrie::<_, VlanMac, Route>::try_from(self.map(sw::ROUTES))?;
        let mut out = Vec::new();
        for e in t.iter() {
            out.push(e?);
        }
        Ok(out)
    }

    /// The routes, with the frames each sent.
    pub fn routes(&self) -> Result<Vec<RouteView>, Error> {
        let names = self.port_names()?;
        let c = PerCpuArray::<_, u64>::try_from(self.map(sw::ROUTE_COUNTERS))?;
        let mut out = Vec::new();
        for (k, r) in self.route_entries()? {
            let data = k.data();
            let len = k.prefix_len().saturating_sub(VLAN_BITS) as u8;
            out.push(RouteView {
                vlan: data.vlan(),
                prefix: MacPrefix::new(Mac(data.mac), len).to_string(),
                port: names
                    .get(&r.port)
                    .cloned()
                    .unwrap_or_else(|| format!("slot {}", r.port)),
                frames: c.get(&r.slot, 0)?.iter().sum(),
            });
        }
        out.sort_by(|a, b| (a.vlan, &a.prefix).cmp(&(b.vlan, &b.prefix)));
        Ok(out)
    }

    /// Adds routes, all or none: each is checked first (known port, VLAN, no route with the same
    /// prefix to another port). A route already there to the same port is left as it is.
    /// Returns (added, unchanged).
    pub fn add_routes(&mut self, routes: &[RouteSpec]) -> Result<(usize, usize), Error> {
        let names = self.port_names()?;
        let existing: BTreeMap<(u32, VlanMac), Route> = self
            .route_entries()?
            .into_iter()
            .map(|(k, r)| ((k.prefix_len(), k.data()), r))
            .collect();
        let mut used: BTreeSet<u32> = existing.values().map(|r| r.slot).collect();
        let mut planned: BTreeMap<(u32, VlanMac), (u32, u32)> = BTreeMap::new();
        let mut unchanged = 0;
        for r in routes {
            let vlan = check_vlan(u32::from(r.vlan))?;
            let port = self.slot_of(&r.port)?;
            let key = (
                VLAN_BITS + u32::from(r.prefix.len),
                VlanMac::new(vlan, r.prefix.mac.0),
            );
            let conflict = |other: u32| Error::RouteConflict {
                prefix: r.prefix.to_string(),
                vlan,
                port: names.get(&other).cloned().unwrap_or_default(),
            };
            if let Some(e) = existing.get(&key) {
                if e.port != port {
                    return Err(conflict(e.port));
                }
                unchanged += 1;
                continue;
            }
            if let Some(&(other, _)) = planned.get(&key) {
                if other != port {
                    return Err(conflict(other));
                }
                unchanged += 1;
                continue;
            }
            let slot = (0..MAX_ROUTES)
                .find(|s| !used.contains(s))
                .ok_or(Error::RoutesFull(MAX_ROUTES))?;
            used.insert(slot);
            planned.insert(key, (port, slot));
        }
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        let mut done = Vec::new();
        let result = (|| -> Result<(), Error> {
            for (&(len, data), &(port, slot)) in &planned {
                PerCpuArray::<_, u64>::try_from(self.map_mut(sw::ROUTE_COUNTERS))?.set(
                    slot,
                    PerCpuValues::try_from(vec![0u64; cpus]).map_err(Error::Io)?,
                    0,
                )?;
                let route = Route {
                    port,
                    slot,
                    mac_len: len - VLAN_BITS,
                    _pad: 0,
                };
                LpmTrie::<_, VlanMac, Route>::try_from(self.map_mut(sw::ROUTES))?.insert(
                    &Key::new(len, data),
                    route,
                    0,
                )?;
                done.push(Key::new(len, data));
            }
            Ok(())
        })();
        if let Err(e) = result {
            let mut t = LpmTrie::<_, VlanMac, Route>::try_from(self.map_mut(sw::ROUTES))?;
            for k in &done {
                let _ = t.remove(k);
            }
            return Err(e);
        }
        // MACs learned before a specific route covered them (a host that talked before its
        // routes were imported) are routed from now on: forget them, as the data path would not
        // have learned them. The default route (/0) covers everything and leaves learning alone.
        let covers = |k: &VlanMac| {
            planned.keys().any(|&(len, data)| {
                let mac_len = len - VLAN_BITS;
                mac_len > 0 && data.vlan == k.vlan && {
                    let (a, b) = (u64_of(data.mac), u64_of(k.mac));
                    let shift = 48 - mac_len.min(48);
                    a >> shift == b >> shift
                }
            })
        };
        let mut t = HashMap::<_, VlanMac, Learned>::try_from(self.map_mut(sw::LEARNED))?;
        let covered: Vec<VlanMac> = t
            .keys()
            .filter_map(Result::ok)
            .filter(|k| covers(k))
            .collect();
        for k in &covered {
            let _ = t.remove(k);
        }
        Ok((planned.len(), unchanged))
    }

    /// Deletes the route for exactly `prefix` in `vlan`.
    pub fn delete_route(&mut self, vlan: u16, prefix: MacPrefix) -> Result<(), Error> {
        let vlan = check_vlan(u32::from(vlan))?;
        let key = Key::new(
            VLAN_BITS + u32::from(prefix.len),
            VlanMac::new(vlan, prefix.mac.0),
        );
        let mut t = LpmTrie::<_, VlanMac, Route>::try_from(self.map_mut(sw::ROUTES))?;
        t.remove(&key).map_err(|_| Error::NoRoute {
            prefix: prefix.to_string(),
            vlan,
        })
    }

    /// Imports a hypervisor's `mat routes --json`: every route whose `via` is a key of `via`
    /// goes to the port it maps to (and only routes of `scope`, when given); `vlan: null` is
    /// untagged (VLAN 0). All or nothing, as [`Switch::add_routes`].
    pub fn import(
        &mut self,
        json: &str,
        via: &BTreeMap<String, String>,
        scope: Option<mat_loader::plan::Scope>,
    ) -> Result<ImportView, Error> {
        let file: mat_loader::views::RoutesView =
            serde_json::from_str(json).map_err(|e| Error::RoutesFile(e.to_string()))?;
        let mut specs = Vec::new();
        let mut skipped = 0;
        for r in file.routes {
            match via.get(&r.via) {
                Some(port) if scope.is_none_or(|s| s == r.scope) => specs.push(RouteSpec {
                    vlan: r.vlan.unwrap_or(0),
                    prefix: r.prefix,
                    port: port.clone(),
                }),
                _ => skipped += 1,
            }
        }
        let (added, unchanged) = self.add_routes(&specs)?;
        Ok(ImportView {
            added,
            unchanged,
            skipped,
        })
    }

    pub fn counters(&self) -> Result<CountersView, Error> {
        let c = PerCpuArray::<_, u64>::try_from(self.map(COUNTERS))?;
        let sum = |i: u32| -> Result<u64, Error> { Ok(c.get(&i, 0)?.iter().sum()) };
        Ok(CountersView {
            routed: sum(sw::Outcome::Routed as u32)?,
            learned: sum(sw::Outcome::Learned as u32)?,
            flooded: sum(sw::Outcome::Flooded as u32)?,
            dropped: sum(sw::Outcome::Dropped as u32)?,
            sources_learned: sum(sw::Event::SourceLearned as u32)?,
            flood_copies: sum(sw::Event::FloodCopies as u32)?,
        })
    }

    /// The learned table, oldest last.
    pub fn learned(&self) -> Result<Vec<LearnedView>, Error> {
        let names = self.port_names()?;
        let ageing = self.ageing_ns()?;
        let now = monotonic_ns();
        let t = HashMap::<_, VlanMac, Learned>::try_from(self.map(sw::LEARNED))?;
        let mut out = Vec::new();
        for e in t.iter() {
            let (k, v) = e?;
            let age = now.saturating_sub(v.seen_ns);
            out.push(LearnedView {
                vlan: k.vlan(),
                mac: Mac(k.mac).to_string(),
                port: names
                    .get(&v.port)
                    .cloned()
                    .unwrap_or_else(|| format!("slot {}", v.port)),
                age_ms: age / 1_000_000,
                expired: age >= ageing,
            });
        }
        out.sort_by(|a, b| (a.age_ms, a.vlan, &a.mac).cmp(&(b.age_ms, b.vlan, &b.mac)));
        Ok(out)
    }

    /// Learns `mac` on `port` as if seen `age` ago (tests, and an operator's static entry).
    pub fn learn(&mut self, vlan: u16, mac: Mac, port: &str, age: Duration) -> Result<(), Error> {
        let vlan = check_vlan(u32::from(vlan))?;
        let slot = self.slot_of(port)?;
        let seen_ns = monotonic_ns().saturating_sub(age.as_nanos() as u64);
        let mut t = HashMap::<_, VlanMac, Learned>::try_from(self.map_mut(sw::LEARNED))?;
        t.insert(
            VlanMac::new(vlan, mac.0),
            Learned {
                port: slot,
                _pad: 0,
                seen_ns,
            },
            0,
        )?;
        Ok(())
    }

    /// Forgets every learned MAC (routes stay); returns how many there were.
    pub fn flush(&mut self) -> Result<usize, Error> {
        let mut t = HashMap::<_, VlanMac, Learned>::try_from(self.map_mut(sw::LEARNED))?;
        let keys: Vec<VlanMac> = t.keys().collect::<Result<_, _>>()?;
        for k in &keys {
            let _ = t.remove(k);
        }
        Ok(keys.len())
    }

    fn ageing_ns(&self) -> Result<u64, Error> {
        let a = self.config()?.ageing_ns;
        Ok(if a == 0 { DEFAULT_AGEING_NS } else { a })
    }

    pub fn show(&self) -> Result<SwitchView, Error> {
        Ok(SwitchView {
            name: self.name.clone(),
            ageing_s: self.ageing_ns()? / 1_000_000_000,
            ports: self.ports()?,
            routes: self.route_entries()?.len(),
            learned: self.learned()?.len(),
            counters: self.counters()?,
        })
    }
}

/// A MAC as the low 48 bits of a number, first octet highest.
fn u64_of(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0, |v, &b| v << 8 | u64::from(b))
}
