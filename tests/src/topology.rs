//! A hypervisor lab built from network namespaces, for end-to-end tests and benchmarks:
//!
//! ```text
//!  VM 0 ns            hypervisor ns ("hv")                        peer ns (beyond the uplink)
//!  [vm.ifname] ==veth== [vm.port] --+
//!  VM 1 ns                          +-- [bridge] -- [uplink] ==veth== [peer.ifname]
//!  [vm.ifname] ==veth== [vm.port] --+
//! ```
//!
//! - Every VM has a random locally administered unicast *inside* MAC ([`random_inside_mac`]) and
//!   the address `192.0.2.(10 + index)/24`; the peer has `192.0.2.254/24` and a random MAC of its
//!   own (it stands for an ordinary, untranslated host). `192.0.2.1`-`192.0.2.9` are left for a
//!   test's own endpoints (a tap, say). The hypervisor's bridge has no address of its own (only
//!   the IPv6 link-local one every interface gets): it only forwards.
//! - IPv6 is on, as in every real guest: every interface gets a link-local address and sends
//!   its DAD NS, MLD reports and router solicitations when it comes up. The VMs and the peer
//!   also have `2001:db8::(10 + index)/64` and `2001:db8::fe/64` ([`vm_ip6`], [`PEER_IP6`]).
//! - All names (namespaces, bridge, veths) carry a per-run suffix; every link is created inside
//!   the lab's namespaces, so dropping the [`Lab`] (deleting its namespaces) removes everything,
//!   also when a test panics.
//! - Nothing here loads BPF. To attach MAT, call the loader from inside [`Lab::hv`] with
//!   [`Netns::enter`] (interface names resolve in the calling thread's namespace); port ifindexes
//!   are in [`Vm::port_index`] and [`Lab::uplink_index`].

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use crate::{
    frames::Mac,
    netns::{ChildGuard, Netns},
    pins::unique,
};

/// Prefix length of the lab's subnet, 192.0.2.0/24.
pub const PREFIX_LEN: u8 = 24;
/// The peer's address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// The peer's global IPv6 address, in 2001:db8::/64.
pub const PEER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
/// Prefix length of the lab's IPv6 subnet, 2001:db8::/64.
pub const PREFIX_LEN6: u8 = 64;

/// VM `i`'s global IPv6 address: `2001:db8::10`, `2001:db8::11`, ...
pub fn vm_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// First octet pattern inside MACs never take: `02:00:5e:xx:xx:xx` is for outside pools in tests.
pub const OUTSIDE_OUI: [u8; 3] = [0x02, 0x00, 0x5e];

/// A VM: a namespace with one interface, plugged into a port of the hypervisor's bridge.
pub struct Vm {
    pub ns: Netns,
    /// The VM's interface, inside [`Vm::ns`].
    pub ifname: String,
    /// The VM's port: the hypervisor side of its veth, a member of the bridge, inside [`Lab::hv`].
    pub port: String,
    /// Ifindex of [`Vm::port`] in the hypervisor namespace (the key of port bindings).
    pub port_index: u32,
    /// The VM's own (inside) MAC, set on [`Vm::ifname`].
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Its global IPv6 address ([`vm_ip6`]); it also has a link-local one from its MAC.
    pub ip6: Ipv6Addr,
}

/// The host beyond the uplink.
pub struct Peer {
    pub ns: Netns,
    /// The peer's interface, inside [`Peer::ns`], the other end of [`Lab::uplink`].
    pub ifname: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// [`PEER_IP6`].
    pub ip6: Ipv6Addr,
}

/// The whole lab; dropping it deletes every namespace and link it made.
pub struct Lab {
    /// The VMs, in order of creation ([`Lab::add_vm`]).
    pub vms: Vec<Vm>,
    pub peer: Peer,
    /// The hypervisor namespace: the bridge, the VM ports and the uplink.
    pub hv: Netns,
    pub bridge: String,
    /// The hypervisor's uplink: a bridge member, veth to [`Peer::ifname`].
    pub uplink: String,
    /// Ifindex of [`Lab::uplink`] in the hypervisor namespace.
    pub uplink_index: u32,
    id: String,
}

