//! Duplicate outside MACs: frames that arrive from the network (never one the host sent) whose
//! Ethernet source, ARP sender hardware address or ND link-layer option (SLLAO, TLLAO) lies in
//! this host's own pool (`pool | rack | host`). Only another host handing out the same MACs (the
//! same rack and host id) sends them, so traffic meant for one VM reaches the other.
//!
//! One AF_PACKET socket per watched interface, in user space: a classic BPF filter passes only
//! frames from the host pool, ARP and ND (after at most one in-band VLAN tag), so ordinary
//! traffic costs nothing here, and etherparse reads what passes. Frames the host sends out of
//! the interface (`PACKET_OUTGOING`) are not received. Nothing in the data plane changes.

use std::{
    collections::HashMap,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etherparse::{ArpHardwareId, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use serde::{Deserialize, Serialize};
use tokio::{io::unix::AsyncFd, task::AbortHandle};
use tracing::{info, warn};

use crate::{
    mac::{Mac, MacPrefix},
    ports::{self, LinkInfo, VmPorts},
};

/// A MAC is logged at most once per this period (every frame is counted).
pub const LOG_EVERY: Duration = Duration::from_mins(1);

/// How many MACs `mat stats` lists (the most recently seen).
pub const RECENT: usize = 32;

/// Frames are read up to this length: the headers and ND options are all that is looked at.
const SNAP: u32 = 512;

/// One of this host's outside MACs seen coming from the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    /// The MAC of this host's pool that the frame claimed.
    pub mac: Mac,
    /// Where it claimed it: `ethernet source`, `arp sender`, `nd sllao` or `nd tllao`.
    pub field: String,
    /// The interface it arrived on, its VLAN (none when untagged) and its Ethernet source.
    pub interface: String,
    pub vlan: Option<u16>,
    pub source: Mac,
    /// Frames seen claiming it, and the last one's time (ms since the Unix epoch).
    pub frames: u64,
    pub last_ms: u64,
}

/// What has been seen: the total, and the MACs most recently seen.
#[derive(Default)]
pub struct Log {
    total: u64,
    macs: HashMap<Mac, (Duplicate, Instant)>,
}

impl Log {
    /// Records a frame claiming `claim.mac`; returns whether to log it (once per [`LOG_EVERY`]
    /// per MAC).
    fn record(&mut self, claim: Claim, interface: &str, now: Instant) -> bool {
        self.total += 1;
        let last_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let seen = Duplicate {
            mac: claim.mac,
            field: claim.field.to_owned(),
            interface: interface.to_owned(),
            vlan: claim.vlan,
            source: claim.source,
            frames: 1,
            last_ms,
        };
        if let Some((d, logged)) = self.macs.get_mut(&claim.mac) {
            let frames = d.frames + 1;
            *d = Duplicate { frames, ..seen };
            if now.duration_since(*logged) < LOG_EVERY {
                return false;
            }
            *logged = now;
            return true;
        }
        if self.macs.len() >= RECENT {
            let oldest = self.macs.values().min_by_key(|(d, _)| d.last_ms);
            if let Some(mac) = oldest.map(|(d, _)| d.mac) {
                self.macs.remove(&mac);
            }
        }
        self.macs.insert(claim.mac, (seen, now));
        true
    }

    /// Frames seen in all, and the MACs most recently seen (latest first).
    pub fn view(&self) -> (u64, Vec<Duplicate>) {
        let mut recent: Vec<Duplicate> = self.macs.values().map(|(d, _)| d.clone()).collect();
        recent.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then(a.mac.cmp(&b.mac)));
        (self.total, recent)
    }
}

/// A frame's claim on a MAC of the host pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub mac: Mac,
    pub field: &'static str,
    pub source: Mac,
    pub vlan: Option<u16>,
}

