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

/// An IPv6 address, network order.
pub type Ipv6Addr = [u8; 16];

/// BOOTP opcodes.
pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
/// DHCP's UDP ports.
pub const DHCP_SERVER: u16 = 67;
pub const DHCP_CLIENT: u16 = 68;

/// IPv6 next-header values the builders use.
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;
const ICMPV6: u8 = 58;
const UDP: u8 = 17;

/// Neighbor Discovery message types (RFC 4861).
pub const ND_RS: u8 = 133;
pub const ND_RA: u8 = 134;
pub const ND_NS: u8 = 135;
pub const ND_NA: u8 = 136;
pub const ND_REDIRECT: u8 = 137;

/// NA flags (the first byte after the checksum).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// A frame built header by header, the way Katran's fixtures build packets:
///
/// ```ignore
/// Frame::eth(dst, src).vlan(dot1q(10)).ipv6(src_ip, dst_ip).hop_by_hop().icmpv6_ns(target).sllao(mac).build()
/// Frame::eth(BROADCAST, vm).ipv4([0; 4], [255; 4]).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, vm).build()
/// ```
///
/// Lengths and checksums are computed from scratch (etherparse) when the frame is built.
#[derive(Clone, Debug)]
pub struct Frame {
    dst: Mac,
    src: Mac,
    tags: Vec<Tag>,
}

impl Frame {
    pub fn eth(dst: Mac, src: Mac) -> Self {
        Self {
            dst,
            src,
            tags: Vec::new(),
        }
    }

    /// One more VLAN tag, inside those already there.
    pub fn vlan(mut self, tag: Tag) -> Self {
        self.tags.push(tag);
        self
    }

    /// More VLAN tags, outermost first.
    pub fn tags(mut self, tags: &[Tag]) -> Self {
        self.tags.extend_from_slice(tags);
        self
    }

    /// The frame with this ethertype and body.
    pub fn payload(&self, ether_type: u16, body: &[u8]) -> Vec<u8> {
        ethernet(self.dst, self.src, &self.tags, ether_type, body)
    }

    pub fn ipv6(self, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6 {
        Ipv6 {
            eth: self,
            src,
            dst,
            hop_limit: 255,
            exts: Vec::new(),
        }
    }

    pub fn ipv4(self, src: [u8; 4], dst: [u8; 4]) -> Ipv4 {
        Ipv4 {
            eth: self,
            src,
            dst,
            options: Vec::new(),
            more_fragments: false,
            offset: 0,
        }
    }
}

/// An IPv6 packet under construction: its header and extension headers.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    eth: Frame,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    /// (header type, the header's bytes after its next-header byte).
    exts: Vec<(u8, Vec<u8>)>,
}

impl Ipv6 {
    /// A Hop-by-Hop Options header of 8 bytes (PadN).
    pub fn hop_by_hop(self) -> Self {
        self.ext(HOP_BY_HOP, 0)
    }

    /// A Destination Options header of 8 bytes (PadN).
    pub fn dest_opts(self) -> Self {
        self.ext(DEST_OPTS, 0)
    }

    /// A Routing header of 8 bytes (type 4, no segments left).
    pub fn routing(self) -> Self {
        self.ext(ROUTING, 0)
    }

    /// An extension header of type `kind` with length field `len`: (len + 1) * 8 bytes. Options
    /// headers are filled with one PadN option, others with zeros.
    pub fn ext(mut self, kind: u8, len: u8) -> Self {
        let size = (usize::from(len) + 1) * 8;
        let mut h = vec![0u8; size - 1];
        h[0] = len;
        match kind {
            HOP_BY_HOP | DEST_OPTS => {
                // PadN over the rest of the header.
                h[1] = 1;
                h[2] = u8::try_from(size - 4).expect("PadN length");
            }
            ROUTING => h[1] = 4,
            _ => {}
        }
        self.exts.push((kind, h));
        self
    }

