//! Golden frames through the real programs with BPF_PROG_TEST_RUN: for each case the verdict, the
//! output frame (built independently with the expected MACs, lengths and checksums computed from
//! scratch) and exactly one counter, +1. Every ND or DHCP frame a program rewrites also has its
//! ICMPv6 or UDP checksum recomputed from scratch (etherparse) and compared with the one it carries.
//!
//! In a test run the device is the namespace's loopback (ifindex 1, `test_run::IFINDEX`): port
//! programs see the binding of port 1 (one binding per port), uplink programs the bindings on
//! ifindex 0 (many).

use std::{
    collections::HashMap,
    os::fd::{AsFd, OwnedFd},
};

use mat_common::{
    counters::{Hook, Outcome},
    event::{Event, EventKind},
    maps::{
        BINDING_ANNOUNCE, BINDING_PORT_SECURITY, BindingKey, SETTING_DHCP_TRANSLATE, UPLINK_IFINDEX,
    },
    pool::PoolPrefix,
};
use mat_loader::{Dataplane, Program, test_run};
use mat_tests::{
    frames::{
        BOOTREPLY, BOOTREQUEST, BROADCAST, DHCP_CLIENT, DHCP_SERVER, ETH_P_RARP, Frame, HOP_BY_HOP,
        Ipv6Addr, Mac, NA_OVERRIDE, NA_SOLICITED, Tag, ZERO, arp, arp_body, dot1ad, dot1q,
        ethernet, ipv4_udp, rarp, verify_checksum,
    },
    pins::TestDataplane,
};

use Outcome::{
    ArpRewritten, DhcpRewritten, Malformed, NdRewritten, Passed, PortSecurityDropped, Reflected,
    SpoofDropped, Translated,
};

const IF: u32 = test_run::IFINDEX;
const OTHER_IF: u32 = 7;
const VM2_IF: u32 = 8;
const UPLINK: u32 = UPLINK_IFINDEX;

// The VM on the test port (ifindex 1).
const VM: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const VM_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x2a];
// A second VM, on a port of its own (ifindex 8): one binding per port.
const VM2: Mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const VM2_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x2b];
// A VM on another port (ifindex 7).
const OTHER: Mac = [0x52, 0x54, 0x00, 0x77, 0x77, 0x77];
const OTHER_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x77];
// Three VMs behind the uplink (ifindex 0).
const UP: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const UP_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x04, 0x01];
const UP2: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];
const UP2_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x04, 0x02];
// Their 16-bit words sum alike (0x5257 in one's complement): translating one into the other leaves
// an ICMPv6 or UDP checksum as it was, and is still a rewrite.
const UP3: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x03];
const UP3_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0xf2, 0x55];
// An outside-pool MAC bound nowhere.
const FREE: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x99];
// A legacy host outside every pool.
const PEER: Mac = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
// IPv4 multicast group MAC; lies in a (deliberately odd) pool, but is never bindable.
const MCAST: Mac = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];

const VM_IP: [u8; 4] = [192, 0, 2, 10];
const VM_IP_NEW: [u8; 4] = [192, 0, 2, 20];
const VM2_IP: [u8; 4] = [192, 0, 2, 11];
const PEER_IP: [u8; 4] = [192, 0, 2, 1];
const NO_IP: [u8; 4] = [0; 4];
const VM_IP_THIRD: [u8; 4] = [192, 0, 2, 30];

const fn ip6(head: [u8; 8], tail: [u8; 8]) -> Ipv6Addr {
    let mut a = [0; 16];
    let mut i = 0;
    while i < 8 {
        a[i] = head[i];
        a[8 + i] = tail[i];
        i += 1;
    }
    a
}
const LL: [u8; 8] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
const DOC: [u8; 8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0];
const VM_LL: Ipv6Addr = ip6(LL, [0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56]);
const VM_IP6: Ipv6Addr = ip6(DOC, [0, 0, 0, 0, 0, 0, 0, 0x10]);
const VM_IP6_NEW: Ipv6Addr = ip6(DOC, [0, 0, 0, 0, 0, 0, 0, 0x20]);
/// VM_IP6's interface ID in the next /64 (one bit apart).
const VM_IP6_NEXT_NET: Ipv6Addr = ip6(
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 0, 0x10],
);
const PEER_LL: Ipv6Addr = ip6(LL, [0, 0, 0, 0, 0, 0, 0, 1]);
const PEER_IP6: Ipv6Addr = ip6(DOC, [0, 0, 0, 0, 0, 0, 0, 1]);
const PREFIX: Ipv6Addr = ip6(DOC, [0; 8]);
const UNSPECIFIED: Ipv6Addr = [0; 16];
const ALL_NODES: Ipv6Addr = ip6([0xff, 2, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]);
const ALL_ROUTERS: Ipv6Addr = ip6([0xff, 2, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 2]);
/// The solicited-node group of PEER_IP6 and VM_IP6 (ff02::1:ffxx:xxxx).
const SN_PEER: Ipv6Addr = ip6([0xff, 2, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0xff, 0, 0, 1]);
const SN_VM: Ipv6Addr = ip6([0xff, 2, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0xff, 0, 0, 0x10]);
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];
const ALL_ROUTERS_MAC: Mac = [0x33, 0x33, 0, 0, 0, 2];
const SN_PEER_MAC: Mac = [0x33, 0x33, 0xff, 0, 0, 1];
const SN_VM_MAC: Mac = [0x33, 0x33, 0xff, 0, 0, 0x10];

const DHCP_ANY: [u8; 4] = [0; 4];
const DHCP_BCAST: [u8; 4] = [255; 4];
const SERVER_IP: [u8; 4] = [192, 0, 2, 254];
/// IPv4 options: Router Alert (4 bytes, IHL 6) and 40 bytes of NOPs ending in EOL (IHL 15).
const RA_OPTION: [u8; 4] = [0x94, 0x04, 0x00, 0x00];
const FULL_OPTIONS: [u8; 40] = {
    let mut o = [1u8; 40];
    o[39] = 0;
    o
};

/// The outside pools: the site pool (covers every *_OUT and FREE), and pools that hold the zero
/// MAC, multicast and broadcast, which the spoof check must never drop (they are not bindable).
fn pools() -> [PoolPrefix; 4] {
    [
        PoolPrefix::new([0x02, 0x00, 0x5e, 0x01, 0, 0], 32),
        PoolPrefix::new([0; 6], 40),
        PoolPrefix::new([0x01, 0x00, 0x5e, 0, 0, 0], 24),
        PoolPrefix::new(BROADCAST, 48),
    ]
}

const NO_TAGS: &[Tag] = &[];
const Q: &[Tag] = &[dot1q(10)];
const AD: &[Tag] = &[dot1ad(100)];
const QQ: &[Tag] = &[dot1q(10), dot1q(20)];
const QINQ: &[Tag] = &[dot1ad(100), dot1q(10)];
const THREE: &[Tag] = &[dot1ad(100), dot1q(10), dot1q(20)];
const Q_AD: &[Tag] = &[dot1q(10), dot1ad(100)];

// Verdicts as the kernel spells them.
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn is_xdp(p: Program) -> bool {
    matches!(p, Program::PortFromVmXdp | Program::UplinkIn)
}

fn hook(p: Program) -> Hook {
    p.hook().expect("a translating program")
}

/// What a test run must do with a frame.
#[derive(Clone, Debug)]
enum Expect {
    /// Let it through as this frame, counting this outcome.
    Pass(Vec<u8>, Outcome),
    /// Drop it, counting this outcome.
    Drop(Outcome),
    /// BPF_PROG_TEST_RUN refuses the frame (EINVAL) before the program runs: nothing counted.
    Refused,
}

fn pass(frame: Vec<u8>, outcome: Outcome) -> Expect {
    assert!(!outcome.drops());
    Expect::Pass(frame, outcome)
}

fn drop(outcome: Outcome) -> Expect {
    assert!(outcome.drops());
    Expect::Drop(outcome)
}

struct Case {
    name: String,
    prog: Program,
    input: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, prog: Program, input: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        prog,
        input,
        expect,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `frame` with `bytes` written at `at`.
fn set(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// `frame` padded with zeros to the 60-byte Ethernet minimum.
fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    frame.resize(60, 0);
    frame
}

/// ARP fields that make a body something other than Ethernet/IPv4: (name, offset in the body,
/// bytes).
const ODD_ARP: [(&str, usize, &[u8]); 4] = [
    ("htype 6 (IEEE 802)", 0, &[0, 6]),
    ("ptype 0x86dd", 2, &[0x86, 0xdd]),
    ("hlen 8", 4, &[8]),
    ("plen 16", 5, &[16]),
];

/// The test data plane: the port's binding (port security off: the spoof rule), the bindings of
/// two other ports and three on the uplink, and the pools.
fn setup() -> TestDataplane {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, 0).unwrap();
    dp.bind(VM2_IF, VM2, VM2_OUT, 0).unwrap();
    dp.bind(OTHER_IF, OTHER, OTHER_OUT, 0).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, 0).unwrap();
    dp.bind(UPLINK, UP2, UP2_OUT, 0).unwrap();
    dp.bind(UPLINK, UP3, UP3_OUT, 0).unwrap();
    dp.set_pools(&pools()).unwrap();
    dp
}

/// One program's view of the bindings: its own (`i -> o`); a second VM (`i2 -> o2`), bound beside
/// the first on the uplink but on a port of its own for the port programs; and one on another
/// ifindex (`fi -> fo`) that must not match.
#[derive(Clone, Copy)]
struct Side {
    prog: Program,
    port: bool,
    i: Mac,
    o: Mac,
    i2: Mac,
    o2: Mac,
    fi: Mac,
    fo: Mac,
}

const PORT_SIDE: Side = Side {
    prog: Program::PortFromVm,
    port: true,
    i: VM,
    o: VM_OUT,
    i2: VM2,
    o2: VM2_OUT,
    fi: OTHER,
    fo: OTHER_OUT,
};

const UPLINK_SIDE: Side = Side {
    prog: Program::UplinkOut,
    port: false,
    i: UP,
    o: UP_OUT,
    i2: UP2,
    o2: UP2_OUT,
    fi: VM,
    fo: VM_OUT,
};

fn from_vm_sides() -> [Side; 3] {
    [
        PORT_SIDE,
        Side {
            prog: Program::PortFromVmXdp,
            ..PORT_SIDE
        },
        UPLINK_SIDE,
    ]
}

fn to_vm_sides() -> [Side; 2] {
    [
        Side {
            prog: Program::PortToVm,
            ..PORT_SIDE
        },
        Side {
            prog: Program::UplinkIn,
            ..UPLINK_SIDE
        },
    ]
}

