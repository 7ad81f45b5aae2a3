//! Frame builders for tests and benchmarks, on etherparse.

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, PacketBuilder,
    SingleVlanHeader, VlanId, VlanPcp,
};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ZERO: Mac = [0; 6];

pub const ETH_P_RARP: u16 = 0x8035;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// A VLAN tag: its TPID (0x8100 or 0x88a8) and VLAN id.
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    pub tpid: u16,
    pub vid: u16,
}

pub const fn dot1q(vid: u16) -> Tag {
    Tag {
        tpid: ETH_P_8021Q,
        vid,
    }
}

pub const fn dot1ad(vid: u16) -> Tag {
    Tag {
        tpid: ETH_P_8021AD,
        vid,
    }
}

/// Ethernet header, `tags` outermost first, then `ether_type` and `body`.
pub fn ethernet(dst: Mac, src: Mac, tags: &[Tag], ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut types: Vec<u16> = tags.iter().map(|t| t.tpid).collect();
    types.push(ether_type);
    let mut out = Vec::new();
    Ethernet2Header {
        destination: dst,
        source: src,
        ether_type: EtherType(types[0]),
    }
    .write(&mut out)
    .expect("write to Vec");
    for (tag, next) in tags.iter().zip(&types[1..]) {
        SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(tag.vid).expect("VLAN id below 4095"),
            ether_type: EtherType(*next),
        }
        .write(&mut out)
        .expect("write to Vec");
    }
    out.extend_from_slice(body);
    out
}

/// An IPv4/UDP frame from 192.0.2.1 to 192.0.2.2 with `payload` bytes of payload.
pub fn ipv4_udp(dst: Mac, src: Mac, tags: &[Tag], payload: usize) -> Vec<u8> {
    let mut ip = Vec::new();
    PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
        .udp(4000, 5000)
        .write(&mut ip, &vec![0xa5; payload])
        .expect("write to Vec");
    ethernet(dst, src, tags, EtherType::IPV4.0, &ip)
}

/// An Ethernet/IPv4 ARP body.
pub fn arp_body(op: u16, sha: Mac, spa: [u8; 4], tha: Mac, tpa: [u8; 4]) -> Vec<u8> {
    ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation(op),
        &sha,
        &spa,
        &tha,
        &tpa,
    )
    .expect("valid ARP sizes")
    .to_bytes()
    .to_vec()
}

/// An ARP frame (op 1 request, 2 reply).
#[allow(clippy::too_many_arguments)]
pub fn arp(
    dst: Mac,
    src: Mac,
    tags: &[Tag],
    op: u16,
    sha: Mac,
    spa: [u8; 4],
    tha: Mac,
    tpa: [u8; 4],
) -> Vec<u8> {
    ethernet(
        dst,
        src,
        tags,
        EtherType::ARP.0,
        &arp_body(op, sha, spa, tha, tpa),
    )
}

/// A RARP request as QEMU sends after migration: broadcast, the guest MAC as sender and target.
pub fn rarp(src: Mac, tags: &[Tag]) -> Vec<u8> {
    ethernet(
        BROADCAST,
        src,
        tags,
        ETH_P_RARP,
        &arp_body(3, src, [0; 4], src, [0; 4]),
    )
}