    /// A Fragment header: `offset` in 8-byte units, `more` the M flag.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        let field = offset << 3 | u16::from(more);
        let mut h = vec![0u8; 7];
        h[1..3].copy_from_slice(&field.to_be_bytes());
        h[3..7].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        self.exts.push((FRAGMENT, h));
        self
    }

    /// The packet with `payload` of protocol `next` behind the extension headers.
    pub fn next(self, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut ip = Vec::new();
        let mut kinds: Vec<u8> = self.exts.iter().map(|(k, _)| *k).collect();
        kinds.push(next);
        let mut rest = Vec::new();
        for ((_, h), next) in self.exts.iter().zip(&kinds[1..]) {
            rest.push(*next);
            rest.extend_from_slice(h);
        }
        rest.extend_from_slice(payload);
        etherparse::Ipv6Header {
            traffic_class: 0,
            flow_label: etherparse::Ipv6FlowLabel::ZERO,
            payload_length: u16::try_from(rest.len()).expect("IPv6 payload length"),
            next_header: etherparse::IpNumber(kinds[0]),
            hop_limit: self.hop_limit,
            source: self.src,
            destination: self.dst,
        }
        .write(&mut ip)
        .expect("write to Vec");
        ip.extend_from_slice(&rest);
        self.eth.payload(EtherType::IPV6.0, &ip)
    }

    /// An ICMPv6 message: `kind`, `code`, the checksum computed, then `body`.
    pub fn icmpv6(self, kind: u8, code: u8, body: &[u8]) -> Vec<u8> {
        let msg = icmpv6_message(self.src, self.dst, kind, code, body);
        self.next(ICMPV6, &msg)
    }

    /// A UDP datagram (checksum computed) behind the extension headers.
    pub fn udp(self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        let h = etherparse::UdpHeader::with_ipv6_checksum(
            sport,
            dport,
            &etherparse::Ipv6Header {
                source: self.src,
                destination: self.dst,
                ..Default::default()
            },
            payload,
        )
        .expect("UDP length");
        h.write(&mut msg).expect("write to Vec");
        msg.extend_from_slice(payload);
        self.next(UDP, &msg)
    }

    /// A Router Solicitation (4 reserved bytes before its options).
    pub fn icmpv6_rs(self) -> Nd {
        self.nd(ND_RS, vec![0; 4])
    }

    /// A Router Advertisement: hop limit 64, no flags, lifetime 1800 s, no reachable or retrans
    /// times.
    pub fn icmpv6_ra(self) -> Nd {
        self.nd(ND_RA, vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// A Neighbor Solicitation for `target`.
    pub fn icmpv6_ns(self, target: Ipv6Addr) -> Nd {
        let mut body = vec![0; 4];
        body.extend_from_slice(&target);
        self.nd(ND_NS, body)
    }

    /// A Neighbor Advertisement of `target` with `flags` (`NA_*`).
    pub fn icmpv6_na(self, flags: u8, target: Ipv6Addr) -> Nd {
        let mut body = vec![flags, 0, 0, 0];
        body.extend_from_slice(&target);
        self.nd(ND_NA, body)
    }

    /// A Redirect: the better first hop `target` for `destination`.
    pub fn icmpv6_redirect(self, target: Ipv6Addr, destination: Ipv6Addr) -> Nd {
        let mut body = vec![0; 4];
        body.extend_from_slice(&target);
        body.extend_from_slice(&destination);
        self.nd(ND_REDIRECT, body)
    }

    fn nd(self, kind: u8, body: Vec<u8>) -> Nd {
        Nd {
            ip: self,
            kind,
            body,
            options: Vec::new(),
        }
    }
}

/// An ICMPv6 message with its checksum, computed by etherparse over the pseudo-header.
pub fn icmpv6_message(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut head = [0u8; 4];
    head.copy_from_slice(&body[..4]);
    let csum = etherparse::Icmpv6Type::Unknown {
        type_u8: kind,
        code_u8: code,
        bytes5to8: head,
    }
    .calc_checksum(src, dst, &body[4..])
    .expect("ICMPv6 length");
    let mut msg = vec![kind, code];
    msg.extend_from_slice(&csum.to_be_bytes());
    msg.extend_from_slice(body);
    msg
}

/// A Neighbor Discovery message under construction: its fixed part, then options in order.
#[derive(Clone, Debug)]
pub struct Nd {
    ip: Ipv6,
    kind: u8,
    /// The fixed part after type, code and checksum.
    body: Vec<u8>,
    options: Vec<u8>,
}

/// Neighbor Discovery option types.
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;
pub const OPT_PREFIX: u8 = 3;
pub const OPT_REDIRECTED: u8 = 4;
pub const OPT_MTU: u8 = 5;
pub const OPT_NONCE: u8 = 14;

impl Nd {
    /// A source link-layer address option (type 1, length 1).
    pub fn sllao(self, mac: Mac) -> Self {
        self.option(OPT_SOURCE_LL, &mac)
    }

    /// A target link-layer address option (type 2, length 1).
    pub fn tllao(self, mac: Mac) -> Self {
        self.option(OPT_TARGET_LL, &mac)
    }

    /// An MTU option.
    pub fn mtu(self, mtu: u32) -> Self {
        let mut b = vec![0, 0];
        b.extend_from_slice(&mtu.to_be_bytes());
        self.option(OPT_MTU, &b)
    }

    /// A Prefix Information option (on-link, autonomous, lifetimes of a day).
    pub fn prefix(self, prefix: Ipv6Addr, len: u8) -> Self {
        let mut b = vec![len, 0xc0];
        b.extend_from_slice(&86_400u32.to_be_bytes());
        b.extend_from_slice(&86_400u32.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&prefix);
        self.option(OPT_PREFIX, &b)
    }

    /// A Nonce option (RFC 3971) of 6 bytes.
    pub fn nonce(self) -> Self {
        self.option(OPT_NONCE, &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66])
    }

    /// A Redirected Header option holding `packet` (padded to 8 bytes).
    pub fn redirected(self, packet: &[u8]) -> Self {
        let mut b = vec![0; 6];
        b.extend_from_slice(packet);
        self.option(OPT_REDIRECTED, &b)
    }

    /// An option of `kind` holding `value`, padded with zeros to a multiple of 8 bytes; its length
    /// field says how many units of 8 bytes it takes.
    pub fn option(mut self, kind: u8, value: &[u8]) -> Self {
        let units = (value.len() + 2).div_ceil(8);
        self.options.push(kind);
        self.options
            .push(u8::try_from(units).expect("option length"));
        self.options.extend_from_slice(value);
        self.options
            .resize(self.options.len() + units * 8 - 2 - value.len(), 0);
        self
    }

    /// Bytes appended to the options as they are (to build a broken option).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.options.extend_from_slice(bytes);
        self
    }

    pub fn build(self) -> Vec<u8> {
        let mut body = self.body;
        body.extend_from_slice(&self.options);
        self.ip.icmpv6(self.kind, 0, &body)
    }
}