#[rustfmt::skip]
fn from_vm_cases(s: Side) -> Vec<Case> {
    let Side { prog: p, port, i, o, i2, o2, fi, fo } = s;
    // On a port a source (or ARP sender) from the pool is a spoof; the uplink lets it through.
    let spoof = |uplink: Expect| if port { drop(SpoofDropped) } else { uplink };
    // More than two tags from a VM port could hide what the rules must see.
    let strict = |uplink: Expect| if port { drop(Malformed) } else { uplink };
    let mut v = vec![
        // Ethernet source.
        case("ipv4 src translated", p, ipv4_udp(PEER, i, NO_TAGS, 18), pass(ipv4_udp(PEER, o, NO_TAGS, 18), Translated)),
        case("ipv4 to broadcast: src translated, dst untouched", p, ipv4_udp(BROADCAST, i, NO_TAGS, 18), pass(ipv4_udp(BROADCAST, o, NO_TAGS, 18), Translated)),
        case("ipv4 to multicast: src translated, dst untouched", p, ipv4_udp(MCAST, i, NO_TAGS, 18), pass(ipv4_udp(MCAST, o, NO_TAGS, 18), Translated)),
        case("ipv4 to a bound inside MAC: dst untouched", p, ipv4_udp(i2, i, NO_TAGS, 18), pass(ipv4_udp(i2, o, NO_TAGS, 18), Translated)),
        case("ipv4 802.1Q", p, ipv4_udp(PEER, i, Q, 18), pass(ipv4_udp(PEER, o, Q, 18), Translated)),
        case("ipv4 802.1ad", p, ipv4_udp(PEER, i, AD, 18), pass(ipv4_udp(PEER, o, AD, 18), Translated)),
        case("ipv4 QinQ", p, ipv4_udp(PEER, i, QINQ, 18), pass(ipv4_udp(PEER, o, QINQ, 18), Translated)),
        case("ipv4 three tags: malformed from a VM port", p, ipv4_udp(PEER, i, THREE, 18), strict(pass(ipv4_udp(PEER, o, THREE, 18), Translated))),
        case("ipv4 three tags from an unbound src", p, ipv4_udp(PEER, PEER, THREE, 18), strict(pass(ipv4_udp(PEER, PEER, THREE, 18), Passed))),
        case("non-IP three tags", p, ethernet(PEER, i, THREE, 0x88cc, &[7; 30]), strict(pass(ethernet(PEER, o, THREE, 0x88cc, &[7; 30]), Translated))),
        case("ipv4 padded minimum frame", p, pad(ipv4_udp(PEER, i, NO_TAGS, 0)), pass(pad(ipv4_udp(PEER, o, NO_TAGS, 0)), Translated)),
        case("ipv4 unbound src", p, ipv4_udp(VM2_OUT, PEER, NO_TAGS, 18), pass(ipv4_udp(VM2_OUT, PEER, NO_TAGS, 18), Passed)),
        case("ipv4 src bound on another ifindex", p, ipv4_udp(PEER, fi, NO_TAGS, 18), pass(ipv4_udp(PEER, fi, NO_TAGS, 18), Passed)),
        case("ipv4 broadcast src (in a pool, not bindable)", p, ipv4_udp(PEER, BROADCAST, NO_TAGS, 18), pass(ipv4_udp(PEER, BROADCAST, NO_TAGS, 18), Passed)),
        case("ipv4 multicast src (in a pool, not bindable)", p, ipv4_udp(PEER, MCAST, NO_TAGS, 18), pass(ipv4_udp(PEER, MCAST, NO_TAGS, 18), Passed)),
        case("ipv4 zero src (in a pool, not bindable)", p, ipv4_udp(PEER, ZERO, NO_TAGS, 18), pass(ipv4_udp(PEER, ZERO, NO_TAGS, 18), Passed)),
        case("ipv4 spoofed src: free pool MAC", p, ipv4_udp(PEER, FREE, NO_TAGS, 18), spoof(pass(ipv4_udp(PEER, FREE, NO_TAGS, 18), Passed))),
        case("ipv4 spoofed src: own outside MAC", p, ipv4_udp(PEER, o, NO_TAGS, 18), spoof(pass(ipv4_udp(PEER, o, NO_TAGS, 18), Passed))),
        case("ipv4 spoofed src: outside MAC on another ifindex", p, ipv4_udp(PEER, fo, NO_TAGS, 18), spoof(pass(ipv4_udp(PEER, fo, NO_TAGS, 18), Passed))),
        case("ipv4 spoofed src in QinQ", p, ipv4_udp(PEER, FREE, QINQ, 18), spoof(pass(ipv4_udp(PEER, FREE, QINQ, 18), Passed))),
        case("non-IP ethertype, src translated", p, ethernet(PEER, i, NO_TAGS, 0x88cc, &[7; 30]), pass(ethernet(PEER, o, NO_TAGS, 0x88cc, &[7; 30]), Translated)),
        // ARP and RARP.
        case("ARP request", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP reply", p, arp(PEER, i, NO_TAGS, 2, i, VM_IP, PEER, PEER_IP), pass(arp(PEER, o, NO_TAGS, 2, o, VM_IP, PEER, PEER_IP), ArpRewritten)),
        case("ARP reply padded to 60 bytes", p, pad(arp(PEER, i, NO_TAGS, 2, i, VM_IP, PEER, PEER_IP)), pass(pad(arp(PEER, o, NO_TAGS, 2, o, VM_IP, PEER, PEER_IP)), ArpRewritten)),
        case("ARP probe (spa 0)", p, arp(BROADCAST, i, NO_TAGS, 1, i, NO_IP, ZERO, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, NO_IP, ZERO, VM_IP), ArpRewritten)),
        case("ARP unicast probe: tha = own MAC", p, arp(PEER, i, NO_TAGS, 1, i, VM_IP, i, VM_IP), pass(arp(PEER, o, NO_TAGS, 1, o, VM_IP, o, VM_IP), ArpRewritten)),
        case("ARP reply to the second VM: tha translated on the uplink only", p, arp(i2, i, NO_TAGS, 2, i, VM_IP, i2, VM2_IP), pass(arp(i2, o, NO_TAGS, 2, o, VM_IP, if port { i2 } else { o2 }, VM2_IP), ArpRewritten)),
        case("ARP from the second VM: translated on the uplink only", p, arp(BROADCAST, i2, NO_TAGS, 1, i2, VM2_IP, ZERO, VM_IP), if port { pass(arp(BROADCAST, i2, NO_TAGS, 1, i2, VM2_IP, ZERO, VM_IP), Passed) } else { pass(arp(BROADCAST, o2, NO_TAGS, 1, o2, VM2_IP, ZERO, VM_IP), ArpRewritten) }),
        case("ARP from an unbound sender: only tha translated", p, arp(BROADCAST, PEER, NO_TAGS, 2, PEER, PEER_IP, i, VM_IP), pass(arp(BROADCAST, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), ArpRewritten)),
        case("gratuitous ARP request", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, ZERO, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, ZERO, VM_IP), ArpRewritten)),
        case("gratuitous ARP reply (tha = sha)", p, arp(BROADCAST, i, NO_TAGS, 2, i, VM_IP, i, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 2, o, VM_IP, o, VM_IP), ArpRewritten)),
        case("gratuitous ARP, broadcast tha untouched", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, BROADCAST, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, BROADCAST, VM_IP), ArpRewritten)),
        case("RARP: sha and tha = own MAC", p, rarp(i, NO_TAGS), pass(rarp(o, NO_TAGS), ArpRewritten)),
        case("RARP 802.1Q", p, rarp(i, Q), pass(rarp(o, Q), ArpRewritten)),
        case("RARP QinQ", p, rarp(i, QINQ), pass(rarp(o, QINQ), ArpRewritten)),
        case("RARP three tags: malformed from a VM port, else Ethernet only", p, rarp(i, THREE), strict(pass(ethernet(BROADCAST, o, THREE, ETH_P_RARP, &arp_body(3, i, NO_IP, i, NO_IP)), Translated))),
        case("ARP 802.1Q", p, arp(BROADCAST, i, Q, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, Q, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP 802.1ad", p, arp(BROADCAST, i, AD, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, AD, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP two 802.1Q tags", p, arp(BROADCAST, i, QQ, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, QQ, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP QinQ", p, arp(PEER, i, QINQ, 2, i, VM_IP, PEER, PEER_IP), pass(arp(PEER, o, QINQ, 2, o, VM_IP, PEER, PEER_IP), ArpRewritten)),
        case("ARP three tags: malformed from a VM port, else Ethernet only", p, arp(PEER, i, THREE, 2, i, VM_IP, i, PEER_IP), strict(pass(arp(PEER, o, THREE, 2, i, VM_IP, i, PEER_IP), Translated))),
        case("ARP unbound src and sha: untouched", p, arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), pass(arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), Passed)),
        case("ARP sha bound on another ifindex: untouched", p, arp(BROADCAST, i, NO_TAGS, 1, fi, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, fi, VM_IP, ZERO, PEER_IP), Translated)),
        case("ARP tha bound on another ifindex: untouched", p, arp(PEER, i, NO_TAGS, 2, i, VM_IP, fi, PEER_IP), pass(arp(PEER, o, NO_TAGS, 2, o, VM_IP, fi, PEER_IP), ArpRewritten)),
        case("ARP tha = own outside MAC: untouched", p, arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), pass(arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), Passed)),
        case("ARP tha in the pool (no spoof check on tha)", p, arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, FREE, VM_IP), pass(arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, FREE, VM_IP), Passed)),
        case("ARP multicast sha (in a pool, not bindable)", p, arp(BROADCAST, i, NO_TAGS, 1, MCAST, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, MCAST, VM_IP, ZERO, PEER_IP), Translated)),
        case("ARP zero sha (in a pool, not bindable)", p, arp(BROADCAST, i, NO_TAGS, 1, ZERO, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, ZERO, VM_IP, ZERO, PEER_IP), Translated)),
        case("ARP spoofed sha: free pool MAC", p, arp(BROADCAST, i, NO_TAGS, 1, FREE, VM_IP, ZERO, PEER_IP), spoof(pass(arp(BROADCAST, o, NO_TAGS, 1, FREE, VM_IP, ZERO, PEER_IP), Translated))),
        case("ARP spoofed sha: another VM's outside MAC", p, arp(BROADCAST, i, NO_TAGS, 2, o2, VM_IP, i, PEER_IP), spoof(pass(arp(BROADCAST, o, NO_TAGS, 2, o2, VM_IP, o, PEER_IP), ArpRewritten))),
        case("ARP spoofed sha from an unbound src", p, arp(BROADCAST, PEER, NO_TAGS, 1, FREE, VM_IP, ZERO, PEER_IP), spoof(pass(arp(BROADCAST, PEER, NO_TAGS, 1, FREE, VM_IP, ZERO, PEER_IP), Passed))),
        case("ARP spoofed sha in QinQ", p, arp(BROADCAST, i, QINQ, 1, FREE, VM_IP, ZERO, PEER_IP), spoof(pass(arp(BROADCAST, o, QINQ, 1, FREE, VM_IP, ZERO, PEER_IP), Translated))),
        case("ARP spoofed src", p, arp(BROADCAST, FREE, NO_TAGS, 1, i, VM_IP, ZERO, PEER_IP), spoof(pass(arp(BROADCAST, FREE, NO_TAGS, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten))),
    ];
    for (what, at, bytes) in ODD_ARP {
        v.push(case(format!("ARP {what}: Ethernet only"), p, set(arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, i, PEER_IP), 14 + at, bytes), pass(set(arp(BROADCAST, o, NO_TAGS, 1, i, VM_IP, i, PEER_IP), 14 + at, bytes), Translated)));
        v.push(case(format!("ARP QinQ {what}: Ethernet only"), p, set(arp(BROADCAST, i, QINQ, 1, i, VM_IP, i, PEER_IP), 22 + at, bytes), pass(set(arp(BROADCAST, o, QINQ, 1, i, VM_IP, i, PEER_IP), 22 + at, bytes), Translated)));
        v.push(case(format!("ARP {what} from unbound src: untouched"), p, set(arp(BROADCAST, PEER, NO_TAGS, 1, i, VM_IP, i, PEER_IP), 14 + at, bytes), pass(set(arp(BROADCAST, PEER, NO_TAGS, 1, i, VM_IP, i, PEER_IP), 14 + at, bytes), Passed)));
        v.push(case(format!("ARP {what} with a pool sha: not a spoof"), p, set(arp(BROADCAST, PEER, NO_TAGS, 1, FREE, VM_IP, i, PEER_IP), 14 + at, bytes), pass(set(arp(BROADCAST, PEER, NO_TAGS, 1, FREE, VM_IP, i, PEER_IP), 14 + at, bytes), Passed)));
    }
    v
}

