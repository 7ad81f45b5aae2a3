//! Announcements: gratuitous ARP that tells the network an IPv4 address now lives at an outside
//! MAC. The one place for the announcement policy: which addresses may be announced, how often,
//! out of which interface, and when to stop.
//!
//! The frames go out of the bridge the VM's port belongs to, through an AF_PACKET socket: a frame
//! sent from the bridge device itself is flooded to every port (the uplink towards the switches
//! and the other VMs' ports) and is not learned by the bridge. The announced VM's own port drops
//! it on the way in (the data plane's reflection rule).

use std::{
    collections::{HashMap, HashSet},
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv6Type, PacketBuilder,
};
use tracing::{info, warn};

use crate::{mac::Mac, ports::Links};

/// Announcements per address, and the gap between them (three over about a second).
pub const COUNT: usize = 3;
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Learned addresses one outside MAC may have announced at once, and how fast that allowance
/// comes back: a VM that cycles through addresses gets 8 announced, then one every 2 s (under
/// 2 frames a second), whatever it sends.
pub const LEARNED_BURST: f64 = 8.0;
pub const LEARNED_REFILL: Duration = Duration::from_secs(2);

/// How often a warning that a VM can cause at will (an address refused for announcement) is
/// logged per outside MAC; the occurrences in between are counted into the next one.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits a warning per outside MAC: the VM decides how often it happens, the daemon how
/// often it is logged.
#[derive(Debug, Default)]
pub struct Quieted {
    /// Per outside MAC: when it was last logged, and the occurrences since.
    last: HashMap<Mac, (Instant, u64)>,
}

impl Quieted {
    /// Counts one occurrence for `mac`; returns the number to report (this one included) when it
    /// is time to log.
    pub fn hit(&mut self, mac: Mac, now: Instant) -> Option<u64> {
        match self.last.get_mut(&mac) {
            Some((at, n)) if now.duration_since(*at) < WARN_EVERY => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let count = std::mem::take(n) + 1;
                *at = now;
                Some(count)
            }
            None => {
                self.last.insert(mac, (now, 0));
                Some(1)
            }
        }
    }
}

/// Addresses to announce from an outside MAC, out of the bridge of the port `ifindex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub ifindex: u32,
    /// The interface to send on instead of the port's bridge: in uplink mode the uplink, so
    /// that VMs of the same bridge, which reach the VM by its inside MAC, never learn the
    /// outside one.
    pub via: Option<u32>,
    pub outside: Mac,
    pub ips: Vec<IpAddr>,
    /// Learned from the VM's own traffic (rate-limited), rather than given by the operator.
    pub learned: bool,
}

/// Whether an address can be a VM's own and so be announced: unicast, not unspecified,
/// broadcast, multicast or loopback (IPv6 link-local addresses are a VM's own).
pub fn announceable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
        }
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_loopback()),
    }
}

/// Sends announcements in the background, one at a time per (MAC, address), within the
/// learned-address allowance of each MAC.
pub struct Announcer {
    sender: Sender,
    links: Links,
    busy: Mutex<Busy>,
}

#[derive(Default)]
struct Busy {
    /// (outside MAC, address) pairs being announced right now.
    inflight: HashSet<(Mac, IpAddr)>,
    /// Learned-address allowance per outside MAC: (tokens, when last counted).
    allowance: HashMap<Mac, (f64, Instant)>,
    /// Learned addresses dropped for want of allowance, for the warning.
    dropped: Quieted,
}

