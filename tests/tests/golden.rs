//! Golden frames through the real programs with BPF_PROG_TEST_RUN: for each case the verdict, the
//! output frame (built independently with the expected MACs) and exactly one counter, +1.
//!
//! In a test run the device is the namespace's loopback (ifindex 1, `test_run::IFINDEX`): port
//! programs match bindings on ifindex 1, uplink programs those on ifindex 0.

use std::{
    collections::HashMap,
    os::fd::{AsFd, OwnedFd},
};

use mat_common::{
    counters::{Hook, Outcome},
    event::{Event, EventKind},
    maps::{BindingKey, BINDING_ANNOUNCE, UPLINK_IFINDEX},
    pool::PoolPrefix,
};
use mat_loader::{test_run, Dataplane, Program};
use mat_tests::{
    frames::{
        arp, arp_body, dot1ad, dot1q, ethernet, ipv4_udp, rarp, Mac, Tag, BROADCAST, ETH_P_RARP,
        ZERO,
    },
    pins::TestDataplane,
};

use Outcome::{ArpRewritten, Malformed, Passed, Reflected, SpoofDropped, Translated};

const IF: u32 = test_run::IFINDEX;
const OTHER_IF: u32 = 7;
const UPLINK: u32 = UPLINK_IFINDEX;

// Two VMs on the test port (ifindex 1).
const VM: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const VM_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x2a];
const VM2: Mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const VM2_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x2b];
// A VM on another port (ifindex 7).
const OTHER: Mac = [0x52, 0x54, 0x00, 0x77, 0x77, 0x77];
const OTHER_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x77];
// Two VMs behind the uplink (ifindex 0).
const UP: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const UP_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x04, 0x01];
const UP2: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];
const UP2_OUT: Mac = [0x02, 0x00, 0x5e, 0x01, 0x04, 0x02];
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

/// The test data plane: bindings on the port, on another port and on the uplink, and the pools.
fn setup() -> TestDataplane {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, 0).unwrap();
    dp.bind(IF, VM2, VM2_OUT, 0).unwrap();
    dp.bind(OTHER_IF, OTHER, OTHER_OUT, 0).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, 0).unwrap();
    dp.bind(UPLINK, UP2, UP2_OUT, 0).unwrap();
    dp.set_pools(&pools()).unwrap();
    dp
}