#[rustfmt::skip]
fn to_vm_cases(s: Side) -> Vec<Case> {
    let Side { prog: p, port, i, o, o2, fo, .. } = s;
    // On a port, an ARP whose sender is an outside MAC bound there is the VM's own, reflected.
    let reflected = |uplink: Expect| if port { drop(Reflected) } else { uplink };
    let mut v = vec![
        // Ethernet destination.
        case("ipv4 dst translated", p, ipv4_udp(o, PEER, NO_TAGS, 18), pass(ipv4_udp(i, PEER, NO_TAGS, 18), Translated)),
        case("ipv4 dst translated, bound outside src untouched", p, ipv4_udp(o, o2, NO_TAGS, 18), pass(ipv4_udp(i, o2, NO_TAGS, 18), Translated)),
        case("ipv4 802.1Q", p, ipv4_udp(o, PEER, Q, 18), pass(ipv4_udp(i, PEER, Q, 18), Translated)),
        case("ipv4 802.1ad", p, ipv4_udp(o, PEER, AD, 18), pass(ipv4_udp(i, PEER, AD, 18), Translated)),
        case("ipv4 QinQ", p, ipv4_udp(o, PEER, QINQ, 18), pass(ipv4_udp(i, PEER, QINQ, 18), Translated)),
        case("ipv4 three tags", p, ipv4_udp(o, PEER, THREE, 18), pass(ipv4_udp(i, PEER, THREE, 18), Translated)),
        case("ipv4 padded minimum frame", p, pad(ipv4_udp(o, PEER, NO_TAGS, 0)), pass(pad(ipv4_udp(i, PEER, NO_TAGS, 0)), Translated)),
        case("ipv4 broadcast untouched", p, ipv4_udp(BROADCAST, o, NO_TAGS, 18), pass(ipv4_udp(BROADCAST, o, NO_TAGS, 18), Passed)),
        case("ipv4 multicast untouched", p, ipv4_udp(MCAST, PEER, NO_TAGS, 18), pass(ipv4_udp(MCAST, PEER, NO_TAGS, 18), Passed)),
        case("ipv4 zero dst untouched", p, ipv4_udp(ZERO, PEER, NO_TAGS, 18), pass(ipv4_udp(ZERO, PEER, NO_TAGS, 18), Passed)),
        case("ipv4 unbound dst", p, ipv4_udp(PEER, o, NO_TAGS, 18), pass(ipv4_udp(PEER, o, NO_TAGS, 18), Passed)),
        case("ipv4 free pool MAC dst", p, ipv4_udp(FREE, PEER, NO_TAGS, 18), pass(ipv4_udp(FREE, PEER, NO_TAGS, 18), Passed)),
        case("ipv4 dst = inside MAC: untouched", p, ipv4_udp(i, PEER, NO_TAGS, 18), pass(ipv4_udp(i, PEER, NO_TAGS, 18), Passed)),
        case("ipv4 dst bound on another ifindex", p, ipv4_udp(fo, PEER, NO_TAGS, 18), pass(ipv4_udp(fo, PEER, NO_TAGS, 18), Passed)),
        case("ipv4 pool src is no spoof towards the VM", p, ipv4_udp(o, FREE, NO_TAGS, 18), pass(ipv4_udp(i, FREE, NO_TAGS, 18), Translated)),
        // ARP and RARP.
        case("ARP reply to the VM", p, arp(o, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), pass(arp(i, PEER, NO_TAGS, 2, PEER, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP reply padded to 60 bytes", p, pad(arp(o, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP)), pass(pad(arp(i, PEER, NO_TAGS, 2, PEER, PEER_IP, i, VM_IP)), ArpRewritten)),
        case("ARP broadcast request for the VM: untouched", p, arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), pass(arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), Passed)),
        case("ARP broadcast request with tha: tha translated", p, arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, o, VM_IP), pass(arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP unicast request to the VM: dst only", p, arp(o, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), pass(arp(i, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), Translated)),
        case("ARP 802.1Q", p, arp(o, PEER, Q, 2, PEER, PEER_IP, o, VM_IP), pass(arp(i, PEER, Q, 2, PEER, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP 802.1ad", p, arp(o, PEER, AD, 2, PEER, PEER_IP, o, VM_IP), pass(arp(i, PEER, AD, 2, PEER, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP two 802.1Q tags", p, arp(o, PEER, QQ, 2, PEER, PEER_IP, o, VM_IP), pass(arp(i, PEER, QQ, 2, PEER, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP QinQ", p, arp(o, PEER, QINQ, 2, PEER, PEER_IP, o, VM_IP), pass(arp(i, PEER, QINQ, 2, PEER, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP three tags: Ethernet only", p, arp(o, PEER, THREE, 2, PEER, PEER_IP, o, VM_IP), pass(arp(i, PEER, THREE, 2, PEER, PEER_IP, o, VM_IP), Translated)),
        case("RARP reply to the VM", p, ethernet(o, PEER, NO_TAGS, ETH_P_RARP, &arp_body(4, PEER, PEER_IP, o, VM_IP)), pass(ethernet(i, PEER, NO_TAGS, ETH_P_RARP, &arp_body(4, PEER, PEER_IP, i, VM_IP)), ArpRewritten)),
        case("ARP tha = inside MAC: untouched", p, arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, i, VM_IP), pass(arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, i, VM_IP), Passed)),
        case("ARP tha bound on another ifindex: untouched", p, arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, fo, VM_IP), pass(arp(PEER, PEER, NO_TAGS, 2, PEER, PEER_IP, fo, VM_IP), Passed)),
        case("ARP sha bound on another ifindex: not a reflection", p, arp(o, fo, NO_TAGS, 2, fo, PEER_IP, o, VM_IP), pass(arp(i, fo, NO_TAGS, 2, fo, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP sha = inside MAC: not a reflection", p, arp(o, PEER, NO_TAGS, 2, i, PEER_IP, o, VM_IP), pass(arp(i, PEER, NO_TAGS, 2, i, PEER_IP, i, VM_IP), ArpRewritten)),
        case("ARP multicast sha: not a reflection", p, arp(BROADCAST, PEER, NO_TAGS, 1, MCAST, PEER_IP, o, VM_IP), pass(arp(BROADCAST, PEER, NO_TAGS, 1, MCAST, PEER_IP, i, VM_IP), ArpRewritten)),
        // Reflections: dropped on a port, ordinary frames on the uplink.
        case("gratuitous ARP request reflected", p, arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, ZERO, VM_IP), reflected(pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, ZERO, VM_IP), Passed))),
        case("gratuitous ARP reply reflected", p, arp(BROADCAST, o, NO_TAGS, 2, o, VM_IP, o, VM_IP), reflected(pass(arp(BROADCAST, o, NO_TAGS, 2, o, VM_IP, i, VM_IP), ArpRewritten))),
        case("gratuitous ARP reflected, Ethernet src another MAC", p, arp(BROADCAST, PEER, NO_TAGS, 1, o, VM_IP, ZERO, VM_IP), reflected(pass(arp(BROADCAST, PEER, NO_TAGS, 1, o, VM_IP, ZERO, VM_IP), Passed))),
        case("ARP from the second VM: not a reflection", p, arp(o, o2, NO_TAGS, 2, o2, VM2_IP, o, VM_IP), pass(arp(i, o2, NO_TAGS, 2, o2, VM2_IP, i, VM_IP), ArpRewritten)),
        case("gratuitous ARP reflected in 802.1Q", p, arp(BROADCAST, o, Q, 1, o, VM_IP, ZERO, VM_IP), reflected(pass(arp(BROADCAST, o, Q, 1, o, VM_IP, ZERO, VM_IP), Passed))),
        case("gratuitous ARP reflected in QinQ", p, arp(BROADCAST, o, QINQ, 2, o, VM_IP, o, VM_IP), reflected(pass(arp(BROADCAST, o, QINQ, 2, o, VM_IP, i, VM_IP), ArpRewritten))),
        case("RARP reflected", p, rarp(o, NO_TAGS), reflected(pass(ethernet(BROADCAST, o, NO_TAGS, ETH_P_RARP, &arp_body(3, o, NO_IP, i, NO_IP)), ArpRewritten))),
        case("RARP reflected in QinQ", p, rarp(o, QINQ), reflected(pass(ethernet(BROADCAST, o, QINQ, ETH_P_RARP, &arp_body(3, o, NO_IP, i, NO_IP)), ArpRewritten))),
        case("gratuitous ARP in three tags: not parsed", p, arp(BROADCAST, o, THREE, 2, o, VM_IP, o, VM_IP), pass(arp(BROADCAST, o, THREE, 2, o, VM_IP, o, VM_IP), Passed)),
    ];
    for (what, at, bytes) in ODD_ARP {
        v.push(case(format!("ARP {what}: Ethernet only"), p, set(arp(o, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), 14 + at, bytes), pass(set(arp(i, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), 14 + at, bytes), Translated)));
        v.push(case(format!("ARP QinQ {what}: Ethernet only"), p, set(arp(o, PEER, QINQ, 2, PEER, PEER_IP, o, VM_IP), 22 + at, bytes), pass(set(arp(i, PEER, QINQ, 2, PEER, PEER_IP, o, VM_IP), 22 + at, bytes), Translated)));
        v.push(case(format!("gratuitous ARP {what}: not a reflection"), p, set(arp(BROADCAST, o, NO_TAGS, 2, o, VM_IP, o, VM_IP), 14 + at, bytes), pass(set(arp(BROADCAST, o, NO_TAGS, 2, o, VM_IP, o, VM_IP), 14 + at, bytes), Passed)));
    }
    v
}

/// `frame` (untagged IPv6) with the IPv6 payload length set to `len`.
fn payload_len(frame: Vec<u8>, len: u16) -> Vec<u8> {
    set(frame, 18, &len.to_be_bytes())
}

/// `frame` with `n` zero bytes of trailer after the packet.
fn trailer(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame.resize(frame.len() + n, 0);
    frame
}

/// `n` Nonce options.
fn nonces(nd: mat_tests::frames::Nd, n: usize) -> mat_tests::frames::Nd {
    (0..n).fold(nd, |nd, _| nd.nonce())
}

#[rustfmt::skip]
fn nd_from_vm_cases(s: Side) -> Vec<Case> {
    let Side { prog: p, port, i, o, i2, o2, fi, fo } = s;
    let spoof = |uplink: Expect| if port { drop(SpoofDropped) } else { uplink };
    let strict = |uplink: Expect| if port { drop(Malformed) } else { uplink };
    // Each message from the Ethernet source `e`, with `tags`.
    let rs = |e: Mac| Frame::eth(ALL_ROUTERS_MAC, e).ipv6(VM_LL, ALL_ROUTERS).icmpv6_rs();
    let ra = |e: Mac| Frame::eth(ALL_NODES_MAC, e).ipv6(VM_LL, ALL_NODES).icmpv6_ra();
    let ns = |e: Mac, tags: &[Tag]| Frame::eth(SN_PEER_MAC, e).tags(tags).ipv6(VM_LL, SN_PEER).icmpv6_ns(PEER_IP6);
    let dad = |e: Mac| Frame::eth(SN_VM_MAC, e).ipv6(UNSPECIFIED, SN_VM).icmpv6_ns(VM_IP6);
    let na = |e: Mac| Frame::eth(PEER, e).ipv6(VM_IP6, PEER_IP6).icmpv6_na(NA_SOLICITED | NA_OVERRIDE, VM_IP6);
    let una = |e: Mac, tags: &[Tag]| Frame::eth(ALL_NODES_MAC, e).tags(tags).ipv6(VM_IP6, ALL_NODES).icmpv6_na(NA_OVERRIDE, VM_IP6);
    let redirect = |e: Mac| Frame::eth(PEER, e).ipv6(VM_LL, PEER_LL).icmpv6_redirect(VM_LL, PEER_IP6);
    let v6 = |e: Mac| Frame::eth(SN_PEER_MAC, e).ipv6(VM_LL, SN_PEER);
    let all4 = |e: Mac| v6(e).hop_by_hop().dest_opts().routing().dest_opts();
    let rewritten = |f: Vec<u8>| pass(f, NdRewritten);
    let translated = |f: Vec<u8>| pass(f, Translated);
    let eth_only = |f: Vec<u8>, e: Mac| pass(set(f, 6, &e), Translated);
    let mut v = vec![
        // Every ND type, with and without its link-layer option.
        case("RS", p, rs(i).build(), translated(rs(o).build())),
        case("RS with SLLAO", p, rs(i).sllao(i).build(), rewritten(rs(o).sllao(o).build())),
        case("RA with SLLAO", p, ra(i).sllao(i).build(), rewritten(ra(o).sllao(o).build())),
        case("RA: MTU and prefix before SLLAO", p, ra(i).mtu(1500).prefix(PREFIX, 64).sllao(i).build(), rewritten(ra(o).mtu(1500).prefix(PREFIX, 64).sllao(o).build())),
        case("RA: SLLAO between MTU and prefix", p, ra(i).mtu(9000).sllao(i).prefix(PREFIX, 64).build(), rewritten(ra(o).mtu(9000).sllao(o).prefix(PREFIX, 64).build())),
        case("NS with SLLAO", p, ns(i, NO_TAGS).sllao(i).build(), rewritten(ns(o, NO_TAGS).sllao(o).build())),
        case("NS without option", p, ns(i, NO_TAGS).build(), translated(ns(o, NO_TAGS).build())),
        case("DAD NS (source ::, no option)", p, dad(i).build(), translated(dad(o).build())),
        case("NA with TLLAO", p, na(i).tllao(i).build(), rewritten(na(o).tllao(o).build())),
        case("unsolicited NA with TLLAO", p, una(i, NO_TAGS).tllao(i).build(), rewritten(una(o, NO_TAGS).tllao(o).build())),
        case("NA without option", p, na(i).build(), translated(na(o).build())),
        case("Redirect with TLLAO", p, redirect(i).tllao(i).build(), rewritten(redirect(o).tllao(o).build())),
        case("Redirect: redirected header before TLLAO", p, redirect(i).redirected(&[0x60; 40]).tllao(i).build(), rewritten(redirect(o).redirected(&[0x60; 40]).tllao(o).build())),
        case("Redirect without option", p, redirect(i).build(), translated(redirect(o).build())),
        // Option layouts.
        case("NS: SLLAO and TLLAO both inside", p, ns(i, NO_TAGS).sllao(i).tllao(i).build(), rewritten(ns(o, NO_TAGS).sllao(o).tllao(o).build())),
        case("NS: SLLAO inside, then a legacy host's", p, ns(i, NO_TAGS).sllao(i).sllao(PEER).build(), rewritten(ns(o, NO_TAGS).sllao(o).sllao(PEER).build())),
        case("NS: a legacy host's SLLAO, then inside", p, ns(i, NO_TAGS).sllao(PEER).sllao(i).build(), rewritten(ns(o, NO_TAGS).sllao(PEER).sllao(o).build())),
        case("NS: unknown options before SLLAO", p, ns(i, NO_TAGS).nonce().option(200, &[9; 12]).sllao(i).build(), rewritten(ns(o, NO_TAGS).nonce().option(200, &[9; 12]).sllao(o).build())),
        case("NS: unknown options only", p, ns(i, NO_TAGS).nonce().option(200, &i).build(), translated(ns(o, NO_TAGS).nonce().option(200, &i).build())),
        case("NS: link-layer option of 16 bytes is no Ethernet address", p, ns(i, NO_TAGS).option(1, &[i, ZERO].concat()).build(), translated(ns(o, NO_TAGS).option(1, &[i, ZERO].concat()).build())),
        case("NS: 8 options, SLLAO last", p, nonces(ns(i, NO_TAGS), 7).sllao(i).build(), rewritten(nonces(ns(o, NO_TAGS), 7).sllao(o).build())),
        case("NS: 9 options, SLLAO 9th", p, nonces(ns(i, NO_TAGS), 8).sllao(i).build(), strict(translated(nonces(ns(o, NO_TAGS), 8).sllao(i).build()))),
        case("NS: 9 options, SLLAO first", p, nonces(ns(i, NO_TAGS).sllao(i), 8).build(), strict(rewritten(nonces(ns(o, NO_TAGS).sllao(o), 8).build()))),
        case("NS: zero-length option", p, ns(i, NO_TAGS).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), drop(Malformed)),
        case("NS: zero-length option after SLLAO", p, ns(i, NO_TAGS).sllao(i).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), drop(Malformed)),
        case("NS: zero-length SLLAO", p, ns(i, NO_TAGS).raw(&[1, 0, i[0], i[1], i[2], i[3], i[4], i[5]]).build(), drop(Malformed)),
        case("NS: zero-length option from an unbound source", p, ns(PEER, NO_TAGS).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), drop(Malformed)),
        case("NS: option running past the message", p, ns(i, NO_TAGS).raw(&[1, 2, i[0], i[1], i[2], i[3], i[4], i[5]]).build(), drop(Malformed)),
        case("NS: option bytes left over (4)", p, ns(i, NO_TAGS).sllao(i).raw(&[1, 1, 0, 0]).build(), drop(Malformed)),
        case("NS: message ends inside SLLAO", p, payload_len(ns(i, NO_TAGS).sllao(i).build(), 28), drop(Malformed)),
        case("NS: payload length past the frame's end", p, payload_len(ns(i, NO_TAGS).sllao(i).build(), 40), drop(Malformed)),
        case("NS: message shorter than its fixed part", p, payload_len(ns(i, NO_TAGS).build(), 16), drop(Malformed)),
        case("RS: message shorter than its fixed part", p, payload_len(rs(i).build(), 4), drop(Malformed)),
        case("NA: message shorter than its fixed part", p, payload_len(trailer(na(i).build(), 8), 20), drop(Malformed)),
        case("RA: message shorter than its fixed part", p, payload_len(trailer(ra(i).build(), 8), 12), drop(Malformed)),
        case("Redirect: message shorter than its fixed part", p, payload_len(redirect(i).build(), 32), drop(Malformed)),
        case("NS: message ends before SLLAO (a trailer holds it)", p, payload_len(ns(i, NO_TAGS).sllao(i).build(), 24), translated(payload_len(ns(o, NO_TAGS).sllao(i).build(), 24))),
        case("NS with SLLAO and a trailer", p, trailer(ns(i, NO_TAGS).sllao(i).build(), 10), rewritten(trailer(ns(o, NO_TAGS).sllao(o).build(), 10))),
        // Extension headers and fragments.
        case("NS behind Hop-by-Hop", p, v6(i).hop_by_hop().icmpv6_ns(PEER_IP6).sllao(i).build(), rewritten(v6(o).hop_by_hop().icmpv6_ns(PEER_IP6).sllao(o).build())),
        case("NS behind Destination Options", p, v6(i).dest_opts().icmpv6_ns(PEER_IP6).sllao(i).build(), rewritten(v6(o).dest_opts().icmpv6_ns(PEER_IP6).sllao(o).build())),
        case("NS behind Routing", p, v6(i).routing().icmpv6_ns(PEER_IP6).sllao(i).build(), rewritten(v6(o).routing().icmpv6_ns(PEER_IP6).sllao(o).build())),
        case("NS behind a 24-byte Hop-by-Hop", p, v6(i).ext(HOP_BY_HOP, 2).icmpv6_ns(PEER_IP6).sllao(i).build(), rewritten(v6(o).ext(HOP_BY_HOP, 2).icmpv6_ns(PEER_IP6).sllao(o).build())),
        case("NA behind 4 extension headers", p, all4(i).icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(i).build(), rewritten(all4(o).icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(o).build())),
        case("NS behind 5 extension headers", p, all4(i).dest_opts().icmpv6_ns(PEER_IP6).sllao(i).build(), strict(translated(all4(o).dest_opts().icmpv6_ns(PEER_IP6).sllao(i).build()))),
        case("NS behind 4 extension headers and a Fragment header", p, all4(i).fragment(0, true).icmpv6_ns(PEER_IP6).sllao(i).build(), translated(all4(o).fragment(0, true).icmpv6_ns(PEER_IP6).sllao(i).build())),
        case("NS behind a Fragment header (first fragment)", p, v6(i).fragment(0, true).icmpv6_ns(PEER_IP6).sllao(i).build(), translated(v6(o).fragment(0, true).icmpv6_ns(PEER_IP6).sllao(i).build())),
        case("NS behind a Fragment header (atomic)", p, v6(i).fragment(0, false).icmpv6_ns(PEER_IP6).sllao(i).build(), translated(v6(o).fragment(0, false).icmpv6_ns(PEER_IP6).sllao(i).build())),
        case("NS behind Hop-by-Hop and a Fragment header", p, v6(i).hop_by_hop().fragment(0, true).icmpv6_ns(PEER_IP6).sllao(i).build(), translated(v6(o).hop_by_hop().fragment(0, true).icmpv6_ns(PEER_IP6).sllao(i).build())),
        case("payload length past the frame's end, behind a 40-byte Hop-by-Hop", p, payload_len(v6(i).ext(HOP_BY_HOP, 4).icmpv6_ns(PEER_IP6).sllao(i).build(), 80), drop(Malformed)),
        // Not ND.
        case("ICMPv6 echo request holding the inside MAC", p, v6(i).icmpv6(128, 0, &[[0, 1, 0, 1, 1, 1].as_slice(), &i].concat()), eth_only(v6(i).icmpv6(128, 0, &[[0, 1, 0, 1, 1, 1].as_slice(), &i].concat()), o)),
        case("ICMPv6 type 132 (below RS): untouched", p, v6(i).icmpv6(132, 0, &[[0, 0, 0, 0, 1, 1].as_slice(), &i].concat()), eth_only(v6(i).icmpv6(132, 0, &[[0, 0, 0, 0, 1, 1].as_slice(), &i].concat()), o)),
        case("ICMPv6 type 138 (above Redirect): untouched", p, v6(i).icmpv6(138, 0, &[[0; 40].as_slice(), &[1, 1], &i].concat()), eth_only(v6(i).icmpv6(138, 0, &[[0; 40].as_slice(), &[1, 1], &i].concat()), o)),
        case("UDP over IPv6 holding the inside MAC", p, v6(i).udp(546, 547, &i), eth_only(v6(i).udp(546, 547, &i), o)),
        case("UDP behind 5 extension headers", p, all4(i).dest_opts().udp(546, 547, &i), strict(eth_only(all4(i).dest_opts().udp(546, 547, &i), o))),
        // VLAN tags.
        case("NS 802.1Q", p, ns(i, Q).sllao(i).build(), rewritten(ns(o, Q).sllao(o).build())),
        case("NS 802.1ad", p, ns(i, AD).sllao(i).build(), rewritten(ns(o, AD).sllao(o).build())),
        case("NS QinQ", p, ns(i, QINQ).sllao(i).build(), rewritten(ns(o, QINQ).sllao(o).build())),
        case("NS 802.1Q in 802.1Q", p, ns(i, QQ).sllao(i).build(), rewritten(ns(o, QQ).sllao(o).build())),
        case("unsolicited NA 802.1ad in 802.1Q", p, una(i, Q_AD).tllao(i).build(), rewritten(una(o, Q_AD).tllao(o).build())),
        case("NS three tags: malformed from a VM port, else Ethernet only", p, ns(i, THREE).sllao(i).build(), strict(translated(ns(o, THREE).sllao(i).build()))),
        // Sources and option MACs.
        case("NS from an unbound source: SLLAO translated", p, ns(PEER, NO_TAGS).sllao(i).build(), rewritten(ns(PEER, NO_TAGS).sllao(o).build())),
        case("NS from a legacy host: untouched", p, ns(PEER, NO_TAGS).sllao(PEER).build(), pass(ns(PEER, NO_TAGS).sllao(PEER).build(), Passed)),
        case("NS with a spoofed source", p, ns(FREE, NO_TAGS).sllao(i).build(), spoof(rewritten(ns(FREE, NO_TAGS).sllao(o).build()))),
        case("NS SLLAO: free pool MAC", p, ns(i, NO_TAGS).sllao(FREE).build(), spoof(translated(ns(o, NO_TAGS).sllao(FREE).build()))),
        case("NS SLLAO: own outside MAC", p, ns(i, NO_TAGS).sllao(o).build(), spoof(translated(ns(o, NO_TAGS).sllao(o).build()))),
        case("NA TLLAO: another port's outside MAC", p, na(i).tllao(fo).build(), spoof(translated(na(o).tllao(fo).build()))),
        case("Redirect TLLAO: free pool MAC", p, redirect(i).tllao(FREE).build(), spoof(translated(redirect(o).tllao(FREE).build()))),
        case("NS spoofed SLLAO after a translated one", p, ns(i, NO_TAGS).sllao(i).sllao(FREE).build(), spoof(rewritten(ns(o, NO_TAGS).sllao(o).sllao(FREE).build()))),
        case("NS spoofed SLLAO after a zero-length option: malformed first", p, ns(i, NO_TAGS).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).sllao(FREE).build(), drop(Malformed)),
        case("NS SLLAO: multicast (in a pool, not bindable)", p, ns(i, NO_TAGS).sllao(MCAST).build(), translated(ns(o, NO_TAGS).sllao(MCAST).build())),
        case("NS SLLAO: zero (in a pool, not bindable)", p, ns(i, NO_TAGS).sllao(ZERO).build(), translated(ns(o, NO_TAGS).sllao(ZERO).build())),
        case("NS SLLAO: VM on another ifindex, untouched", p, ns(i, NO_TAGS).sllao(fi).build(), translated(ns(o, NO_TAGS).sllao(fi).build())),
        case("NS SLLAO: the second VM, translated on the uplink only", p, ns(i, NO_TAGS).sllao(i2).build(), if port { translated(ns(o, NO_TAGS).sllao(i2).build()) } else { rewritten(ns(o, NO_TAGS).sllao(o2).build()) }),
    ];
    if !port {
        v.push(case("NS with SLLAO whose translation sums alike: rewritten, checksum unchanged", p, ns(UP3, NO_TAGS).sllao(UP3).build(), rewritten(ns(UP3_OUT, NO_TAGS).sllao(UP3_OUT).build())));
    }
    v
}

