//! Differential test: the reference model (mat_tests::model) and the real programs, through
//! BPF_PROG_TEST_RUN, must agree on the verdict and the output frame of every one of many random
//! and mutated frames, program by program; at the end the counters must match the model's tally
//! and the learned-address map the model's.
//!
//! The seed is printed; `MAT_DIFF_SEED=<n>` replays a run and `MAT_DIFF_FRAMES=<n>` changes the
//! number of frames per program (default 100,000).

use std::{
    collections::{HashMap, HashSet},
    os::fd::AsFd,
    time::Instant,
};

use mat_common::{
    counters::{Outcome, OUTCOMES},
    maps::{BindingKey, UPLINK_IFINDEX},
    pool::PoolPrefix,
};
use mat_loader::{test_run, Program};
use mat_tests::{
    frames::{arp_body, ethernet, ipv4_udp, Mac, Tag, BROADCAST, ZERO},
    model::{self, Bindings, Mode, Pool},
    pins::TestDataplane,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

const DEFAULT_FRAMES: usize = 100_000;

/// [`model::from_vm`] or [`model::to_vm`].
type Rules = fn(&[u8], u32, &Bindings, &[Pool], Mode) -> model::Verdict;
const OTHER_IF: u32 = 7;

// Verdicts as the kernel spells them.
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn seed() -> u64 {
    match std::env::var("MAT_DIFF_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("MAT_DIFF_SEED={s:?}: {e}")),
        Err(_) => rand::random(),
    }
}

fn frames_per_program() -> usize {
    std::env::var("MAT_DIFF_FRAMES")
        .ok()
        .map(|s| s.trim().parse().expect("MAT_DIFF_FRAMES: a number"))
        .unwrap_or(DEFAULT_FRAMES)
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn mac_u64(m: &Mac) -> u64 {
    m.iter().fold(0, |acc, &b| acc << 8 | u64::from(b))
}

fn u64_mac(v: u64) -> Mac {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn pool_mask(len: u8) -> u64 {
    let len = u32::from(len.min(48));
    ((1u64 << 48) - 1) & !((1u64 << (48 - len)) - 1)
}

/// The MACs frames are built from: few enough that lookups hit, spoofs and reflections happen
/// often, with the bindings and pools the data plane holds.
struct Universe {
    /// (ifindex, inside, outside).
    bindings: Vec<(u32, Mac, Mac)>,
    pools: Vec<Pool>,
}

impl Universe {
    fn new(rng: &mut StdRng) -> Self {
        let pools = vec![
            Pool::new([0x02, 0x00, 0x5e, 0x01, 0x03, 0x00], 40),
            Pool::new([0x02, 0x00, 0x5e, 0x01, 0x04, 0x00], 40),
            // Not on a byte boundary.
            Pool::new([0x0a, 0xb8, 0x00, 0x00, 0x00, 0x00], 13),
            // Holds the zero MAC, which is never bindable, and 15 bindable ones.
            Pool::new([0; 6], 44),
        ];
        let mut u = Self {
            bindings: Vec::new(),
            pools,
        };
        let mut used = HashSet::new();
        let mut fresh = |rng: &mut StdRng, mac: &dyn Fn(&mut StdRng) -> Mac| loop {
            let m = mac(rng);
            if model::bindable(&m) && used.insert(m) {
                return m;
            }
        };
        let vm = |rng: &mut StdRng| [0x52, 0x54, 0x00, rng.gen(), rng.gen(), rng.gen()];
        let in_pool = |i: usize| {
            let p = u.pools[i];
            move |rng: &mut StdRng| {
                let mask = pool_mask(p.len);
                u64_mac(mac_u64(&p.prefix) & mask | rng.gen::<u64>() & !mask & ((1 << 48) - 1))
            }
        };
        let (p0, p1, p3) = (in_pool(0), in_pool(1), in_pool(3));
        let mut bindings = Vec::new();
        for _ in 0..4 {
            bindings.push((test_run::IFINDEX, fresh(rng, &vm), fresh(rng, &p0)));
            bindings.push((UPLINK_IFINDEX, fresh(rng, &vm), fresh(rng, &p1)));
        }
        for _ in 0..2 {
            bindings.push((OTHER_IF, fresh(rng, &vm), fresh(rng, &p0)));
        }
        // Inside MACs that lie in a pool: bound, so translated rather than spoofs.
        bindings.push((test_run::IFINDEX, fresh(rng, &p0), fresh(rng, &p0)));
        bindings.push((UPLINK_IFINDEX, fresh(rng, &p3), fresh(rng, &p1)));
        // One VM MAC bound on a port and on the uplink, to different outside MACs.
        let shared = fresh(rng, &vm);
        bindings.push((test_run::IFINDEX, shared, fresh(rng, &p0)));
        bindings.push((UPLINK_IFINDEX, shared, fresh(rng, &p1)));
        u.bindings = bindings;
        u
    }

    fn model_bindings(&self) -> Bindings {
        let mut b = Bindings::new();
        for &(ifindex, inside, outside) in &self.bindings {
            b.bind(ifindex, inside, outside);
        }
        b
    }

    fn pool_prefixes(&self) -> Vec<PoolPrefix> {
        self.pools
            .iter()
            .map(|p| PoolPrefix::new(p.prefix, p.len))
            .collect()
    }

    /// A MAC from the universe, favouring the bindings on `ifindex`.
    fn mac(&self, rng: &mut StdRng, ifindex: u32) -> Mac {
        let own: Vec<_> = self.bindings.iter().filter(|b| b.0 == ifindex).collect();
        let pick = |rng: &mut StdRng, v: &[&(u32, Mac, Mac)]| *v[rng.gen_range(0..v.len())];
        let any = |rng: &mut StdRng| self.bindings[rng.gen_range(0..self.bindings.len())];
        let pool = |rng: &mut StdRng| self.pools[rng.gen_range(0..self.pools.len())];
        match rng.gen_range(0..100) {
            0..=19 => pick(rng, &own).1,
            20..=39 => pick(rng, &own).2,
            40..=44 => any(rng).1,
            45..=49 => any(rng).2,
            // Unbound MACs inside a pool.
            50..=61 => {
                let p = pool(rng);
                let mask = pool_mask(p.len);
                u64_mac(mac_u64(&p.prefix) & mask | rng.gen::<u64>() & !mask & ((1 << 48) - 1))
            }
            // Just outside a pool: the last prefix bit flipped.
            62..=67 => {
                let p = pool(rng);
                let mask = pool_mask(p.len);
                let bit = 1u64 << (48 - u32::from(p.len.clamp(1, 48)));
                u64_mac((mac_u64(&p.prefix) & mask | rng.gen::<u64>() & !mask) ^ bit)
            }
            68..=79 => {
                let mut m: Mac = rng.gen();
                m[0] &= 0xfe;
                m
            }
            80..=87 => BROADCAST,
            88..=93 => {
                let mut m: Mac = rng.gen();
                m[0] |= 1;
                m
            }
            _ => ZERO,
        }
    }
}

fn random_tags(rng: &mut StdRng) -> Vec<Tag> {
    let n = match rng.gen_range(0..100) {
        0..=34 => 0,
        35..=59 => 1,
        60..=84 => 2,
        _ => 3,
    };
    (0..n)
        .map(|_| Tag {
            tpid: if rng.gen() { 0x8100 } else { 0x88a8 },
            vid: rng.gen_range(0..4095),
        })
        .collect()
}

fn random_ipv4(rng: &mut StdRng) -> [u8; 4] {
    if rng.gen_bool(0.3) {
        [0; 4]
    } else {
        [192, 0, 2, rng.gen()]
    }
}

/// A well-formed frame of a random shape.
fn random_frame(rng: &mut StdRng, u: &Universe, ifindex: u32) -> Vec<u8> {
    let dst = u.mac(rng, ifindex);
    let src = u.mac(rng, ifindex);
    let tags = random_tags(rng);
    let arp_fields = |rng: &mut StdRng| {
        let op = rng.gen_range(1..=4);
        let sha = if rng.gen_bool(0.3) {
            src
        } else {
            u.mac(rng, ifindex)
        };
        let tha = match rng.gen_range(0..10) {
            0..=1 => sha,
            2..=3 => dst,
            _ => u.mac(rng, ifindex),
        };
        arp_body(op, sha, random_ipv4(rng), tha, random_ipv4(rng))
    };
    match rng.gen_range(0..100) {
        0..=24 => ipv4_udp(dst, src, &tags, rng.gen_range(0..30)),
        25..=59 => {
            let body = arp_fields(rng);
            ethernet(dst, src, &tags, 0x0806, &body)
        }
        60..=69 => {
            // RARP, usually QEMU's: the guest MAC as sender and target.
            let body = if rng.gen_bool(0.6) {
                arp_body(3, src, [0; 4], src, [0; 4])
            } else {
                arp_fields(rng)
            };
            ethernet(dst, src, &tags, 0x8035, &body)
        }
        70..=79 => {
            // ARP/RARP with one of htype, ptype, hlen, plen changed.
            let mut body = arp_fields(rng);
            match rng.gen_range(0..4) {
                0 => body[0..2].copy_from_slice(&rng.gen::<[u8; 2]>()),
                1 => body[2..4].copy_from_slice(&rng.gen::<[u8; 2]>()),
                2 => body[4] = rng.gen(),
                _ => body[5] = rng.gen(),
            }
            let et = if rng.gen() { 0x0806 } else { 0x8035 };
            ethernet(dst, src, &tags, et, &body)
        }
        _ => {
            let et = match rng.gen_range(0..8) {
                0 => 0x0800,
                1 => 0x86dd,
                2 => 0x0806,
                3 => 0x8035,
                4 => 0x8100,
                5 => 0x88a8,
                6 => 0x88cc,
                _ => rng.gen(),
            };
            let len = rng.gen_range(0..60);
            let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            ethernet(dst, src, &tags, et, &body)
        }
    }
}

/// Random byte changes in the first 50 bytes, truncation, appended bytes.
fn mutate(rng: &mut StdRng, mut frame: Vec<u8>) -> Vec<u8> {
    if rng.gen_bool(0.3) && !frame.is_empty() {
        for _ in 0..rng.gen_range(1..=4) {
            let at = rng.gen_range(0..frame.len().min(50));
            if rng.gen() {
                frame[at] = rng.gen();
            } else {
                frame[at] ^= 1 << rng.gen_range(0..8);
            }
        }
    }
    if rng.gen_bool(0.2) {
        let len = if rng.gen_bool(0.1) {
            rng.gen_range(0..14.min(frame.len() + 1))
        } else {
            rng.gen_range(14.min(frame.len())..=frame.len())
        };
        frame.truncate(len);
    }
    if rng.gen_bool(0.15) {
        for _ in 0..rng.gen_range(1..=40) {
            frame.push(rng.gen());
        }
    }
    frame
}

/// Whether BPF_PROG_TEST_RUN refuses the frame (EINVAL) before the program runs, as measured on
/// this kernel: any frame shorter than an Ethernet header; and for TC (an skb) a frame whose
/// ethertype is IPv4 or IPv6 but too short for that header.
fn refused(xdp: bool, frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return true;
    }
    if xdp {
        return false;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() < 14 + 20,
        0x86dd => frame.len() < 14 + 40,
        _ => false,
    }
}

fn differential(prog: Program, stream: u64) {
    let seed = seed();
    let frames = frames_per_program();
    println!(
        "{}: seed {seed} (replay with MAT_DIFF_SEED={seed}), {frames} frames",
        prog.name()
    );
    let mut rng = StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let u = Universe::new(&mut rng);
    let bindings = u.model_bindings();

    let (ifindex, mode, xdp, rules): (u32, Mode, bool, Rules) = match prog {
        Program::PortFromVm => (test_run::IFINDEX, Mode::Port, false, model::from_vm),
        Program::PortFromVmXdp => (test_run::IFINDEX, Mode::Port, true, model::from_vm),
        Program::PortToVm => (test_run::IFINDEX, Mode::Port, false, model::to_vm),
        Program::UplinkOut => (UPLINK_IFINDEX, Mode::Uplink, false, model::from_vm),
        Program::UplinkIn => (UPLINK_IFINDEX, Mode::Uplink, true, model::to_vm),
        p => unreachable!("{} does not translate", p.name()),
    };
    let hook = prog.hook().expect("a translating program");

    let mut dp = TestDataplane::new();
    for &(i, inside, outside) in &u.bindings {
        dp.bind(i, inside, outside, 0).unwrap();
    }
    dp.set_pools(&u.pool_prefixes()).unwrap();
    let fd = dp
        .program(prog)
        .unwrap()
        .as_fd()
        .try_clone_to_owned()
        .unwrap();
    let start_counters = dp.counters().unwrap();

    let mut tally = [0u64; OUTCOMES.len()];
    let mut learned: HashMap<BindingKey, [u8; 4]> = HashMap::new();
    let mut refusals = 0u64;
    let mut changed = 0u64;
    let started = Instant::now();
    let mut compared = 0;
    let mut n = 0u64;
    // `frames` frames compared; those the test run refuses come on top.
    while compared < frames {
        n += 1;
        let frame = random_frame(&mut rng, &u, ifindex);
        let frame = if rng.gen_bool(0.6) {
            mutate(&mut rng, frame)
        } else {
            frame
        };
        let context = || {
            format!(
                "{} frame #{n}, seed {seed} (replay with MAT_DIFF_SEED={seed})\n  input    {}",
                prog.name(),
                hex(&frame)
            )
        };
        let result = test_run::run(&fd, &frame, 1);
        if refused(xdp, &frame) {
            match result {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    refusals += 1;
                    continue;
                }
                other => panic!(
                    "{}\n  expected the test run to refuse the frame (EINVAL), got {other:?}",
                    context()
                ),
            }
        }
        let out = result.unwrap_or_else(|e| panic!("{}\n  test run failed: {e}", context()));
        let want = rules(&frame, ifindex, &bindings, &u.pools, mode);
        let retval = match (want.outcome.drops(), xdp) {
            (false, false) => TC_ACT_OK,
            (true, false) => TC_ACT_SHOT,
            (false, true) => XDP_PASS,
            (true, true) => XDP_DROP,
        };
        let frame_differs = want.frame.as_ref().is_some_and(|f| *f != out.frame);
        if out.retval != retval || frame_differs {
            // Run the frame once more to see which counter the program picks.
            let before = dp.counters().unwrap();
            let again = test_run::run(&fd, &frame, 1);
            let actual = dp.counters().unwrap().since(&before).nonzero();
            panic!(
                "{}\n  expected {:?} (verdict {retval})\n  expected {}\n  actual   {} (verdict {}, \
                 counted {actual:?}; again: {:?})",
                context(),
                want.outcome,
                want.frame.as_deref().map_or("(dropped)".into(), hex),
                hex(&out.frame),
                out.retval,
                again.map(|o| o.retval),
            );
        }
        if want.frame.as_ref().is_some_and(|f| *f != frame) {
            changed += 1;
        }
        tally[want.outcome as usize] += 1;
        compared += 1;
        if let Some((key, ip)) = want.learned {
            learned.insert(key, ip);
        }
    }
    let elapsed = started.elapsed();

    let counted = dp.counters().unwrap().since(&start_counters).nonzero();
    let expected: Vec<(_, Outcome, u64)> = OUTCOMES
        .into_iter()
        .map(|o| (hook, o, tally[o as usize]))
        .filter(|&(_, _, v)| v != 0)
        .collect();
    let summary = OUTCOMES
        .into_iter()
        .map(|o| format!("{} {}", o.name(), tally[o as usize]))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{}: {frames} frames agree ({elapsed:.1?}): {summary}; {changed} changed by the program; \
         {refusals} more refused by BPF_PROG_TEST_RUN as predicted; {} addresses learned",
        prog.name(),
        learned.len()
    );
    assert_eq!(
        counted,
        expected,
        "{}: counters differ from the model's tally (seed {seed})",
        prog.name()
    );
    let mut kernel_learned: Vec<_> = dp
        .learned()
        .unwrap()
        .into_iter()
        .map(|(k, ip)| (k.ifindex, k.mac, ip.octets()))
        .collect();
    kernel_learned.sort();
    let mut model_learned: Vec<_> = learned
        .into_iter()
        .map(|(k, ip)| (k.ifindex, k.mac, ip))
        .collect();
    model_learned.sort();
    assert_eq!(
        kernel_learned,
        model_learned,
        "{}: learned addresses differ from the model's (seed {seed})",
        prog.name()
    );
    // Every outcome the program can produce came up.
    let possible: &[Outcome] = match prog {
        Program::PortToVm => &[
            Outcome::Translated,
            Outcome::ArpRewritten,
            Outcome::Passed,
            Outcome::Malformed,
            Outcome::Reflected,
        ],
        Program::UplinkIn | Program::UplinkOut => &[
            Outcome::Translated,
            Outcome::ArpRewritten,
            Outcome::Passed,
            Outcome::Malformed,
        ],
        _ => &[
            Outcome::Translated,
            Outcome::ArpRewritten,
            Outcome::Passed,
            Outcome::Malformed,
            Outcome::SpoofDropped,
        ],
    };
    if frames >= DEFAULT_FRAMES {
        for &o in possible {
            assert!(
                tally[o as usize] >= 100,
                "{}: only {} frames with outcome {o:?}: the generator is off",
                prog.name(),
                tally[o as usize]
            );
        }
    }
}

#[test]
fn port_from_vm() {
    differential(Program::PortFromVm, 1);
}

#[test]
fn port_to_vm() {
    differential(Program::PortToVm, 2);
}

#[test]
fn port_from_vm_xdp() {
    differential(Program::PortFromVmXdp, 3);
}

#[test]
fn uplink_out() {
    differential(Program::UplinkOut, 4);
}

#[test]
fn uplink_in() {
    differential(Program::UplinkIn, 5);
}
