//! Per-packet cost of every program and path with BPF_PROG_TEST_RUN, against the do-nothing
//! floors of the same program type.
//!
//! A test run hands the program the same buffer on every repeat, so a frame the program rewrites
//! comes back rewritten. On the uplink (MAC-keyed hash maps) the bench binds a cycle: inside A ->
//! outside B, the real binding (B lies in the pool), plus the bench-only B -> A, so that the
//! rewritten frame hits again and is rewritten back. A port holds one binding, so there the bench
//! binds A -> A: every repeat finds the port's binding, compares and writes the MAC (the same
//! bytes), which is the whole of the hit path. A real control plane would refuse either binding;
//! the data plane does not check them, and the cost of a hit does not depend on which MAC it
//! writes. The port's bindings are made in DHCP-translating mode, so that a DHCP request takes
//! the chaddr rewrite on every repeat. Each case is checked before it is timed: verdict, counter,
//! the frame changed after one run and back after two (or unchanged), and after each timed run
//! the program's counter must have grown by exactly the repeats.

use std::os::fd::AsFd;

use anyhow::{Context, Result, bail, ensure};
use mat_common::{
    MacAddr,
    counters::{Hook, Outcome},
    maps::{SETTING_DHCP_TRANSLATE, SETTING_MONITOR, UPLINK_IFINDEX},
    pool::PoolPrefix,
};
use mat_loader::{Counters, Program, test_run};
use mat_tests::{
    frames::{self, BROADCAST, ZERO, dot1ad, dot1q},
    pins::TestDataplane,
};
use serde::Serialize;

use super::stats::{median, spread};

/// The outside pool of the bench: 02:00:5e:00:00:00/24.
pub const POOL: PoolPrefix = PoolPrefix::new([0x02, 0x00, 0x5e, 0, 0, 0], 24);
/// The VM's inside MAC.
const A: MacAddr = [0x52, 0x54, 0x00, 0xff, 0x00, 0x01];
/// Its outside MAC, in the pool.
const B: MacAddr = [0x02, 0x00, 0x5e, 0xff, 0x00, 0x01];
/// An unbound MAC outside the pool: the miss.
const UNBOUND: MacAddr = [0x52, 0x54, 0x00, 0xee, 0x00, 0x01];
/// An unbound MAC inside the pool: another host's VM, or a spoof from a VM port.
const SPOOF: MacAddr = [0x02, 0x00, 0x5e, 0xee, 0x00, 0x01];
/// A peer on the network (a router, another host), outside every pool.
const PEER: MacAddr = [0x52, 0x54, 0x00, 0xdd, 0x00, 0x01];
const VM_IP: [u8; 4] = [192, 0, 2, 1];
const PEER_IP: [u8; 4] = [192, 0, 2, 2];

/// Binding counts the hit is measured at.
const SIZES: [u32; 3] = [1, 4_096, 65_536];

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

pub struct Config {
    pub repeats: u32,
    pub rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Rewritten by one run and back by the next (a cycling binding).
    Cycles,
    /// Left as it came in (a miss, or a port's A -> A binding rewriting the same bytes).
    Unchanged,
}

struct Case {
    program: Program,
    path: &'static str,
    /// Bindings in the maps (one of [`SIZES`]).
    bindings: u32,
    /// Run with `mat monitor` watching (the drop reports on).
    monitor: bool,
    frame: Vec<u8>,
    outcome: Option<Outcome>,
    effect: Frame,
}

#[derive(Serialize)]
pub struct Row {
    pub program: &'static str,
    pub path: String,
    pub bindings: u32,
    pub frame_bytes: usize,
    /// Median over rounds of the thread's CPU time in the test-run syscall over the repeats
    /// (sub-nanosecond resolution; preemption excluded).
    pub ns: f64,
    /// Median over rounds of the kernel's own mean (BPF_PROG_TEST_RUN `duration`, truncated to
    /// whole nanoseconds).
    pub kernel_ns: u32,
    /// Median over rounds of (this case - the floor of its program type) measured in the same
    /// round.
    pub over_floor_ns: Option<f64>,
    /// Highest minus lowest round, in ns.
    pub spread_ns: f64,
    pub rounds: usize,
    pub repeats_per_round: u32,
}