impl Busy {
    /// Takes one learned-address token of `mac`, if there is one.
    fn spend(&mut self, mac: Mac, now: Instant) -> bool {
        let (tokens, at) = self.allowance.entry(mac).or_insert((LEARNED_BURST, now));
        let refilled = now.duration_since(*at).as_secs_f64() / LEARNED_REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(LEARNED_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Announcer {
    pub fn new(links: Links) -> io::Result<Self> {
        Ok(Self {
            sender: Sender::new()?,
            links,
            busy: Mutex::new(Busy::default()),
        })
    }

    /// Sends [`COUNT`] gratuitous ARPs for each address, [`INTERVAL`] apart, out of the port's
    /// bridge; stops early once `bound(ifindex, outside)` is false. An address already being
    /// announced from the same MAC is skipped; learned addresses beyond the allowance are
    /// dropped with a warning.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "an announcement is handed over, as the task that sends it owns it"
    )]
    pub fn announce(
        self: &Arc<Self>,
        a: Announce,
        bound: impl Fn(u32, Mac) -> bool + Send + 'static,
    ) {
        let ips: Vec<IpAddr> = {
            let mut busy = self
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let mut ips = Vec::new();
            for &ip in a.ips.iter().filter(|&&ip| announceable(ip)) {
                if busy.inflight.contains(&(a.outside, ip)) {
                    continue;
                }
                if a.learned && !busy.spend(a.outside, now) {
                    if let Some(dropped) = busy.dropped.hit(a.outside, now) {
                        warn!(outside = %a.outside, %ip, dropped, "learned addresses announced too often: not announced");
                    }
                    continue;
                }
                busy.inflight.insert((a.outside, ip));
                ips.push(ip);
            }
            ips
        };
        if ips.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let out = match a.via {
                Some(via) => Ok(Some(via)),
                None => this
                    .links
                    .by_index(a.ifindex)
                    .await
                    .map(|l| l.and_then(|l| l.master)),
            };
            match out {
                Ok(Some(bridge)) => {
                    let mut sent = 0;
                    for round in 0..COUNT {
                        if round > 0 {
                            tokio::time::sleep(INTERVAL).await;
                        }
                        if !bound(a.ifindex, a.outside) {
                            break;
                        }
                        for &ip in &ips {
                            let r = this.sender.send(bridge, &frame(a.outside, ip));
                            crate::metrics::announced(ip, r.is_ok());
                            match r {
                                Ok(()) => sent += 1,
                                Err(e) => warn!(bridge, %ip, error = %e, "sending an announcement"),
                            }
                        }
                    }
                    info!(ifindex = a.ifindex, bridge, outside = %a.outside, ?ips, sent, "announced");
                }
                Ok(_) => warn!(
                    ifindex = a.ifindex,
                    outside = %a.outside,
                    "the port is in no bridge: no announcement sent"
                ),
                Err(e) => warn!(error = %e, "looking up the port's bridge"),
            }
            let mut busy = this
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for ip in ips {
                busy.inflight.remove(&(a.outside, ip));
            }
        });
    }
}

/// The announcement of `ip` at `mac`: a gratuitous ARP for IPv4, an unsolicited NA for IPv6.
pub fn frame(mac: Mac, ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => garp(mac, ip),
        IpAddr::V6(ip) => unsolicited_na(mac, ip),
    }
}

/// An unsolicited Neighbor Advertisement (RFC 4861 7.2.6): from `ip` to all nodes (ff02::1),
/// hop limit 255, override flag set, the target link-layer option holding `mac` (receivers
/// ignore an unsolicited NA without it).
fn unsolicited_na(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    const NA: u8 = 136;
    const OVERRIDE: u8 = 0x20;
    const TARGET_LL: u8 = 2;
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut body = ip.octets().to_vec();
    body.extend_from_slice(&[TARGET_LL, 1]);
    body.extend_from_slice(&mac.0);
    let mut out = Vec::with_capacity(86);
    PacketBuilder::ethernet2(mac.0, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(ip.octets(), all_nodes.octets(), 255)
        .icmpv6(Icmpv6Type::Unknown {
            type_u8: NA,
            code_u8: 0,
            bytes5to8: [OVERRIDE, 0, 0, 0],
        })
        .write(&mut out, &body)
        .expect("write to Vec");
    out
}

/// A gratuitous ARP request: broadcast, sender and target protocol address both `ip`, sender
/// hardware address `mac`, target hardware address zero; padded to the Ethernet minimum.
fn garp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::with_capacity(60);
    Ethernet2Header {
        destination: Mac::BROADCAST.0,
        source: mac.0,
        ether_type: EtherType::ARP,
    }
    .write(&mut out)
    .expect("write to Vec");
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &mac.0,
        &ip.octets(),
        &[0; 6],
        &ip.octets(),
    )
    .expect("Ethernet/IPv4 sizes");
    out.extend_from_slice(&arp.to_bytes());
    out.resize(60, 0);
    out
}

