//! A reference model of the translation rules, written from the specification alone (DESIGN.md,
//! "Translation rules", and the data-plane notes of the IPv6/DHCP issue): plain Rust over a byte
//! slice, sharing no code with the kernel programs (mat-ebpf) nor the pool matching of mat-common.
//! The differential test runs it side by side with the real programs.
//!
//! One function per direction: [`from_vm`] (port_from_vm, port_from_vm_xdp, uplink_out) and
//! [`to_vm`] (port_to_vm, uplink_in). A port has one binding (its slot); the uplink has many,
//! keyed by MAC. [`Learner`] keeps what the data plane remembers between frames (the addresses a
//! VM claimed last) and the events it raises.
//!
//! Where the specification is silent the model says what it assumes, next to the code:
//! - Checksums are updated incrementally as RFC 1624 (eqn. 3) says, one 16-bit word at a time;
//!   a UDP checksum of zero stays zero and a computed zero goes out as 0xffff.
//! - The BOOTP fields are read in 8-byte words (op..xid, secs..ciaddr, chaddr's first 8 bytes): a
//!   frame cut inside the word holding the field to change is left alone.
//! - An IPv6 packet whose first 8 bytes are cut short is malformed (its length and next header
//!   cannot be read); so is an extension header or an ICMPv6 header that does not have its first 8
//!   bytes in the frame.

#![expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "the model takes MACs by reference, as the frames it reads them from"
)]

use std::collections::HashMap;

use mat_common::{
    counters::Outcome,
    event::{Event, EventKind},
    maps::BindingKey,
};

pub type Mac = [u8; 6];
pub type Ipv6Addr = [u8; 16];

const ETH_LEN: usize = 14;
const TAG_LEN: usize = 4;
const ARP_LEN: usize = 28;
const MAX_TAGS: usize = 2;

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_RARP: u16 = 0x8035;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

/// Where the program runs: a VM port checks spoofs, port security and reflections, and is strict
/// about what it cannot see; the uplink does none of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Port,
    Uplink,
}

/// An outside pool: the first `len` bits of `prefix` (a `len` above 48 counts as 48).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub prefix: Mac,
    pub len: u8,
}

impl Pool {
    pub const fn new(prefix: Mac, len: u8) -> Self {
        Self { prefix, len }
    }

    /// Whether the first `len` bits of `mac` equal those of the prefix, compared bit by bit.
    pub fn contains(&self, mac: &Mac) -> bool {
        let len = usize::from(self.len.min(48));
        (0..len).all(|bit| {
            let (byte, shift) = (bit / 8, 7 - bit % 8);
            (mac[byte] >> shift) & 1 == (self.prefix[byte] >> shift) & 1
        })
    }
}

/// A port's one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBinding {
    pub inside: Mac,
    pub outside: Mac,
    /// The port may only claim its inside MAC.
    pub port_security: bool,
}

/// The bindings as `Dataplane::bind` makes them: one per port (a second bind replaces the
/// first), and any number on the uplink (ifindex 0), keyed by MAC.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    ports: HashMap<u32, PortBinding>,
    /// Uplink: inside -> outside, outside -> inside.
    uplink_out: HashMap<Mac, Mac>,
    uplink_in: HashMap<Mac, Mac>,
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    /// `inside <-> outside` on the port `ifindex` (replacing its binding), or on the uplink when
    /// `ifindex` is 0 (where port security does not apply).
    pub fn bind(&mut self, ifindex: u32, inside: Mac, outside: Mac, port_security: bool) {
        if ifindex == 0 {
            self.uplink_out.insert(inside, outside);
            self.uplink_in.insert(outside, inside);
        } else {
            self.ports.insert(
                ifindex,
                PortBinding {
                    inside,
                    outside,
                    port_security,
                },
            );
        }
    }

    pub fn port(&self, ifindex: u32) -> Option<PortBinding> {
        self.ports.get(&ifindex).copied()
    }
}

/// The host's data-plane settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// DHCP: translate chaddr (and back in replies) instead of setting the broadcast flag.
    pub dhcp_translate: bool,
}

/// What a program sees: its device, its mode, the bindings, pools and settings.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub ifindex: u32,
    pub mode: Mode,
    pub bindings: &'a Bindings,
    pub pools: &'a [Pool],
    pub settings: Settings,
}