#[rustfmt::skip]
fn nd_to_vm_cases(s: Side) -> Vec<Case> {
    let Side { prog: p, port, i, o, i2, o2, fo, .. } = s;
    let reflected = |uplink: Expect| if port { drop(Reflected) } else { uplink };
    // Each message to the Ethernet destination `d` from `e`.
    let ns = |d: Mac, e: Mac, tags: &[Tag]| Frame::eth(d, e).tags(tags).ipv6(PEER_LL, SN_VM).icmpv6_ns(VM_IP6);
    let na = |d: Mac, e: Mac, tags: &[Tag]| Frame::eth(d, e).tags(tags).ipv6(PEER_IP6, VM_IP6).icmpv6_na(NA_SOLICITED, PEER_IP6);
    let una = |e: Mac, tags: &[Tag]| Frame::eth(ALL_NODES_MAC, e).tags(tags).ipv6(VM_IP6, ALL_NODES).icmpv6_na(NA_OVERRIDE, VM_IP6);
    let dad = |e: Mac| Frame::eth(SN_VM_MAC, e).ipv6(UNSPECIFIED, SN_VM).icmpv6_ns(VM_IP6);
    let rs = |e: Mac| Frame::eth(ALL_ROUTERS_MAC, e).ipv6(VM_LL, ALL_ROUTERS).icmpv6_rs();
    let ra = |d: Mac| Frame::eth(d, PEER).ipv6(PEER_LL, ALL_NODES).icmpv6_ra();
    let redirect = |d: Mac| Frame::eth(d, PEER).ipv6(PEER_LL, VM_LL).icmpv6_redirect(PEER_LL, PEER_IP6);
    let v6 = |d: Mac| Frame::eth(d, PEER).ipv6(PEER_IP6, VM_IP6);
    let all4 = |d: Mac| v6(d).hop_by_hop().dest_opts().routing().dest_opts();
    let rewritten = |f: Vec<u8>| pass(f, NdRewritten);
    let translated = |f: Vec<u8>| pass(f, Translated);
    let passed = |f: Vec<u8>| pass(f, Passed);
    vec![
        case("NS to the VM: dst translated", p, ns(o, PEER, NO_TAGS).sllao(PEER).build(), translated(ns(i, PEER, NO_TAGS).sllao(PEER).build())),
        case("multicast NS from a peer: untouched", p, ns(SN_VM_MAC, PEER, NO_TAGS).sllao(PEER).build(), passed(ns(SN_VM_MAC, PEER, NO_TAGS).sllao(PEER).build())),
        case("NA to the VM", p, na(o, PEER, NO_TAGS).tllao(PEER).build(), translated(na(i, PEER, NO_TAGS).tllao(PEER).build())),
        case("NA holding the VM's outside MAC: TLLAO translated", p, na(o, PEER, NO_TAGS).tllao(o).build(), rewritten(na(i, PEER, NO_TAGS).tllao(i).build())),
        case("NS holding the VM's outside MAC in SLLAO and TLLAO", p, ns(SN_VM_MAC, PEER, NO_TAGS).sllao(o).tllao(o).build(), rewritten(ns(SN_VM_MAC, PEER, NO_TAGS).sllao(i).tllao(i).build())),
        case("RA: MTU and prefix before SLLAO holding the outside MAC", p, ra(ALL_NODES_MAC).mtu(1500).prefix(PREFIX, 64).sllao(o).build(), rewritten(ra(ALL_NODES_MAC).mtu(1500).prefix(PREFIX, 64).sllao(i).build())),
        case("RA from a router: untouched", p, ra(ALL_NODES_MAC).mtu(1500).prefix(PREFIX, 64).sllao(PEER).build(), passed(ra(ALL_NODES_MAC).mtu(1500).prefix(PREFIX, 64).sllao(PEER).build())),
        case("Redirect to the VM, TLLAO the outside MAC", p, redirect(o).tllao(o).build(), rewritten(redirect(i).tllao(i).build())),
        case("Redirect to the VM, TLLAO a router's", p, redirect(o).redirected(&[0x60; 40]).tllao(PEER).build(), translated(redirect(i).redirected(&[0x60; 40]).tllao(PEER).build())),
        case("RS from the outside MAC: not a reflection (NS and NA only)", p, rs(o).sllao(o).build(), rewritten(rs(o).sllao(i).build())),
        case("option holding the inside MAC: untouched", p, na(o, PEER, NO_TAGS).tllao(i).build(), translated(na(i, PEER, NO_TAGS).tllao(i).build())),
        case("option holding another port's outside MAC: untouched", p, na(o, PEER, NO_TAGS).tllao(fo).build(), translated(na(i, PEER, NO_TAGS).tllao(fo).build())),
        // The VM's own announcements coming back.
        case("NA from the outside MAC", p, una(o, NO_TAGS).tllao(o).build(), reflected(rewritten(una(o, NO_TAGS).tllao(i).build()))),
        case("NA from the outside MAC without option", p, una(o, NO_TAGS).build(), reflected(passed(una(o, NO_TAGS).build()))),
        case("NS from the outside MAC", p, ns(SN_VM_MAC, o, NO_TAGS).sllao(o).build(), reflected(rewritten(ns(SN_VM_MAC, o, NO_TAGS).sllao(i).build()))),
        case("DAD NS from the outside MAC", p, dad(o).build(), reflected(passed(dad(o).build()))),
        case("NA from the outside MAC in QinQ", p, una(o, QINQ).tllao(o).build(), reflected(rewritten(una(o, QINQ).tllao(i).build()))),
        case("NA from the outside MAC behind 4 extension headers", p, Frame::eth(ALL_NODES_MAC, o).ipv6(VM_IP6, ALL_NODES).hop_by_hop().dest_opts().routing().dest_opts().icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(o).build(), reflected(rewritten(Frame::eth(ALL_NODES_MAC, o).ipv6(VM_IP6, ALL_NODES).hop_by_hop().dest_opts().routing().dest_opts().icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(i).build()))),
        case("NA from the outside MAC in three tags: not parsed", p, una(o, THREE).tllao(o).build(), passed(una(o, THREE).tllao(o).build())),
        case("NA from the outside MAC behind a Fragment header: not parsed", p, Frame::eth(ALL_NODES_MAC, o).ipv6(VM_IP6, ALL_NODES).fragment(0, true).icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(o).build(), passed(Frame::eth(ALL_NODES_MAC, o).ipv6(VM_IP6, ALL_NODES).fragment(0, true).icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(o).build())),
        case("NA claiming the outside MAC from another source: not a reflection", p, una(PEER, NO_TAGS).tllao(o).build(), rewritten(una(PEER, NO_TAGS).tllao(i).build())),
        case("NA from the second VM: not a reflection", p, una(o2, NO_TAGS).tllao(o2).build(), if port { passed(una(o2, NO_TAGS).tllao(o2).build()) } else { rewritten(una(o2, NO_TAGS).tllao(i2).build()) }),
        case("malformed NA from the outside MAC: malformed first", p, payload_len(una(o, NO_TAGS).tllao(o).build(), 40), drop(Malformed)),
        case("NA from the outside MAC with a zero-length option: reflected first", p, una(o, NO_TAGS).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), reflected(drop(Malformed))),
        // Options, extension headers, tags.
        case("NA: 9 options, TLLAO 9th left alone", p, nonces(na(o, PEER, NO_TAGS), 8).tllao(o).build(), translated(nonces(na(i, PEER, NO_TAGS), 8).tllao(o).build())),
        case("NA: 9 options, TLLAO first", p, nonces(na(o, PEER, NO_TAGS).tllao(o), 8).build(), rewritten(nonces(na(i, PEER, NO_TAGS).tllao(i), 8).build())),
        case("NA: 9 options, the 9th of zero length", p, nonces(na(o, PEER, NO_TAGS).tllao(o), 7).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), rewritten(nonces(na(i, PEER, NO_TAGS).tllao(i), 7).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build())),
        case("NA: zero-length option", p, na(o, PEER, NO_TAGS).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).tllao(o).build(), drop(Malformed)),
        case("NA: option running past the message", p, na(o, PEER, NO_TAGS).raw(&[2, 2, o[0], o[1], o[2], o[3], o[4], o[5]]).build(), drop(Malformed)),
        case("NA: payload length past the frame's end", p, payload_len(na(o, PEER, NO_TAGS).tllao(o).build(), 33), drop(Malformed)),
        case("NA: message shorter than its fixed part", p, payload_len(na(o, PEER, NO_TAGS).build(), 23), drop(Malformed)),
        case("NA behind 4 extension headers", p, all4(o).icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(o).build(), rewritten(all4(i).icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(i).build())),
        case("NA behind 5 extension headers: untouched", p, all4(o).dest_opts().icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(o).build(), translated(all4(i).dest_opts().icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(o).build())),
        case("NA behind a Fragment header: untouched", p, v6(o).fragment(0, true).icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(o).build(), translated(v6(i).fragment(0, true).icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(o).build())),
        case("NA 802.1Q", p, na(o, PEER, Q).tllao(o).build(), rewritten(na(i, PEER, Q).tllao(i).build())),
        case("NA QinQ", p, na(o, PEER, QINQ).tllao(o).build(), rewritten(na(i, PEER, QINQ).tllao(i).build())),
        case("NA three tags: Ethernet only", p, na(o, PEER, THREE).tllao(o).build(), translated(na(i, PEER, THREE).tllao(o).build())),
        case("ICMPv6 echo reply holding the outside MAC", p, v6(o).icmpv6(129, 0, &[[0, 1, 0, 1, 1, 1].as_slice(), &o].concat()), translated(v6(i).icmpv6(129, 0, &[[0, 1, 0, 1, 1, 1].as_slice(), &o].concat()))),
    ]
    .into_iter()
    .chain((!port).then(|| case("NA with TLLAO whose translation sums alike: rewritten, checksum unchanged", p, na(UP3_OUT, PEER, NO_TAGS).tllao(UP3_OUT).build(), rewritten(na(UP3, PEER, NO_TAGS).tllao(UP3).build()))))
    .collect()
}