pub fn run(cfg: &Config) -> Result<Vec<Row>> {
    let mut dps = Vec::new();
    for size in SIZES {
        dps.push(((size, false), dataplane(size, false)?));
    }
    dps.push(((1, true), dataplane(1, true)?));
    let cases = cases();
    let mut fds = Vec::new();
    for case in &cases {
        let dp = &mut dps
            .iter_mut()
            .find(|(s, _)| *s == (case.bindings, case.monitor))
            .expect("a data plane per size")
            .1;
        let fd = dp.program(case.program)?.as_fd().try_clone_to_owned()?;
        check(dp, case, &fd).with_context(|| format!("{} {}", case.program.name(), case.path))?;
        fds.push(fd);
    }
    // Interleaved rounds: every case once per round, so drift on a noisy machine hits all alike.
    let mut cpu = vec![Vec::new(); cases.len()];
    let mut kernel = vec![Vec::new(); cases.len()];
    for _ in 0..cfg.rounds {
        for (i, case) in cases.iter().enumerate() {
            let dp = &dps
                .iter()
                .find(|(s, _)| *s == (case.bindings, case.monitor))
                .expect("a data plane per size")
                .1;
            let before = dp.counters()?;
            let (cpu_ns, kernel_ns) = time(&fds[i], &case.frame, cfg.repeats)?;
            if let (Some(hook), Some(outcome)) = (case.program.hook(), case.outcome) {
                let got = dp.counters()?.since(&before).get(hook, outcome);
                ensure!(
                    got == u64::from(cfg.repeats),
                    "{} {}: {got} of {} runs counted as {}",
                    case.program.name(),
                    case.path,
                    cfg.repeats,
                    outcome.name()
                );
            }
            cpu[i].push(cpu_ns);
            kernel[i].push(f64::from(kernel_ns));
        }
    }
    let floor_of = |p: Program| match p {
        Program::PortFromVmXdp | Program::UplinkIn | Program::FloorXdp => Program::FloorXdp,
        _ => Program::FloorTc,
    };
    let index_of = |p: Program| {
        cases
            .iter()
            .position(|c| c.program == p)
            .expect("floors are cases")
    };
    Ok(cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let floor = floor_of(case.program);
            let over_floor_ns = (floor != case.program).then(|| {
                let f = &cpu[index_of(floor)];
                median(&cpu[i].iter().zip(f).map(|(c, f)| c - f).collect::<Vec<_>>())
            });
            Row {
                program: case.program.name(),
                path: case.path.to_owned(),
                bindings: case.bindings,
                frame_bytes: case.frame.len(),
                ns: median(&cpu[i]),
                kernel_ns: median(&kernel[i]) as u32,
                over_floor_ns,
                spread_ns: spread(&cpu[i]),
                rounds: cfg.rounds,
                repeats_per_round: cfg.repeats,
            }
        })
        .collect())
}

/// A data plane with the pool set, A -> A on the test-run port, the cycle on the uplink key, and
/// `size` bindings in all: the other VMs on ports of their own and on the uplink (inside
/// 52:54:01:00:hi:lo, outside 02:00:5e:00:hi:lo). With `monitor`, drops are reported as while
/// `mat monitor` watches; nothing reads the ring, so after its first quarter fills every drop
/// takes the rate limit's way out, as in a flood.
fn dataplane(size: u32, monitor: bool) -> Result<TestDataplane> {
    let mut dp = TestDataplane::new();
    dp.set_pools(&[POOL])?;
    dp.set_settings(SETTING_DHCP_TRANSLATE | if monitor { SETTING_MONITOR } else { 0 })?;
    dp.bind(test_run::IFINDEX, A, A, 0)?;
    dp.bind(UPLINK_IFINDEX, A, B, 0)?;
    dp.bind(UPLINK_IFINDEX, B, A, 0)?;
    for i in 1..size {
        let [_, _, hi, lo] = i.to_be_bytes();
        let (inside, outside) = (
            [0x52, 0x54, 0x01, 0x00, hi, lo],
            [0x02, 0x00, 0x5e, 0x00, hi, lo],
        );
        dp.bind(test_run::IFINDEX + i, inside, outside, 0)?;
        dp.bind(UPLINK_IFINDEX, inside, outside, 0)?;
    }
    Ok(dp)
}

