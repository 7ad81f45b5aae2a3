//! DHCPv4 through MAT with a real server and a real client: dnsmasq beyond the uplink, busybox
//! udhcpc in the VM. A VM gets a lease on one hypervisor, moves to another (a new outside MAC,
//! the same inside MAC) and asks again, in both of the daemon's chaddr modes:
//!
//! - `keep` (the default): chaddr stays the VM's own MAC, so the server sees the same client on
//!   both hypervisors and the lease follows the VM; MAT sets the broadcast flag, so the server's
//!   reply goes to the broadcast address instead of to an inside MAC.
//! - `translate`: chaddr becomes the outside MAC (for switches whose DHCP snooping wants it to
//!   match the Ethernet source) and comes back as the inside MAC in replies.
//!
//! ```text
//!  peer (dnsmasq) ==== [uplink] hv1 bridge [trunk] ==== [trunk] hv2 bridge
//!                         |  (daemon: rack 1 host 1)          |  (daemon: rack 1 host 2)
//!                        vm0 (before the move)               vm0 (after the move)
//! ```
//!
//! Neither program changes anything outside the lab's namespaces: dnsmasq serves DHCP only (no
//! DNS, `--port=0`), on the peer's interface only, with its lease file and log in a temporary
//! directory; udhcpc runs in the VM's namespace with a script that only prints what it got.

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Stdio,
    thread::sleep,
    time::{Duration, Instant},
};

use mat_tests::{
    capture::{Capture, DhcpAddrs, Report},
    daemon::{Daemon, POOL, TempDir, counter, mac_str},
    frames::Mac,
    netns::{ChildGuard, Netns},
    topology::{
        Lab, PEER_IP, PREFIX_LEN, Peer, SecondHypervisor, Vm, fmt_mac, neighbour, parse_mac, ping,
    },
};

const RANGE: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 150));
const BROADCAST_FLAG: u16 = 0x8000;
const BROADCAST: Mac = [0xff; 6];
const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;
const DHCPREQUEST: u8 = 3;
const DHCPACK: u8 = 5;

/// dnsmasq as a DHCP server only, in the foreground on the peer's interface; killed by pid on
/// drop, its files removed with its directory.
struct Server {
    _child: ChildGuard,
    dir: TempDir,
}

impl Server {
    fn start(peer: &Peer) -> Server {
        let dir = TempDir::new("mat-dhcp-");
        let arg = |k: &str, p: &str| format!("--{k}={}", dir.path().join(p).display());
        let child = peer.ns.spawn(
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--no-resolv",
                "--no-hosts",
                &format!("--interface={}", peer.ifname),
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                &format!("--dhcp-range={},{},255.255.255.0,10m", RANGE.0, RANGE.1),
                "--dhcp-authoritative",
                // Offer at once: no ICMP check of the address first.
                "--no-ping",
                &arg("dhcp-leasefile", "leases"),
                &arg("pid-file", "dnsmasq.pid"),
                &arg("log-facility", "dnsmasq.log"),
                "--log-dhcp",
            ],
        );
        let server = Server { _child: child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains("DHCP, IP range") {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start:\n{}",
                server.log()
            );
            sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// The lease file: (MAC, address, client identifier) of every lease.
    fn leases(&self) -> Vec<(Mac, Ipv4Addr, String)> {
        fs::read_to_string(self.dir.path().join("leases"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Some((
                    parse_mac(w.get(1)?)?,
                    w.get(2)?.parse().ok()?,
                    w.get(4)?.to_string(),
                ))
            })
            .collect()
    }
}

/// What udhcpc got.
#[derive(Debug, PartialEq, Eq)]
struct Lease {
    ip: Ipv4Addr,
    server: Ipv4Addr,
}

/// Runs udhcpc once on the VM's interface (foreground, quits with a lease or gives up after
/// four discovers a second apart). Its script prints what it got and changes nothing. Without
/// `client_id` it sends no client identifier (`-C`), so the server keys the lease by chaddr.
fn udhcpc(vm: &Vm, dir: &Path, client_id: bool) -> Lease {
    let script = dir.join("udhcpc.script");
    fs::write(
        &script,
        "#!/bin/sh\n# Prints what udhcpc got; changes nothing.\necho \"UDHCPC $1 ip=$ip serverid=$serverid\"\n",
    )
    .expect("writing the udhcpc script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = vm.ns.command("udhcpc");
    cmd.args(["-f", "-q", "-n", "-t", "4", "-T", "1", "-A", "1", "-i"])
        .arg(&vm.ifname)
        .arg("-s")
        .arg(&script);
    if !client_id {
        cmd.arg("-C");
    }
    let out = cmd.stdin(Stdio::null()).output().expect("running udhcpc");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "udhcpc failed:\n{text}");
    let bound = text
        .lines()
        .find(|l| l.starts_with("UDHCPC bound "))
        .unwrap_or_else(|| panic!("no lease:\n{text}"));
    let field = |k: &str| -> Ipv4Addr {
        bound
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {bound:?}"))
    };
    Lease {
        ip: field("ip="),
        server: field("serverid="),
    }
}

/// Two hypervisors, their bridges trunked, each with its own daemon started with `args`; the
/// peer beyond hv1's uplink. The VM starts on hv1, without its static IPv4 address.
struct Hosts {
    lab: Lab,
    hv2: Netns,
    br2: String,
    port2: String,
    d1: Daemon,
    d2: Daemon,
}

impl Hosts {
    fn new(args: &[&str]) -> Hosts {
        let lab = Lab::new(1);
        let SecondHypervisor {
            ns: hv2,
            bridge: br2,
            port: port2,
        } = lab.second_hypervisor();
        let vm = &lab.vms[0];
        vm.ns.ip(&["-4", "addr", "flush", "dev", &vm.ifname]);
        let plan = |host: &'static str| {
            let mut v = vec!["--pool", POOL, "--rack", "1", "--host", host];
            v.extend_from_slice(args);
            v
        };
        let d1 = Daemon::start(&lab.hv, &plan("1"));
        let d2 = Daemon::start(&hv2, &plan("2"));
        Hosts {
            lab,
            hv2,
            br2,
            port2,
            d1,
            d2,
        }
    }