/// From a port: with port security the VM may only claim its inside MAC (Ethernet source, ARP
/// sender, SLLAO of RS/RA/NS, TLLAO of NA); without it, the spoof rule (`secured` false).
#[rustfmt::skip]
fn port_security_cases(p: Program, secured: bool) -> Vec<Case> {
    let (i, o) = (VM, VM_OUT);
    // With port security, then without.
    let sec = |on: Expect, off: Expect| if secured { on } else { off };
    let ps = || drop(PortSecurityDropped);
    let rs = |e: Mac| Frame::eth(ALL_ROUTERS_MAC, e).ipv6(VM_LL, ALL_ROUTERS).icmpv6_rs();
    let ra = |e: Mac| Frame::eth(ALL_NODES_MAC, e).ipv6(VM_LL, ALL_NODES).icmpv6_ra();
    let ns = |e: Mac| Frame::eth(SN_PEER_MAC, e).ipv6(VM_LL, SN_PEER).icmpv6_ns(PEER_IP6);
    let na = |e: Mac| Frame::eth(PEER, e).ipv6(VM_IP6, PEER_IP6).icmpv6_na(NA_SOLICITED | NA_OVERRIDE, VM_IP6);
    let redirect = |e: Mac| Frame::eth(PEER, e).ipv6(VM_LL, PEER_LL).icmpv6_redirect(PEER_LL, PEER_IP6);
    let rewritten = |f: Vec<u8>| pass(f, NdRewritten);
    let translated = |f: Vec<u8>| pass(f, Translated);
    let dhcp = |e: Mac| Frame::eth(BROADCAST, e).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, e);
    let mut v = vec![
        // Ethernet source.
        case("own inside MAC", p, ipv4_udp(PEER, i, NO_TAGS, 18), pass(ipv4_udp(PEER, o, NO_TAGS, 18), Translated)),
        case("legacy MAC source", p, ipv4_udp(PEER, PEER, NO_TAGS, 18), sec(ps(), pass(ipv4_udp(PEER, PEER, NO_TAGS, 18), Passed))),
        case("free pool MAC source", p, ipv4_udp(PEER, FREE, NO_TAGS, 18), sec(ps(), drop(SpoofDropped))),
        case("own outside MAC source", p, ipv4_udp(PEER, o, NO_TAGS, 18), sec(ps(), drop(SpoofDropped))),
        case("another port's inside MAC", p, ipv4_udp(PEER, OTHER, NO_TAGS, 18), sec(ps(), pass(ipv4_udp(PEER, OTHER, NO_TAGS, 18), Passed))),
        case("broadcast source", p, ipv4_udp(PEER, BROADCAST, NO_TAGS, 18), sec(ps(), pass(ipv4_udp(PEER, BROADCAST, NO_TAGS, 18), Passed))),
        case("multicast source", p, ipv4_udp(PEER, MCAST, NO_TAGS, 18), sec(ps(), pass(ipv4_udp(PEER, MCAST, NO_TAGS, 18), Passed))),
        case("zero source", p, ipv4_udp(PEER, ZERO, NO_TAGS, 18), sec(ps(), pass(ipv4_udp(PEER, ZERO, NO_TAGS, 18), Passed))),
        case("legacy MAC source, non-IP in QinQ", p, ethernet(PEER, PEER, QINQ, 0x88cc, &[7; 30]), sec(ps(), pass(ethernet(PEER, PEER, QINQ, 0x88cc, &[7; 30]), Passed))),
        case("legacy MAC source in three tags: the source first", p, ipv4_udp(PEER, PEER, THREE, 18), sec(ps(), drop(Malformed))),
        case("own inside MAC in three tags", p, ipv4_udp(PEER, i, THREE, 18), drop(Malformed)),
        // ARP and RARP.
        case("ARP request", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("RARP", p, rarp(i, NO_TAGS), pass(rarp(o, NO_TAGS), ArpRewritten)),
        case("ARP target: any MAC", p, arp(PEER, i, NO_TAGS, 2, i, VM_IP, PEER, PEER_IP), pass(arp(PEER, o, NO_TAGS, 2, o, VM_IP, PEER, PEER_IP), ArpRewritten)),
        case("ARP sender: a legacy MAC", p, arp(BROADCAST, i, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), sec(ps(), pass(arp(BROADCAST, o, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), Translated))),
        case("ARP sender: a free pool MAC", p, arp(BROADCAST, i, NO_TAGS, 1, FREE, VM_IP, ZERO, PEER_IP), sec(ps(), drop(SpoofDropped))),
        case("ARP sender: another port's inside MAC", p, arp(BROADCAST, i, QINQ, 1, OTHER, VM_IP, ZERO, PEER_IP), sec(ps(), pass(arp(BROADCAST, o, QINQ, 1, OTHER, VM_IP, ZERO, PEER_IP), Translated))),
        case("ARP sender: zero", p, arp(BROADCAST, i, NO_TAGS, 1, ZERO, VM_IP, ZERO, PEER_IP), sec(ps(), pass(arp(BROADCAST, o, NO_TAGS, 1, ZERO, VM_IP, ZERO, PEER_IP), Translated))),
        case("ARP cut short", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, ZERO, PEER_IP)[..41].to_vec(), drop(Malformed)),
        // ND.
        case("NS with SLLAO", p, ns(i).sllao(i).build(), rewritten(ns(o).sllao(o).build())),
        case("NS SLLAO: a legacy MAC", p, ns(i).sllao(PEER).build(), sec(ps(), translated(ns(o).sllao(PEER).build()))),
        case("NS SLLAO: a free pool MAC", p, ns(i).sllao(FREE).build(), sec(ps(), drop(SpoofDropped))),
        case("NS SLLAO: own outside MAC", p, ns(i).sllao(o).build(), sec(ps(), drop(SpoofDropped))),
        case("NS SLLAO: multicast", p, ns(i).sllao(MCAST).build(), sec(ps(), translated(ns(o).sllao(MCAST).build()))),
        case("NS SLLAO: own, then a legacy MAC's", p, ns(i).sllao(i).sllao(PEER).build(), sec(ps(), rewritten(ns(o).sllao(o).sllao(PEER).build()))),
        case("NS SLLAO: a legacy MAC behind Hop-by-Hop", p, Frame::eth(SN_PEER_MAC, i).ipv6(VM_LL, SN_PEER).hop_by_hop().icmpv6_ns(PEER_IP6).sllao(PEER).build(), sec(ps(), translated(Frame::eth(SN_PEER_MAC, o).ipv6(VM_LL, SN_PEER).hop_by_hop().icmpv6_ns(PEER_IP6).sllao(PEER).build()))),
        case("NS SLLAO: a legacy MAC after a zero-length option: malformed first", p, ns(i).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).sllao(PEER).build(), drop(Malformed)),
        case("NS SLLAO: a legacy MAC before a zero-length option", p, ns(i).sllao(PEER).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), sec(ps(), drop(Malformed))),
        case("NS TLLAO (not a claim): a legacy MAC", p, ns(i).tllao(PEER).build(), translated(ns(o).tllao(PEER).build())),
        case("DAD NS", p, Frame::eth(SN_VM_MAC, i).ipv6(UNSPECIFIED, SN_VM).icmpv6_ns(VM_IP6).build(), translated(Frame::eth(SN_VM_MAC, o).ipv6(UNSPECIFIED, SN_VM).icmpv6_ns(VM_IP6).build())),
        case("RS SLLAO: a legacy MAC", p, rs(i).sllao(PEER).build(), sec(ps(), translated(rs(o).sllao(PEER).build()))),
        case("RA SLLAO after MTU and prefix: a legacy MAC", p, ra(i).mtu(1500).prefix(PREFIX, 64).sllao(PEER).build(), sec(ps(), translated(ra(o).mtu(1500).prefix(PREFIX, 64).sllao(PEER).build()))),
        case("NA with TLLAO", p, na(i).tllao(i).build(), rewritten(na(o).tllao(o).build())),
        case("NA TLLAO: a legacy MAC", p, na(i).tllao(PEER).build(), sec(ps(), translated(na(o).tllao(PEER).build()))),
        case("NA TLLAO: another port's outside MAC", p, na(i).tllao(OTHER_OUT).build(), sec(ps(), drop(SpoofDropped))),
        case("NA SLLAO (not a claim): a legacy MAC", p, na(i).sllao(PEER).build(), translated(na(o).sllao(PEER).build())),
        case("NA without option", p, na(i).build(), translated(na(o).build())),
        case("Redirect TLLAO: a router's MAC, allowed", p, redirect(i).tllao(PEER).build(), translated(redirect(o).tllao(PEER).build())),
        case("Redirect SLLAO: a router's MAC, allowed", p, redirect(i).sllao(PEER).build(), translated(redirect(o).sllao(PEER).build())),
        case("Redirect TLLAO: own inside MAC", p, redirect(i).redirected(&[0x60; 40]).tllao(i).build(), rewritten(redirect(o).redirected(&[0x60; 40]).tllao(o).build())),
        case("Redirect TLLAO: a free pool MAC", p, redirect(i).tllao(FREE).build(), drop(SpoofDropped)),
        case("NS 9 options", p, nonces(ns(i).sllao(i), 8).build(), drop(Malformed)),
        // DHCP from the VM: the Ethernet source is checked first.
        case("DHCP request", p, dhcp(i).build(), pass(set(dhcp(i).broadcast().build(), 6, &o), DhcpRewritten)),
        case("DHCP request from a legacy MAC", p, dhcp(PEER).build(), sec(ps(), pass(dhcp(PEER).build(), Passed))),
    ];
    for (what, at, bytes) in ODD_ARP {
        v.push(case(format!("ARP {what}: unreadable"), p, set(arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, i, PEER_IP), 14 + at, bytes), sec(ps(), pass(set(arp(BROADCAST, o, NO_TAGS, 1, i, VM_IP, i, PEER_IP), 14 + at, bytes), Translated))));
        v.push(case(format!("RARP QinQ {what}: unreadable"), p, set(rarp(i, QINQ), 22 + at, bytes), sec(ps(), pass(set(set(rarp(i, QINQ), 22 + at, bytes), 6, &o), Translated))));
    }
    v
}