/// A Neighbor Solicitation from `src` (fe80::1) for fe80::2, with its source link-layer option.
fn ns(src: MacAddr) -> Vec<u8> {
    let target: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let from: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let solicited = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
    let mut body = target.to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&src);
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, [0x33, 0x33, 0xff, 0, 0, 2])
        .ipv6(from, solicited, 255)
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut out, &body)
        .expect("write to Vec");
    out
}

/// A DHCPDISCOVER from `chaddr` (its BOOTP part and the message-type option).
fn dhcp_discover(chaddr: MacAddr) -> Vec<u8> {
    let mut bootp = vec![0u8; 240];
    bootp[..4].copy_from_slice(&[1, 1, 6, 0]);
    bootp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    bootp[28..34].copy_from_slice(&chaddr);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, 1, 255]);
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(chaddr, BROADCAST)
        .ipv4([0; 4], [255; 4], 64)
        .udp(68, 67)
        .write(&mut out, &bootp)
        .expect("write to Vec");
    out
}

fn cases() -> Vec<Case> {
    use Frame::{Cycles, Unchanged};
    use Outcome::{ArpRewritten, DhcpRewritten, NdRewritten, Passed, SpoofDropped, Translated};
    use Program::{FloorTc, FloorXdp, PortFromVm, PortFromVmXdp, PortToVm, UplinkIn, UplinkOut};
    let ipv4 = |dst, src| frames::ipv4_udp(dst, src, &[], 18);
    let arp_reply =
        |dst, src, sha, spa, tha, tpa| frames::arp(dst, src, &[], 2, sha, spa, tha, tpa);
    let qinq = [dot1ad(10), dot1q(100)];
    let case = |program, path, frame, outcome, effect| Case {
        program,
        path,
        bindings: 1,
        monitor: false,
        frame,
        outcome: Some(outcome),
        effect,
    };
    let mut cases = vec![
        Case {
            program: FloorTc,
            path: "floor (TC_ACT_OK)",
            bindings: 1,
            monitor: false,
            frame: ipv4(PEER, A),
            outcome: None,
            effect: Unchanged,
        },
        Case {
            program: FloorXdp,
            path: "floor (XDP_PASS)",
            bindings: 1,
            monitor: false,
            frame: ipv4(PEER, A),
            outcome: None,
            effect: Unchanged,
        },
    ];
    // From the VM, TC ingress of its port (the default) and XDP (the option).
    for p in [PortFromVm, PortFromVmXdp] {
        cases.extend([
            case(p, "hit", ipv4(PEER, A), Translated, Unchanged),
            case(p, "miss", ipv4(PEER, UNBOUND), Passed, Unchanged),
            case(p, "spoof drop", ipv4(PEER, SPOOF), SpoofDropped, Unchanged),
            case(
                p,
                "ARP reply",
                arp_reply(PEER, A, A, VM_IP, PEER, PEER_IP),
                ArpRewritten,
                Unchanged,
            ),
            case(
                p,
                "ARP request",
                frames::arp(BROADCAST, A, &[], 1, A, VM_IP, ZERO, PEER_IP),
                ArpRewritten,
                Unchanged,
            ),
            case(p, "RARP", frames::rarp(A, &[]), ArpRewritten, Unchanged),
            case(
                p,
                "802.1Q hit",
                frames::ipv4_udp(PEER, A, &[dot1q(100)], 18),
                Translated,
                Unchanged,
            ),
            case(
                p,
                "QinQ ARP request",
                frames::arp(BROADCAST, A, &qinq, 1, A, VM_IP, ZERO, PEER_IP),
                ArpRewritten,
                Unchanged,
            ),
            // The option rewrite writes the same bytes (the bench binds A to itself), so the
            // frame can be run again as it is.
            case(p, "NS with SLLAO", ns(A), NdRewritten, Unchanged),
            case(
                p,
                "DHCP request",
                dhcp_discover(A),
                DhcpRewritten,
                Unchanged,
            ),
        ]);
    }
    // To the VM, TC egress of its port.
    cases.extend([
        case(PortToVm, "hit", ipv4(A, PEER), Translated, Unchanged),
        case(PortToVm, "miss", ipv4(UNBOUND, PEER), Passed, Unchanged),
        case(
            PortToVm,
            "broadcast",
            ipv4(BROADCAST, PEER),
            Passed,
            Unchanged,
        ),
        case(
            PortToVm,
            "ARP reply",
            arp_reply(A, PEER, PEER, PEER_IP, A, VM_IP),
            ArpRewritten,
            Unchanged,
        ),
        case(
            PortToVm,
            "802.1Q hit",
            frames::ipv4_udp(A, PEER, &[dot1q(100)], 18),
            Translated,
            Unchanged,
        ),
        case(
            PortToVm,
            "QinQ ARP reply",
            frames::arp(A, PEER, &qinq, 2, PEER, PEER_IP, A, VM_IP),
            ArpRewritten,
            Unchanged,
        ),
    ]);
    // Uplink mode: TC egress out, XDP in, keyed by MAC only.
    cases.extend([
        case(UplinkOut, "hit", ipv4(PEER, A), Translated, Cycles),
        case(UplinkOut, "miss", ipv4(PEER, UNBOUND), Passed, Unchanged),
        case(
            UplinkOut,
            "ARP reply",
            arp_reply(PEER, A, A, VM_IP, PEER, PEER_IP),
            ArpRewritten,
            Cycles,
        ),
        case(
            UplinkOut,
            "RARP",
            frames::rarp(A, &[]),
            ArpRewritten,
            Cycles,
        ),
        case(UplinkIn, "hit", ipv4(B, PEER), Translated, Cycles),
        case(UplinkIn, "miss", ipv4(UNBOUND, PEER), Passed, Unchanged),
        case(
            UplinkIn,
            "ARP reply",
            arp_reply(B, PEER, PEER, PEER_IP, B, VM_IP),
            ArpRewritten,
            Cycles,
        ),
    ]);
    // With `mat monitor` watching: the hit pays nothing (the flag is read on drops only), a drop
    // the report (or, the ring's quarter full, the rate limit).
    for (path, frame, outcome) in [
        ("hit (monitor)", ipv4(PEER, A), Translated),
        (
            "spoof drop, monitor watching",
            ipv4(PEER, SPOOF),
            SpoofDropped,
        ),
    ] {
        cases.push(Case {
            monitor: true,
            ..case(PortFromVm, path, frame, outcome, Unchanged)
        });
    }
    // The hit with more bindings in the maps.
    for bindings in &SIZES[1..] {
        for (p, frame, effect) in [
            (PortFromVm, ipv4(PEER, A), Unchanged),
            (PortFromVmXdp, ipv4(PEER, A), Unchanged),
            (PortToVm, ipv4(A, PEER), Unchanged),
            (UplinkIn, ipv4(B, PEER), Cycles),
        ] {
            cases.push(Case {
                bindings: *bindings,
                ..case(p, "hit", frame, Translated, effect)
            });
        }
    }
    cases
}