impl Lab {
    /// A hypervisor with a bridge, an uplink to the peer, and `vms` VMs, everything up and
    /// forwarding.
    pub fn new(vms: usize) -> Lab {
        let id = unique("");
        let hv = Netns::new("mhv");
        let peer_ns = Netns::new("mpr");
        keep_ipv6_addresses(&peer_ns);
        let bridge = format!("br-{id}");
        let uplink = format!("up-{id}");
        let peer_if = format!("pe-{id}");
        hv.ip(&["link", "add", &bridge, "type", "bridge"]);
        hv.ip(&["link", "set", &bridge, "up"]);
        let peer_mac = random_inside_mac();
        hv.ip(&[
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
            "address",
            &fmt_mac(&peer_mac),
            "netns",
            peer_ns.name(),
        ]);
        hv.ip(&["link", "set", &uplink, "master", &bridge, "up"]);
        peer_ns.ip(&["link", "set", &peer_if, "up"]);
        peer_ns.ip(&[
            "addr",
            "add",
            &format!("{PEER_IP}/{PREFIX_LEN}"),
            "dev",
            &peer_if,
        ]);
        peer_ns.ip(&[
            "addr",
            "add",
            &format!("{PEER_IP6}/{PREFIX_LEN6}"),
            "dev",
            &peer_if,
        ]);
        let uplink_index = ifindex(&hv, &uplink);
        let mut lab = Lab {
            vms: Vec::new(),
            peer: Peer {
                ns: peer_ns,
                ifname: peer_if,
                mac: peer_mac,
                ip: PEER_IP,
                ip6: PEER_IP6,
            },
            hv,
            bridge,
            uplink,
            uplink_index,
            id,
        };
        for _ in 0..vms {
            lab.add_vm();
        }
        lab.wait_forwarding();
        lab
    }