/// The checksum of a UDP/IPv4 frame (network order), as it sits in the frame.
fn udp_checksum(frame: &[u8]) -> u16 {
    match mat_tests::frames::find_l4(frame) {
        Some(mat_tests::frames::L4::Udp4 { at, .. }) => {
            u16::from_be_bytes([frame[at + 6], frame[at + 7]])
        }
        other => panic!("not UDP over IPv4: {other:?}"),
    }
}

/// A transaction id that makes the DHCP request `dhcp(xid)` sum to a checksum of zero (sent as
/// 0xffff) once its broadcast flag is set.
fn xid_for_zero_checksum(dhcp: impl Fn(u32) -> Vec<u8>) -> u32 {
    let base = 0x3903_0000u32;
    let c = u32::from(udp_checksum(&dhcp(base)));
    // The checksum is the one's complement of the sum; adding it to a word of the message makes the
    // sum all ones, and the checksum zero.
    let mut w = c;
    w = (w & 0xffff) + (w >> 16);
    let xid = base | w;
    assert_eq!(
        udp_checksum(&dhcp(xid)),
        0xffff,
        "a computed zero goes out as 0xffff"
    );
    xid
}

#[rustfmt::skip]
fn dhcp_from_vm_cases(s: Side, translate: bool) -> Vec<Case> {
    let Side { prog: p, port, i, o, i2, o2, .. } = s;
    let strict = |uplink: Expect| if port { drop(Malformed) } else { uplink };
    // Default mode, then chaddr-translating mode.
    let mode = |default: Expect, translating: Expect| if translate { translating } else { default };
    let req = |e: Mac, tags: &[Tag], chaddr: Mac| Frame::eth(BROADCAST, e).tags(tags).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, chaddr);
    let opt = |e: Mac, options: &[u8], chaddr: Mac| Frame::eth(BROADCAST, e).ipv4(DHCP_ANY, DHCP_BCAST).options(options).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, chaddr);
    let frag = |e: Mac, offset: u16, more: bool| Frame::eth(BROADCAST, e).ipv4(DHCP_ANY, DHCP_BCAST).fragment(offset, more).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, i);
    let ports = |e: Mac, from: u16, to: u16| Frame::eth(BROADCAST, e).ipv4(DHCP_ANY, DHCP_BCAST).udp(from, to).dhcp(BOOTREQUEST, i);
    let nocsum = |e: Mac, chaddr: Mac| Frame::eth(BROADCAST, e).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).no_checksum().dhcp(BOOTREQUEST, chaddr);
    let dhcp = |f: Vec<u8>| pass(f, DhcpRewritten);
    let translated = |f: Vec<u8>| pass(f, Translated);
    let zero_xid = xid_for_zero_checksum(|xid| req(o, NO_TAGS, i).xid(xid).broadcast().build());
    vec![
        case("request", p, req(i, NO_TAGS, i).build(), mode(dhcp(req(o, NO_TAGS, i).broadcast().build()), dhcp(req(o, NO_TAGS, o).build()))),
        case("request with IPv4 options (IHL 6)", p, opt(i, &RA_OPTION, i).build(), mode(dhcp(opt(o, &RA_OPTION, i).broadcast().build()), dhcp(opt(o, &RA_OPTION, o).build()))),
        case("request with 40 bytes of IPv4 options (IHL 15)", p, opt(i, &FULL_OPTIONS, i).build(), mode(dhcp(opt(o, &FULL_OPTIONS, i).broadcast().build()), dhcp(opt(o, &FULL_OPTIONS, o).build()))),
        case("request without UDP checksum: stays zero", p, nocsum(i, i).build(), mode(dhcp(nocsum(o, i).broadcast().build()), dhcp(nocsum(o, o).build()))),
        case("request with the broadcast flag already set", p, req(i, NO_TAGS, i).broadcast().build(), mode(translated(req(o, NO_TAGS, i).broadcast().build()), dhcp(req(o, NO_TAGS, o).broadcast().build()))),
        case("request with other flags set", p, req(i, NO_TAGS, i).flags(0x0001).build(), mode(dhcp(req(o, NO_TAGS, i).flags(0x8001).build()), dhcp(req(o, NO_TAGS, o).flags(0x0001).build()))),
        case("request whose new checksum sums to zero: 0xffff", p, req(i, NO_TAGS, i).xid(zero_xid).build(), mode(dhcp(req(o, NO_TAGS, i).xid(zero_xid).broadcast().build()), dhcp(req(o, NO_TAGS, o).xid(zero_xid).build()))),
        case("request with DF set (not a fragment)", p, req(i, NO_TAGS, i).build(), mode(dhcp(req(o, NO_TAGS, i).broadcast().build()), dhcp(req(o, NO_TAGS, o).build()))),
        case("request, first fragment (MF)", p, frag(i, 0, true).build(), translated(frag(o, 0, true).build())),
        case("request, last fragment (offset)", p, frag(i, 1, false).build(), translated(frag(o, 1, false).build())),
        case("request, fragment offset 0x1000", p, frag(i, 0x1000, false).build(), translated(frag(o, 0x1000, false).build())),
        case("request 802.1Q", p, req(i, Q, i).build(), mode(dhcp(req(o, Q, i).broadcast().build()), dhcp(req(o, Q, o).build()))),
        case("request QinQ", p, req(i, QINQ, i).build(), mode(dhcp(req(o, QINQ, i).broadcast().build()), dhcp(req(o, QINQ, o).build()))),
        case("request in three tags", p, req(i, THREE, i).build(), strict(translated(req(o, THREE, i).build()))),
        case("request from an unbound source: untouched", p, req(PEER, NO_TAGS, i).build(), pass(req(PEER, NO_TAGS, i).build(), Passed)),
        case("request for a legacy chaddr", p, req(i, NO_TAGS, PEER).build(), mode(dhcp(req(o, NO_TAGS, PEER).broadcast().build()), translated(req(o, NO_TAGS, PEER).build()))),
        case("request for the second VM's chaddr", p, req(i, NO_TAGS, i2).build(), mode(dhcp(req(o, NO_TAGS, i2).broadcast().build()), if port { translated(req(o, NO_TAGS, i2).build()) } else { dhcp(req(o, NO_TAGS, o2).build()) })),
        case("request for the outside chaddr", p, req(i, NO_TAGS, o).build(), mode(dhcp(req(o, NO_TAGS, o).broadcast().build()), translated(req(o, NO_TAGS, o).build()))),
        case("reply from the VM (op 2)", p, Frame::eth(BROADCAST, i).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREPLY, i).build(), translated(Frame::eth(BROADCAST, o).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREPLY, i).build())),
        case("request 68 -> 68", p, ports(i, 68, 68).build(), translated(ports(o, 68, 68).build())),
        case("request 67 -> 67 (a relay)", p, ports(i, 67, 67).build(), translated(ports(o, 67, 67).build())),
        case("request 67 -> 68", p, ports(i, 67, 68).build(), translated(ports(o, 67, 68).build())),
        case("request with htype 6", p, req(i, NO_TAGS, i).htype(6).build(), translated(req(o, NO_TAGS, i).htype(6).build())),
        case("request with hlen 16", p, req(i, NO_TAGS, i).hlen(16).build(), translated(req(o, NO_TAGS, i).hlen(16).build())),
        case("request over TCP: untouched", p, set(req(i, NO_TAGS, i).build(), 23, &[6]), translated(set(req(o, NO_TAGS, i).build(), 23, &[6]))),
        case("request with IHL 4: untouched", p, set(req(i, NO_TAGS, i).build(), 14, &[0x44]), translated(set(req(o, NO_TAGS, i).build(), 14, &[0x44]))),
        case("request in an IPv6 version nibble: untouched", p, set(req(i, NO_TAGS, i).build(), 14, &[0x65]), translated(set(req(o, NO_TAGS, i).build(), 14, &[0x65]))),
    ]
}

#[rustfmt::skip]
fn dhcp_to_vm_cases(s: Side, translate: bool) -> Vec<Case> {
    let Side { prog: p, i, o, fo, .. } = s;
    let mode = |default: Expect, translating: Expect| if translate { translating } else { default };
    let reply = |d: Mac, tags: &[Tag], chaddr: Mac| Frame::eth(d, PEER).tags(tags).ipv4(SERVER_IP, DHCP_BCAST).udp(DHCP_SERVER, DHCP_CLIENT).dhcp(BOOTREPLY, chaddr);
    let opt = |d: Mac, chaddr: Mac| Frame::eth(d, PEER).ipv4(SERVER_IP, DHCP_BCAST).options(&RA_OPTION).udp(DHCP_SERVER, DHCP_CLIENT).dhcp(BOOTREPLY, chaddr);
    let nocsum = |d: Mac, chaddr: Mac| Frame::eth(d, PEER).ipv4(SERVER_IP, DHCP_BCAST).udp(DHCP_SERVER, DHCP_CLIENT).no_checksum().dhcp(BOOTREPLY, chaddr);
    let frag = |d: Mac| Frame::eth(d, PEER).ipv4(SERVER_IP, DHCP_BCAST).fragment(0, true).udp(DHCP_SERVER, DHCP_CLIENT).dhcp(BOOTREPLY, o);
    let dhcp = |f: Vec<u8>| pass(f, DhcpRewritten);
    let translated = |f: Vec<u8>| pass(f, Translated);
    let passed = |f: Vec<u8>| pass(f, Passed);
    vec![
        case("reply to the VM", p, reply(o, NO_TAGS, o).build(), mode(translated(reply(i, NO_TAGS, o).build()), dhcp(reply(i, NO_TAGS, i).build()))),
        case("broadcast reply", p, reply(BROADCAST, NO_TAGS, o).broadcast().build(), mode(passed(reply(BROADCAST, NO_TAGS, o).broadcast().build()), dhcp(reply(BROADCAST, NO_TAGS, i).broadcast().build()))),
        case("reply with IPv4 options", p, opt(o, o).build(), mode(translated(opt(i, o).build()), dhcp(opt(i, i).build()))),
        case("reply without UDP checksum: stays zero", p, nocsum(o, o).build(), mode(translated(nocsum(i, o).build()), dhcp(nocsum(i, i).build()))),
        case("reply QinQ", p, reply(o, QINQ, o).build(), mode(translated(reply(i, QINQ, o).build()), dhcp(reply(i, QINQ, i).build()))),
        case("reply in three tags: Ethernet only", p, reply(o, THREE, o).build(), translated(reply(i, THREE, o).build())),
        case("reply, a fragment: untouched", p, frag(o).build(), translated(frag(i).build())),
        case("reply for a legacy chaddr", p, reply(BROADCAST, NO_TAGS, PEER).build(), passed(reply(BROADCAST, NO_TAGS, PEER).build())),
        case("reply for another port's outside chaddr", p, reply(BROADCAST, NO_TAGS, fo).build(), passed(reply(BROADCAST, NO_TAGS, fo).build())),
        case("reply for the inside chaddr: untouched", p, reply(o, NO_TAGS, i).build(), translated(reply(i, NO_TAGS, i).build())),
        case("request towards the VM (op 1, 68 -> 67)", p, Frame::eth(o, PEER).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, o).build(), translated(Frame::eth(i, PEER).ipv4(DHCP_ANY, DHCP_BCAST).udp(DHCP_CLIENT, DHCP_SERVER).dhcp(BOOTREQUEST, o).build())),
        case("op 1 on 67 -> 68", p, Frame::eth(o, PEER).ipv4(SERVER_IP, DHCP_BCAST).udp(DHCP_SERVER, DHCP_CLIENT).dhcp(BOOTREQUEST, o).build(), translated(Frame::eth(i, PEER).ipv4(SERVER_IP, DHCP_BCAST).udp(DHCP_SERVER, DHCP_CLIENT).dhcp(BOOTREQUEST, o).build())),
        case("reply with hlen 16", p, reply(o, NO_TAGS, o).hlen(16).build(), translated(reply(i, NO_TAGS, o).hlen(16).build())),
    ]
}