/// One and two runs through the program: the verdict, the counter, and what the frame became.
fn check(dp: &TestDataplane, case: &Case, fd: &impl AsFd) -> Result<()> {
    let xdp = matches!(
        case.program,
        Program::PortFromVmXdp | Program::UplinkIn | Program::FloorXdp
    );
    let drops = case.outcome.is_some_and(Outcome::drops);
    let verdict = match (xdp, drops) {
        (true, true) => XDP_DROP,
        (true, false) => XDP_PASS,
        (false, true) => TC_ACT_SHOT,
        (false, false) => TC_ACT_OK,
    };
    let before = dp.counters()?;
    let once = test_run::run(fd, &case.frame, 1)?;
    let twice = test_run::run(fd, &case.frame, 2)?;
    ensure!(
        once.retval == verdict,
        "verdict {} where {verdict} was expected",
        once.retval
    );
    if let (Some(hook), Some(outcome)) = (case.program.hook(), case.outcome) {
        let counted = dp.counters()?.since(&before);
        let want: Vec<(Hook, Outcome, u64)> = vec![(hook, outcome, 3)];
        ensure!(
            counted.nonzero() == want,
            "counted {:?} where {want:?} was expected",
            named(&counted)
        );
    }
    match case.effect {
        Frame::Cycles if once.frame == case.frame || twice.frame != case.frame => {
            bail!("the frame does not cycle: the bench would not time the hit path")
        }
        Frame::Unchanged if once.frame != case.frame || twice.frame != case.frame => {
            bail!("the frame changed")
        }
        _ => Ok(()),
    }
}

