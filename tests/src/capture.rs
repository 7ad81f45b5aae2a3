//! Packet capture in Rust: an AF_PACKET socket bound to one interface, read by a thread of its
//! own until [`Capture::stop`]. The socket belongs to the network namespace of the thread that
//! opens it (use [`Capture::in_netns`]); it sees frames both ways: incoming before TC ingress
//! (after XDP), outgoing after TC egress. A VLAN tag the kernel moved into metadata comes back
//! through `PACKET_AUXDATA`.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use etherparse::{EtherType, LaxNetSlice, NetSlice, SlicedPacket, TransportSlice};

use crate::{frames::Mac, netns::Netns};

/// Bytes kept of each frame: every header the tests look at (a DHCP message's first options
/// included).
pub const SNAPLEN: usize = 384;

// From <linux/if_packet.h>, defined here so as not to depend on where libc exports them.
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_STATISTICS: libc::c_int = 6;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 0x0003;

/// `sll_pkttype` values.
pub const PACKET_HOST: u8 = 0;
pub const PACKET_BROADCAST: u8 = 1;
pub const PACKET_MULTICAST: u8 = 2;
pub const PACKET_OTHERHOST: u8 = 3;
pub const PACKET_OUTGOING: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Default)]
#[expect(
    clippy::struct_field_names,
    reason = "the kernel's struct tpacket_auxdata, as named"
)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// A VLAN tag the kernel held outside the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Captured {
    /// `PACKET_HOST`, `PACKET_BROADCAST`, ..., `PACKET_OUTGOING`.
    pub pkttype: u8,
    /// The frame's length on the interface (a GSO frame counts once, with its full length).
    pub len: usize,
    /// The first [`SNAPLEN`] bytes, starting at the Ethernet header (offloaded tag not included).
    pub data: Vec<u8>,
    /// An offloaded VLAN tag, if the kernel reported one.
    pub vlan: Option<VlanTag>,
}

impl Captured {
    /// Sent by the interface (as opposed to received).
    pub fn outgoing(&self) -> bool {
        self.pkttype == PACKET_OUTGOING
    }

    /// The frame with an offloaded VLAN tag put back after the MAC addresses, as on the wire.
    pub fn wire(&self) -> Vec<u8> {
        match self.vlan {
            Some(tag) if self.data.len() >= 12 => {
                let mut out = self.data[..12].to_vec();
                out.extend_from_slice(&tag.tpid.to_be_bytes());
                out.extend_from_slice(&tag.tci.to_be_bytes());
                out.extend_from_slice(&self.data[12..]);
                out
            }
            _ => self.data.clone(),
        }
    }

    /// The Ethernet and (Ethernet/IPv4) ARP addresses of the frame as on the wire.
    pub fn addrs(&self) -> Addrs {
        Addrs::parse(&self.wire())
    }
}

/// The hardware addresses a frame carries: Ethernet source and destination and, after any VLAN
/// tags, the sender and target hardware addresses of an Ethernet/IPv4 ARP or RARP body, the
/// link-layer address options of an IPv6 Neighbor Discovery message, and a DHCPv4 message's
/// client hardware address.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Addrs {
    pub dst: Mac,
    pub src: Mac,
    pub arp: Option<ArpAddrs>,
    pub nd: Option<NdAddrs>,
    pub dhcp: Option<DhcpAddrs>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpAddrs {
    pub op: u16,
    pub sha: Mac,
    pub spa: [u8; 4],
    pub tha: Mac,
    pub tpa: [u8; 4],
}

/// ICMPv6 types of Neighbor Discovery.
pub const ND_RS: u8 = 133;
pub const ND_RA: u8 = 134;
pub const ND_NS: u8 = 135;
pub const ND_NA: u8 = 136;
pub const ND_REDIRECT: u8 = 137;
/// Link-layer address option types.
pub const ND_SOURCE_LL: u8 = 1;
pub const ND_TARGET_LL: u8 = 2;
/// NA flags (the first byte after the ICMPv6 header).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// An IPv6 Neighbor Discovery message (RS, RA, NS, NA, Redirect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NdAddrs {
    /// The ICMPv6 type, [`ND_RS`] to [`ND_REDIRECT`].
    pub kind: u8,
    pub src_ip: Ipv6Addr,
    pub dst_ip: Ipv6Addr,
    /// The IPv6 hop limit (255 for every genuine ND message).
    pub hop_limit: u8,
    /// NS, NA and Redirect: the target address.
    pub target: Option<Ipv6Addr>,
    /// The byte after the ICMPv6 header (NA: router, solicited and override flags).
    pub flags: u8,
    /// Every Ethernet link-layer address option (type [`ND_SOURCE_LL`] or [`ND_TARGET_LL`],
    /// length 1), in order.
    pub options: Vec<(u8, Mac)>,
    /// The ICMPv6 checksum is right (`None` when the capture holds only part of the message).
    pub checksum_ok: Option<bool>,
}