impl Context<'_> {
    fn port(&self) -> Option<PortBinding> {
        match self.mode {
            Mode::Port => self.bindings.port(self.ifindex),
            Mode::Uplink => None,
        }
    }

    /// From the VM: the outside MAC of `mac` if it is bound here.
    fn outside_of(&self, mac: &Mac) -> Option<Mac> {
        match self.mode {
            Mode::Port => self.port().filter(|b| b.inside == *mac).map(|b| b.outside),
            Mode::Uplink if bindable(mac) => self.bindings.uplink_out.get(mac).copied(),
            Mode::Uplink => None,
        }
    }

    /// To the VM: the inside MAC of `mac` if it is bound here.
    fn inside_of(&self, mac: &Mac) -> Option<Mac> {
        match self.mode {
            Mode::Port => self.port().filter(|b| b.outside == *mac).map(|b| b.inside),
            Mode::Uplink if bindable(mac) => self.bindings.uplink_in.get(mac).copied(),
            Mode::Uplink => None,
        }
    }

    /// With port security, the only MAC the VM may claim.
    fn secured(&self) -> Option<Mac> {
        self.port().filter(|b| b.port_security).map(|b| b.inside)
    }

    /// The VM's own outside MAC on this port (its announcements coming back).
    fn is_own_outside(&self, mac: &Mac) -> bool {
        self.port().is_some_and(|b| b.outside == *mac)
    }

    /// A MAC that may not appear in what a VM port sends: from an outside pool, bindable, and not
    /// translated here.
    fn spoofs(&self, mac: &Mac) -> bool {
        self.mode == Mode::Port && bindable(mac) && in_pools(self.pools, mac)
    }

    /// The key of this device's binding of `inside` (learned addresses, events).
    fn key(&self, inside: Mac) -> BindingKey {
        BindingKey::new(
            match self.mode {
                Mode::Port => self.ifindex,
                Mode::Uplink => 0,
            },
            inside,
        )
    }
}

/// What the rules do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The counter the frame adds to (with the program's hook).
    pub outcome: Outcome,
    /// The frame as it leaves, or `None` when it is dropped.
    pub frame: Option<Vec<u8>>,
    /// An IPv4 address the VM claims in its own ARP: (binding, address).
    pub learned: Option<(BindingKey, [u8; 4])>,
    /// An IPv6 address the VM claims in its own NS (source) or NA (target).
    pub learned6: Option<(BindingKey, Ipv6Addr)>,
}

impl Verdict {
    fn pass(outcome: Outcome, frame: Vec<u8>) -> Self {
        Self {
            outcome,
            frame: Some(frame),
            learned: None,
            learned6: None,
        }
    }

    fn drop(outcome: Outcome) -> Self {
        Self {
            outcome,
            frame: None,
            learned: None,
            learned6: None,
        }
    }
}

/// Unicast and not all zero: the only addresses ever bound.
pub fn bindable(mac: &Mac) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|&b| b != 0)
}

/// Whether `mac` lies in any of `pools`.
pub fn in_pools(pools: &[Pool], mac: &Mac) -> bool {
    pools.iter().any(|p| p.contains(mac))
}

fn mac_at(frame: &[u8], offset: usize) -> Mac {
    frame[offset..offset + 6].try_into().expect("6 bytes")
}

fn u16_at(frame: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([frame[offset], frame[offset + 1]])
}

fn put_mac(frame: &mut [u8], offset: usize, mac: Mac) {
    frame[offset..offset + 6].copy_from_slice(&mac);
}

/// One's-complement addition of 16-bit words (end-around carry).
fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// RFC 1624, eqn. 3: the checksum `hc` after the 16-bit words `old` become `new`.
pub fn checksum_update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    assert!(old.len() == new.len() && old.len().is_multiple_of(2));
    old.chunks(2).zip(new.chunks(2)).fold(hc, |hc, (m, m2)| {
        let (m, m2) = (
            u16::from_be_bytes([m[0], m[1]]),
            u16::from_be_bytes([m2[0], m2[1]]),
        );
        !ones_add(ones_add(!hc, !m), m2)
    })
}

/// What follows the Ethernet header and up to two VLAN tags.
enum L3 {
    /// A VLAN tag is cut short.
    Truncated,
    /// A third tag: what is behind it was not seen.
    TooDeep,
    Arp(usize),
    Ipv4(usize),
    Ipv6(usize),
    Other,
}