fn named(c: &Counters) -> Vec<String> {
    c.nonzero()
        .into_iter()
        .map(|(h, o, v)| format!("{}/{}={v}", h.name(), o.name()))
        .collect()
}

/// (thread CPU ns per repeat, the kernel's own mean ns) for one test run of `repeats`.
fn time(fd: &impl AsFd, frame: &[u8], repeats: u32) -> Result<(f64, u32)> {
    let start = thread_cpu_ns();
    let out = test_run::run(fd, frame, repeats)?;
    let cpu = thread_cpu_ns() - start;
    Ok((cpu as f64 / f64::from(repeats), out.duration_ns))
}

fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

pub const NOTE: &str = "per-packet cost: BPF_PROG_TEST_RUN, interleaved rounds, median. `ns` is \
the thread's CPU time in the syscall divided by the repeats (sub-ns resolution, preemption \
excluded); `kernel_ns` is the test run's own mean, truncated to whole ns. `over_floor_ns` is the \
median of per-round differences to the do-nothing program of the same type (floor_tc/floor_xdp) \
on the same frame size. Port hits use an A->A binding, uplink hits a cycling one (A->B, the \
real one, plus a bench-only B->A), so that every repeat takes the hit path; the counters prove \
it. Ports look their binding up in an array (one slot per port), so the 4,096/65,536-binding \
rows of port programs only show that the table size does not matter; the uplink rows measure \
hash-chain length with warm caches, not cache misses.";

/// The targets for the per-packet cost.
pub fn targets(rows: &[Row]) -> Vec<super::Target> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.bindings == 1) {
        let Some(over) = r.over_floor_ns else {
            continue;
        };
        let limit = match r.path.as_str() {
            "hit" => 15.0,
            "miss" => 10.0,
            p if p.contains("ARP") => 40.0,
            p if p.starts_with("NS") || p.starts_with("DHCP") => 60.0,
            _ => continue,
        };
        out.push(super::Target {
            what: format!("test run: {} {} over floor", r.program, r.path),
            target: format!("<= {limit} ns"),
            measured: format!("{over:+.1} ns"),
            met: over <= limit,
        });
    }
    for big in rows.iter().filter(|r| r.bindings == 65_536) {
        let Some(one) = rows
            .iter()
            .find(|r| r.bindings == 1 && r.program == big.program && r.path == big.path)
        else {
            continue;
        };
        let change = (big.ns - one.ns) / one.ns * 100.0;
        out.push(super::Target {
            what: format!(
                "test run: {} {} at 65,536 vs 1 binding",
                big.program, big.path
            ),
            target: "within 5%".into(),
            measured: format!("{:.1} vs {:.1} ns ({change:+.1}%)", big.ns, one.ns),
            met: change.abs() <= 5.0,
        });
    }
    out
}

pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let first = rows.first();
    let _ = writeln!(
        s,
        "\nper-packet cost (BPF_PROG_TEST_RUN, median of {} rounds x {} repeats)",
        first.map_or(0, |r| r.rounds),
        first.map_or(0, |r| r.repeats_per_round)
    );
    let _ = writeln!(
        s,
        "{:<18} {:<22} {:>8} {:>9} {:>11} {:>9} {:>8}",
        "program", "path", "bindings", "ns/pkt", "over floor", "kernel ns", "spread"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<18} {:<22} {:>8} {:>9.1} {:>11} {:>9} {:>8.1}",
            r.program,
            r.path,
            r.bindings,
            r.ns,
            r.over_floor_ns.map_or("-".into(), |d| format!("{d:+.1}")),
            r.kernel_ns,
            r.spread_ns
        );
    }
    s
}
