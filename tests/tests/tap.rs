//! A VM NIC as QEMU drives it: the test process owns a tap device on the hypervisor's bridge,
//! writes the guest's frames into it and reads what the host sends back. With MAT on the tap
//! (port mode) the guest sees only its own inside MAC, the wire only the outside MAC.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use mat_common::{
    counters::{Hook, Outcome},
    pool::PoolPrefix,
};
use mat_loader::Mode;
use mat_tests::{
    capture::{Addrs, Capture},
    frames::{BROADCAST, Mac, ZERO, arp},
    pins::{TestDataplane, unique},
    tap::Tap,
    topology::{Lab, fmt_mac, neighbour, random_inside_mac},
};

const POOL: [u8; 6] = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x00];
const OUTSIDE: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x21];
/// The guest's address (192.0.2.1-9 are left to tests by the lab).
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const TIMEOUT: Duration = Duration::from_secs(5);
const ECHO_ID: u16 = 0x4d41;
const ECHO_SEQ: u16 = 1;

/// The ICMP echo reply `(id, seq)` in `frame`, if it is one, from `from`.
fn echo_reply(frame: &[u8], from: Ipv4Addr) -> Option<(u16, u16)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    if ip.header().source_addr() != from {
        return None;
    }
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        return None;
    };
    match icmp.icmp_type() {
        Icmpv4Type::EchoReply(h) => Some((h.id, h.seq)),
        _ => None,
    }
}

#[test]
fn tap_port_translates_guest_frames() {
    let t = Instant::now();
    let lab = Lab::new(0);
    let peer = &lab.peer;
    // Declared after the lab so that it closes (and the tap goes) first.
    let tap = Tap::in_netns(&lab.hv, &unique("tp-"));
    lab.add_port(tap.name());
    lab.wait_forwarding();
    let tap_index = lab.hv_ifindex(tap.name());
    let inside = random_inside_mac();

    let mut dp = TestDataplane::new();
    dp.set_pools(&[PoolPrefix::new(POOL, 40)])
        .expect("set_pools");
    lab.hv
        .enter(|| dp.attach(tap.name(), Mode::Port))
        .expect("attach");
    dp.bind(tap_index, inside, OUTSIDE, 0).expect("bind");
    let before = dp.counters().expect("counters");
    let capture = Capture::in_netns(&peer.ns, &peer.ifname);

    // The guest asks for the peer's MAC.
    let request = arp(
        BROADCAST,
        inside,
        &[],
        1,
        inside,
        GUEST_IP.octets(),
        ZERO,
        peer.ip.octets(),
    );
    tap.send(&request).expect("writing the ARP request");
    let reply = tap
        .recv_matching(TIMEOUT, |f| {
            Addrs::parse(f)
                .arp
                .is_some_and(|a| a.op == 2 && a.spa == peer.ip.octets())
        })
        .expect("reading the tap");
    let reply = Addrs::parse(reply.frame.as_ref().unwrap_or_else(|| {
        panic!(
            "no ARP reply from the peer; other frames: {:02x?}",
            reply.skipped
        )
    }));
    let reply_arp = reply.arp.expect("ARP");
    assert_eq!(reply.dst, inside, "ARP reply's Ethernet destination");
    assert_eq!(reply_arp.tha, inside, "ARP reply's target hardware address");
    assert_eq!(reply_arp.tpa, GUEST_IP.octets());
    assert_eq!(reply.src, peer.mac);
    assert_eq!(reply_arp.sha, peer.mac);

    // Then pings it.
    let mut echo = Vec::new();
    PacketBuilder::ethernet2(inside, reply_arp.sha)
        .ipv4(GUEST_IP.octets(), peer.ip.octets(), 64)
        .icmpv4_echo_request(ECHO_ID, ECHO_SEQ)
        .write(&mut echo, b"MAT over a tap")
        .expect("building the echo request");
    tap.send(&echo).expect("writing the echo request");
    let pong = tap
        .recv_matching(TIMEOUT, |f| echo_reply(f, peer.ip).is_some())
        .expect("reading the tap");
    let pong = pong
        .frame
        .unwrap_or_else(|| panic!("no echo reply; other frames: {:02x?}", pong.skipped));
    assert_eq!(echo_reply(&pong, peer.ip), Some((ECHO_ID, ECHO_SEQ)));
    let pong = Addrs::parse(&pong);
    assert_eq!(pong.dst, inside, "echo reply's Ethernet destination");
    assert_eq!(pong.src, peer.mac);

    std::thread::sleep(Duration::from_millis(100));
    let wire = capture.stop();
    wire.assert_complete("the peer");
    let wire: Vec<Addrs> = wire
        .frames
        .iter()
        .map(mat_tests::capture::Captured::addrs)
        .collect();
    for a in &wire {
        assert!(
            !a.all().contains(&inside),
            "inside MAC {} beyond the uplink: {a:?}",
            fmt_mac(&inside)
        );
    }
    let out_request = wire
        .iter()
        .find(|a| {
            a.arp
                .is_some_and(|p| p.op == 1 && p.tpa == peer.ip.octets())
        })
        .expect("the ARP request beyond the uplink");
    assert_eq!(out_request.src, OUTSIDE, "ARP request's Ethernet source");
    assert_eq!(
        out_request.arp.expect("ARP").sha,
        OUTSIDE,
        "ARP request's SHA"
    );
    assert_eq!(out_request.arp.expect("ARP").spa, GUEST_IP.octets());
    assert!(
        wire.iter()
            .any(|a| a.arp.is_some_and(|p| p.op == 2 && p.tha == OUTSIDE) && a.dst == OUTSIDE),
        "the peer's ARP reply to the outside MAC"
    );
    assert!(
        wire.iter()
            .any(|a| a.arp.is_none() && a.src == OUTSIDE && a.dst == peer.mac),
        "the echo request from the outside MAC"
    );
    assert_eq!(neighbour(&peer.ns, GUEST_IP), Some(OUTSIDE));

    // The guest wrote exactly two frames; the host sent it at least the two replies.
    let c = dp.counters().expect("counters").since(&before);
    let from: Vec<_> = c
        .nonzero()
        .into_iter()
        .filter(|&(h, _, _)| h == Hook::PortFromVmTc)
        .collect();
    assert_eq!(
        from,
        vec![
            (Hook::PortFromVmTc, Outcome::Translated, 1),
            (Hook::PortFromVmTc, Outcome::ArpRewritten, 1)
        ],
        "{c:?}"
    );
    assert!(c.get(Hook::PortToVmTc, Outcome::ArpRewritten) >= 1, "{c:?}");
    assert!(c.get(Hook::PortToVmTc, Outcome::Translated) >= 1, "{c:?}");
    println!("counters: {:?}", c.nonzero());
    drop(tap);
    println!("tap_port_translates_guest_frames: {:?}", t.elapsed());
}