fn l3(frame: &[u8]) -> L3 {
    let is_tag = |t| t == TPID_8021Q || t == TPID_8021AD;
    let mut ether_type = u16_at(frame, 12);
    let mut offset = ETH_LEN;
    let mut tags = 0;
    while is_tag(ether_type) && tags < MAX_TAGS {
        if offset + TAG_LEN > frame.len() {
            return L3::Truncated;
        }
        ether_type = u16_at(frame, offset + 2);
        offset += TAG_LEN;
        tags += 1;
    }
    match ether_type {
        ETHERTYPE_ARP | ETHERTYPE_RARP => L3::Arp(offset),
        ETHERTYPE_IPV4 => L3::Ipv4(offset),
        ETHERTYPE_IPV6 => L3::Ipv6(offset),
        t if is_tag(t) => L3::TooDeep,
        _ => L3::Other,
    }
}

// ---------------------------------------------------------------------------------------------
// ARP and RARP (Ethernet/IPv4 only).

// Offsets inside the ARP body.
const SHA: usize = 8;
const SPA: usize = 14;
const THA: usize = 18;

/// Ethernet hardware addresses and IPv4 protocol addresses: the only ARP the rules touch.
fn ether_ipv4(arp: &[u8]) -> bool {
    u16_at(arp, 0) == 1 && u16_at(arp, 2) == ETHERTYPE_IPV4 && arp[4] == 6 && arp[5] == 4
}

fn arp_from_vm(mut out: Vec<u8>, at: usize, ctx: &Context, otherwise: Outcome) -> Verdict {
    if at + ARP_LEN > out.len() {
        return Verdict::drop(Outcome::Malformed);
    }
    if !ether_ipv4(&out[at..]) {
        // A secured port may only send what the rules can read.
        if ctx.secured().is_some() {
            return Verdict::drop(Outcome::PortSecurityDropped);
        }
        return Verdict::pass(otherwise, out);
    }
    let sha = mac_at(&out, at + SHA);
    let spa: [u8; 4] = out[at + SPA..at + SPA + 4].try_into().expect("4 bytes");
    let tha = mac_at(&out, at + THA);
    let mut rewritten = false;
    let mut learned = None;
    match ctx.outside_of(&sha) {
        Some(outside) => {
            put_mac(&mut out, at + SHA, outside);
            rewritten = true;
            if spa != [0; 4] {
                learned = Some((ctx.key(sha), spa));
            }
        }
        None if ctx.secured().is_some() => return Verdict::drop(Outcome::PortSecurityDropped),
        None if ctx.spoofs(&sha) => return Verdict::drop(Outcome::SpoofDropped),
        None => {}
    }
    if let Some(outside) = ctx.outside_of(&tha) {
        put_mac(&mut out, at + THA, outside);
        rewritten = true;
    }
    Verdict {
        learned,
        ..Verdict::pass(
            if rewritten {
                Outcome::ArpRewritten
            } else {
                otherwise
            },
            out,
        )
    }
}

fn arp_to_vm(mut out: Vec<u8>, at: usize, ctx: &Context, otherwise: Outcome) -> Verdict {
    if at + ARP_LEN > out.len() {
        return Verdict::drop(Outcome::Malformed);
    }
    if !ether_ipv4(&out[at..]) {
        return Verdict::pass(otherwise, out);
    }
    if ctx.is_own_outside(&mac_at(&out, at + SHA)) {
        return Verdict::drop(Outcome::Reflected);
    }
    match ctx.inside_of(&mac_at(&out, at + THA)) {
        Some(inside) => {
            put_mac(&mut out, at + THA, inside);
            Verdict::pass(Outcome::ArpRewritten, out)
        }
        None => Verdict::pass(otherwise, out),
    }
}

// ---------------------------------------------------------------------------------------------
// IPv6 Neighbor Discovery.

const IPV6_LEN: usize = 40;
const ICMPV6: u8 = 58;
const EXTENSIONS: [u8; 3] = [0, 43, 60];
const MAX_EXTENSIONS: usize = 4;
const MAX_OPTIONS: usize = 8;
const RS: u8 = 133;
const RA: u8 = 134;
const NS: u8 = 135;
const NA: u8 = 136;
const REDIRECT: u8 = 137;
const SOURCE_LL: u8 = 1;
const TARGET_LL: u8 = 2;

/// An ND message: where its ICMPv6 header starts, where it ends, its type.
struct Nd {
    ip: usize,
    icmp: usize,
    end: usize,
    kind: u8,
}