/// Every prefix of `input`, from 0 bytes to all of it: below `refused` bytes BPF_PROG_TEST_RUN
/// refuses the frame; below `complete` bytes the headers the rules need are cut short
/// (Malformed); from `complete` bytes on the frame gets `full`'s verdict, with `full`'s frame cut
/// to the same length.
#[expect(
    clippy::needless_pass_by_value,
    reason = "each case table takes its expectation whole"
)]
fn truncations(
    name: &str,
    prog: Program,
    input: &[u8],
    refused: usize,
    complete: usize,
    full: Expect,
) -> Vec<Case> {
    (0..=input.len())
        .map(|len| {
            let expect = if len < refused {
                Expect::Refused
            } else if len < complete {
                drop(Malformed)
            } else {
                match &full {
                    Expect::Pass(f, outcome) => pass(f[..len].to_vec(), *outcome),
                    other => other.clone(),
                }
            };
            case(
                format!("{name} cut to {len} bytes"),
                prog,
                input[..len].to_vec(),
                expect,
            )
        })
        .collect()
}

/// The shortest frames BPF_PROG_TEST_RUN accepts on this kernel: nothing shorter than an Ethernet
/// header for either program type, and for TC (an skb), no frame of ethertype IPv4 or IPv6 shorter
/// than that header (34 or 54 bytes).
fn refused_below(prog: Program, input: &[u8]) -> usize {
    match (is_xdp(prog), [input[12], input[13]]) {
        (false, [0x08, 0x00]) => 34,
        (false, [0x86, 0xdd]) => 54,
        _ => 14,
    }
}

#[rustfmt::skip]
fn from_vm_truncations(s: Side) -> Vec<Case> {
    let Side { prog: p, port, i, o, .. } = s;
    let arp_in = |tags| arp(BROADCAST, i, tags, 1, i, VM_IP, ZERO, PEER_IP);
    let arp_out = |tags| arp(BROADCAST, o, tags, 1, o, VM_IP, ZERO, PEER_IP);
    let ipv4_in = |tags| ipv4_udp(PEER, i, tags, 8);
    let spoofed = arp(BROADCAST, FREE, QINQ, 1, FREE, VM_IP, ZERO, PEER_IP);
    let r = |input: &[u8]| refused_below(p, input);
    let mut v = Vec::new();
    v.extend(truncations("ARP", p, &arp_in(NO_TAGS), 14, 42, pass(arp_out(NO_TAGS), ArpRewritten)));
    v.extend(truncations("802.1Q ARP", p, &arp_in(Q), 14, 46, pass(arp_out(Q), ArpRewritten)));
    v.extend(truncations("QinQ ARP", p, &arp_in(QINQ), 14, 50, pass(arp_out(QINQ), ArpRewritten)));
    v.extend(truncations("IPv4", p, &ipv4_in(NO_TAGS), r(&ipv4_in(NO_TAGS)), 14, pass(ipv4_udp(PEER, o, NO_TAGS, 8), Translated)));
    v.extend(truncations("802.1Q IPv4", p, &ipv4_in(Q), 14, 18, pass(ipv4_udp(PEER, o, Q, 8), Translated)));
    // An NS with SLLAO: any frame shorter than the IPv6 payload length says is malformed.
    let ns = |e: Mac, tags, sll: Mac| Frame::eth(SN_PEER_MAC, e).tags(tags).ipv6(VM_LL, SN_PEER).icmpv6_ns(PEER_IP6).sllao(sll).build();
    v.extend(truncations("NS with SLLAO", p, &ns(i, NO_TAGS, i), r(&ns(i, NO_TAGS, i)), 86, pass(ns(o, NO_TAGS, o), NdRewritten)));
    v.extend(truncations("QinQ NS with SLLAO", p, &ns(i, QINQ, i), 14, 94, pass(ns(o, QINQ, o), NdRewritten)));
    let hbh = |e: Mac, sll: Mac| Frame::eth(SN_PEER_MAC, e).ipv6(VM_LL, SN_PEER).hop_by_hop().icmpv6_ns(PEER_IP6).sllao(sll).build();
    v.extend(truncations("Hop-by-Hop NS with SLLAO", p, &hbh(i, i), r(&hbh(i, i)), 94, pass(hbh(o, o), NdRewritten)));
    if port {
        // The source is checked before any tag is read: a spoof at every length.
        v.extend(truncations("spoofed QinQ ARP", p, &spoofed, 14, 14, drop(SpoofDropped)));
    } else {
        v.extend(truncations("pool-sourced QinQ ARP", p, &spoofed, 14, 50, pass(spoofed.clone(), Passed)));
    }
    v
}

#[rustfmt::skip]
fn to_vm_truncations(s: Side) -> Vec<Case> {
    let Side { prog: p, port, i, o, .. } = s;
    let arp_in = |tags| arp(o, PEER, tags, 2, PEER, PEER_IP, o, VM_IP);
    let arp_out = |tags| arp(i, PEER, tags, 2, PEER, PEER_IP, i, VM_IP);
    let ipv4_in = |tags| ipv4_udp(o, PEER, tags, 8);
    let reflection = arp(BROADCAST, o, QINQ, 2, o, VM_IP, o, VM_IP);
    let r = |input: &[u8]| refused_below(p, input);
    let mut v = Vec::new();
    v.extend(truncations("ARP", p, &arp_in(NO_TAGS), 14, 42, pass(arp_out(NO_TAGS), ArpRewritten)));
    v.extend(truncations("802.1Q ARP", p, &arp_in(Q), 14, 46, pass(arp_out(Q), ArpRewritten)));
    v.extend(truncations("QinQ ARP", p, &arp_in(QINQ), 14, 50, pass(arp_out(QINQ), ArpRewritten)));
    v.extend(truncations("IPv4", p, &ipv4_in(NO_TAGS), r(&ipv4_in(NO_TAGS)), 14, pass(ipv4_udp(i, PEER, NO_TAGS, 8), Translated)));
    v.extend(truncations("802.1Q IPv4", p, &ipv4_in(Q), 14, 18, pass(ipv4_udp(i, PEER, Q, 8), Translated)));
    let whole = if port { drop(Reflected) } else { pass(arp(BROADCAST, o, QINQ, 2, o, VM_IP, i, VM_IP), ArpRewritten) };
    v.extend(truncations("reflected QinQ ARP", p, &reflection, 14, 50, whole));
    let na = |d: Mac, tags, tll: Mac| Frame::eth(d, PEER).tags(tags).ipv6(PEER_IP6, VM_IP6).icmpv6_na(NA_SOLICITED, PEER_IP6).tllao(tll).build();
    v.extend(truncations("NA with TLLAO", p, &na(o, NO_TAGS, o), r(&na(o, NO_TAGS, o)), 86, pass(na(i, NO_TAGS, i), NdRewritten)));
    v.extend(truncations("802.1Q NA with TLLAO", p, &na(o, Q, o), 14, 90, pass(na(i, Q, i), NdRewritten)));
    let own = Frame::eth(ALL_NODES_MAC, o).vlan(dot1q(10)).ipv6(VM_IP6, ALL_NODES).icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(o).build();
    let whole = if port { drop(Reflected) } else { pass(Frame::eth(ALL_NODES_MAC, o).vlan(dot1q(10)).ipv6(VM_IP6, ALL_NODES).icmpv6_na(NA_OVERRIDE, VM_IP6).tllao(i).build(), NdRewritten) };
    v.extend(truncations("reflected 802.1Q NA", p, &own, 14, 90, whole));
    v
}

type Fds = HashMap<Program, OwnedFd>;

fn program_fds(dp: &mut Dataplane) -> Fds {
    Program::ALL
        .into_iter()
        .map(|p| {
            let fd = dp.program(p).unwrap().as_fd().try_clone_to_owned();
            (p, fd.unwrap())
        })
        .collect()
}

/// Runs one case; a description of what went wrong, if anything.
fn check(dp: &Dataplane, fds: &Fds, c: &Case) -> Option<String> {
    let before = dp.counters().unwrap();
    let result = test_run::run(&fds[&c.prog], &c.input, 1);
    let delta = dp.counters().unwrap().since(&before).nonzero();
    let mut errors = Vec::new();
    let (expected_delta, retval, frame) = match &c.expect {
        Expect::Refused => {
            match &result {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                other => errors.push(format!("expected EINVAL from the test run, got {other:?}")),
            }
            (vec![], None, None)
        }
        Expect::Pass(frame, outcome) => {
            let retval = if is_xdp(c.prog) { XDP_PASS } else { TC_ACT_OK };
            (vec![(hook(c.prog), *outcome, 1)], Some(retval), Some(frame))
        }
        Expect::Drop(outcome) => {
            let retval = if is_xdp(c.prog) {
                XDP_DROP
            } else {
                TC_ACT_SHOT
            };
            (vec![(hook(c.prog), *outcome, 1)], Some(retval), None)
        }
    };
    if delta != expected_delta {
        errors.push(format!(
            "counters: expected {expected_delta:?}, got {delta:?}"
        ));
    }
    if let Some(retval) = retval {
        match &result {
            Err(e) => errors.push(format!("test run failed: {e}")),
            Ok(out) => {
                if out.retval != retval {
                    errors.push(format!("verdict: expected {retval}, got {}", out.retval));
                }
                if frame.is_some_and(|f| &out.frame != f) {
                    errors.push(format!(
                        "frame:\n      input    {}\n      expected {}\n      actual   {}",
                        hex(&c.input),
                        hex(frame.unwrap()),
                        hex(&out.frame)
                    ));
                }
                // A rewritten ND or DHCP frame: its checksum, recomputed from scratch.
                if matches!(c.expect, Expect::Pass(_, NdRewritten | DhcpRewritten))
                    && let Err(e) = verify_checksum(&out.frame)
                {
                    errors.push(format!("checksum of the output frame: {e}"));
                }
            }
        }
    }
    (!errors.is_empty()).then(|| errors.join("\n    "))
}