    /// Adds a VM (its namespace, veth and port) and returns it. The port forwards a moment later;
    /// see [`Lab::wait_forwarding`].
    pub fn add_vm(&mut self) -> &Vm {
        let i = self.vms.len();
        assert!(i < 200, "the lab's /24 holds at most 200 VMs");
        let ns = Netns::new("mvm");
        keep_ipv6_addresses(&ns);
        let port = format!("p{i}-{}", self.id);
        let ifname = format!("v{i}-{}", self.id);
        let mac = random_inside_mac();
        let ip = Ipv4Addr::new(192, 0, 2, 10 + i as u8);
        self.hv.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &ifname,
            "address",
            &fmt_mac(&mac),
            "netns",
            ns.name(),
        ]);
        self.hv
            .ip(&["link", "set", &port, "master", &self.bridge, "up"]);
        ns.ip(&["link", "set", &ifname, "up"]);
        ns.ip(&["addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", &ifname]);
        let ip6 = vm_ip6(i);
        ns.ip(&[
            "addr",
            "add",
            &format!("{ip6}/{PREFIX_LEN6}"),
            "dev",
            &ifname,
        ]);
        let port_index = ifindex(&self.hv, &port);
        self.vms.push(Vm {
            ns,
            ifname,
            port,
            port_index,
            mac,
            ip,
            ip6,
        });
        self.vms.last().expect("just pushed")
    }

    /// Adds an interface that already exists in the hypervisor namespace (a tap, say) to the
    /// bridge and sets it up.
    pub fn add_port(&self, ifname: &str) {
        self.hv
            .ip(&["link", "set", ifname, "master", &self.bridge, "up"]);
    }

    /// Ifindex of an interface in the hypervisor namespace.
    pub fn hv_ifindex(&self, ifname: &str) -> u32 {
        ifindex(&self.hv, ifname)
    }

    /// Sets every endpoint's interface (each VM's and the peer's) up or down; waits for the
    /// bridge to forward again when `up`. With every endpoint down nothing enters the
    /// hypervisor, which gives counters a quiet point to be read at.
    pub fn set_endpoints_up(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        for vm in &self.vms {
            vm.ns.ip(&["link", "set", &vm.ifname, state]);
        }
        self.peer.ns.ip(&["link", "set", &self.peer.ifname, state]);
        if up {
            self.wait_forwarding();
        }
    }

    /// Waits (at most 10 s, then panics) until every member of the bridge is in the forwarding
    /// state (a member whose far end is down stays disabled: bring it up first).
    pub fn wait_forwarding(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.hv.ip(&["-d", "link", "show", "master", &self.bridge]);
            let text = String::from_utf8_lossy(&out.stdout);
            let pending = text
                .lines()
                .any(|l| l.contains("bridge_slave") && !l.contains("state forwarding"));
            if !pending {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bridge ports not forwarding:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A random locally administered unicast MAC outside [`OUTSIDE_OUI`].
pub fn random_inside_mac() -> Mac {
    loop {
        let mut mac: Mac = rand::random();
        mac[0] = (mac[0] & 0xfc) | 0x02;
        if mac[..3] != OUTSIDE_OUI && mac[1..] != [0; 5] {
            return mac;
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Ifindex of `ifname` in `ns`.
pub fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    ns.enter(|| nix::net::if_::if_nametoindex(ifname))
        .unwrap_or_else(|e| panic!("no {ifname} in {}: {e}", ns.name()))
}

/// Keeps static IPv6 addresses in `ns` when a link goes down (`keep_addr_on_down`; the kernel
/// flushes them by default, IPv4 addresses stay either way), so that a test can take its
/// endpoints down and up ([`Lab::set_endpoints_up`]). Call it before making the links.
pub fn keep_ipv6_addresses(ns: &Netns) {
    ns.enter(|| {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/keep_addr_on_down");
            std::fs::write(&path, "1").unwrap_or_else(|e| panic!("writing {path}: {e}"));
        }
    });
}

/// Pings `ip` (IPv4 or IPv6) from `ns` `count` times (0.2 s apart, 10 s at most); `Err` with
/// ping's output unless every echo was answered. A link-local IPv6 address needs
/// [`ping_scoped`].
pub fn ping(ns: &Netns, ip: impl Into<IpAddr>, count: u32) -> Result<(), String> {
    ping_target(ns, &ip.into().to_string(), count)
}

/// Pings the IPv6 address `ip` through the interface `dev` (`ip%dev`: what a link-local
/// address needs).
pub fn ping_scoped(ns: &Netns, ip: Ipv6Addr, dev: &str, count: u32) -> Result<(), String> {
    ping_target(ns, &format!("{ip}%{dev}"), count)
}

fn ping_target(ns: &Netns, target: &str, count: u32) -> Result<(), String> {
    let out = ns
        .command("ping")
        .args(["-n", "-q", "-i", "0.2", "-W", "2", "-w", "10", "-c"])
        .arg(count.to_string())
        .arg(target)
        .output()
        .map_err(|e| format!("running ping: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {target} from {} failed: {}{}",
            ns.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The link-local address of `ifname` in `ns` (once the kernel has made one).
pub fn link_local(ns: &Netns, ifname: &str) -> Option<Ipv6Addr> {
    ipv6_addrs(ns, ifname)
        .into_iter()
        .find_map(|a| is_link_local(a.ip).then_some(a.ip))
}

/// Whether `ip` is in fe80::/10.
pub fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The link-local address Linux makes from `mac` (modified EUI-64, the default `addr_gen_mode`).
pub fn eui64_link_local(mac: &Mac) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// One IPv6 address of an interface and where its duplicate address detection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr6 {
    pub ip: Ipv6Addr,
    /// Still in duplicate address detection.
    pub tentative: bool,
    /// Duplicate address detection failed: someone (maybe the host's own announcement coming
    /// back) claimed the address.
    pub dad_failed: bool,
}

/// The IPv6 addresses of `ifname` in `ns`.
pub fn ipv6_addrs(ns: &Netns, ifname: &str) -> Vec<Addr6> {
    let out = ns.ip(&["-6", "-o", "addr", "show", "dev", ifname]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "inet6")?;
            Some(Addr6 {
                ip: words.get(at + 1)?.split('/').next()?.parse().ok()?,
                tentative: words.contains(&"tentative"),
                dad_failed: words.contains(&"dadfailed"),
            })
        })
        .collect()
}

/// Waits (10 s at most, then panics) until `ifname` in `ns` has a link-local address and no
/// address of it is tentative: duplicate address detection is over and IPv6 works. Panics at
/// once if an address failed duplicate address detection. Returns the link-local address.
pub fn wait_ipv6_ready(ns: &Netns, ifname: &str) -> Ipv6Addr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addrs = ipv6_addrs(ns, ifname);
        assert!(
            addrs.iter().all(|a| !a.dad_failed),
            "duplicate address detection failed on {ifname} in {}: {addrs:?}",
            ns.name()
        );
        let ll = addrs.iter().find(|a| is_link_local(a.ip));
        if let Some(ll) = ll
            && addrs.iter().all(|a| !a.tentative)
        {
            return ll.ip;
        }
        assert!(
            Instant::now() < deadline,
            "IPv6 on {ifname} in {} not ready: {addrs:?}",
            ns.name()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The neighbour table of `ns`: (address, MAC) of every entry that has a MAC.
pub fn neighbours(ns: &Netns) -> Vec<(Ipv4Addr, Mac)> {
    let out = ns.ip(&["-4", "neigh", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let ip = words.first()?.parse().ok()?;
            let at = words.iter().position(|w| *w == "lladdr")?;
            Some((ip, parse_mac(words.get(at + 1)?)?))
        })
        .collect()
}

/// The MAC `ns` has for `ip` in its neighbour table.
pub fn neighbour(ns: &Netns, ip: Ipv4Addr) -> Option<Mac> {
    neighbours(ns)
        .into_iter()
        .find_map(|(a, mac)| (a == ip).then_some(mac))
}

/// An IPv6 neighbour entry: address, interface, MAC and state (`REACHABLE`, `STALE`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour6 {
    pub ip: Ipv6Addr,
    pub dev: String,
    pub mac: Mac,
    pub state: String,
}

/// The IPv6 neighbour table of `ns`: every entry that has a MAC.
pub fn neighbours6(ns: &Netns) -> Vec<Neighbour6> {
    let out = ns.ip(&["-6", "neigh", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let ip = words.first()?.parse().ok()?;
            let dev = words.get(words.iter().position(|w| *w == "dev")? + 1)?;
            let mac = parse_mac(words.get(words.iter().position(|w| *w == "lladdr")? + 1)?)?;
            Some(Neighbour6 {
                ip,
                dev: dev.to_string(),
                mac,
                state: words.last()?.to_string(),
            })
        })
        .collect()
}

/// The MAC `ns` has for the IPv6 address `ip` in its neighbour table.
pub fn neighbour6(ns: &Netns, ip: Ipv6Addr) -> Option<Mac> {
    neighbours6(ns)
        .into_iter()
        .find_map(|n| (n.ip == ip).then_some(n.mac))
}

/// Sends `bytes` bytes over TCP from a client in `client` to a server listening on
/// `server_ip` in `server`, checks that all arrived intact, and returns how long it took. Every
/// step has a timeout, so a broken path fails instead of hanging.
pub fn tcp_transfer(
    server: &Netns,
    server_ip: Ipv4Addr,
    client: &Netns,
    bytes: usize,
) -> Result<Duration, String> {
    const TIMEOUT: Duration = Duration::from_secs(20);
    let listener = server
        .enter(|| TcpListener::bind((server_ip, 0)))
        .map_err(|e| format!("listening on {server_ip}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let receiver = thread::spawn(move || -> Result<(u64, u64), String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no connection".into());
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut n, mut sum) = (0u64, 0u64);
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    sum = checksum(sum, &buf[..k]);
                    n += k as u64;
                }
                Err(e) => return Err(format!("receiving after {n} bytes: {e}")),
            }
        }
        stream
            .write_all(&n.to_be_bytes())
            .map_err(|e| format!("acknowledging: {e}"))?;
        Ok((n, sum))
    });
    let start = Instant::now();
    let sent = (|| -> Result<u64, String> {
        let mut stream = client
            .enter(|| TcpStream::connect_timeout(&addr, TIMEOUT))
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let chunk: Vec<u8> = (0..1 << 16).map(|i| (i * 7 % 251) as u8).collect();
        let (mut left, mut sum) = (bytes, 0u64);
        while left > 0 {
            let k = left.min(chunk.len());
            stream
                .write_all(&chunk[..k])
                .map_err(|e| format!("sending: {e}"))?;
            sum = checksum(sum, &chunk[..k]);
            left -= k;
        }
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut ack = [0u8; 8];
        stream
            .read_exact(&mut ack)
            .map_err(|e| format!("waiting for the acknowledgement: {e}"))?;
        match u64::from_be_bytes(ack) {
            n if n == bytes as u64 => Ok(sum),
            n => Err(format!("the server acknowledged {n} of {bytes} bytes")),
        }
    })();
    let elapsed = start.elapsed();
    let received = receiver
        .join()
        .map_err(|_| "receiver panicked".to_string())?;
    let sum = sent?;
    let (n, rsum) = received?;
    if n != bytes as u64 || rsum != sum {
        return Err(format!(
            "sent {bytes} bytes (sum {sum:#x}), received {n} (sum {rsum:#x})"
        ));
    }
    Ok(elapsed)
}