/// An IPv4 packet under construction.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    eth: Frame,
    src: [u8; 4],
    dst: [u8; 4],
    options: Vec<u8>,
    more_fragments: bool,
    offset: u16,
}

impl Ipv4 {
    /// IPv4 options (a multiple of 4 bytes, at most 40): the header grows (IHL > 5).
    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }

    /// A fragment: `offset` in 8-byte units, `more` the MF flag.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.offset = offset;
        self.more_fragments = more;
        self
    }

    pub fn udp(self, sport: u16, dport: u16) -> Udp {
        Udp {
            ip: self,
            sport,
            dport,
            no_checksum: false,
        }
    }

    fn header(&self, payload_len: usize) -> etherparse::Ipv4Header {
        let mut h = etherparse::Ipv4Header::new(
            u16::try_from(payload_len).expect("IPv4 payload length"),
            64,
            etherparse::IpNumber::UDP,
            self.src,
            self.dst,
        )
        .expect("IPv4 payload length");
        h.options = etherparse::Ipv4Options::try_from(&self.options[..]).expect("IPv4 options");
        h.set_payload_len(payload_len).expect("IPv4 payload length");
        h.more_fragments = self.more_fragments;
        h.fragment_offset = etherparse::IpFragOffset::try_new(self.offset).expect("offset");
        h
    }
}

/// A UDP datagram over IPv4 under construction.
#[derive(Clone, Debug)]
pub struct Udp {
    ip: Ipv4,
    sport: u16,
    dport: u16,
    no_checksum: bool,
}

impl Udp {
    /// Sends the datagram without a checksum (zero).
    pub fn no_checksum(mut self) -> Self {
        self.no_checksum = true;
        self
    }

    pub fn payload(self, payload: &[u8]) -> Vec<u8> {
        let ip = self.ip.header(payload.len() + 8);
        let mut udp =
            etherparse::UdpHeader::with_ipv4_checksum(self.sport, self.dport, &ip, payload)
                .expect("UDP length");
        if self.no_checksum {
            udp.checksum = 0;
        }
        let mut out = Vec::new();
        ip.write(&mut out).expect("write to Vec");
        udp.write(&mut out).expect("write to Vec");
        out.extend_from_slice(payload);
        self.ip.eth.payload(EtherType::IPV4.0, &out)
    }