fn run_table(dp: &Dataplane, fds: &Fds, cases: &[Case]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let e = check(dp, fds, c)?;
            Some(format!("{} / {}:\n    {e}", c.prog.name(), c.name))
        })
        .collect();
    println!("{} cases, {} failed", cases.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_frames() {
    let mut dp = setup();
    let fds = program_fds(&mut dp);
    let mut cases = Vec::new();
    for s in from_vm_sides() {
        cases.extend(from_vm_cases(s));
    }
    for s in to_vm_sides() {
        cases.extend(to_vm_cases(s));
    }
    run_table(&dp, &fds, &cases);
}

/// Neighbor Discovery through every program: every type, option layouts, extension headers,
/// fragments, VLAN tags, spoofs and reflections.
#[test]
fn nd_frames() {
    let mut dp = setup();
    let fds = program_fds(&mut dp);
    let mut cases = Vec::new();
    for s in from_vm_sides() {
        cases.extend(nd_from_vm_cases(s));
    }
    for s in to_vm_sides() {
        cases.extend(nd_to_vm_cases(s));
    }
    run_table(&dp, &fds, &cases);
}

/// The port's binding with port security, then the same frames without it (the spoof rule).
#[test]
fn port_security_frames() {
    let mut dp = setup();
    let fds = program_fds(&mut dp);
    dp.bind(IF, VM, VM_OUT, BINDING_PORT_SECURITY).unwrap();
    let secured: Vec<Case> = [Program::PortFromVm, Program::PortFromVmXdp]
        .into_iter()
        .flat_map(|p| port_security_cases(p, true))
        .collect();
    run_table(&dp, &fds, &secured);
    dp.bind(IF, VM, VM_OUT, 0).unwrap();
    let open: Vec<Case> = [Program::PortFromVm, Program::PortFromVmXdp]
        .into_iter()
        .flat_map(|p| port_security_cases(p, false))
        .collect();
    run_table(&dp, &fds, &open);
}

/// DHCPv4 through every program, in the default mode (broadcast flag), then translating chaddr.
#[test]
fn dhcp_frames() {
    let mut dp = setup();
    let fds = program_fds(&mut dp);
    for translate in [false, true] {
        dp.set_settings(if translate { SETTING_DHCP_TRANSLATE } else { 0 })
            .unwrap();
        let mut cases = Vec::new();
        for s in from_vm_sides() {
            cases.extend(dhcp_from_vm_cases(s, translate));
        }
        for s in to_vm_sides() {
            cases.extend(dhcp_to_vm_cases(s, translate));
        }
        println!("chaddr {}:", if translate { "translated" } else { "kept" });
        run_table(&dp, &fds, &cases);
    }
}

/// Every prefix of an ARP, 802.1Q ARP, QinQ ARP, IPv4 and 802.1Q IPv4 frame, of an NS with SLLAO
/// (untagged, QinQ, behind Hop-by-Hop) and an NA with TLLAO, and of a spoofed or reflected QinQ ARP
/// and a reflected NA, through every program. The lengths BPF_PROG_TEST_RUN refuses are asserted
/// as refusals (see [`refused_below`]).
#[test]
fn truncated_frames() {
    let mut dp = setup();
    let fds = program_fds(&mut dp);
    let mut cases = Vec::new();
    for s in from_vm_sides() {
        cases.extend(from_vm_truncations(s));
    }
    for s in to_vm_sides() {
        cases.extend(to_vm_truncations(s));
    }
    run_table(&dp, &fds, &cases);
}

/// Drains the event ring buffer (an aya `RingBuf`) into a Vec.
macro_rules! events {
    ($ring:expr) => {{
        let mut v: Vec<Event> = Vec::new();
        while let Some(item) = $ring.next() {
            assert_eq!(item.len(), std::mem::size_of::<Event>());
            // SAFETY: `Event` is plain repr(C) data of exactly this size.
            v.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        v
    }};
}

fn event(kind: EventKind, ifindex: u32, mac: Mac, ipv4: [u8; 4]) -> Event {
    Event {
        kind: kind as u32,
        ifindex,
        mac,
        _pad: [0; 2],
        ipv4,
        ipv6: [0; 16],
    }
}

/// Runs a frame and checks its counter (the frame tables check the rest).
fn run_counted(dp: &Dataplane, fds: &Fds, prog: Program, frame: &[u8], outcome: Outcome) {
    let before = dp.counters().unwrap();
    test_run::run(&fds[&prog], frame, 1).unwrap();
    assert_eq!(
        dp.counters().unwrap().since(&before).nonzero(),
        vec![(hook(prog), outcome, 1)],
        "{}: {}",
        prog.name(),
        hex(frame)
    );
}

fn event6(ifindex: u32, mac: Mac, ipv6: Ipv6Addr) -> Event {
    Event {
        ipv6,
        ..event(EventKind::Learned6, ifindex, mac, NO_IP)
    }
}

#[rustfmt::skip]
#[test]
fn active_event_on_first_frame_only() {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, BINDING_ANNOUNCE).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, BINDING_ANNOUNCE).unwrap();
    dp.bind(UPLINK, UP2, UP2_OUT, 0).unwrap();
    dp.set_pools(&pools()).unwrap();
    let fds = program_fds(&mut dp);
    let mut ring = dp.take_events().unwrap();
    let flags = |dp: &Dataplane, ifindex, mac| {
        let key = BindingKey::new(ifindex, mac);
        dp.bindings().unwrap().into_iter().find(|(k, _)| *k == key).unwrap().1.flags
    };

    // A frame to the VM is not its first frame.
    run_counted(&dp, &fds, Program::PortToVm, &ipv4_udp(VM_OUT, PEER, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![]);
    assert_eq!(flags(&dp, IF, VM), BINDING_ANNOUNCE);
    // A binding without the flag raises nothing.
    run_counted(&dp, &fds, Program::UplinkOut, &ipv4_udp(PEER, UP2, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![]);
    // Nor does a frame from another source on the port.
    run_counted(&dp, &fds, Program::PortFromVm, &ipv4_udp(PEER, PEER, NO_TAGS, 18), Passed);
    assert_eq!(events!(ring), vec![]);
    assert_eq!(flags(&dp, IF, VM), BINDING_ANNOUNCE);

    // The first frame from the VM raises Active and clears the flag; later ones raise nothing.
    run_counted(&dp, &fds, Program::PortFromVm, &ipv4_udp(PEER, VM, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![event(EventKind::Active, IF, VM, NO_IP)]);
    assert_eq!(flags(&dp, IF, VM), 0);
    run_counted(&dp, &fds, Program::PortFromVm, &ipv4_udp(PEER, VM, NO_TAGS, 18), Translated);
    run_counted(&dp, &fds, Program::PortFromVmXdp, &ipv4_udp(PEER, VM, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![]);

    // The uplink's bindings (ifindex 0).
    run_counted(&dp, &fds, Program::UplinkOut, &ipv4_udp(PEER, UP, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![event(EventKind::Active, UPLINK, UP, NO_IP)]);
    run_counted(&dp, &fds, Program::UplinkOut, &ipv4_udp(PEER, UP, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![]);

    // A second bind on the port replaces the first (one binding per port); the XDP port program
    // raises Active too, from an ND message.
    dp.bind(IF, VM2, VM2_OUT, BINDING_ANNOUNCE).unwrap();
    run_counted(&dp, &fds, Program::PortFromVmXdp, &ipv4_udp(PEER, VM, NO_TAGS, 18), Passed);
    assert_eq!(events!(ring), vec![]);
    let rs = |e: Mac| Frame::eth(ALL_ROUTERS_MAC, e).ipv6(VM_LL, ALL_ROUTERS).icmpv6_rs().build();
    run_counted(&dp, &fds, Program::PortFromVmXdp, &rs(VM2), Translated);
    run_counted(&dp, &fds, Program::PortFromVmXdp, &rs(VM2), Translated);
    assert_eq!(events!(ring), vec![event(EventKind::Active, IF, VM2, NO_IP)]);
}

#[rustfmt::skip]
#[test]
fn learned_addresses() {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, 0).unwrap();
    dp.bind(VM2_IF, VM2, VM2_OUT, 0).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, 0).unwrap();
    dp.set_pools(&pools()).unwrap();
    let fds = program_fds(&mut dp);
    let mut ring = dp.take_events().unwrap();
    let learned = |dp: &Dataplane| {
        let mut v: Vec<_> = dp.learned().unwrap().into_iter().map(|(k, ip)| (k.ifindex, k.mac, ip.octets())).collect();
        v.sort_unstable();
        v
    };

    // An ARP probe (spa 0.0.0.0) teaches nothing.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM, NO_TAGS, 1, VM, NO_IP, ZERO, VM_IP), ArpRewritten);
    // Neither does an unbound sender, a frame to the VM, a spoofed frame, nor a VM bound on
    // another port.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), Passed);
    run_counted(&dp, &fds, Program::PortToVm, &arp(BROADCAST, PEER, NO_TAGS, 2, VM, VM_IP, VM_OUT, PEER_IP), ArpRewritten);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, FREE, NO_TAGS, 1, VM, VM_IP, ZERO, PEER_IP), SpoofDropped);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM2, NO_TAGS, 1, VM2, VM2_IP, ZERO, PEER_IP), Passed);
    assert_eq!(learned(&dp), vec![]);
    assert_eq!(events!(ring), vec![]);

    // The VM's own ARP: learned, with one event however often it is repeated.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM, NO_TAGS, 1, VM, VM_IP, ZERO, PEER_IP), ArpRewritten);
    assert_eq!(learned(&dp), vec![(IF, VM, VM_IP)]);
    assert_eq!(events!(ring), vec![event(EventKind::Learned, IF, VM, VM_IP)]);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(PEER, VM, Q, 2, VM, VM_IP, PEER, PEER_IP), ArpRewritten);
    run_counted(&dp, &fds, Program::PortFromVmXdp, &arp(BROADCAST, VM, NO_TAGS, 1, VM, VM_IP, ZERO, PEER_IP), ArpRewritten);
    assert_eq!(learned(&dp), vec![(IF, VM, VM_IP)]);
    assert_eq!(events!(ring), vec![]);

    // A new address replaces the old one, again with one event.
    run_counted(&dp, &fds, Program::PortFromVmXdp, &arp(BROADCAST, VM, QINQ, 1, VM, VM_IP_NEW, ZERO, VM_IP_NEW), ArpRewritten);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM, QINQ, 1, VM, VM_IP_NEW, ZERO, VM_IP_NEW), ArpRewritten);
    assert_eq!(learned(&dp), vec![(IF, VM, VM_IP_NEW)]);
    assert_eq!(events!(ring), vec![event(EventKind::Learned, IF, VM, VM_IP_NEW)]);

    // The sender is learned whatever the Ethernet source; the uplink learns under ifindex 0.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, PEER, NO_TAGS, 2, VM, VM_IP_THIRD, ZERO, PEER_IP), ArpRewritten);
    run_counted(&dp, &fds, Program::UplinkOut, &rarp(UP, NO_TAGS), ArpRewritten);
    run_counted(&dp, &fds, Program::UplinkOut, &arp(BROADCAST, UP, NO_TAGS, 1, UP, PEER_IP, ZERO, VM_IP), ArpRewritten);
    assert_eq!(learned(&dp), vec![(UPLINK, UP, PEER_IP), (IF, VM, VM_IP_THIRD)]);
    assert_eq!(events!(ring), vec![event(EventKind::Learned, IF, VM, VM_IP_THIRD), event(EventKind::Learned, UPLINK, UP, PEER_IP)]);

    // A second bind on the port replaces the first and starts afresh.
    dp.bind(IF, VM2, VM2_OUT, 0).unwrap();
    assert_eq!(learned(&dp), vec![(UPLINK, UP, PEER_IP)]);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM, NO_TAGS, 1, VM, VM_IP, ZERO, PEER_IP), Passed);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM2, NO_TAGS, 1, VM2, VM2_IP, ZERO, PEER_IP), ArpRewritten);
    assert_eq!(learned(&dp), vec![(UPLINK, UP, PEER_IP), (IF, VM2, VM2_IP)]);
    assert_eq!(events!(ring), vec![event(EventKind::Learned, IF, VM2, VM2_IP)]);
}

#[rustfmt::skip]
#[test]
fn learned_ipv6_addresses() {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, BINDING_PORT_SECURITY).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, 0).unwrap();
    dp.set_pools(&pools()).unwrap();
    let fds = program_fds(&mut dp);
    let mut ring = dp.take_events().unwrap();
    let ns = |e: Mac, src: Ipv6Addr| Frame::eth(SN_PEER_MAC, e).ipv6(src, SN_PEER).icmpv6_ns(PEER_IP6);
    let dad = |e: Mac, target: Ipv6Addr| Frame::eth(SN_VM_MAC, e).ipv6(UNSPECIFIED, SN_VM).icmpv6_ns(target).build();
    let na = |e: Mac, target: Ipv6Addr| Frame::eth(ALL_NODES_MAC, e).ipv6(VM_LL, ALL_NODES).icmpv6_na(NA_OVERRIDE, target);

    // A DAD NS (source ::) claims nothing yet; neither do RS, RA, Redirect, nor frames to the VM.
    run_counted(&dp, &fds, Program::PortFromVm, &dad(VM, VM_IP6), Translated);
    run_counted(&dp, &fds, Program::PortFromVm, &Frame::eth(ALL_ROUTERS_MAC, VM).ipv6(VM_IP6, ALL_ROUTERS).icmpv6_rs().sllao(VM).build(), NdRewritten);
    run_counted(&dp, &fds, Program::PortFromVm, &Frame::eth(PEER, VM).ipv6(VM_IP6, PEER_LL).icmpv6_redirect(VM_IP6, PEER_IP6).build(), Translated);
    run_counted(&dp, &fds, Program::PortToVm, &Frame::eth(VM_OUT, PEER).ipv6(PEER_IP6, VM_IP6).icmpv6_ns(VM_IP6).sllao(PEER).build(), Translated);
    // Nor does a dropped NS: another source, a foreign SLLAO, a malformed one.
    run_counted(&dp, &fds, Program::PortFromVm, &ns(PEER, VM_IP6).sllao(PEER).build(), PortSecurityDropped);
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).sllao(PEER).build(), PortSecurityDropped);
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).raw(&[14, 0, 0, 0, 0, 0, 0, 0]).build(), Malformed);
    assert_eq!(events!(ring), vec![]);

    // An NS from the VM reports its source once, however often it is repeated, by either program.
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).sllao(VM).build(), NdRewritten);
    assert_eq!(events!(ring), vec![event6(IF, VM, VM_IP6)]);
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).sllao(VM).build(), NdRewritten);
    run_counted(&dp, &fds, Program::PortFromVmXdp, &ns(VM, VM_IP6).build(), Translated);
    run_counted(&dp, &fds, Program::PortFromVm, &dad(VM, VM_IP6_NEW), Translated);
    assert_eq!(events!(ring), vec![]);

    // An NA reports its target; a new address, or one seen before but not last, reports again.
    run_counted(&dp, &fds, Program::PortFromVm, &na(VM, VM_IP6_NEW).tllao(VM).build(), NdRewritten);
    assert_eq!(events!(ring), vec![event6(IF, VM, VM_IP6_NEW)]);
    run_counted(&dp, &fds, Program::PortFromVmXdp, &na(VM, VM_IP6_NEW).build(), Translated);
    assert_eq!(events!(ring), vec![]);
    run_counted(&dp, &fds, Program::PortFromVm, &Frame::eth(SN_PEER_MAC, VM).vlan(dot1q(10)).ipv6(VM_LL, SN_PEER).hop_by_hop().icmpv6_ns(PEER_IP6).sllao(VM).build(), NdRewritten);
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).build(), Translated);
    assert_eq!(events!(ring), vec![event6(IF, VM, VM_LL), event6(IF, VM, VM_IP6)]);
    // An address one bit away from the last one is another address.
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6_NEXT_NET).build(), Translated);
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).build(), Translated);
    assert_eq!(events!(ring), vec![event6(IF, VM, VM_IP6_NEXT_NET), event6(IF, VM, VM_IP6)]);

    // The uplink reports under ifindex 0; an unbound source reports nothing.
    run_counted(&dp, &fds, Program::UplinkOut, &ns(UP, PEER_IP6).sllao(UP).build(), NdRewritten);
    run_counted(&dp, &fds, Program::UplinkOut, &ns(UP, PEER_IP6).sllao(UP).build(), NdRewritten);
    run_counted(&dp, &fds, Program::UplinkOut, &ns(PEER, PEER_LL).sllao(UP).build(), NdRewritten);
    assert_eq!(events!(ring), vec![event6(UPLINK, UP, PEER_IP6)]);

    // ARP learning is kept apart: an ARP between two NS does not make the second one new.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM, NO_TAGS, 1, VM, VM_IP, ZERO, PEER_IP), ArpRewritten);
    run_counted(&dp, &fds, Program::PortFromVm, &ns(VM, VM_IP6).build(), Translated);
    assert_eq!(events!(ring), vec![event(EventKind::Learned, IF, VM, VM_IP)]);
}