/// Order-sensitive checksum of a byte stream.
fn checksum(mut sum: u64, data: &[u8]) -> u64 {
    for &b in data {
        sum = sum.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(b));
    }
    sum
}

/// A second hypervisor beside a [`Lab`]'s: its own namespace and bridge, trunked to the lab's
/// bridge (one L2 segment), and the name a VM port moved there gets.
pub struct SecondHypervisor {
    pub ns: Netns,
    pub bridge: String,
    pub port: String,
}

impl Lab {
    /// Adds a second hypervisor trunked to this one's bridge, and waits until it forwards.
    pub fn second_hypervisor(&self) -> SecondHypervisor {
        let ns = Netns::new("mh2");
        let id = &self.bridge[3..];
        let (bridge, t1, t2, port) = (
            format!("b2-{id}"),
            format!("t1-{id}"),
            format!("t2-{id}"),
            format!("q0-{id}"),
        );
        ns.ip(&["link", "add", &bridge, "type", "bridge"]);
        ns.ip(&["link", "set", &bridge, "up"]);
        self.hv.ip(&[
            "link",
            "add",
            &t1,
            "type",
            "veth",
            "peer",
            "name",
            &t2,
            "netns",
            ns.name(),
        ]);
        self.hv
            .ip(&["link", "set", &t1, "master", &self.bridge, "up"]);
        ns.ip(&["link", "set", &t2, "master", &bridge, "up"]);
        self.wait_forwarding();
        SecondHypervisor { ns, bridge, port }
    }
}

