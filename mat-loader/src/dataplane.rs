//! The loaded object and everything pinned with it: maps, and one link per attached program.

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramFd, SchedClassifier, Xdp, XdpFlags,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
    util::KernelVersion,
};
use mat_common::{
    MacAddr,
    counters::{self, HOOKS, Hook, OUTCOMES, Outcome},
    maps::{self as names, Binding, BindingKey, PORT_SLOTS, PortSlot, Settings, UPLINK_IFINDEX},
    pool::{MAX_POOLS, PoolPrefix, Pools},
};

use crate::{
    Error, bpffs, layout,
    mmap::Mmap,
    program::{Hookpoint, Mode, Program},
    ringbuf::EventRing,
};

/// A pinned link that could not be switched: its interface index, program and error.
pub type LinkError = (u32, Program, Error);

/// The pin directory's lock, held while this lives (see [`Dataplane::lock`]).
pub struct PinLock(#[expect(dead_code, reason = "held for its flock")] Flock<std::fs::File>);

pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// This layout's directory under `pin_dir`.
    dir: PathBuf,
}

impl Dataplane {
    /// Loads the object, reusing the maps pinned under `pin_dir` (creating and pinning them the
    /// first time). Programs already attached keep running throughout. Pins of the layout
    /// before this one are migrated (see [`crate::layout`]); an unknown layout is refused with
    /// nothing touched.
    pub fn open(pin_dir: impl AsRef<Path>) -> Result<Self, Error> {
        let pin_dir = pin_dir.as_ref().to_owned();
        let older = layout::detect(&pin_dir)?;
        let dir = layout::dir(&pin_dir);
        bpffs::ensure(&dir.join("links"))?;
        let ebpf = EbpfLoader::new().map_pin_path(&dir).load(crate::OBJECT)?;
        let mut dp = Self { ebpf, pin_dir, dir };
        for old in &older {
            layout::migrate(old, &mut dp)?;
        }
        Ok(dp)
    }

