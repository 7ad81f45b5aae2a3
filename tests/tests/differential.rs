//! Differential test: the reference model (mat_tests::model) and the real programs, through
//! BPF_PROG_TEST_RUN, must agree on the verdict and the output frame of every one of many random
//! and mutated frames (Ethernet, ARP/RARP, IPv4, ND with options and extension headers, DHCP),
//! program by program, and on the events each frame raises; at the end the counters must match
//! the model's tally and the learned-address map the model's.
//!
//! The run has four phases, each with its own binding of the test port (one binding per port) and
//! settings: port security off and on, chaddr kept and translated, an inside MAC that lies in an
//! outside pool, and one whose words sum like its outside MAC's (an ND or DHCP rewrite that
//! leaves the checksum as it was).
//!
//! The seed is printed; `MAT_DIFF_SEED=<n>` replays a run and `MAT_DIFF_FRAMES=<n>` changes the
//! number of frames per program (default 100,000).

#![expect(
    clippy::trivially_copy_pass_by_ref,
    clippy::large_types_passed_by_value,
    reason = "helpers take MACs by reference like the model, and counters by value as snapshots"
)]

use std::{collections::HashSet, os::fd::AsFd, time::Instant};

use mat_common::{
    counters::{OUTCOMES, Outcome},
    event::Event,
    maps::{BINDING_PORT_SECURITY, SETTING_DHCP_TRANSLATE, UPLINK_IFINDEX},
    pool::PoolPrefix,
};
use mat_loader::{Program, test_run};
use mat_tests::{
    frames::{
        BROADCAST, DEST_OPTS, Frame, HOP_BY_HOP, Ipv6Addr, Mac, Nd, ROUTING, Tag, ZERO, arp_body,
        ethernet, ipv4_udp,
    },
    model::{self, Bindings, Context, Learner, Mode, Pool, Settings},
    pins::TestDataplane,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const DEFAULT_FRAMES: usize = 100_000;
/// Frames between two reads of the counters: a counter that differs from the model's is traced to
/// its frame within the batch.
const BATCH: usize = 1000;

/// [`model::from_vm`] or [`model::to_vm`].
type Rules = fn(&[u8], &Context) -> model::Verdict;
const IF: u32 = test_run::IFINDEX;
const OTHER_IFS: [u32; 2] = [7, 8];

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
        .map_or(DEFAULT_FRAMES, |s| {
            s.trim().parse().expect("MAT_DIFF_FRAMES: a number")
        })
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

fn in_pool(rng: &mut StdRng, p: Pool) -> Mac {
    let mask = pool_mask(p.len);
    u64_mac(mac_u64(&p.prefix) & mask | rng.r#gen::<u64>() & !mask & ((1 << 48) - 1))
}

/// The one's-complement sum of a MAC's three 16-bit words.
fn word_sum(m: &Mac) -> u16 {
    m.chunks(2).fold(0u16, |s, w| {
        let t = u32::from(s) + u32::from(u16::from_be_bytes([w[0], w[1]]));
        ((t & 0xffff) + (t >> 16)) as u16
    })
}

/// A test port binding for one phase of the run, with the port's settings.
#[derive(Clone, Copy, Debug)]
struct Phase {
    inside: Mac,
    outside: Mac,
    port_security: bool,
    dhcp_translate: bool,
}

/// The MACs and addresses frames are built from: few enough that lookups hit, spoofs,
/// reflections and port-security drops happen often, with the bindings and pools the data plane
/// holds.
struct Universe {
    /// The test port's binding and settings, phase by phase.
    phases: Vec<Phase>,
    /// Bindings of other ports: (ifindex, inside, outside).
    other_ports: Vec<(u32, Mac, Mac)>,
    /// Uplink bindings: (inside, outside).
    uplink: Vec<(Mac, Mac)>,
    pools: Vec<Pool>,
    /// IPv6 addresses for ND: few, so that a VM claims the same one again.
    addrs: Vec<Ipv6Addr>,
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
        let mut used = HashSet::new();
        let mut fresh = |rng: &mut StdRng, mac: &dyn Fn(&mut StdRng) -> Mac| loop {
            let m = mac(rng);
            if model::bindable(&m) && used.insert(m) {
                return m;
            }
        };
        let vm = |rng: &mut StdRng| [0x52, 0x54, 0x00, rng.r#gen(), rng.r#gen(), rng.r#gen()];
        let (p0, p1, p3) = (pools[0], pools[1], pools[3]);
        let pool = |p: Pool| move |rng: &mut StdRng| in_pool(rng, p);
        // A VM MAC whose words sum like `outside`'s.
        let alike = |outside: Mac| {
            move |rng: &mut StdRng| {
                let a: u8 = rng.r#gen();
                let head = word_sum(&[0x52, 0x54, 0x00, a, 0, 0]);
                let t = u32::from(word_sum(&outside)) + u32::from(!head);
                let last = (((t & 0xffff) + (t >> 16)) as u16).to_be_bytes();
                [0x52, 0x54, 0x00, a, last[0], last[1]]
            }
        };

        let a = (fresh(rng, &vm), fresh(rng, &pool(p0)));
        // An inside MAC that lies in a pool: bound, so translated rather than a spoof.
        let b = (fresh(rng, &pool(p3)), fresh(rng, &pool(p0)));
        let c_out = fresh(rng, &pool(p0));
        let c = (fresh(rng, &alike(c_out)), c_out);
        assert_eq!(word_sum(&c.0), word_sum(&c.1));
        let phase = |(inside, outside): (Mac, Mac), port_security, dhcp_translate| Phase {
            inside,
            outside,
            port_security,
            dhcp_translate,
        };
        let phases = vec![
            phase(a, false, false),
            phase(a, true, true),
            phase(b, false, true),
            phase(c, true, false),
        ];
        let other_ports = OTHER_IFS
            .iter()
            .map(|&i| (i, fresh(rng, &vm), fresh(rng, &pool(p0))))
            .collect();
        let mut uplink: Vec<(Mac, Mac)> = (0..4)
            .map(|_| (fresh(rng, &vm), fresh(rng, &pool(p1))))
            .collect();
        uplink.push((fresh(rng, &pool(p3)), fresh(rng, &pool(p1))));
        // The test port's first VM, bound on the uplink too, to another outside MAC.
        uplink.push((a.0, fresh(rng, &pool(p1))));
        let alike_out = fresh(rng, &pool(p1));
        uplink.push((fresh(rng, &alike(alike_out)), alike_out));
        let mut addrs = Vec::new();
        for head in [
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0],
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0],
        ] {
            for _ in 0..3 {
                let mut a = [0u8; 16];
                a[..8].copy_from_slice(&head);
                a[8..].copy_from_slice(&rng.r#gen::<[u8; 8]>());
                addrs.push(a);
            }
        }
        Self {
            phases,
            other_ports,
            uplink,
            pools,
            addrs,
        }
    }

    fn pool_prefixes(&self) -> Vec<PoolPrefix> {
        self.pools
            .iter()
            .map(|p| PoolPrefix::new(p.prefix, p.len))
            .collect()
    }

    /// Every binding anywhere: (inside, outside).
    fn all(&self) -> Vec<(Mac, Mac)> {
        let mut v: Vec<_> = self.phases.iter().map(|p| (p.inside, p.outside)).collect();
        v.extend(self.other_ports.iter().map(|&(_, i, o)| (i, o)));
        v.extend(self.uplink.iter().copied());
        v
    }
}

/// Frames for one program in one phase: `own` are the bindings the program sees.
struct Gen<'a> {
    u: &'a Universe,
    all: Vec<(Mac, Mac)>,
    own: Vec<(Mac, Mac)>,
    from_vm: bool,
}