    fn vm(&self) -> &Vm {
        &self.lab.vms[0]
    }

    /// Attaches the VM on `d`'s `port`; returns its outside MAC.
    fn attach(&self, d: &Daemon, port: &str) -> Mac {
        let vm = self.vm();
        let out = d.cli_ok(&["attach", port, "--mac", &mac_str(&vm.mac), "--vm", "vm0"]);
        parse_mac(out.trim()).expect("an outside MAC")
    }

    /// The move: the VM's NIC goes away on hv1 (whose daemon releases it) and comes back on hv2,
    /// same MAC, attached there before it comes up; returns the new outside MAC.
    fn move_vm(&self) -> Mac {
        let vm = self.vm();
        self.lab.hv.ip(&["link", "del", &vm.port]);
        self.hv2.ip(&[
            "link",
            "add",
            &self.port2,
            "type",
            "veth",
            "peer",
            "name",
            &vm.ifname,
            "address",
            &fmt_mac(&vm.mac),
            "netns",
            vm.ns.name(),
        ]);
        self.hv2
            .ip(&["link", "set", &self.port2, "master", &self.br2, "up"]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.d1.cli_json(&["list"])["bindings"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "hv1 did not release the VM");
            sleep(Duration::from_millis(10));
        }
        let out = self.attach(&self.d2, &self.port2);
        vm.ns.ip(&["link", "set", &vm.ifname, "up"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = self.hv2.ip(&["-d", "link", "show", &self.port2]);
            if String::from_utf8_lossy(&o.stdout).contains("state forwarding") {
                break;
            }
            assert!(Instant::now() < deadline, "hv2's port not forwarding");
            sleep(Duration::from_millis(10));
        }
        out
    }

    /// Uses the lease: the address on the VM's interface, a ping to the server (which then knows
    /// the VM at `outside`), the address removed again.
    fn use_lease(&self, lease: &Lease, outside: Mac) {
        let vm = self.vm();
        let addr = format!("{}/{PREFIX_LEN}", lease.ip);
        vm.ns.ip(&["addr", "add", &addr, "dev", &vm.ifname]);
        ping(&vm.ns, PEER_IP, 2).unwrap_or_else(|e| panic!("with the leased address: {e}"));
        assert_eq!(neighbour(&self.lab.peer.ns, lease.ip), Some(outside));
        vm.ns.ip(&["addr", "del", &addr, "dev", &vm.ifname]);
    }
}

/// DHCP messages with their Ethernet source and destination.
type Messages = Vec<(Mac, Mac, DhcpAddrs)>;

/// The DHCP messages in a capture.
fn dhcp(report: &Report) -> Messages {
    report.assert_complete("a capture");
    report
        .frames
        .iter()
        .filter_map(|f| {
            let a = f.addrs();
            Some((a.src, a.dst, a.dhcp?))
        })
        .collect()
}

/// Beyond the uplink: no Ethernet (or ARP, or ND) address is the VM's inside MAC.
fn assert_no_inside_mac(report: &Report, inside: Mac) {
    for f in &report.frames {
        let a = f.addrs();
        assert!(
            !a.all().contains(&inside),
            "inside MAC {} on the wire: {a:?}",
            fmt_mac(&inside)
        );
    }
}

/// One lease through MAT on the current hypervisor, with captures at the peer and in the VM;
/// checks what every mode shares and returns the lease and the DHCP messages at the peer and
/// in the VM.
fn lease_through_mat(
    h: &Hosts,
    server: &Server,
    dir: &Path,
    client_id: bool,
) -> (Lease, Messages, Messages) {
    let (vm, peer) = (h.vm(), &h.lab.peer);
    let peer_cap = Capture::in_netns(&peer.ns, &peer.ifname);
    let vm_cap = Capture::in_netns(&vm.ns, &vm.ifname);
    let t = Instant::now();
    let lease = udhcpc(vm, dir, client_id);
    eprintln!("lease {lease:?} in {:?}", t.elapsed());
    sleep(Duration::from_millis(50));
    let (at_peer, in_vm) = (peer_cap.stop(), vm_cap.stop());
    assert_no_inside_mac(&at_peer, vm.mac);
    assert!(
        (RANGE.0..=RANGE.1).contains(&lease.ip),
        "{lease:?}\n{}",
        server.log()
    );
    assert_eq!(lease.server, PEER_IP);
    let (at_peer, in_vm) = (dhcp(&at_peer), dhcp(&in_vm));
    let kinds = |v: &Messages, op: u8| -> Vec<u8> {
        v.iter()
            .filter(|(_, _, d)| d.op == op)
            .filter_map(|(_, _, d)| d.msg_type)
            .collect()
    };
    assert_eq!(
        kinds(&at_peer, 1),
        [DHCPDISCOVER, DHCPREQUEST],
        "{at_peer:?}"
    );
    assert_eq!(kinds(&in_vm, 2), [DHCPOFFER, DHCPACK], "{in_vm:?}");
    // The client sees its own MAC as chaddr in every message (udhcpc drops replies with another),
    // and its client identifier (when it sends one) reaches the server untouched.
    for (_, _, d) in &in_vm {
        assert_eq!(d.chaddr, vm.mac, "{d:?}");
    }
    for (_, _, d) in at_peer.iter().filter(|(_, _, d)| d.op == 1) {
        assert_eq!(d.client_id, client_id.then_some(vm.mac), "{d:?}");
    }
    (lease, at_peer, in_vm)
}

/// Default mode: chaddr stays the VM's own MAC and the broadcast flag is set, so the server
/// broadcasts its replies and never sends to an inside MAC; the lease follows the VM to another
/// hypervisor.
#[test]
fn the_lease_follows_the_vm_with_chaddr_kept() {
    let t = Instant::now();
    let h = Hosts::new(&[]);
    let server = Server::start(&h.lab.peer);
    let dir = TempDir::new("mat-udhcpc-");
    let vm = h.vm();
    let out1 = h.attach(&h.d1, &vm.port);

    let (first, at_peer, in_vm) = lease_through_mat(&h, &server, dir.path(), true);
    for (src, _, d) in at_peer.iter().filter(|(_, _, d)| d.op == 1) {
        assert_eq!(*src, out1);
        assert_eq!(d.chaddr, vm.mac, "the server sees the VM's own MAC");
        assert_ne!(d.flags & BROADCAST_FLAG, 0, "broadcast flag set: {d:?}");
    }
    for (_, dst, d) in in_vm.iter().filter(|(_, _, d)| d.op == 2) {
        assert_eq!(*dst, BROADCAST, "replies broadcast: {d:?}");
    }
    assert_eq!(
        server.leases(),
        [(vm.mac, first.ip, format!("01:{}", fmt_mac(&vm.mac)))]
    );
    assert!(
        counter(
            &h.d1.cli_json(&["stats"]),
            "port-from-vm-tc",
            "dhcp_rewritten"
        ) >= 2
    );
    h.use_lease(&first, out1);

    let out2 = h.move_vm();
    assert_ne!(out2, out1);
    let (second, at_peer, _) = lease_through_mat(&h, &server, dir.path(), true);
    assert!(at_peer.iter().all(|(src, _, _)| *src != out1));
    assert_eq!(second, first, "the same address on the new hypervisor");
    assert_eq!(server.leases().len(), 1, "{:?}", server.leases());
    assert!(
        counter(
            &h.d2.cli_json(&["stats"]),
            "port-from-vm-tc",
            "dhcp_rewritten"
        ) >= 2
    );
    h.use_lease(&second, out2);
    eprintln!(
        "the_lease_follows_the_vm_with_chaddr_kept: {:?}",
        t.elapsed()
    );
}

/// Translating mode: the server sees the outside MAC as chaddr and replies to it (unicast, as
/// the broadcast flag is not set); the reply reaches the VM with its own MAC as chaddr.
/// After the move the server sees a new chaddr (the new outside MAC). Which lease it gives then
/// depends on the client: udhcpc sends a client identifier (01 + its own MAC) by default, and
/// dnsmasq keys leases by client identifier when there is one, so the VM keeps its address
/// (the lease's MAC becomes the new outside MAC); without one (`udhcpc -C`), dnsmasq keys by
/// chaddr, the old lease stays with the old outside MAC, and the VM gets a new address: the
/// price of translating chaddr.
#[test]
fn chaddr_translated_the_server_sees_outside_macs() {
    let t = Instant::now();
    for client_id in [true, false] {
        let h = Hosts::new(&["--dhcp-chaddr", "translate"]);
        let server = Server::start(&h.lab.peer);
        let dir = TempDir::new("mat-udhcpc-");
        let vm = h.vm();
        let out1 = h.attach(&h.d1, &vm.port);
        let clid = |mac: Mac| {
            if client_id {
                format!("01:{}", fmt_mac(&mac))
            } else {
                "*".to_owned()
            }
        };

        let (first, at_peer, in_vm) = lease_through_mat(&h, &server, dir.path(), client_id);
        for (src, _, d) in at_peer.iter().filter(|(_, _, d)| d.op == 1) {
            assert_eq!(*src, out1);
            assert_eq!(d.chaddr, out1, "the server sees the outside MAC");
            assert_eq!(d.flags & BROADCAST_FLAG, 0, "no broadcast flag: {d:?}");
        }
        for (_, dst, d) in at_peer.iter().filter(|(_, _, d)| d.op == 2) {
            assert_eq!(*dst, out1, "replies unicast to the outside MAC");
            assert_eq!(d.chaddr, out1, "{d:?}");
        }
        for (_, dst, d) in in_vm.iter().filter(|(_, _, d)| d.op == 2) {
            assert_eq!(*dst, vm.mac, "{d:?}");
        }
        assert_eq!(server.leases(), [(out1, first.ip, clid(vm.mac))]);
        assert!(
            counter(
                &h.d1.cli_json(&["stats"]),
                "port-from-vm-tc",
                "dhcp_rewritten"
            ) >= 2
        );
        assert!(
            counter(
                &h.d1.cli_json(&["stats"]),
                "port-to-vm-tc",
                "dhcp_rewritten"
            ) >= 2
        );
        h.use_lease(&first, out1);

        let out2 = h.move_vm();
        let (second, at_peer, _) = lease_through_mat(&h, &server, dir.path(), client_id);
        for (_, _, d) in at_peer.iter().filter(|(_, _, d)| d.op == 1) {
            assert_eq!(d.chaddr, out2, "{d:?}");
        }
        let mut leases = server.leases();
        leases.sort();
        if client_id {
            assert_eq!(second, first, "the client identifier keeps the lease");
            assert_eq!(leases, [(out2, first.ip, clid(vm.mac))]);
        } else {
            assert_ne!(second.ip, first.ip, "a new chaddr, a new lease");
            let mut want = vec![
                (out1, first.ip, clid(vm.mac)),
                (out2, second.ip, clid(vm.mac)),
            ];
            want.sort();
            assert_eq!(leases, want);
        }
        assert!(
            counter(
                &h.d2.cli_json(&["stats"]),
                "port-to-vm-tc",
                "dhcp_rewritten"
            ) >= 2
        );
        h.use_lease(&second, out2);
        eprintln!("client identifier {client_id}: {first:?} then {second:?}");
    }
    eprintln!(
        "chaddr_translated_the_server_sees_outside_macs: {:?}",
        t.elapsed()
    );
}