impl NdAddrs {
    /// The MAC of the first option of type `kind`.
    pub fn option(&self, kind: u8) -> Option<Mac> {
        self.options
            .iter()
            .find_map(|&(k, mac)| (k == kind).then_some(mac))
    }
}

/// A DHCPv4 (BOOTP) message over UDP 67/68.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpAddrs {
    /// 1 request, 2 reply.
    pub op: u8,
    pub xid: u32,
    /// The flags field (broadcast: 0x8000).
    pub flags: u16,
    pub yiaddr: Ipv4Addr,
    /// The first 6 bytes of chaddr.
    pub chaddr: Mac,
    /// The DHCP message type (option 53), if present.
    pub msg_type: Option<u8>,
    /// The client identifier (option 61) when it is an Ethernet address (type 1, 6 bytes).
    pub client_id: Option<Mac>,
}

impl Addrs {
    /// Parses a frame with etherparse; fields it cannot read stay zero / `None`.
    pub fn parse(frame: &[u8]) -> Addrs {
        let mut a = Addrs::default();
        if frame.len() >= 12 {
            a.dst.copy_from_slice(&frame[..6]);
            a.src.copy_from_slice(&frame[6..12]);
        }
        a.arp = arp_addrs(frame);
        a.nd = nd_addrs(frame);
        a.dhcp = dhcp_addrs(frame);
        a
    }

    /// Every hardware address in the frame that MAT translates: dst, src, ARP sha and tha, and
    /// ND link-layer options (not DHCP's chaddr: by default it stays the VM's own MAC).
    pub fn all(&self) -> Vec<Mac> {
        let mut v = vec![self.dst, self.src];
        if let Some(arp) = self.arp {
            v.extend([arp.sha, arp.tha]);
        }
        if let Some(nd) = &self.nd {
            v.extend(nd.options.iter().map(|&(_, mac)| mac));
        }
        v
    }
}

fn arp_addrs(frame: &[u8]) -> Option<ArpAddrs> {
    const RARP: EtherType = EtherType(0x8035);
    let sliced = SlicedPacket::from_ethernet(frame).ok()?;
    let arp = match (sliced.net.as_ref(), sliced.payload_ether_type()) {
        (Some(net), _) => net.arp_ref()?.to_packet(),
        // etherparse does not decode RARP; its body has the ARP layout.
        (None, Some(RARP)) => {
            let payload = sliced.ether_payload()?;
            etherparse::ArpPacketSlice::from_slice(payload.payload)
                .ok()?
                .to_packet()
        }
        _ => return None,
    };
    if arp.hw_addr_type != etherparse::ArpHardwareId::ETHERNET
        || arp.proto_addr_type != EtherType::IPV4
    {
        return None;
    }
    Some(ArpAddrs {
        op: arp.operation.0,
        sha: arp.sender_hw_addr().try_into().ok()?,
        spa: arp.sender_protocol_addr().try_into().ok()?,
        tha: arp.target_hw_addr().try_into().ok()?,
        tpa: arp.target_protocol_addr().try_into().ok()?,
    })
}