    /// A BOOTP/DHCP message: `op` (`BOOTREQUEST` or `BOOTREPLY`) for the client `chaddr`.
    pub fn dhcp(self, op: u8, chaddr: Mac) -> Dhcp {
        Dhcp {
            udp: self,
            op,
            htype: 1,
            hlen: 6,
            xid: 0x3903_f326,
            flags: 0,
            chaddr,
        }
    }
}

/// A DHCP message (BOOTP header, magic cookie, message type option) under construction.
#[derive(Clone, Debug)]
pub struct Dhcp {
    udp: Udp,
    op: u8,
    htype: u8,
    hlen: u8,
    xid: u32,
    flags: u16,
    chaddr: Mac,
}

/// Offsets in a BOOTP message.
pub const BOOTP_FLAGS: usize = 10;
pub const BOOTP_CHADDR: usize = 28;

impl Dhcp {
    /// Sets the broadcast flag.
    pub fn broadcast(mut self) -> Self {
        self.flags |= 0x8000;
        self
    }

    /// Sets all of `flags`.
    pub fn flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    pub fn xid(mut self, xid: u32) -> Self {
        self.xid = xid;
        self
    }

    pub fn htype(mut self, htype: u8) -> Self {
        self.htype = htype;
        self
    }

    pub fn hlen(mut self, hlen: u8) -> Self {
        self.hlen = hlen;
        self
    }

    pub fn build(self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = self.op;
        b[1] = self.htype;
        b[2] = self.hlen;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[BOOTP_FLAGS..BOOTP_FLAGS + 2].copy_from_slice(&self.flags.to_be_bytes());
        b[BOOTP_CHADDR..BOOTP_CHADDR + 6].copy_from_slice(&self.chaddr);
        // Magic cookie; message type DISCOVER (request) or OFFER (reply); end.
        b.extend_from_slice(&[99, 130, 83, 99, 53, 1]);
        b.push(if self.op == BOOTREPLY { 2 } else { 1 });
        b.push(255);
        self.udp.payload(&b)
    }
}

/// Where the ICMPv6 message or UDP datagram of a frame sits, found by walking the headers
/// independently of the programs and the model: VLAN tags, IPv6 Hop-by-Hop, Routing and
/// Destination Options headers, or the IPv4 header with its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// ICMPv6 at this offset, this many bytes long, with the addresses for the pseudo-header.
    Icmpv6 {
        at: usize,
        len: usize,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    },
    /// UDP over IPv4 at this offset, with the addresses for the pseudo-header.
    Udp4 {
        at: usize,
        src: [u8; 4],
        dst: [u8; 4],
    },
}

pub fn find_l4(frame: &[u8]) -> Option<L4> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let mut at = 12;
    let mut ether_type = be16(at)?;
    while ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        at += 4;
        ether_type = be16(at)?;
    }
    at += 2;
    match ether_type {
        0x86dd => {
            let ip = frame.get(at..at + 40)?;
            let end = at + 40 + usize::from(be16(at + 4)?);
            let (src, dst) = (ip[8..24].try_into().ok()?, ip[24..40].try_into().ok()?);
            let mut next = ip[6];
            at += 40;
            while matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS) {
                next = *frame.get(at)?;
                at += (usize::from(*frame.get(at + 1)?) + 1) * 8;
            }
            (next == ICMPV6 && end <= frame.len() && at <= end).then_some(L4::Icmpv6 {
                at,
                len: end - at,
                src,
                dst,
            })
        }
        0x0800 => {
            let ip = frame.get(at..at + 20)?;
            (ip[9] == UDP).then_some(L4::Udp4 {
                at: at + usize::from(ip[0] & 0x0f) * 4,
                src: ip[12..16].try_into().ok()?,
                dst: ip[16..20].try_into().ok()?,
            })
        }
        _ => None,
    }
}