/// A ping every 10 ms from a namespace, in the background, to check that nothing is lost while
/// something changes underneath.
pub struct PingStream {
    child: ChildGuard,
    output: std::thread::JoinHandle<String>,
}

impl PingStream {
    pub fn start(ns: &Netns, to: Ipv4Addr) -> PingStream {
        let mut child = ChildGuard(
            ns.command("ping")
                .args(["-n", "-i", "0.01", "-W", "1"])
                .arg(to.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting ping"),
        );
        // Read as it comes: a full pipe would stall ping.
        let mut stdout = child.0.stdout.take().expect("ping's stdout");
        let output = std::thread::spawn(move || {
            let mut out = String::new();
            stdout
                .read_to_string(&mut out)
                .expect("reading ping's output");
            out
        });
        PingStream { child, output }
    }

    /// Stops ping (SIGINT) and returns (sequence numbers answered, sequence numbers missing
    /// before the last answer).
    pub fn stop(mut self) -> (usize, Vec<u64>) {
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.0.wait();
        let out = self.output.join().expect("ping reader");
        let got: std::collections::HashSet<u64> = out
            .lines()
            .filter_map(|l| {
                l.split("icmp_seq=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        let last = got.iter().copied().max().unwrap_or(0);
        (got.len(), (1..=last).filter(|s| !got.contains(s)).collect())
    }
}