    /// Takes an exclusive lock on the pin directory (creating it, and mounting bpffs, when
    /// missing), waiting up to `wait` for a holder that is exiting: one control plane per data
    /// plane. The lock lasts as long as the returned descriptor.
    pub fn lock(pin_dir: impl AsRef<Path>, wait: std::time::Duration) -> Result<PinLock, Error> {
        let pin_dir = pin_dir.as_ref();
        bpffs::ensure(pin_dir)?;
        let mut dir = std::fs::File::open(pin_dir)?;
        let until = std::time::Instant::now() + wait;
        loop {
            match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(PinLock(lock)),
                Err((d, Errno::EWOULDBLOCK)) if std::time::Instant::now() < until => {
                    dir = d;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err((_, Errno::EWOULDBLOCK)) => return Err(Error::PinsInUse(pin_dir.to_owned())),
                Err((_, e)) => return Err(Error::Io(e.into())),
            }
        }
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The program, loaded into the kernel (once) but not attached.
    pub fn program(&mut self, p: Program) -> Result<&ProgramFd, Error> {
        let prog = self
            .ebpf
            .program_mut(p.name())
            .unwrap_or_else(|| panic!("object lacks program {}", p.name()));
        if prog.fd().is_err() {
            match p.hookpoint() {
                Hookpoint::Tc(_) => <&mut SchedClassifier>::try_from(&mut *prog)?.load()?,
                Hookpoint::Xdp => <&mut Xdp>::try_from(&mut *prog)?.load()?,
            }
        }
        Ok(prog.fd()?)
    }

    /// Instructions the verifier processed for the program (loading it if needed).
    pub fn verified_instructions(&mut self, p: Program) -> Result<Option<u32>, Error> {
        self.program(p)?;
        let prog = self.ebpf.program(p.name()).expect("loaded above");
        Ok(prog.info()?.verified_instruction_count())
    }

    /// Attaches `mode`'s programs to `ifname` and pins the links. Idempotent: a program already
    /// attached there stays as it is, so a restarted control plane causes no gap.
    pub fn attach(&mut self, ifname: &str, mode: Mode) -> Result<(), Error> {
        self.attach_with(ifname, mode, XdpFlags::default())
    }

    /// [`Dataplane::attach`] with the uplink's XDP mode: native (the driver's, refused where it
    /// has none) or generic. A link already pinned stays in the mode it was attached in.
    pub fn attach_uplink(&mut self, ifname: &str, generic: bool) -> Result<(), Error> {
        let flags = if generic {
            XdpFlags::SKB_MODE
        } else {
            XdpFlags::DRV_MODE
        };
        self.attach_with(ifname, Mode::Uplink, flags)
    }

    fn attach_with(&mut self, ifname: &str, mode: Mode, xdp_flags: XdpFlags) -> Result<(), Error> {
        let ifindex = ifindex(ifname)?;
        let wanted = mode.programs();
        if let Some(other) = self
            .attached(ifindex)
            .into_iter()
            .find(|p| !wanted.contains(p))
        {
            return Err(Error::ModeConflict {
                ifname: ifname.to_owned(),
                attached: other.name(),
            });
        }
        for p in wanted {
            let pin = self.link_pin(ifindex, p);
            if pin.exists() {
                continue;
            }
            self.program(p)?;
            let prog = self.ebpf.program_mut(p.name()).expect("loaded above");
            let link: FdLink = match p.hookpoint() {
                Hookpoint::Tc(at) if tcx_available() => {
                    let tc = <&mut SchedClassifier>::try_from(prog)?;
                    let id = tc.attach_with_options(
                        ifname,
                        at,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )?;
                    tc.take_link(id)?.try_into()?
                }
                Hookpoint::Tc(at) => {
                    // Before TCX (Linux 6.6): a clsact filter, which stays attached by itself and
                    // is found again by name on detach.
                    let _ = tc::qdisc_add_clsact(ifname);
                    let tc = <&mut SchedClassifier>::try_from(prog)?;
                    let id = tc.attach(ifname, at)?;
                    std::mem::forget(tc.take_link(id)?);
                    continue;
                }
                Hookpoint::Xdp => {
                    let xdp = <&mut Xdp>::try_from(prog)?;
                    let id = xdp.attach(ifname, xdp_flags)?;
                    xdp.take_link(id)?.try_into()?
                }
            };
            link.pin(&pin)?;
            tracing::info!(ifname, ifindex, program = p.name(), "attached");
        }
        Ok(())
    }

    /// Points every link pinned in this layout at this object's program, so that a daemon of a
    /// newer release runs its own programs on the ports an older one attached (same layout;
    /// an older layout's links are moved by the migration). Returns the links updated and the
    /// ones that could not be (a port that vanished keeps its link until the reconcile removes
    /// it), each with its error.
    pub fn take_over_links(&mut self) -> Result<(usize, Vec<LinkError>), Error> {
        let mut updated = 0;
        let mut failed = Vec::new();
        for (ifindex, program) in self.links()? {
            let pin = self.link_pin(ifindex, program);
            // A link detached by hand, or whose interface went away, is only a pin: removed, so
            // that the reconcile attaches the port again (or releases it).
            if crate::linkinfo::of_pin(&pin).is_ok_and(|l| l.ifindex == 0) {
                tracing::warn!(
                    ifindex,
                    program = program.name(),
                    "pinned link no longer attached: unpinned"
                );
                std::fs::remove_file(&pin)?;
                continue;
            }
            // The pin keeps the link attached; the descriptor returned is only closed.
            match self.relink(&pin, program) {
                Ok(_) => updated += 1,
                Err(e) => failed.push((ifindex, program, e)),
            }
        }
        Ok((updated, failed))
    }

    /// Points the link pinned at `pin` to this object's `program` (BPF_LINK_UPDATE: the hook
    /// never runs without a program), and returns it, to be pinned elsewhere if need be.
    pub(crate) fn relink(&mut self, pin: &Path, program: Program) -> Result<FdLink, Error> {
        let link: FdLink = PinnedLink::from_pin(pin)?.into();
        self.program(program)?;
        let prog = self.program_mut(program);
        Ok(match program.hookpoint() {
            Hookpoint::Tc(_) => {
                let tc = <&mut SchedClassifier>::try_from(prog)?;
                let id = tc.attach_to_link(SchedClassifierLink::try_from(link)?)?;
                tc.take_link(id)?.try_into()?
            }
            Hookpoint::Xdp => {
                let xdp = <&mut Xdp>::try_from(prog)?;
                let id = xdp.attach_to_link(XdpLink::try_from(link)?)?;
                xdp.take_link(id)?.try_into()?
            }
        })
    }

    /// Detaches every MAT program from the interface with this index.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), Error> {
        for p in Program::ALL {
            let pin = self.link_pin(ifindex, p);
            if pin.exists() {
                // Dropping the last reference to the link detaches the program.
                drop(PinnedLink::from_pin(&pin)?.unpin()?);
                tracing::info!(ifindex, program = p.name(), "detached");
            } else if let (Hookpoint::Tc(at), false) = (p.hookpoint(), tcx_available())
                && let Ok(name) = nix::net::if_::if_indextoname(ifindex)
            {
                let _ = tc::qdisc_detach_program(&name.to_string_lossy(), at, p.name());
            }
        }
        Ok(())
    }