/// Recomputes the ICMPv6 or UDP checksum of `frame` from scratch (with etherparse) and compares
/// it with the one the frame carries. A UDP checksum of zero (none) is reported as such.
pub fn verify_checksum(frame: &[u8]) -> Result<(), String> {
    match find_l4(frame).ok_or("no ICMPv6 or UDP/IPv4 in the frame")? {
        L4::Icmpv6 { at, len, src, dst } => {
            let msg = &frame[at..at + len];
            if msg.len() < 8 {
                return Err(format!("ICMPv6 message of {} bytes", msg.len()));
            }
            let carried = u16::from_be_bytes([msg[2], msg[3]]);
            let computed = etherparse::Icmpv6Type::Unknown {
                type_u8: msg[0],
                code_u8: msg[1],
                bytes5to8: msg[4..8].try_into().expect("4 bytes"),
            }
            .calc_checksum(src, dst, &msg[8..])
            .map_err(|e| e.to_string())?;
            (carried == computed).then_some(()).ok_or(format!(
                "ICMPv6 checksum {carried:#06x}, recomputed {computed:#06x}"
            ))
        }
        L4::Udp4 { at, src, dst } => {
            let udp = frame.get(at..at + 8).ok_or("UDP header cut short")?;
            let h = etherparse::UdpHeader::from_slice(udp)
                .map_err(|e| e.to_string())?
                .0;
            let payload = frame
                .get(at + 8..at + usize::from(h.length))
                .ok_or("UDP datagram cut short")?;
            if h.checksum == 0 {
                return Ok(());
            }
            let computed = h
                .calc_checksum_ipv4_raw(src, dst, payload)
                .map_err(|e| e.to_string())?;
            (h.checksum == computed).then_some(()).ok_or(format!(
                "UDP checksum {:#06x}, recomputed {computed:#06x}",
                h.checksum
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const LL: Ipv6Addr = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56,
    ];
    const PEER: Ipv6Addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn ns_with_sllao_is_laid_out_as_rfc_4861_says() {
        let f = Frame::eth(BROADCAST, VM)
            .vlan(dot1q(10))
            .ipv6(LL, PEER)
            .icmpv6_ns(PEER)
            .sllao(VM)
            .build();
        assert_eq!(f.len(), 18 + 40 + 24 + 8);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0x00, 0x0a, 0x86, 0xdd]);
        assert_eq!(u16::from_be_bytes([f[22], f[23]]), 32, "payload length");
        assert_eq!((f[24], f[25]), (58, 255), "next header, hop limit");
        assert_eq!(&f[58..60], &[135, 0]);
        assert_eq!(&f[66..82], &PEER);
        assert_eq!(&f[82..90], &[1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        // etherparse's own check agrees with ours.
        let icmp = etherparse::Icmpv6Slice::from_slice(&f[58..]).unwrap();
        assert!(icmp.is_checksum_valid(LL, PEER));
        verify_checksum(&f).unwrap();
    }

    #[test]
    fn extension_headers_chain_to_icmpv6() {
        let f = Frame::eth(BROADCAST, VM)
            .ipv6(LL, PEER)
            .hop_by_hop()
            .ext(ROUTING, 1)
            .dest_opts()
            .icmpv6_na(NA_OVERRIDE, LL)
            .tllao(VM)
            .build();
        assert_eq!(f[20], HOP_BY_HOP);
        assert_eq!((f[54], f[55]), (ROUTING, 0));
        assert_eq!((f[62], f[63]), (DEST_OPTS, 1));
        assert_eq!((f[78], f[79]), (ICMPV6, 0));
        assert_eq!(f[86], ND_NA);
        assert_eq!(
            find_l4(&f),
            Some(L4::Icmpv6 {
                at: 86,
                len: 32,
                src: LL,
                dst: PEER
            })
        );
        verify_checksum(&f).unwrap();
    }

    #[test]
    fn verify_checksum_catches_a_changed_byte() {
        let mut ns = Frame::eth(BROADCAST, VM)
            .ipv6(LL, PEER)
            .icmpv6_ns(PEER)
            .sllao(VM)
            .build();
        ns[85] ^= 0x02;
        assert!(verify_checksum(&ns).is_err());
        let dhcp = |f: Frame| {
            f.ipv4([0; 4], [255; 4])
                .options(&[0x94, 4, 0, 0])
                .udp(DHCP_CLIENT, DHCP_SERVER)
                .dhcp(BOOTREQUEST, VM)
                .build()
        };
        let mut req = dhcp(Frame::eth(BROADCAST, VM));
        verify_checksum(&req).unwrap();
        // IHL 6: BOOTP behind 24 bytes of IPv4 header and 8 of UDP.
        assert_eq!(req[14], 0x46);
        assert_eq!(&req[14 + 32 + BOOTP_CHADDR..][..6], &VM);
        req[14 + 32 + BOOTP_FLAGS] |= 0x80;
        assert!(verify_checksum(&req).is_err());
        let none = Frame::eth(BROADCAST, VM)
            .ipv4([0; 4], [255; 4])
            .udp(DHCP_CLIENT, DHCP_SERVER)
            .no_checksum()
            .dhcp(BOOTREQUEST, VM)
            .build();
        assert_eq!(&none[40..42], &[0, 0]);
        verify_checksum(&none).unwrap();
    }
}