#[expect(
    clippy::single_match_else,
    reason = "the parsed and the raw walk side by side"
)]
fn nd_addrs(frame: &[u8]) -> Option<NdAddrs> {
    let sliced = SlicedPacket::from_ethernet(frame).ok();
    let (src, dst, hop_limit, icmp, complete) = match &sliced {
        Some(s) => {
            let Some(NetSlice::Ipv6(ip)) = &s.net else {
                return None;
            };
            let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
                return None;
            };
            (
                ip.header().source(),
                ip.header().destination(),
                ip.header().hop_limit(),
                icmp.slice(),
                true,
            )
        }
        // Cut short by the snap length: read what is there.
        None => {
            let lax = etherparse::LaxSlicedPacket::from_ethernet(frame).ok()?;
            let Some(LaxNetSlice::Ipv6(ip)) = &lax.net else {
                return None;
            };
            let payload = ip.payload();
            if payload.ip_number != etherparse::IpNumber::IPV6_ICMP || payload.fragmented {
                return None;
            }
            (
                ip.header().source(),
                ip.header().destination(),
                ip.header().hop_limit(),
                payload.payload,
                false,
            )
        }
    };
    let kind = *icmp.first()?;
    let fixed = match kind {
        ND_RS => 8,
        ND_RA => 16,
        ND_NS | ND_NA => 24,
        ND_REDIRECT => 40,
        _ => return None,
    };
    let target = match kind {
        ND_NS | ND_NA | ND_REDIRECT => {
            let t: [u8; 16] = icmp.get(8..24)?.try_into().ok()?;
            Some(Ipv6Addr::from(t))
        }
        _ => None,
    };
    let mut options = Vec::new();
    let mut at = fixed;
    while at + 2 <= icmp.len() {
        let (t, len) = (icmp[at], usize::from(icmp[at + 1]) * 8);
        if len == 0 {
            break;
        }
        if (t == ND_SOURCE_LL || t == ND_TARGET_LL)
            && len == 8
            && let Some(mac) = icmp.get(at + 2..at + 8)
        {
            options.push((t, mac.try_into().ok()?));
        }
        at += len;
    }
    let checksum_ok = complete.then(|| {
        etherparse::Icmpv6Slice::from_slice(icmp).is_ok_and(|s| s.is_checksum_valid(src, dst))
    });
    Some(NdAddrs {
        kind,
        src_ip: src.into(),
        dst_ip: dst.into(),
        hop_limit,
        target,
        flags: icmp.get(4).copied().unwrap_or(0),
        options,
        checksum_ok,
    })
}

fn dhcp_addrs(frame: &[u8]) -> Option<DhcpAddrs> {
    let lax = etherparse::LaxSlicedPacket::from_ethernet(frame).ok()?;
    let Some(LaxNetSlice::Ipv4(ip)) = &lax.net else {
        return None;
    };
    let payload = ip.payload();
    if payload.ip_number != etherparse::IpNumber::UDP || payload.fragmented {
        return None;
    }
    let udp = payload.payload;
    let ports = (
        u16::from_be_bytes(udp.get(0..2)?.try_into().ok()?),
        u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?),
    );
    if ports != (68, 67) && ports != (67, 68) {
        return None;
    }
    let b = udp.get(8..)?;
    let chaddr: Mac = b.get(28..34)?.try_into().ok()?;
    let yiaddr: [u8; 4] = b.get(16..20)?.try_into().ok()?;
    // Options after the magic cookie, as far as the capture goes.
    let (mut msg_type, mut client_id) = (None, None);
    if b.get(236..240) == Some(&[99, 130, 83, 99]) {
        let mut at = 240;
        while let Some(&code) = b.get(at) {
            match code {
                0 => at += 1,
                255 => break,
                _ => {
                    let Some(&len) = b.get(at + 1) else { break };
                    let value = b.get(at + 2..at + 2 + usize::from(len));
                    match (code, value) {
                        (53, Some(&[t])) => msg_type = Some(t),
                        (61, Some(&[1, ref mac @ ..])) if mac.len() == 6 => {
                            client_id = mac.try_into().ok();
                        }
                        _ => {}
                    }
                    at += 2 + usize::from(len);
                }
            }
        }
    }
    Some(DhcpAddrs {
        op: *b.first()?,
        xid: u32::from_be_bytes(b.get(4..8)?.try_into().ok()?),
        flags: u16::from_be_bytes(b.get(10..12)?.try_into().ok()?),
        yiaddr: yiaddr.into(),
        chaddr,
        msg_type,
        client_id,
    })
}

/// What a stopped capture saw.
#[derive(Debug, Default)]
pub struct Report {
    pub frames: Vec<Captured>,
    /// Frames the kernel dropped because the socket's buffer was full (should be 0).
    pub drops: u64,
}

impl Report {
    pub fn outgoing(&self) -> impl Iterator<Item = &Captured> {
        self.frames.iter().filter(|f| f.outgoing())
    }

    pub fn incoming(&self) -> impl Iterator<Item = &Captured> {
        self.frames.iter().filter(|f| !f.outgoing())
    }