/// The first claim `frame` makes on a MAC of `pool`: its Ethernet source, ARP sender, or an ND
/// source or target link-layer option. `vlan` is the tag the kernel took off (in-band tags are
/// read from the frame).
pub fn claim(frame: &[u8], pool: MacPrefix, vlan: Option<u16>) -> Option<Claim> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return None;
    };
    let source = Mac(eth.source());
    let vlan = vlan.or_else(|| p.vlan_ids().first().map(|v| v.value()));
    let found = |mac: Mac, field| {
        pool.contains(mac).then_some(Claim {
            mac,
            field,
            source,
            vlan,
        })
    };
    if let Some(c) = found(source, "ethernet source") {
        return Some(c);
    }
    if let Some(NetSlice::Arp(arp)) = &p.net {
        let sender = arp.sender_hw_addr();
        if arp.hw_addr_type() == ArpHardwareId::ETHERNET && sender.len() == 6 {
            return found(Mac(sender.try_into().ok()?), "arp sender");
        }
        return None;
    }
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        return None;
    };
    // The fixed part of each ND message after its first 8 bytes, then its options.
    let fixed = match icmp.type_u8() {
        133 => 0,        // Router Solicitation
        134 => 8,        // Router Advertisement: reachable time, retransmit timer
        135 | 136 => 16, // Neighbor Solicitation, Advertisement: target
        137 => 32,       // Redirect: target, destination
        _ => return None,
    };
    let mut opts = icmp.payload().get(fixed..)?;
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        let field = match opts[0] {
            1 => Some("nd sllao"),
            2 => Some("nd tllao"),
            _ => None,
        };
        if let Some(field) = field
            && let Some(c) = found(Mac(opts[2..8].try_into().ok()?), field)
        {
            return Some(c);
        }
        opts = &opts[len..];
    }
    None
}

