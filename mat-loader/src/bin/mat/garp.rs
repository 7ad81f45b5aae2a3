//! Gratuitous ARP: announces that an IPv4 address now lives at an outside MAC.
//!
//! The frames go out of the bridge the VM's port belongs to, through an AF_PACKET socket: a frame
//! sent from the bridge device itself is flooded to every port (the uplink towards the switches
//! and the other VMs' ports) and is not learned by the bridge. The announced VM's own port drops
//! it on the way in (the data plane's reflection rule).

use std::{
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header};

use crate::mac::Mac;

/// Announcements per address, and the gap between them (three over about a second).
pub const COUNT: usize = 3;
pub const INTERVAL: Duration = Duration::from_millis(500);

/// A gratuitous ARP request: broadcast, sender and target protocol address both `ip`, sender
/// hardware address `mac`, target hardware address zero; padded to the Ethernet minimum.
pub fn frame(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
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
                (&addr as *const libc::sockaddr_ll).cast(),
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
    fn frame_is_a_gratuitous_request() {
        let mac = Mac([2, 0, 0x5e, 1, 3, 0x2a]);
        let f = frame(mac, Ipv4Addr::new(192, 0, 2, 10));
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
}