    /// Panics if the kernel dropped frames: counts taken from this capture would be wrong.
    pub fn assert_complete(&self, what: &str) {
        assert_eq!(self.drops, 0, "capture on {what} lost frames");
    }
}

/// A running capture on one interface.
pub struct Capture {
    fd: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<io::Result<Vec<Captured>>>>,
}

impl Capture {
    /// Starts capturing every frame on `ifname` in the calling thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<Capture> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        // Protocol 0 at creation: no frame is queued before the bind below picks the interface.
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::SOL_PACKET, PACKET_AUXDATA, 1)?;
        // Room for a burst of GSO frames (each charges its whole size); root may force it.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20)?;
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // Reset the statistics: only drops from now on count.
        stats(&fd)?;
        let fd = Arc::new(fd);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (fd, stop) = (fd.clone(), stop.clone());
            std::thread::spawn(move || read_loop(&fd, &stop))
        };
        Ok(Capture {
            fd,
            stop,
            reader: Some(reader),
        })
    }

    /// Starts capturing on `ifname` inside `ns`.
    pub fn in_netns(ns: &Netns, ifname: &str) -> Capture {
        ns.enter(|| Capture::open(ifname))
            .unwrap_or_else(|e| panic!("capturing on {ifname} in {}: {e}", ns.name()))
    }

    /// Stops the capture after reading every frame already queued, and returns what it saw.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let frames = self
            .reader
            .take()
            .expect("present until stop")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
            .expect("reading the capture socket");
        let drops = u64::from(stats(&self.fd).expect("PACKET_STATISTICS").tp_drops);
        Report { frames, drops }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Sends `frame` (a whole Ethernet frame) out of `ifname` in `ns` through an AF_PACKET socket,
/// as the namespace's own stack would: a crafted frame from a VM, say.
pub fn inject(ns: &Netns, ifname: &str, frame: &[u8]) {
    ns.enter(|| -> io::Result<()> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        // SAFETY: plain socket(2); protocol 0 receives nothing.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `sll` are valid for the given sizes.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast::<libc::c_void>(),
                frame.len(),
                0,
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(n as usize, frame.len(), "short send");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("sending a frame on {ifname} in {}: {e}", ns.name()));
}

fn setsockopt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads (and so resets) the socket's packet statistics.
fn stats(fd: &OwnedFd) -> io::Result<TpacketStats> {
    let mut s = TpacketStats::default();
    let mut len = size_of::<TpacketStats>() as u32;
    // SAFETY: `s` has room for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            (&raw mut s).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// Reads until told to stop; after the stop it drains what is queued and returns.
fn read_loop(fd: &OwnedFd, stop: &AtomicBool) -> io::Result<Vec<Captured>> {
    let mut frames = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        // Drain everything queued.
        while let Some(f) = recv(fd)? {
            frames.push(f);
        }
        if stopping {
            return Ok(frames);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe {
            libc::poll(
                &raw mut pfd,
                1,
                Duration::from_millis(20).as_millis() as i32,
            )
        };
    }
}

/// One frame, `None` when nothing is queued.
fn recv(fd: &OwnedFd) -> io::Result<Option<Captured>> {
    let mut buf = [0u8; SNAPLEN];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed sockaddr_ll is valid storage.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut control = [MaybeUninit::<u64>::uninit(); 16];
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast::<libc::c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast::<libc::c_void>();
    msg.msg_controllen = size_of::<[u64; 16]>();
    loop {
        // SAFETY: `msg` describes valid buffers.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) };
        if n >= 0 {
            let len = n as usize;
            let vlan = auxdata_vlan(&msg);
            return Ok(Some(Captured {
                pkttype: from.sll_pkttype,
                len,
                data: buf[..len.min(SNAPLEN)].to_vec(),
                vlan,
            }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            // Interrupted, or the interface went down (or came back): reported once, frames
            // stay queued.
            Some(libc::EINTR | libc::ENETDOWN) => {}
            _ => return Err(err),
        }
    }
}

fn auxdata_vlan(msg: &libc::msghdr) -> Option<VlanTag> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                let aux = (libc::CMSG_DATA(c) as *const TpacketAuxdata).read_unaligned();
                if aux.tp_status & TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    0x8100
                };
                return Some(VlanTag {
                    tpid,
                    tci: aux.tp_vlan_tci,
                });
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}