/// The bytes before the options.
fn fixed_part(kind: u8) -> usize {
    match kind {
        RS => 8,
        RA => 16,
        NS | NA => 24,
        REDIRECT => 40,
        _ => unreachable!("not ND"),
    }
}

/// Whether an option of type `opt` in a message of `kind` is the link-layer address the sender
/// claims for itself: the SLLAO of RS, RA and NS, the TLLAO of NA (never a Redirect's).
fn is_claim(kind: u8, opt: u8) -> bool {
    match opt {
        SOURCE_LL => matches!(kind, RS | RA | NS),
        TARGET_LL => kind == NA,
        _ => false,
    }
}

/// The ND message in the IPv6 packet at `ip`: `Ok(None)` when there is none (not ICMPv6 after
/// the extension headers walked, a fragment, another ICMPv6 type), `Err(())` when malformed.
/// `strict` (from a VM port): an extension chain longer than the walk is malformed too.
fn find_nd(frame: &[u8], ip: usize, strict: bool) -> Result<Option<Nd>, ()> {
    if ip + 8 > frame.len() {
        return Err(());
    }
    let mut next = frame[ip + 6];
    if next != ICMPV6 && !EXTENSIONS.contains(&next) {
        return Ok(None);
    }
    // The message ends where the payload length says; the frame must hold it.
    let end = ip + IPV6_LEN + usize::from(u16_at(frame, ip + 4));
    if end > frame.len() {
        return Err(());
    }
    let mut at = ip + IPV6_LEN;
    for _ in 0..MAX_EXTENSIONS {
        if !EXTENSIONS.contains(&next) {
            break;
        }
        if at + 8 > frame.len() {
            return Err(());
        }
        next = frame[at];
        at += (usize::from(frame[at + 1]) + 1) * 8;
    }
    if next != ICMPV6 {
        return if strict && EXTENSIONS.contains(&next) {
            Err(())
        } else {
            Ok(None)
        };
    }
    if at + 8 > frame.len() {
        return Err(());
    }
    let kind = frame[at];
    if !(RS..=REDIRECT).contains(&kind) {
        return Ok(None);
    }
    if end < at + fixed_part(kind) {
        return Err(());
    }
    Ok(Some(Nd {
        ip,
        icmp: at,
        end,
        kind,
    }))
}

/// What to do with the MAC of one link-layer option.
enum Step {
    Keep,
    Replace(Mac),
    Drop(Outcome),
}

/// Walks the options of `m` (up to eight) and runs `each(option type, MAC)` on every Ethernet
/// link-layer option (type 1 or 2, 8 bytes), replacing MACs and updating the checksum.
/// `Ok(true)` when a MAC was replaced; `Err(outcome)` to drop the frame.
fn walk_options(
    out: &mut [u8],
    m: &Nd,
    strict: bool,
    mut each: impl FnMut(u8, Mac) -> Step,
) -> Result<bool, Outcome> {
    let mut at = m.icmp + fixed_part(m.kind);
    let mut replaced = false;
    for _ in 0..MAX_OPTIONS {
        if at >= m.end {
            return Ok(replaced);
        }
        if at + 2 > m.end {
            return Err(Outcome::Malformed);
        }
        let (kind, len) = (out[at], usize::from(out[at + 1]) * 8);
        if len == 0 || at + len > m.end {
            return Err(Outcome::Malformed);
        }
        if (kind == SOURCE_LL || kind == TARGET_LL) && len == 8 {
            let mac = mac_at(out, at + 2);
            match each(kind, mac) {
                Step::Keep => {}
                Step::Replace(new) => {
                    let csum = u16_at(out, m.icmp + 2);
                    let csum = checksum_update(csum, &mac, &new);
                    out[m.icmp + 2..m.icmp + 4].copy_from_slice(&csum.to_be_bytes());
                    put_mac(out, at + 2, new);
                    replaced = true;
                }
                Step::Drop(o) => return Err(o),
            }
        }
        at += len;
    }
    if strict && at < m.end {
        // More options than the walk takes: one of them could hold the inside MAC.
        return Err(Outcome::Malformed);
    }
    Ok(replaced)
}