/// A raw packet socket for sending (it receives nothing: protocol 0).
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends one complete Ethernet frame out of the interface with this index.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; the fields we need are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `addr` outlive the call; sizes are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkSlice, SlicedPacket};

    #[test]
    fn only_unicast_is_announced() {
        for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1"] {
            assert!(!announceable(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["::", "ff02::1", "::1"] {
            assert!(!announceable(ip.parse().unwrap()), "{ip}");
        }
        assert!(announceable("192.0.2.10".parse().unwrap()));
        assert!(announceable("fe80::1".parse().unwrap()));
        assert!(announceable("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn learned_allowance() {
        let mut busy = Busy::default();
        let mac = Mac([2, 0, 0x5e, 1, 3, 1]);
        let t0 = Instant::now();
        let granted = (0..100).filter(|_| busy.spend(mac, t0)).count();
        assert_eq!(granted, LEARNED_BURST as usize);
        assert!(!busy.spend(mac, t0 + LEARNED_REFILL / 2));
        assert!(busy.spend(mac, t0 + LEARNED_REFILL));
        // Another MAC has its own allowance.
        assert!(busy.spend(Mac([2, 0, 0x5e, 1, 3, 2]), t0));
    }

    #[test]
    fn quieted_logs_once_per_period_with_the_count() {
        let mut q = Quieted::default();
        let (a, b) = (Mac([2, 0, 0x5e, 1, 3, 1]), Mac([2, 0, 0x5e, 1, 3, 2]));
        let t0 = Instant::now();
        assert_eq!(q.hit(a, t0), Some(1));
        assert_eq!((0..99).filter_map(|_| q.hit(a, t0)).count(), 0);
        // Another MAC is logged on its own.
        assert_eq!(q.hit(b, t0), Some(1));
        assert_eq!(q.hit(a, t0 + WARN_EVERY), Some(100));
        assert_eq!(q.hit(a, t0 + WARN_EVERY), None);
    }

    #[test]
    fn frame_is_a_gratuitous_request() {
        let mac = Mac([2, 0, 0x5e, 1, 3, 0x2a]);
        let f = frame(mac, Ipv4Addr::new(192, 0, 2, 10).into());
        assert_eq!(f.len(), 60);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), [0xff; 6]);
        assert_eq!(eth.source(), mac.0);
        assert_eq!(eth.ether_type(), EtherType::ARP);
        let arp = etherparse::ArpPacketSlice::from_slice(&f[14..]).unwrap();
        assert_eq!(arp.operation(), ArpOperation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), &mac.0);
        assert_eq!(arp.sender_protocol_addr(), &[192, 0, 2, 10]);
        assert_eq!(arp.target_protocol_addr(), &[192, 0, 2, 10]);
        assert_eq!(arp.target_hw_addr(), &[0; 6]);
    }

    #[test]
    fn frame_is_an_unsolicited_na_with_the_target_option() {
        let mac = Mac([2, 0, 0x5e, 1, 3, 0x2a]);
        let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = frame(mac, ip.into());
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(eth.source(), mac.0);
        let Some(etherparse::NetSlice::Ipv6(ip6)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip6.header().hop_limit(), 255);
        assert_eq!(ip6.header().source_addr(), ip);
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), 136);
        assert_eq!(icmp.bytes5to8(), [0x20, 0, 0, 0], "override, not solicited");
        let body = icmp.payload();
        assert_eq!(&body[..16], &ip.octets());
        assert_eq!(&body[16..18], &[2, 1], "target link-layer option");
        assert_eq!(&body[18..24], &mac.0);
        // The checksum verifies over the pseudo-header.
        let sum = icmp
            .icmp_type()
            .calc_checksum(ip.octets(), ip6.header().destination(), body)
            .unwrap();
        assert_eq!(sum, icmp.checksum());
    }
}