impl Gen<'_> {
    /// A MAC from the universe, favouring the program's own bindings.
    fn mac(&self, rng: &mut StdRng) -> Mac {
        let own = |rng: &mut StdRng| self.own[rng.gen_range(0..self.own.len())];
        let any = |rng: &mut StdRng| self.all[rng.gen_range(0..self.all.len())];
        let pool = |rng: &mut StdRng| self.u.pools[rng.gen_range(0..self.u.pools.len())];
        match rng.gen_range(0..100) {
            0..=19 => own(rng).0,
            20..=39 => own(rng).1,
            40..=44 => any(rng).0,
            45..=49 => any(rng).1,
            // Unbound MACs inside a pool.
            50..=61 => {
                let p = pool(rng);
                in_pool(rng, p)
            }
            // Just outside a pool: the last prefix bit flipped.
            62..=67 => {
                let p = pool(rng);
                let mask = pool_mask(p.len);
                let bit = 1u64 << (48 - u32::from(p.len.clamp(1, 48)));
                u64_mac((mac_u64(&p.prefix) & mask | rng.r#gen::<u64>() & !mask) ^ bit)
            }
            68..=79 => {
                let mut m: Mac = rng.r#gen();
                m[0] &= 0xfe;
                m
            }
            80..=87 => BROADCAST,
            88..=93 => {
                let mut m: Mac = rng.r#gen();
                m[0] |= 1;
                m
            }
            _ => ZERO,
        }
    }

    /// A MAC the VM would put in what it sends (its inside MAC), or receive (its outside MAC),
    /// often; else any.
    fn own_side(&self, rng: &mut StdRng) -> Mac {
        if rng.gen_bool(0.4) {
            let b = self.own[rng.gen_range(0..self.own.len())];
            if self.from_vm { b.0 } else { b.1 }
        } else {
            self.mac(rng)
        }
    }

    fn addr(&self, rng: &mut StdRng) -> Ipv6Addr {
        self.u.addrs[rng.gen_range(0..self.u.addrs.len())]
    }
}

fn random_tags(rng: &mut StdRng) -> Vec<Tag> {
    let n = match rng.gen_range(0..100) {
        0..=49 => 0,
        50..=69 => 1,
        70..=89 => 2,
        _ => 3,
    };
    (0..n)
        .map(|_| Tag {
            tpid: if rng.r#gen() { 0x8100 } else { 0x88a8 },
            vid: rng.gen_range(0..4095),
        })
        .collect()
}

fn random_ipv4(rng: &mut StdRng) -> [u8; 4] {
    if rng.gen_bool(0.3) {
        [0; 4]
    } else {
        [192, 0, 2, rng.r#gen()]
    }
}

fn random_bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

/// ND options: link-layer options holding MACs of the universe, others, and broken ones.
fn random_options(rng: &mut StdRng, g: &Gen, mut nd: Nd) -> Nd {
    let n = match rng.gen_range(0..100) {
        0..=19 => 0,
        20..=54 => 1,
        55..=74 => 2,
        75..=84 => rng.gen_range(3..=7),
        _ => rng.gen_range(8..=10),
    };
    for _ in 0..n {
        nd = match rng.gen_range(0..100) {
            0..=44 => nd.sllao(g.own_side(rng)),
            45..=69 => nd.tllao(g.own_side(rng)),
            70..=77 => nd.nonce(),
            78..=81 => nd.mtu(1500),
            82..=85 => nd.prefix(g.addr(rng), 64),
            86..=89 => {
                let len = rng.gen_range(0..20);
                nd.option(rng.r#gen(), &random_bytes(rng, len))
            }
            // A link-layer option of 16 bytes: no Ethernet address.
            90..=92 => nd.option(rng.gen_range(1..=2), &[g.own_side(rng), ZERO].concat()),
            // Zero length.
            93..=96 => {
                let mut raw = [rng.gen_range(1..=3), 0, 0, 0, 0, 0, 0, 0];
                raw[2..].copy_from_slice(&g.own_side(rng));
                nd.raw(&raw)
            }
            // A few bytes that do not make an option.
            _ => {
                let len = rng.gen_range(1..8);
                nd.raw(&random_bytes(rng, len))
            }
        };
    }
    nd
}

/// An IPv6 frame: ND most of the time, behind extension headers and fragments at times.
fn random_ipv6(rng: &mut StdRng, g: &Gen, dst: Mac, src: Mac, tags: &[Tag]) -> Vec<u8> {
    let ip_src = if rng.gen_bool(0.2) {
        [0; 16]
    } else {
        g.addr(rng)
    };
    let mut ip = Frame::eth(dst, src).tags(tags).ipv6(ip_src, g.addr(rng));
    let exts = match rng.gen_range(0..100) {
        0..=64 => 0,
        65..=79 => 1,
        80..=87 => 2,
        88..=91 => 3,
        92..=95 => 4,
        _ => rng.gen_range(5..=6),
    };
    for _ in 0..exts {
        let kind = [HOP_BY_HOP, ROUTING, DEST_OPTS][rng.gen_range(0..3)];
        let len = if rng.gen_bool(0.8) {
            0
        } else {
            rng.gen_range(1..=3)
        };
        ip = ip.ext(kind, len);
    }
    if rng.gen_bool(0.06) {
        ip = ip.fragment(rng.gen_range(0..3), rng.r#gen());
        if rng.gen_bool(0.3) {
            ip = ip.dest_opts();
        }
    }
    match rng.gen_range(0..100) {
        0..=84 => {}
        85..=89 => {
            let len = rng.gen_range(0..40);
            return ip.udp(rng.r#gen(), rng.r#gen(), &random_bytes(rng, len));
        }
        90..=92 => {
            let len = rng.gen_range(0..40);
            return ip.next(rng.r#gen(), &random_bytes(rng, len));
        }
        _ => {
            // ICMPv6 of another type, at times holding a MAC where ND would have an option.
            let kinds = [1, 128, 129, 132, 138, rng.r#gen()];
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let len = 4 + 8 * rng.gen_range(0..6);
            let mut body = random_bytes(rng, len);
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&g.own_side(rng));
            return ip.icmpv6(kind, 0, &body);
        }
    }
    let target = g.addr(rng);
    let nd = match rng.gen_range(0..5) {
        0 => ip.icmpv6_rs(),
        1 => ip.icmpv6_ra(),
        2 => ip.icmpv6_ns(target),
        3 => ip.icmpv6_na(rng.r#gen::<u8>() & 0xe0, target),
        _ => ip.icmpv6_redirect(target, g.addr(rng)),
    };
    let mut frame = random_options(rng, g, nd).build();
    if rng.gen_bool(0.06) {
        // A payload length that does not fit the message.
        let at = 14 + 4 * tags.len() + 4;
        let len = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let len = match rng.gen_range(0..4) {
            0 => len.wrapping_sub(rng.gen_range(1..=16)),
            1 => len + rng.gen_range(1..=16),
            2 => rng.gen_range(0..64),
            _ => rng.r#gen(),
        };
        frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
    }
    frame
}

/// A DHCP request or reply, at times changed in the fields the rules look at.
fn random_dhcp(rng: &mut StdRng, g: &Gen, dst: Mac, src: Mac, tags: &[Tag]) -> Vec<u8> {
    let (mut from, mut to, mut op) = if rng.r#gen() {
        (68, 67, 1)
    } else {
        (67, 68, 2)
    };
    if rng.gen_bool(0.1) {
        let ports = [67, 68, rng.r#gen()];
        from = ports[rng.gen_range(0..3)];
        let ports = [67, 68, rng.r#gen()];
        to = ports[rng.gen_range(0..3)];
    }
    if rng.gen_bool(0.08) {
        op = rng.gen_range(0..4);
    }
    let mut ip = Frame::eth(dst, src)
        .tags(tags)
        .ipv4(random_ipv4(rng), [255; 4]);
    if rng.gen_bool(0.3) {
        let len = 4 * rng.gen_range(1..=10);
        ip = ip.options(&random_bytes(rng, len));
    }
    if rng.gen_bool(0.12) {
        let offset = if rng.r#gen() {
            0
        } else {
            rng.gen_range(1..0x2000)
        };
        ip = ip.fragment(offset, rng.r#gen());
    }
    let mut udp = ip.udp(from, to);
    if rng.gen_bool(0.2) {
        udp = udp.no_checksum();
    }
    let mut d = udp.dhcp(op, g.own_side(rng)).xid(rng.r#gen());
    d = match rng.gen_range(0..10) {
        0..=3 => d.broadcast(),
        4 => d.flags(rng.r#gen()),
        _ => d,
    };
    if rng.gen_bool(0.05) {
        d = d.htype(rng.gen_range(0..3));
    }
    if rng.gen_bool(0.05) {
        let hlen = [0, 6, 16][rng.gen_range(0..3)];
        d = d.hlen(hlen);
    }
    d.build()
}

/// A well-formed frame of a random shape.
fn random_frame(rng: &mut StdRng, g: &Gen) -> Vec<u8> {
    // The VM's own address is the usual source from it (port security) and destination to it.
    let (dst, src) = if g.from_vm {
        (g.mac(rng), g.own_side(rng))
    } else {
        (g.own_side(rng), g.mac(rng))
    };
    let tags = random_tags(rng);
    let arp_fields = |rng: &mut StdRng| {
        let op = rng.gen_range(1..=4);
        let sha = if rng.gen_bool(0.3) {
            src
        } else {
            g.own_side(rng)
        };
        let tha = match rng.gen_range(0..10) {
            0..=1 => sha,
            2..=3 => dst,
            _ => g.own_side(rng),
        };
        arp_body(op, sha, random_ipv4(rng), tha, random_ipv4(rng))
    };
    match rng.gen_range(0..100) {
        0..=11 => ipv4_udp(dst, src, &tags, rng.gen_range(0..30)),
        12..=29 => {
            let body = arp_fields(rng);
            ethernet(dst, src, &tags, 0x0806, &body)
        }
        30..=35 => {
            // RARP, usually QEMU's: the guest MAC as sender and target.
            let body = if rng.gen_bool(0.6) {
                arp_body(3, src, [0; 4], src, [0; 4])
            } else {
                arp_fields(rng)
            };
            ethernet(dst, src, &tags, 0x8035, &body)
        }
        36..=41 => {
            // ARP/RARP with one of htype, ptype, hlen, plen changed.
            let mut body = arp_fields(rng);
            match rng.gen_range(0..4) {
                0 => body[0..2].copy_from_slice(&rng.r#gen::<[u8; 2]>()),
                1 => body[2..4].copy_from_slice(&rng.r#gen::<[u8; 2]>()),
                2 => body[4] = rng.r#gen(),
                _ => body[5] = rng.r#gen(),
            }
            let et = if rng.r#gen() { 0x0806 } else { 0x8035 };
            ethernet(dst, src, &tags, et, &body)
        }
        42..=71 => random_ipv6(rng, g, dst, src, &tags),
        72..=85 => random_dhcp(rng, g, dst, src, &tags),
        _ => {
            let et = match rng.gen_range(0..8) {
                0 => 0x0800,
                1 => 0x86dd,
                2 => 0x0806,
                3 => 0x8035,
                4 => 0x8100,
                5 => 0x88a8,
                6 => 0x88cc,
                _ => rng.r#gen(),
            };
            let len = rng.gen_range(0..60);
            ethernet(dst, src, &tags, et, &random_bytes(rng, len))
        }
    }
}

/// Random byte changes (half of them in the first 60 bytes), truncation, appended bytes.
fn mutate(rng: &mut StdRng, mut frame: Vec<u8>) -> Vec<u8> {
    if rng.gen_bool(0.3) && !frame.is_empty() {
        for _ in 0..rng.gen_range(1..=4) {
            let at = if rng.r#gen() {
                rng.gen_range(0..frame.len().min(60))
            } else {
                rng.gen_range(0..frame.len())
            };
            if rng.r#gen() {
                frame[at] = rng.r#gen();
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
            frame.push(rng.r#gen());
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

/// Drains the event ring buffer (an aya `RingBuf`) into a Vec.
macro_rules! events {
    ($ring:expr_2021) => {{
        let mut v: Vec<Event> = Vec::new();
        while let Some(item) = $ring.next() {
            assert_eq!(item.len(), std::mem::size_of::<Event>());
            // SAFETY: `Event` is plain repr(C) data of exactly this size.
            v.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        v
    }};
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

    let (ifindex, mode, xdp, rules): (u32, Mode, bool, Rules) = match prog {
        Program::PortFromVm => (IF, Mode::Port, false, model::from_vm),
        Program::PortFromVmXdp => (IF, Mode::Port, true, model::from_vm),
        Program::PortToVm => (IF, Mode::Port, false, model::to_vm),
        Program::UplinkOut => (UPLINK_IFINDEX, Mode::Uplink, false, model::from_vm),
        Program::UplinkIn => (UPLINK_IFINDEX, Mode::Uplink, true, model::to_vm),
        p => unreachable!("{} does not translate", p.name()),
    };
    let hook = prog.hook().expect("a translating program");
    let from_vm = matches!(
        prog,
        Program::PortFromVm | Program::PortFromVmXdp | Program::UplinkOut
    );

    let mut dp = TestDataplane::new();
    let mut bindings = Bindings::new();
    for &(i, inside, outside) in &u.other_ports {
        dp.bind(i, inside, outside, 0).unwrap();
        bindings.bind(i, inside, outside, false);
    }
    for &(inside, outside) in &u.uplink {
        dp.bind(UPLINK_IFINDEX, inside, outside, 0).unwrap();
        bindings.bind(UPLINK_IFINDEX, inside, outside, false);
    }
    dp.set_pools(&u.pool_prefixes()).unwrap();
    let fd = dp
        .program(prog)
        .unwrap()
        .as_fd()
        .try_clone_to_owned()
        .unwrap();
    let mut ring = dp.take_events().unwrap();
    let start_counters = dp.counters().unwrap();

    let mut tally = [0u64; OUTCOMES.len()];
    // The frames since the last read of the counters, with the outcome the model gave them.
    let mut batch: Vec<(u64, Vec<u8>, Outcome)> = Vec::new();
    let mut batch_counters = start_counters;
    let mut learner = Learner::new();
    let (mut refusals, mut changed, mut events_seen) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut n = 0u64;
    for (p, phase) in u.phases.iter().enumerate() {
        // The test port's binding for this phase replaces the last one, and what it learned.
        if let Some(old) = bindings.port(IF) {
            learner.forget(&mat_common::maps::BindingKey::new(IF, old.inside));
        }
        let flags = if phase.port_security {
            BINDING_PORT_SECURITY
        } else {
            0
        };
        dp.bind(IF, phase.inside, phase.outside, flags).unwrap();
        bindings.bind(IF, phase.inside, phase.outside, phase.port_security);
        dp.set_settings(if phase.dhcp_translate {
            SETTING_DHCP_TRANSLATE
        } else {
            0
        })
        .unwrap();
        let ctx = Context {
            ifindex,
            mode,
            bindings: &bindings,
            pools: &u.pools,
            settings: Settings {
                dhcp_translate: phase.dhcp_translate,
            },
        };
        let g = Gen {
            u: &u,
            all: u.all(),
            own: match mode {
                Mode::Port => vec![(phase.inside, phase.outside)],
                Mode::Uplink => u.uplink.clone(),
            },
            from_vm,
        };
        // `frames` frames compared over the phases; those the test run refuses come on top.
        let until = frames * (p + 1) / u.phases.len();
        let mut compared = frames * p / u.phases.len();
        while compared < until {
            n += 1;
            let frame = random_frame(&mut rng, &g);
            let frame = if rng.gen_bool(0.6) {
                mutate(&mut rng, frame)
            } else {
                frame
            };
            let context = || {
                format!(
                    "{} frame #{n} (phase {p}: {phase:?}), seed {seed} (replay with \
                     MAT_DIFF_SEED={seed})\n  input    {}",
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
            let want = rules(&frame, &ctx);
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
                    "{}\n  expected {:?} (verdict {retval})\n  expected {}\n  actual   {} \
                     (verdict {}, counted {actual:?}; again: {:?})",
                    context(),
                    want.outcome,
                    want.frame.as_deref().map_or("(dropped)".into(), hex),
                    hex(&out.frame),
                    out.retval,
                    again.map(|o| o.retval),
                );
            }
            let expected_events = learner.record(&want);
            let events = events!(ring);
            assert_eq!(
                events,
                expected_events,
                "{}\n  events differ from the model's",
                context()
            );
            events_seen += events.len() as u64;
            if want.frame.as_ref().is_some_and(|f| *f != frame) {
                changed += 1;
            }
            tally[want.outcome as usize] += 1;
            compared += 1;
            batch.push((n, frame, want.outcome));
            if batch.len() == BATCH || compared == until {
                check_batch(&dp, &fd, prog, seed, &batch, batch_counters);
                batch.clear();
                batch_counters = dp.counters().unwrap();
            }
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
         {refusals} more refused by BPF_PROG_TEST_RUN as predicted; {events_seen} events; {} \
         addresses learned at the end",
        prog.name(),
        learner.ipv4().len()
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
    kernel_learned.sort_unstable();
    let mut model_learned: Vec<_> = learner
        .ipv4()
        .iter()
        .map(|(k, ip)| (k.ifindex, k.mac, *ip))
        .collect();
    model_learned.sort_unstable();
    assert_eq!(
        kernel_learned,
        model_learned,
        "{}: learned addresses differ from the model's (seed {seed})",
        prog.name()
    );
    // Every outcome the program can produce came up.
    use Outcome::*;
    let possible: &[Outcome] = match prog {
        Program::PortToVm => &[
            Translated,
            ArpRewritten,
            Passed,
            Malformed,
            Reflected,
            NdRewritten,
            DhcpRewritten,
        ],
        Program::UplinkIn | Program::UplinkOut => &[
            Translated,
            ArpRewritten,
            Passed,
            Malformed,
            NdRewritten,
            DhcpRewritten,
        ],
        _ => &[
            Translated,
            ArpRewritten,
            Passed,
            Malformed,
            SpoofDropped,
            NdRewritten,
            DhcpRewritten,
            PortSecurityDropped,
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
        if from_vm {
            assert!(
                events_seen >= 100,
                "{}: only {events_seen} events: the generator is off",
                prog.name()
            );
        }
    }
}

/// Whether the counters since `before` add up to the outcomes the model gave the frames of
/// `batch`; if not, runs them again one by one to find the first one counted otherwise.
fn check_batch(
    dp: &mat_loader::Dataplane,
    fd: &std::os::fd::OwnedFd,
    prog: Program,
    seed: u64,
    batch: &[(u64, Vec<u8>, Outcome)],
    before: mat_loader::Counters,
) {
    let hook = prog.hook().expect("a translating program");
    let mut tally = [0u64; OUTCOMES.len()];
    for (_, _, o) in batch {
        tally[*o as usize] += 1;
    }
    let expected: Vec<_> = OUTCOMES
        .into_iter()
        .map(|o| (hook, o, tally[o as usize]))
        .filter(|&(_, _, v)| v != 0)
        .collect();
    if dp.counters().unwrap().since(&before).nonzero() == expected {
        return;
    }
    for (n, frame, outcome) in batch {
        let before = dp.counters().unwrap();
        test_run::run(fd, frame, 1).unwrap();
        let counted = dp.counters().unwrap().since(&before).nonzero();
        assert_eq!(
            counted,
            vec![(hook, *outcome, 1)],
            "{} frame #{n}, seed {seed} (replay with MAT_DIFF_SEED={seed}): counted otherwise \
             than the model says (same verdict and frame)\n  input    {}",
            prog.name(),
            hex(frame)
        );
    }
    panic!(
        "{}: the counters of a batch differ from the model's tally, but no frame of it does when \
         run again (seed {seed})",
        prog.name()
    );
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