/// From the VM: options holding a bound inside MAC -> its outside MAC; on a secured port a claim
/// of another MAC is dropped; on a port an option from an outside pool that is not translated is
/// a spoof. `src` is the frame's source and `bound` whether it is bound here.
fn nd_from_vm(
    mut out: Vec<u8>,
    ip: usize,
    ctx: &Context,
    src: Mac,
    bound: bool,
    otherwise: Outcome,
) -> Verdict {
    let strict = ctx.mode == Mode::Port;
    let m = match find_nd(&out, ip, strict) {
        Err(()) => return Verdict::drop(Outcome::Malformed),
        Ok(None) => return Verdict::pass(otherwise, out),
        Ok(Some(m)) => m,
    };
    let secured = ctx.secured().is_some();
    let walked = walk_options(&mut out, &m, strict, |opt, mac| {
        match ctx.outside_of(&mac) {
            Some(outside) => Step::Replace(outside),
            None if secured && is_claim(m.kind, opt) => Step::Drop(Outcome::PortSecurityDropped),
            None if ctx.spoofs(&mac) => Step::Drop(Outcome::SpoofDropped),
            None => Step::Keep,
        }
    });
    let replaced = match walked {
        Ok(r) => r,
        Err(o) => return Verdict::drop(o),
    };
    // The address the VM claims: an NS's source (unless ::, a DAD probe), an NA's target.
    let claimed: Option<Ipv6Addr> = match m.kind {
        NS => {
            Some(out[m.ip + 8..m.ip + 24].try_into().expect("16 bytes")).filter(|a| *a != [0; 16])
        }
        NA => Some(out[m.icmp + 8..m.icmp + 24].try_into().expect("16 bytes")),
        _ => None,
    };
    Verdict {
        learned6: claimed.filter(|_| bound).map(|a| (ctx.key(src), a)),
        ..Verdict::pass(
            if replaced {
                Outcome::NdRewritten
            } else {
                otherwise
            },
            out,
        )
    }
}

/// To the VM: options holding the outside MAC -> inside MAC; on a port, the VM's own NS or NA
/// coming back (from its outside MAC) is dropped.
fn nd_to_vm(mut out: Vec<u8>, ip: usize, ctx: &Context, otherwise: Outcome) -> Verdict {
    let m = match find_nd(&out, ip, false) {
        Err(()) => return Verdict::drop(Outcome::Malformed),
        Ok(None) => return Verdict::pass(otherwise, out),
        Ok(Some(m)) => m,
    };
    if (m.kind == NS || m.kind == NA) && ctx.is_own_outside(&mac_at(&out, 6)) {
        return Verdict::drop(Outcome::Reflected);
    }
    match walk_options(&mut out, &m, false, |_, mac| {
        ctx.inside_of(&mac).map_or(Step::Keep, Step::Replace)
    }) {
        Ok(true) => Verdict::pass(Outcome::NdRewritten, out),
        Ok(false) => Verdict::pass(otherwise, out),
        Err(o) => Verdict::drop(o),
    }
}

// ---------------------------------------------------------------------------------------------
// DHCPv4.

const UDP: u8 = 17;
const DHCP_SERVER: u16 = 67;
const DHCP_CLIENT: u16 = 68;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// BOOTP offsets, and the 8-byte words the rules read them in.
const FLAGS: usize = 10;
const FLAGS_WORD_END: usize = 16;
const CHADDR: usize = 28;
const CHADDR_WORD_END: usize = 36;

/// A BOOTP message: where it starts and where its UDP checksum is.
struct Bootp {
    at: usize,
    csum_at: usize,
}

/// The BOOTP message with opcode `op` (Ethernet addresses) of a UDP datagram from port `from` to
/// `to` in the IPv4 packet at `ip`; never in a fragment.
fn find_bootp(frame: &[u8], ip: usize, from: u16, to: u16, op: u8) -> Option<Bootp> {
    let h = frame.get(ip..ip + 20)?;
    let ihl = usize::from(h[0] & 0x0f);
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    if h[0] >> 4 != 4 || ihl < 5 || h[9] != UDP || fragment {
        return None;
    }
    let udp = ip + ihl * 4;
    let at = udp + 8;
    let b = frame.get(at..at + 3)?;
    let ports = (u16_at(frame, udp), u16_at(frame, udp + 2));
    (ports == (from, to) && b == [op, 1, 6]).then_some(Bootp {
        at,
        csum_at: udp + 6,
    })
}