/// The classic BPF filter: frames whose Ethernet source is in `pool`, ARP, and ICMPv6 of the ND
/// types (133 to 137) right after the IPv6 header, untagged or behind one VLAN tag.
pub fn filter(pool: MacPrefix) -> Vec<libc::sock_filter> {
    const LD_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LD_H: u16 = 0x28;
    const LD_B: u16 = 0x30;
    const AND: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE: u16 = 0x35;
    const JGT: u16 = 0x25;
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    // Jump targets by label, resolved once every instruction is placed.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum To {
        Next,
        At(&'static str),
    }
    use To::{At, Next};
    let bits = crate::mac::mask(pool.len) & pool.mac.to_u64();
    let mask = crate::mac::mask(pool.len);
    let hi = |v: u64| u32::try_from(v >> 16).unwrap_or(u32::MAX);
    let lo = |v: u64| u32::try_from(v & 0xffff).unwrap_or(0);
    let mut prog: Vec<(Option<&'static str>, u16, To, To, u32)> = Vec::new();
    let mut op = |label: Option<&'static str>, code, jt, jf, k| prog.push((label, code, jt, jf, k));
    op(None, LD_W, Next, Next, 6);
    op(None, AND, Next, Next, hi(mask));
    op(None, JEQ, Next, At("other"), hi(bits));
    op(None, LD_H, Next, Next, 10);
    op(None, AND, Next, Next, lo(mask));
    op(None, JEQ, At("accept"), At("other"), lo(bits));
    op(Some("other"), LD_H, Next, Next, 12);
    op(None, JEQ, At("accept"), Next, 0x0806);
    op(None, JEQ, At("ip6"), Next, 0x86dd);
    op(None, JEQ, At("tagged"), Next, 0x8100);
    op(None, JEQ, At("tagged"), At("reject"), 0x88a8);
    op(Some("tagged"), LD_H, Next, Next, 16);
    op(None, JEQ, At("accept"), Next, 0x0806);
    op(None, JEQ, At("ip6t"), At("reject"), 0x86dd);
    for (label, l3) in [("ip6", 14), ("ip6t", 18)] {
        op(Some(label), LD_B, Next, Next, l3 + 6);
        op(None, JEQ, Next, At("reject"), 58);
        op(None, LD_B, Next, Next, l3 + 40);
        op(None, JGE, Next, At("reject"), 133);
        op(None, JGT, At("reject"), At("accept"), 137);
    }
    op(Some("accept"), RET, Next, Next, SNAP);
    op(Some("reject"), RET, Next, Next, 0);
    let at = |name: &str| {
        prog.iter()
            .position(|i| i.0 == Some(name))
            .expect("a placed label")
    };
    let offset = |here: usize, to: To| match to {
        Next => 0,
        At(name) => u8::try_from(at(name) - here - 1).expect("a short forward jump"),
    };
    prog.iter()
        .enumerate()
        .map(|(i, &(_, code, jt, jf, k))| libc::sock_filter {
            code,
            jt: offset(i, jt),
            jf: offset(i, jf),
            k,
        })
        .collect()
}

/// A packet socket receiving what [`filter`] passes on one interface, and the VLAN tag of each
/// frame.
pub struct Watch {
    fd: AsyncFd<OwnedFd>,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` outlives the call and the size is its own.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const *v).cast(),
            u32::try_from(size_of::<T>()).unwrap_or(0),
        )
    })
    .map(drop)
}

impl Watch {
    /// Opens the socket: the filter goes on before it is bound, so it never sees other frames.
    pub fn open(ifindex: u32, pool: MacPrefix) -> io::Result<Self> {
        // SAFETY: plain socket(2); protocol 0 receives nothing until the bind below.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        })?;
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let prog = filter(pool);
        let fprog = libc::sock_fprog {
            len: u16::try_from(prog.len()).unwrap_or(0),
            filter: prog.as_ptr().cast_mut(),
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, &1i32)?;
        // Frames the host sends are never a duplicate; pkttype is checked too (older kernels).
        let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32);
        // SAFETY: zeroed sockaddr_ll is valid; the fields bind needs are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
        // SAFETY: `addr` outlives the call; the size is its own.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        // SAFETY: the AsyncFd owns the descriptor, which stays open as long as it lives.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Self { fd })
    }

    /// The next frame received from the network into `buf`: its length and VLAN tag (when the
    /// kernel took one off).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u16>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_one(fd.get_ref(), buf)) {
                Ok(Ok(Some(got))) => return Ok(got),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

/// One recvmsg(2): `None` for a frame the host sent.
fn recv_one(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<(usize, Option<u16>)>> {
    // SAFETY: zeroed sockaddr_ll and msghdr are valid; the pointers set below outlive the call.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>();
    // SAFETY: every pointer in `msg` is valid for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if addr.sll_pkttype == libc::PACKET_OUTGOING {
        return Ok(None);
    }
    let mut vlan = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled in, within its length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux = libc::CMSG_DATA(c)
                    .cast::<libc::tpacket_auxdata>()
                    .read_unaligned();
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    vlan = Some(aux.tp_vlan_tci & 0xfff);
                }
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok(Some((usize::try_from(n).unwrap_or(0), vlan)))
}

/// The daemon's watch: which interfaces are watched, and what was seen on them.
pub struct Watcher {
    log: Mutex<Log>,
    watching: Mutex<HashMap<u32, (String, AbortHandle)>>,
    host_pool: MacPrefix,
    /// Port mode without `--watch`: the managed bridges' network-side ports, as they appear.
    bridges: Option<VmPorts>,
    /// The uplink, when it is watched: watched again when it comes back.
    uplink: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Watcher {
    pub fn new(
        host_pool: MacPrefix,
        bridges: Option<VmPorts>,
        uplink: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            log: Mutex::default(),
            watching: Mutex::default(),
            host_pool,
            bridges,
            uplink,
        })
    }

    /// Watches `name` until it goes away (once per interface).
    pub fn start(self: &Arc<Self>, name: String, ifindex: u32) {
        let mut watching = lock(&self.watching);
        if watching.contains_key(&ifindex) {
            return;
        }
        // A socket bound to an interface that is gone receives nothing and may never fail.
        watching.retain(|&i, (_, task)| {
            let gone = ports::ifname(i) == ports::Lookup::Gone;
            if gone {
                task.abort();
            }
            !gone
        });
        info!(
            interface = name,
            ifindex, "watching for duplicate outside MACs"
        );
        let this = self.clone();
        let shown = name.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = this.watch(&name, ifindex).await {
                info!(interface = name, error = %e, "no longer watching for duplicate outside MACs");
            }
            lock(&this.watching).remove(&ifindex);
        });
        watching.insert(ifindex, (shown, task.abort_handle()));
    }

    /// A link appeared or changed: watched when it is a network-side port of a managed bridge
    /// (port mode) or the uplink back again.
    pub fn link_changed(self: &Arc<Self>, link: &LinkInfo) {
        if self.bridges.as_ref().is_some_and(|v| v.network_side(link))
            || self.uplink.as_ref() == Some(&link.name)
        {
            self.start(link.name.clone(), link.ifindex);
        }
    }

    /// A link was removed (or left its bridge): no longer watched once it is gone.
    pub fn link_removed(&self, ifindex: u32) {
        let mut watching = lock(&self.watching);
        if watching.contains_key(&ifindex)
            && ports::ifname(ifindex) == ports::Lookup::Gone
            && let Some((name, task)) = watching.remove(&ifindex)
        {
            task.abort();
            info!(
                interface = name,
                ifindex, "gone: no longer watching for duplicate outside MACs"
            );
        }
    }

    /// The interfaces watched, by name.
    pub fn watching(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.watching).values().map(|w| w.0.clone()).collect();
        names.sort();
        names
    }

    /// Frames seen in all, and the MACs most recently seen.
    pub fn seen(&self) -> (u64, Vec<Duplicate>) {
        lock(&self.log).view()
    }

    /// Watches one interface until its socket fails: every claim on the host pool is recorded,
    /// and logged once per MAC per [`LOG_EVERY`].
    async fn watch(&self, interface: &str, ifindex: u32) -> io::Result<()> {
        let pool = self.host_pool;
        let sock = Watch::open(ifindex, pool)?;
        let mut buf = vec![0u8; SNAP as usize];
        loop {
            let (n, vlan) = sock.recv(&mut buf).await?;
            let Some(c) = claim(&buf[..n.min(buf.len())], pool, vlan) else {
                continue;
            };
            let now = Instant::now();
            let log_it = lock(&self.log).record(c, interface, now);
            if log_it {
                warn!(mac = %c.mac, field = c.field, interface, vlan = ?c.vlan, source = %c.source,
                  "duplicate outside MAC: a frame from the network claims one of this host's \
                   MACs (another host with the same rack and host id?)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "02:00:5e:01:03:00/40";

    fn pool() -> MacPrefix {
        POOL.parse().unwrap()
    }

    fn garp(sender: [u8; 6], eth_src: [u8; 6]) -> Vec<u8> {
        let mut f = crate::announce::frame(Mac(sender), "192.0.2.10".parse().unwrap());
        f[6..12].copy_from_slice(&eth_src);
        f
    }

    #[test]
    fn claims_source_arp_sender_and_nd_options() {
        let ours = [2, 0, 0x5e, 1, 3, 7];
        let other = [2, 0, 0x5e, 1, 4, 7];
        let c = claim(&garp(ours, ours), pool(), None).unwrap();
        assert_eq!((c.mac, c.field), (Mac(ours), "ethernet source"));
        let c = claim(&garp(ours, other), pool(), Some(5)).unwrap();
        assert_eq!(
            (c.field, c.source, c.vlan),
            ("arp sender", Mac(other), Some(5))
        );
        assert_eq!(claim(&garp(other, other), pool(), None), None);
        let mut na = crate::announce::frame(Mac(ours), "2001:db8::10".parse().unwrap());
        na[6..12].copy_from_slice(&other);
        let c = claim(&na, pool(), None).unwrap();
        assert_eq!((c.mac, c.field), (Mac(ours), "nd tllao"));
    }

    #[test]
    fn logs_once_per_period_and_counts_every_frame() {
        let mut log = Log::default();
        let c = claim(
            &garp([2, 0, 0x5e, 1, 3, 7], [2, 0, 0x5e, 1, 3, 7]),
            pool(),
            None,
        )
        .unwrap();
        let t = Instant::now();
        assert!(log.record(c, "up0", t));
        assert!(!log.record(c, "up0", t + Duration::from_secs(59)));
        assert!(log.record(c, "up0", t + LOG_EVERY));
        let (total, recent) = log.view();
        assert_eq!((total, recent.len(), recent[0].frames), (3, 1, 3));
    }

    #[test]
    fn filter_jumps_stay_inside_the_program() {
        let prog = filter(pool());
        for (i, ins) in prog.iter().enumerate().filter(|(_, i)| i.code & 7 == 5) {
            let last = i + 1 + usize::from(ins.jt.max(ins.jf));
            assert!(last < prog.len(), "instruction {i} jumps past the end");
        }
        assert_eq!(prog.last().unwrap().code, 0x06);
    }
}