    /// The programs attached to the interface with this index (by their pinned links).
    pub fn attached(&self, ifindex: u32) -> Vec<Program> {
        Program::ALL
            .into_iter()
            .filter(|&p| self.link_pin(ifindex, p).exists())
            .collect()
    }

    /// Whether `p` runs on the port `ifname` (index `ifindex`) through its pinned link: the
    /// program the link holds is among those the kernel runs at that hook. `None` before TCX
    /// (clsact filters have no link to compare).
    pub fn runs(&self, ifname: &str, ifindex: u32, p: Program) -> Result<Option<bool>, Error> {
        let Hookpoint::Tc(at) = p.hookpoint() else {
            return Ok(None);
        };
        if !tcx_available() {
            return Ok(None);
        }
        let pin = self.link_pin(ifindex, p);
        if !pin.exists() {
            return Ok(Some(false));
        }
        let id = crate::linkinfo::of_pin(&pin)?.prog_id;
        let (_, running) = SchedClassifier::query_tcx(ifname, at)?;
        Ok(Some(running.iter().any(|r| r.id() == id)))
    }

    /// Interfaces with pinned links, as (ifindex, program).
    pub fn links(&self) -> Result<Vec<(u32, Program)>, Error> {
        let mut links = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("links"))? {
            links.extend(parse_link_pin(&entry?.file_name().to_string_lossy()));
        }
        Ok(links)
    }

    pub(crate) fn link_pin(&self, ifindex: u32, p: Program) -> PathBuf {
        self.dir
            .join("links")
            .join(format!("{ifindex}-{}", p.name()))
    }

    /// Binds `inside <-> outside` on a port (its slot in the port table, or an overflow entry
    /// when another port holds the slot), or on the uplink with
    /// [`mat_common::maps::UPLINK_IFINDEX`] (the hash maps; the return path first, so the
    /// outside MAC works as soon as it can appear on the wire).
    pub fn bind(
        &mut self,
        ifindex: u32,
        inside: MacAddr,
        outside: MacAddr,
        flags: u16,
    ) -> Result<(), Error> {
        if ifindex == UPLINK_IFINDEX {
            self.bindings_mut(names::TO_VM)?.insert(
                BindingKey::new(ifindex, outside),
                Binding::new(inside, 0),
                0,
            )?;
            self.bindings_mut(names::FROM_VM)?.insert(
                BindingKey::new(ifindex, inside),
                Binding::new(outside, flags),
                0,
            )?;
            return Ok(());
        }
        self.set_port(PortSlot {
            ifindex,
            inside,
            _pad: [0; 2],
            binding: Binding::new(outside, flags),
        })
    }

    /// Writes a port's slot (or its overflow entry, when another port holds the slot).
    pub(crate) fn set_port(&mut self, port: PortSlot) -> Result<(), Error> {
        let slot = port.ifindex % PORT_SLOTS;
        let held = self.ports()?.get(&slot, 0)?.ifindex;
        if held == 0 || held == port.ifindex {
            self.ports_mut()?.set(slot, port, 0)?;
            ignore_missing(self.overflow_mut()?.remove(&port.ifindex))?;
        } else {
            self.overflow_mut()?.insert(port.ifindex, port, 0)?;
        }
        Ok(())
    }

    /// Removes a binding (with what was learned for it); missing entries are not an error.
    pub fn unbind(&mut self, ifindex: u32, inside: MacAddr, outside: MacAddr) -> Result<(), Error> {
        if ifindex == UPLINK_IFINDEX {
            ignore_missing(
                self.bindings_mut(names::FROM_VM)?
                    .remove(&BindingKey::new(ifindex, inside)),
            )?;
            ignore_missing(
                self.bindings_mut(names::TO_VM)?
                    .remove(&BindingKey::new(ifindex, outside)),
            )?;
            return Ok(());
        }
        let slot = ifindex % PORT_SLOTS;
        let held = self.ports()?.get(&slot, 0)?;
        if held.ifindex == ifindex && held.inside == inside {
            self.ports_mut()?.set(slot, PortSlot::default(), 0)?;
        }
        let overflow = self.overflow()?;
        if overflow.get(&ifindex, 0).is_ok_and(|p| p.inside == inside) {
            ignore_missing(self.overflow_mut()?.remove(&ifindex))?;
        }
        Ok(())
    }

    /// Every bound port, from the port table and its overflow.
    pub fn port_slots(&self) -> Result<Vec<PortSlot>, Error> {
        // The table is an mmapable array: read through its pages, not 65,536 lookups (a
        // system call each, at every start and every `mat list`). The kernel lays elements out
        // every `value_size` rounded up to 8 bytes.
        let stride = std::mem::size_of::<PortSlot>().next_multiple_of(8);
        let aya::maps::Map::Array(data) = self.map(names::PORTS) else {
            panic!("{} is an array", names::PORTS);
        };
        let fd = data.fd().as_fd().as_raw_fd();
        let table = Mmap::new(fd, PORT_SLOTS as usize * stride, libc::PROT_READ, 0)?;
        let mut out = Vec::new();
        for i in 0..PORT_SLOTS as usize {
            // SAFETY: inside the mapping; PortSlot is plain data, read unaligned.
            let p = unsafe {
                table
                    .ptr
                    .as_ptr()
                    .cast::<u8>()
                    .add(i * stride)
                    .cast::<PortSlot>()
                    .read_unaligned()
            };
            if p.ifindex != 0 {
                out.push(p);
            }
        }
        for entry in self.overflow()?.iter() {
            out.push(entry?.1);
        }
        Ok(out)
    }

    /// The from-VM bindings: (port, inside) -> outside, ports and uplink alike.
    pub fn bindings(&self) -> Result<Vec<(BindingKey, Binding)>, Error> {
        let map: HashMap<_, BindingKey, Binding> = HashMap::try_from(self.map(names::FROM_VM))?;
        let mut all: Vec<_> = map.iter().collect::<Result<_, _>>()?;
        all.extend(
            self.port_slots()?
                .into_iter()
                .map(|p| (BindingKey::new(p.ifindex, p.inside), p.binding)),
        );
        Ok(all)
    }

    /// The to-VM bindings: (port, outside) -> inside, ports and uplink alike.
    pub fn reverse_bindings(&self) -> Result<Vec<(BindingKey, Binding)>, Error> {
        let map: HashMap<_, BindingKey, Binding> = HashMap::try_from(self.map(names::TO_VM))?;
        let mut all: Vec<_> = map.iter().collect::<Result<_, _>>()?;
        all.extend(self.port_slots()?.into_iter().map(|p| {
            (
                BindingKey::new(p.ifindex, p.binding.mac),
                Binding::new(p.inside, 0),
            )
        }));
        Ok(all)
    }

    /// Sets the host's data-plane settings (`SETTING_*` flags).
    pub fn set_settings(&mut self, flags: u32) -> Result<(), Error> {
        let mut map: Array<_, Settings> = Array::try_from(self.map_mut(names::SETTINGS))?;
        map.set(0, Settings { flags }, 0)?;
        Ok(())
    }

    /// Sets the outside pools the spoof check drops from VM ports.
    pub fn set_pools(&mut self, pools: &[PoolPrefix]) -> Result<(), Error> {
        if pools.len() > MAX_POOLS {
            return Err(Error::TooManyPools {
                max: MAX_POOLS,
                got: pools.len(),
            });
        }
        let mut value = Pools {
            count: pools.len() as u32,
            ..Default::default()
        };
        value.prefixes[..pools.len()].copy_from_slice(pools);
        let mut map: Array<_, Pools> = Array::try_from(self.map_mut(names::POOLS))?;
        map.set(0, value, 0)?;
        Ok(())
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map(names::COUNTERS))?;
        let mut c = Counters::default();
        for (h, hook) in HOOKS.into_iter().enumerate() {
            for (o, outcome) in OUTCOMES.into_iter().enumerate() {
                c.0[h][o] = map.get(&counters::index(hook, outcome), 0)?.iter().sum();
            }
        }
        Ok(c)
    }

    /// IPv4 addresses learned from the VMs' ARP, by (port, inside MAC): kept in the from-VM
    /// bindings.
    pub fn learned(&self) -> Result<Vec<(BindingKey, Ipv4Addr)>, Error> {
        Ok(self
            .bindings()?
            .into_iter()
            .filter(|(_, b)| b.ipv4 != [0; 4])
            .map(|(k, b)| (k, Ipv4Addr::from(b.ipv4)))
            .collect())
    }

    /// The IPv4 address learned for one binding: one lookup.
    pub fn learned_for(&self, ifindex: u32, inside: MacAddr) -> Result<Option<Ipv4Addr>, Error> {
        let binding = if ifindex == UPLINK_IFINDEX {
            let map: HashMap<_, BindingKey, Binding> = HashMap::try_from(self.map(names::FROM_VM))?;
            match map.get(&BindingKey::new(ifindex, inside), 0) {
                Ok(b) => Some(b),
                Err(aya::maps::MapError::KeyNotFound) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            let slot = self.ports()?.get(&(ifindex % PORT_SLOTS), 0)?;
            let slot = if slot.ifindex == ifindex {
                Some(slot)
            } else {
                self.overflow()?.get(&ifindex, 0).ok()
            };
            slot.filter(|p| p.inside == inside).map(|p| p.binding)
        };
        Ok(binding
            .filter(|b| b.ipv4 != [0; 4])
            .map(|b| Ipv4Addr::from(b.ipv4)))
    }

    /// The event ring buffer as an [`EventRing`], which reads a pinned ring right wherever an
    /// earlier consumer left it (the daemon's reader); one consumer at a time.
    pub fn take_event_ring(&mut self) -> Result<EventRing, Error> {
        match self.ebpf.take_map(names::EVENTS) {
            Some(aya::maps::Map::RingBuf(data)) => Ok(EventRing::new(data)?),
            _ => Err(aya::maps::MapError::InvalidName {
                name: names::EVENTS.into(),
            }
            .into()),
        }
    }

    /// The event ring buffer as aya's `RingBuf` (for tests on fresh maps: aya 0.13.1 misreads a
    /// pinned ring an earlier consumer has read from, see [`EventRing`]); one consumer at a time.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(aya::maps::MapError::InvalidName {
                name: names::EVENTS.into(),
            })?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Detaches everything and removes the pins: the data plane stops translating.
    pub fn remove(mut self) -> Result<(), Error> {
        for (ifindex, _) in self.links()? {
            self.detach(ifindex)?;
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::remove_file(path)?;
            }
        }
        std::fs::remove_dir(self.dir.join("links"))?;
        std::fs::remove_dir(&self.dir)?;
        std::fs::remove_dir(&self.pin_dir)?;
        Ok(())
    }

    fn ports(&self) -> Result<Array<&MapData, PortSlot>, Error> {
        Ok(Array::try_from(self.map(names::PORTS))?)
    }

    fn ports_mut(&mut self) -> Result<Array<&mut MapData, PortSlot>, Error> {
        Ok(Array::try_from(self.map_mut(names::PORTS))?)
    }

    fn overflow(&self) -> Result<HashMap<&MapData, u32, PortSlot>, Error> {
        Ok(HashMap::try_from(self.map(names::PORT_OVERFLOW))?)
    }

    fn overflow_mut(&mut self) -> Result<HashMap<&mut MapData, u32, PortSlot>, Error> {
        Ok(HashMap::try_from(self.map_mut(names::PORT_OVERFLOW))?)
    }

    fn bindings_mut(
        &mut self,
        name: &str,
    ) -> Result<HashMap<&mut MapData, BindingKey, Binding>, Error> {
        Ok(HashMap::try_from(self.map_mut(name))?)
    }

    pub(crate) fn program_mut(&mut self, p: Program) -> &mut aya::programs::Program {
        self.ebpf
            .program_mut(p.name())
            .unwrap_or_else(|| panic!("object lacks program {}", p.name()))
    }

    fn map(&self, name: &str) -> &aya::maps::Map {
        self.ebpf
            .map(name)
            .unwrap_or_else(|| panic!("object lacks map {name}"))
    }

    pub(crate) fn map_mut(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("object lacks map {name}"))
    }
}