/// Writes `new` at `at` and updates the UDP checksum: none (zero) stays none, a computed zero is
/// sent as 0xffff.
fn dhcp_rewrite(out: &mut [u8], m: &Bootp, at: usize, new: &[u8]) {
    let csum = u16_at(out, m.csum_at);
    if csum != 0 {
        let c = match checksum_update(csum, &out[at..at + new.len()], new) {
            0 => 0xffff,
            c => c,
        };
        out[m.csum_at..m.csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    out[at..at + new.len()].copy_from_slice(new);
}

/// A bound VM's request: the broadcast flag set, or (translating) chaddr inside -> outside.
/// Whether it changed.
fn dhcp_from_vm(out: &mut [u8], ip: usize, ctx: &Context) -> bool {
    let Some(m) = find_bootp(out, ip, DHCP_CLIENT, DHCP_SERVER, BOOTREQUEST) else {
        return false;
    };
    if ctx.settings.dhcp_translate {
        if m.at + CHADDR_WORD_END > out.len() {
            return false;
        }
        let Some(outside) = ctx.outside_of(&mac_at(out, m.at + CHADDR)) else {
            return false;
        };
        dhcp_rewrite(out, &m, m.at + CHADDR, &outside);
        return true;
    }
    if m.at + FLAGS_WORD_END > out.len() || out[m.at + FLAGS] & 0x80 != 0 {
        return false;
    }
    let flags = [out[m.at + FLAGS] | 0x80, out[m.at + FLAGS + 1]];
    dhcp_rewrite(out, &m, m.at + FLAGS, &flags);
    true
}

/// Translating only: a reply's chaddr outside -> inside. Whether it changed.
fn dhcp_to_vm(out: &mut [u8], ip: usize, ctx: &Context) -> bool {
    if !ctx.settings.dhcp_translate {
        return false;
    }
    let Some(m) = find_bootp(out, ip, DHCP_SERVER, DHCP_CLIENT, BOOTREPLY) else {
        return false;
    };
    if m.at + CHADDR_WORD_END > out.len() {
        return false;
    }
    let Some(inside) = ctx.inside_of(&mac_at(out, m.at + CHADDR)) else {
        return false;
    };
    dhcp_rewrite(out, &m, m.at + CHADDR, &inside);
    true
}

// ---------------------------------------------------------------------------------------------
// The two directions.

/// Frames from the VM (port_from_vm, port_from_vm_xdp, uplink_out): Ethernet source, ARP/RARP
/// sender and target, ND link-layer options inside -> outside; DHCP requests of a bound VM; spoof,
/// port-security and malformation drops.
pub fn from_vm(frame: &[u8], ctx: &Context) -> Verdict {
    if frame.len() < ETH_LEN {
        return Verdict::drop(Outcome::Malformed);
    }
    let mut out = frame.to_vec();
    let src = mac_at(&out, 6);
    let bound = match ctx.outside_of(&src) {
        Some(outside) => {
            put_mac(&mut out, 6, outside);
            true
        }
        None if ctx.secured().is_some() => return Verdict::drop(Outcome::PortSecurityDropped),
        None if ctx.spoofs(&src) => return Verdict::drop(Outcome::SpoofDropped),
        None => false,
    };
    let otherwise = if bound {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    match l3(&out) {
        L3::Truncated => Verdict::drop(Outcome::Malformed),
        L3::TooDeep if ctx.mode == Mode::Port => Verdict::drop(Outcome::Malformed),
        L3::Arp(at) => arp_from_vm(out, at, ctx, otherwise),
        L3::Ipv6(ip) => nd_from_vm(out, ip, ctx, src, bound, otherwise),
        L3::Ipv4(ip) if bound && dhcp_from_vm(&mut out, ip, ctx) => {
            Verdict::pass(Outcome::DhcpRewritten, out)
        }
        _ => Verdict::pass(otherwise, out),
    }
}

/// Frames to the VM (port_to_vm, uplink_in): Ethernet destination, ARP/RARP target, ND
/// link-layer options outside -> inside; DHCP replies when translating; on a port, the VM's own
/// announcements coming back are dropped.
pub fn to_vm(frame: &[u8], ctx: &Context) -> Verdict {
    if frame.len() < ETH_LEN {
        return Verdict::drop(Outcome::Malformed);
    }
    let mut out = frame.to_vec();
    let translated = match ctx.inside_of(&mac_at(&out, 0)) {
        Some(inside) => {
            put_mac(&mut out, 0, inside);
            true
        }
        None => false,
    };
    let otherwise = if translated {
        Outcome::Translated
    } else {
        Outcome::Passed
    };
    match l3(&out) {
        L3::Truncated => Verdict::drop(Outcome::Malformed),
        L3::Arp(at) => arp_to_vm(out, at, ctx, otherwise),
        L3::Ipv6(ip) => nd_to_vm(out, ip, ctx, otherwise),
        L3::Ipv4(ip) if dhcp_to_vm(&mut out, ip, ctx) => Verdict::pass(Outcome::DhcpRewritten, out),
        _ => Verdict::pass(otherwise, out),
    }
}

/// What the data plane remembers of the addresses each binding's VM claimed, and the events it
/// raises: a `Learned` event for a new IPv4 address (kept, and read back as the learned map), a
/// `Learned6` event for an IPv6 address other than the last one reported.
#[derive(Clone, Debug, Default)]
pub struct Learner {
    ipv4: HashMap<BindingKey, [u8; 4]>,
    ipv6: HashMap<BindingKey, Ipv6Addr>,
}

impl Learner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what `v` learned; the events the data plane raises for it.
    pub fn record(&mut self, v: &Verdict) -> Vec<Event> {
        let mut events = Vec::new();
        let event = |kind: EventKind, key: &BindingKey| Event {
            kind: kind as u32,
            ifindex: key.ifindex,
            mac: key.mac,
            _pad: [0; 2],
            ipv4: [0; 4],
            ipv6: [0; 16],
        };
        if let Some((key, ip)) = v.learned
            && self.ipv4.insert(key, ip) != Some(ip)
        {
            events.push(Event {
                ipv4: ip,
                ..event(EventKind::Learned, &key)
            });
        }
        if let Some((key, ip)) = v.learned6
            && self.ipv6.insert(key, ip) != Some(ip)
        {
            events.push(Event {
                ipv6: ip,
                ..event(EventKind::Learned6, &key)
            });
        }
        events
    }

    /// A binding replaced: what was learned for it is gone.
    pub fn forget(&mut self, key: &BindingKey) {
        self.ipv4.remove(key);
        self.ipv6.remove(key);
    }

    /// The learned IPv4 addresses, as the data plane's learned map holds them.
    pub fn ipv4(&self) -> &HashMap<BindingKey, [u8; 4]> {
        &self.ipv4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_prefix_matches_bit_by_bit() {
        let p = Pool::new([0x0a, 0xb8, 0, 0, 0, 0], 13);
        assert!(p.contains(&[0x0a, 0xb8, 0, 0, 0, 1]));
        assert!(p.contains(&[0x0a, 0xbf, 0xff, 0xff, 0xff, 0xff]));
        assert!(!p.contains(&[0x0a, 0xb0, 0, 0, 0, 0]));
        assert!(!p.contains(&[0x0b, 0xb8, 0, 0, 0, 0]));
        assert!(Pool::new([0xff; 6], 0).contains(&[0; 6]));
        assert!(Pool::new([1, 2, 3, 4, 5, 6], 60).contains(&[1, 2, 3, 4, 5, 6]));
        assert!(!Pool::new([1, 2, 3, 4, 5, 6], 48).contains(&[1, 2, 3, 4, 5, 7]));
    }

    #[test]
    fn bindable_is_unicast_and_non_zero() {
        assert!(bindable(&[0x52, 0x54, 0, 0, 0, 1]));
        assert!(bindable(&[0, 0, 0, 0, 0, 1]));
        assert!(!bindable(&[0; 6]));
        assert!(!bindable(&[0xff; 6]));
        assert!(!bindable(&[0x01, 0, 0x5e, 0, 0, 1]));
    }

    #[test]
    fn incremental_checksum_matches_a_full_one() {
        // RFC 1624's example: a word 0x5555 becomes 0x3285 under checksum 0xdd2f.
        assert_eq!(
            checksum_update(0xdd2f, &[0x55, 0x55], &[0x32, 0x85]),
            0x0000
        );
        // Against a checksum computed from scratch over changed data.
        let full = |d: &[u8]| {
            !d.chunks(2)
                .fold(0u16, |s, w| ones_add(s, u16::from_be_bytes([w[0], w[1]])))
        };
        let mut data = vec![
            0x45, 0x00, 0x12, 0x34, 0xfe, 0xdc, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        ];
        let before = full(&data);
        let new = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x2a];
        let after = checksum_update(before, &data[6..12], &new);
        data[6..12].copy_from_slice(&new);
        assert_eq!(after, full(&data));
    }
}