/// One program's view of the bindings: its own two (`i -> o`, `i2 -> o2`) and one on another
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
    let mut v = vec![
        // Ethernet source.
        case("ipv4 src translated", p, ipv4_udp(PEER, i, NO_TAGS, 18), pass(ipv4_udp(PEER, o, NO_TAGS, 18), Translated)),
        case("ipv4 to broadcast: src translated, dst untouched", p, ipv4_udp(BROADCAST, i, NO_TAGS, 18), pass(ipv4_udp(BROADCAST, o, NO_TAGS, 18), Translated)),
        case("ipv4 to multicast: src translated, dst untouched", p, ipv4_udp(MCAST, i, NO_TAGS, 18), pass(ipv4_udp(MCAST, o, NO_TAGS, 18), Translated)),
        case("ipv4 to a bound inside MAC: dst untouched", p, ipv4_udp(i2, i, NO_TAGS, 18), pass(ipv4_udp(i2, o, NO_TAGS, 18), Translated)),
        case("ipv4 802.1Q", p, ipv4_udp(PEER, i, Q, 18), pass(ipv4_udp(PEER, o, Q, 18), Translated)),
        case("ipv4 802.1ad", p, ipv4_udp(PEER, i, AD, 18), pass(ipv4_udp(PEER, o, AD, 18), Translated)),
        case("ipv4 QinQ", p, ipv4_udp(PEER, i, QINQ, 18), pass(ipv4_udp(PEER, o, QINQ, 18), Translated)),
        case("ipv4 three tags", p, ipv4_udp(PEER, i, THREE, 18), pass(ipv4_udp(PEER, o, THREE, 18), Translated)),
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
        case("ARP reply to a VM on the same ifindex: tha translated", p, arp(i2, i, NO_TAGS, 2, i, VM_IP, i2, VM2_IP), pass(arp(i2, o, NO_TAGS, 2, o, VM_IP, o2, VM2_IP), ArpRewritten)),
        case("ARP from an unbound sender: only tha translated", p, arp(BROADCAST, PEER, NO_TAGS, 2, PEER, PEER_IP, i, VM_IP), pass(arp(BROADCAST, PEER, NO_TAGS, 2, PEER, PEER_IP, o, VM_IP), ArpRewritten)),
        case("gratuitous ARP request", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, ZERO, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, ZERO, VM_IP), ArpRewritten)),
        case("gratuitous ARP reply (tha = sha)", p, arp(BROADCAST, i, NO_TAGS, 2, i, VM_IP, i, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 2, o, VM_IP, o, VM_IP), ArpRewritten)),
        case("gratuitous ARP, broadcast tha untouched", p, arp(BROADCAST, i, NO_TAGS, 1, i, VM_IP, BROADCAST, VM_IP), pass(arp(BROADCAST, o, NO_TAGS, 1, o, VM_IP, BROADCAST, VM_IP), ArpRewritten)),
        case("RARP: sha and tha = own MAC", p, rarp(i, NO_TAGS), pass(rarp(o, NO_TAGS), ArpRewritten)),
        case("RARP 802.1Q", p, rarp(i, Q), pass(rarp(o, Q), ArpRewritten)),
        case("RARP QinQ", p, rarp(i, QINQ), pass(rarp(o, QINQ), ArpRewritten)),
        case("RARP three tags: Ethernet only", p, rarp(i, THREE), pass(ethernet(BROADCAST, o, THREE, ETH_P_RARP, &arp_body(3, i, NO_IP, i, NO_IP)), Translated)),
        case("ARP 802.1Q", p, arp(BROADCAST, i, Q, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, Q, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP 802.1ad", p, arp(BROADCAST, i, AD, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, AD, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP two 802.1Q tags", p, arp(BROADCAST, i, QQ, 1, i, VM_IP, ZERO, PEER_IP), pass(arp(BROADCAST, o, QQ, 1, o, VM_IP, ZERO, PEER_IP), ArpRewritten)),
        case("ARP QinQ", p, arp(PEER, i, QINQ, 2, i, VM_IP, PEER, PEER_IP), pass(arp(PEER, o, QINQ, 2, o, VM_IP, PEER, PEER_IP), ArpRewritten)),
        case("ARP three tags: Ethernet only", p, arp(PEER, i, THREE, 2, i, VM_IP, i, PEER_IP), pass(arp(PEER, o, THREE, 2, i, VM_IP, i, PEER_IP), Translated)),
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
        case("ARP from another VM on the same ifindex reflected", p, arp(o, o2, NO_TAGS, 2, o2, VM2_IP, o, VM_IP), reflected(pass(arp(i, o2, NO_TAGS, 2, o2, VM2_IP, i, VM_IP), ArpRewritten))),
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

/// Every prefix of `input`, from 0 bytes to all of it: below `refused` bytes BPF_PROG_TEST_RUN
/// refuses the frame; below `complete` bytes the headers the rules need are cut short
/// (Malformed); from `complete` bytes on the frame gets `full`'s verdict, with `full`'s frame cut
/// to the same length.
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
/// header for either program type, and for TC (an skb), no frame of ethertype IPv4 shorter than an
/// IPv4 header (34 bytes).
fn refused_below(prog: Program, input: &[u8]) -> usize {
    if !is_xdp(prog) && input[12..14] == [0x08, 0x00] {
        34
    } else {
        14
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

/// Every prefix of an ARP, 802.1Q ARP, QinQ ARP, IPv4 and 802.1Q IPv4 frame, and of a spoofed or
/// reflected QinQ ARP, through every program. The lengths BPF_PROG_TEST_RUN refuses are asserted
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
            v.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
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

#[rustfmt::skip]
#[test]
fn active_event_on_first_frame_only() {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, BINDING_ANNOUNCE).unwrap();
    dp.bind(IF, VM2, VM2_OUT, 0).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, BINDING_ANNOUNCE).unwrap();
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
    run_counted(&dp, &fds, Program::PortFromVm, &ipv4_udp(PEER, VM2, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![]);

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

    // The XDP port program raises it too.
    dp.bind(IF, VM2, VM2_OUT, BINDING_ANNOUNCE).unwrap();
    run_counted(&dp, &fds, Program::PortFromVmXdp, &ipv4_udp(PEER, VM2, NO_TAGS, 18), Translated);
    run_counted(&dp, &fds, Program::PortFromVmXdp, &ipv4_udp(PEER, VM2, NO_TAGS, 18), Translated);
    assert_eq!(events!(ring), vec![event(EventKind::Active, IF, VM2, NO_IP)]);
}

#[rustfmt::skip]
#[test]
fn learned_addresses() {
    let mut dp = TestDataplane::new();
    dp.bind(IF, VM, VM_OUT, 0).unwrap();
    dp.bind(IF, VM2, VM2_OUT, 0).unwrap();
    dp.bind(UPLINK, UP, UP_OUT, 0).unwrap();
    dp.set_pools(&pools()).unwrap();
    let fds = program_fds(&mut dp);
    let mut ring = dp.take_events().unwrap();
    let learned = |dp: &Dataplane| {
        let mut v: Vec<_> = dp.learned().unwrap().into_iter().map(|(k, ip)| (k.ifindex, k.mac, ip.octets())).collect();
        v.sort();
        v
    };

    // An ARP probe (spa 0.0.0.0) teaches nothing.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, VM2, NO_TAGS, 1, VM2, NO_IP, ZERO, VM2_IP), ArpRewritten);
    // Neither does an unbound sender, a frame to the VM, nor a spoofed frame.
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, PEER, NO_TAGS, 1, PEER, PEER_IP, ZERO, VM_IP), Passed);
    run_counted(&dp, &fds, Program::PortToVm, &arp(BROADCAST, PEER, NO_TAGS, 2, VM, VM_IP, VM_OUT, PEER_IP), ArpRewritten);
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, FREE, NO_TAGS, 1, VM, VM_IP, ZERO, PEER_IP), SpoofDropped);
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
    run_counted(&dp, &fds, Program::PortFromVm, &arp(BROADCAST, PEER, NO_TAGS, 2, VM2, VM2_IP, ZERO, PEER_IP), ArpRewritten);
    run_counted(&dp, &fds, Program::UplinkOut, &rarp(UP, NO_TAGS), ArpRewritten);
    run_counted(&dp, &fds, Program::UplinkOut, &arp(BROADCAST, UP, NO_TAGS, 1, UP, PEER_IP, ZERO, VM_IP), ArpRewritten);
    assert_eq!(learned(&dp), vec![(UPLINK, UP, PEER_IP), (IF, VM, VM_IP_NEW), (IF, VM2, VM2_IP)]);
    assert_eq!(events!(ring), vec![event(EventKind::Learned, IF, VM2, VM2_IP), event(EventKind::Learned, UPLINK, UP, PEER_IP)]);
}