/// Counters summed over CPUs, by hook and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters([[u64; OUTCOMES.len()]; HOOKS.len()]);

impl Counters {
    pub fn get(&self, hook: Hook, outcome: Outcome) -> u64 {
        self.0[hook as usize][outcome as usize]
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut d = *self;
        for (row, old) in d.0.iter_mut().zip(earlier.0) {
            for (v, o) in row.iter_mut().zip(old) {
                *v -= o;
            }
        }
        d
    }

    /// Non-zero counters as (hook, outcome, value).
    pub fn nonzero(&self) -> Vec<(Hook, Outcome, u64)> {
        HOOKS
            .into_iter()
            .flat_map(|h| OUTCOMES.into_iter().map(move |o| (h, o)))
            .map(|(h, o)| (h, o, self.get(h, o)))
            .filter(|&(_, _, v)| v != 0)
            .collect()
    }
}

/// A removal that found nothing to remove is not an error (aya reports a missing key from
/// `bpf_map_delete_elem` as the syscall's ENOENT).
fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// The (ifindex, program) of a link pin's file name, `<ifindex>-<program>`.
pub(crate) fn parse_link_pin(name: &str) -> Option<(u32, Program)> {
    let (i, p) = name.split_once('-')?;
    let p = Program::ALL.into_iter().find(|q| q.name() == p)?;
    Some((i.parse().ok()?, p))
}

fn ifindex(ifname: &str) -> Result<u32, Error> {
    nix::net::if_::if_nametoindex(ifname).map_err(|_| Error::NoInterface(ifname.to_owned()))
}

pub(crate) fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}
