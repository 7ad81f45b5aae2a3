//! IPv6 through MAT with real Linux stacks and the real `mat` daemon: Neighbor Discovery carries
//! outside MACs only, in both directions; a VM cannot claim another's address with a MAC that is
//! not its own; the daemon's unsolicited Neighbor Advertisements move a peer's entry when a VM
//! changes hypervisor; and the daemon learns the VM's IPv6 addresses from its own ND.
//!
//! Every namespace has IPv6 on, as a real guest does: link-local addresses from the MACs, the lab's
//! `2001:db8::/64` addresses, duplicate address detection, MLD and router solicitations.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr},
    thread::sleep,
    time::{Duration, Instant},
};

use etherparse::{Icmpv6Type, PacketBuilder};
use mat_tests::{
    capture::{
        Addrs, Capture, NA_OVERRIDE, ND_NA, ND_NS, ND_SOURCE_LL, ND_TARGET_LL, Report, inject,
    },
    daemon::{Daemon, POOL, counter, mac_str},
    frames::Mac,
    topology::{
        Lab, PREFIX_LEN, PREFIX_LEN6, SecondHypervisor, Vm, eui64_link_local, fmt_mac, ipv6_addrs,
        neighbour6, neighbours6, parse_mac, ping, ping_scoped, wait_ipv6_ready,
    },
};
use serde_json::Value;

const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];

fn must(r: Result<(), String>) {
    r.unwrap_or_else(|e| panic!("{e}"));
}

/// `mat attach` of `vm` with `extra` arguments; returns its outside MAC.
fn attach(d: &Daemon, vm: &Vm, name: &str, extra: &[&str]) -> Mac {
    attach_port(d, &vm.port, vm, name, extra)
}

/// `mat attach` of `vm` on `port`.
fn attach_port(d: &Daemon, port: &str, vm: &Vm, name: &str, extra: &[&str]) -> Mac {
    let mac = mac_str(&vm.mac);
    let mut args = vec!["attach", port, "--mac", &mac, "--vm", name];
    args.extend_from_slice(extra);
    parse_mac(d.cli_ok(&args).trim()).expect("attach prints the outside MAC")
}

/// The sum of `outcome` over every program.
fn total(d: &Daemon, outcome: &str) -> u64 {
    d.cli_json(&["stats"])["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .filter(|c| c["outcome"] == outcome)
        .filter_map(|c| c["packets"].as_u64())
        .sum()
}

/// The IPv6 addresses `mat list --json` shows as learned for the binding on `port`.
fn learned6(d: &Daemon, port: &str) -> BTreeSet<Ipv6Addr> {
    let list: Value = d.cli_json(&["list"]);
    list["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .filter(|b| b["port"] == port)
        .flat_map(|b| b["learned"].as_array().cloned().unwrap_or_default())
        .filter_map(|ip| ip.as_str()?.parse::<IpAddr>().ok())
        .filter_map(|ip| match ip {
            IpAddr::V6(ip) => Some(ip),
            IpAddr::V4(_) => None,
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// An unsolicited Neighbor Advertisement (override flag) to all nodes: `src_mac` claims that
/// `target` is at `tllao`.
fn unsolicited_na(src_mac: Mac, src_ip: Ipv6Addr, target: Ipv6Addr, tllao: Mac) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend([ND_TARGET_LL, 1]);
    body.extend(tllao);
    let builder = PacketBuilder::ethernet2(src_mac, ALL_NODES_MAC)
        .ipv6(src_ip.octets(), ALL_NODES.octets(), 255)
        .icmpv6(Icmpv6Type::Unknown {
            type_u8: ND_NA,
            code_u8: 0,
            bytes5to8: [NA_OVERRIDE, 0, 0, 0],
        });
    let mut frame = Vec::with_capacity(builder.size(body.len()));
    builder.write(&mut frame, &body).expect("building an NA");
    frame
}

/// Beyond the uplink: no inside MAC of `lab`'s VMs in any Ethernet, ARP or ND link-layer address,
/// every ND message with a right checksum and hop limit 255.
fn assert_outside_only(lab: &Lab, report: &Report, what: &str) {
    report.assert_complete(what);
    for f in &report.frames {
        let a = f.addrs();
        for vm in &lab.vms {
            assert!(
                !a.all().contains(&vm.mac),
                "{what}: inside MAC {} on the wire: {a:?}",
                fmt_mac(&vm.mac)
            );
        }
        if let Some(nd) = &a.nd {
            assert_ne!(nd.checksum_ok, Some(false), "{what}: bad checksum: {a:?}");
            assert_eq!(nd.hop_limit, 255, "{what}: {a:?}");
        }
    }
}

/// ND messages of `kind` in a capture whose first option of type `option` is `mac`.
fn nd_with(report: &Report, kind: u8, option: u8, mac: Mac) -> Vec<Addrs> {
    report
        .frames
        .iter()
        .map(mat_tests::capture::Captured::addrs)
        .filter(|a| {
            a.nd.as_ref()
                .is_some_and(|nd| nd.kind == kind && nd.option(option) == Some(mac))
        })
        .collect()
}

/// The daemon's announcements of `ip` from `outside`: unsolicited NAs (override flag, not
/// solicited) to all nodes with the target option `outside`.
fn announcements(report: &Report, outside: Mac, ip: Ipv6Addr) -> usize {
    nd_with(report, ND_NA, ND_TARGET_LL, outside)
        .iter()
        .filter(|a| {
            let nd = a.nd.as_ref().expect("an NA");
            a.src == outside
                && a.dst == ALL_NODES_MAC
                && nd.dst_ip == ALL_NODES
                && nd.target == Some(ip)
                && nd.flags == NA_OVERRIDE
                && nd.checksum_ok == Some(true)
        })
        .count()
}

/// Two VMs on one hypervisor, a peer beyond the uplink, port security on (the default): ping
/// over link-local and global addresses in every direction; every neighbour entry holds outside
/// MACs; the wire carries no inside MAC, in Ethernet headers or ND options; the daemon learns
/// each VM's addresses from its ND; and a VM given its addresses at attach, during its own
/// duplicate address detection, never hears the daemon's announcements (it would declare its
/// addresses duplicate).
#[test]
fn ping_over_ipv6_through_mat() {
    let t = Instant::now();
    let lab = Lab::new(2);
    let (vm0, vm1, peer) = (&lab.vms[0], &lab.vms[1], &lab.peer);
    let d = Daemon::start(&lab.hv, &PLAN);
    // The VMs boot once bound, as under a hypervisor: down until then (a VM that runs unbound is
    // not translated, and the captures start now).
    for vm in &lab.vms {
        vm.ns.ip(&["link", "set", &vm.ifname, "down"]);
    }
    sleep(Duration::from_millis(100));
    let peer_cap = Capture::in_netns(&peer.ns, &peer.ifname);
    let vm0_cap = Capture::in_netns(&vm0.ns, &vm0.ifname);
    let vm1_cap = Capture::in_netns(&vm1.ns, &vm1.ifname);
    // VM 0 is attached with its addresses: the daemon announces them at once, three times over a
    // second, while VM 0 comes up and runs its duplicate address detection.
    let ll0 = eui64_link_local(&vm0.mac);
    let out0 = attach(
        &d,
        vm0,
        "vm0",
        &["--ip", &vm0.ip6.to_string(), "--ip", &ll0.to_string()],
    );
    let out1 = attach(&d, vm1, "vm1", &[]);
    let outs = [out0, out1];
    lab.set_endpoints_up(true);

    let peer_ll = wait_ipv6_ready(&peer.ns, &peer.ifname);
    let lls = [
        wait_ipv6_ready(&vm0.ns, &vm0.ifname),
        wait_ipv6_ready(&vm1.ns, &vm1.ifname),
    ];
    assert_eq!(lls[0], ll0, "the kernel's link-local address");
    eprintln!("IPv6 ready after {:?}", t.elapsed());
    for (i, vm) in lab.vms.iter().enumerate() {
        must(ping(&vm.ns, peer.ip6, 2));
        must(ping_scoped(&vm.ns, peer_ll, &vm.ifname, 2));
        must(ping(&peer.ns, vm.ip6, 2));
        must(ping_scoped(&peer.ns, lls[i], &peer.ifname, 2));
    }
    must(ping(&vm0.ns, vm1.ip6, 2));
    must(ping(&vm1.ns, vm0.ip6, 2));
    must(ping_scoped(&vm0.ns, lls[1], &vm0.ifname, 2));
    must(ping_scoped(&vm1.ns, lls[0], &vm1.ifname, 2));
    eprintln!("pings done after {:?}", t.elapsed());

    // The peer knows each VM, global and link-local, by its outside MAC, and nothing else.
    let table = neighbours6(&peer.ns);
    for (i, vm) in lab.vms.iter().enumerate() {
        for ip in [vm.ip6, lls[i]] {
            assert_eq!(
                neighbour6(&peer.ns, ip),
                Some(outs[i]),
                "peer's entry for {ip}: {table:?}"
            );
        }
    }
    for n in &table {
        assert!(
            outs.contains(&n.mac),
            "peer's entry with a MAC not outside: {n:?}"
        );
    }
    // The VMs know each other by their outside MACs too, and the peer by its own MAC.
    for (me, other) in [(0, 1), (1, 0)] {
        let ns = &lab.vms[me].ns;
        assert_eq!(neighbour6(ns, lab.vms[other].ip6), Some(outs[other]));
        assert_eq!(neighbour6(ns, lls[other]), Some(outs[other]));
        assert_eq!(neighbour6(ns, peer.ip6), Some(peer.mac));
        assert_eq!(neighbour6(ns, peer_ll), Some(peer.mac));
    }

    // The daemon learned every address each VM claimed in its own ND (its NS sources and NA
    // targets); for VM 0 they come on top of the ones it was given.
    for (i, vm) in lab.vms.iter().enumerate() {
        let want = BTreeSet::from([vm.ip6, lls[i]]);
        wait_for("learned IPv6 addresses", Duration::from_secs(3), || {
            learned6(&d, &vm.port).is_superset(&want)
        });
    }
    let list = d.cli_json(&["list"]);
    eprintln!("mat list: {list}");

    let seen = peer_cap.stop();
    let (vm0_seen, vm1_seen) = (vm0_cap.stop(), vm1_cap.stop());
    assert_outside_only(&lab, &seen, "the peer");
    for (i, out) in outs.iter().enumerate() {
        assert!(
            !nd_with(&seen, ND_NS, ND_SOURCE_LL, *out).is_empty(),
            "no NS from VM {i} with its outside MAC as source option"
        );
        assert!(
            !nd_with(&seen, ND_NA, ND_TARGET_LL, *out).is_empty(),
            "no NA from VM {i} with its outside MAC as target option"
        );
    }
    // VM 0's addresses were announced beyond the uplink and to VM 1 (three NAs each at attach,
    // the first maybe before VM 1's port came up; three more on VM 0's first frame), never to
    // VM 0 itself: its duplicate address detection survived (checked by wait_ipv6_ready).
    for ip in [vm0.ip6, ll0] {
        let (at_peer, at_vm1) = (
            announcements(&seen, out0, ip),
            announcements(&vm1_seen, out0, ip),
        );
        eprintln!("announcements of {ip}: {at_peer} at the peer, {at_vm1} at VM 1");
        assert!(at_peer >= 3, "at the peer, {ip}: {at_peer}");
        assert!(at_vm1 >= 2, "at VM 1, {ip}: {at_vm1}");
    }
    let own: Vec<Addrs> = vm0_seen
        .incoming()
        .map(mat_tests::capture::Captured::addrs)
        .filter(|a| {
            a.nd.as_ref()
                .is_some_and(|nd| nd.kind == ND_NA && [vm0.ip6, ll0].contains(&nd.target.unwrap()))
        })
        .collect();
    assert!(
        own.is_empty(),
        "VM 0 heard NAs for its own addresses: {own:?}"
    );
    assert!(counter(&d.cli_json(&["stats"]), "port-to-vm-tc", "reflected") >= 4);
    // What the VMs received carries their own inside MACs only, never their outside MACs.
    for (report, out) in [(&vm0_seen, out0), (&vm1_seen, out1)] {
        for f in report.incoming() {
            assert!(!f.addrs().all().contains(&out), "{:?}", f.addrs());
        }
    }
    assert!(counter(&d.cli_json(&["stats"]), "port-from-vm-tc", "nd_rewritten") > 0);
    for outcome in ["port_security_dropped", "spoof_dropped", "malformed"] {
        assert_eq!(total(&d, outcome), 0, "{outcome}: genuine traffic dropped");
    }
    eprintln!("ping_over_ipv6_through_mat: {:?}", t.elapsed());
}

/// A VM sends Neighbor Advertisements that claim another VM's address, with the other VM's
/// outside MAC and with its inside MAC as target option (from its own Ethernet source, which
/// port security allows). With port security (the default) neither reaches the peer, whose
/// entry stays at the victim's outside MAC. The same frames from a port without port security
/// show why it is on: the outside MAC is still caught as a spoof, but the inside MAC reaches the
/// peer and takes the victim's address over.
#[test]
fn a_spoofed_neighbor_advertisement_never_reaches_the_peer() {
    let t = Instant::now();
    let lab = Lab::new(3);
    let (victim, attacker, open, peer) = (&lab.vms[0], &lab.vms[1], &lab.vms[2], &lab.peer);
    let d = Daemon::start(&lab.hv, &PLAN);
    let victim_out = attach(&d, victim, "victim", &[]);
    attach(&d, attacker, "attacker", &[]);
    let open_out = attach(&d, open, "open", &["--no-port-security"]);
    let list = d.cli_json(&["list"]);
    let secured: Vec<(String, bool)> = list["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["port"].as_str().unwrap().to_owned(),
                b["port_security"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(secured.contains(&(attacker.port.clone(), true)), "{list}");
    assert!(secured.contains(&(open.port.clone(), false)), "{list}");
    wait_ipv6_ready(&peer.ns, &peer.ifname);
    let lls: Vec<Ipv6Addr> = lab
        .vms
        .iter()
        .map(|vm| wait_ipv6_ready(&vm.ns, &vm.ifname))
        .collect();
    must(ping(&peer.ns, victim.ip6, 2));
    assert_eq!(neighbour6(&peer.ns, victim.ip6), Some(victim_out));

    let cap = Capture::in_netns(&peer.ns, &peer.ifname);
    let psd = counter(
        &d.cli_json(&["stats"]),
        "port-from-vm-tc",
        "port_security_dropped",
    );
    let spoof = counter(&d.cli_json(&["stats"]), "port-from-vm-tc", "spoof_dropped");
    for tllao in [victim_out, victim.mac] {
        inject(
            &attacker.ns,
            &attacker.ifname,
            &unsolicited_na(attacker.mac, lls[1], victim.ip6, tllao),
        );
    }
    sleep(Duration::from_millis(300));
    assert_eq!(
        counter(
            &d.cli_json(&["stats"]),
            "port-from-vm-tc",
            "port_security_dropped"
        ) - psd,
        2,
        "both claims dropped by port security"
    );
    assert_eq!(neighbour6(&peer.ns, victim.ip6), Some(victim_out));
    let seen = cap.stop();
    assert_outside_only(&lab, &seen, "the peer");
    let claims: Vec<Addrs> = seen
        .frames
        .iter()
        .map(mat_tests::capture::Captured::addrs)
        .filter(|a| {
            a.nd.as_ref()
                .is_some_and(|nd| nd.kind == ND_NA && nd.target == Some(victim.ip6))
                && a.src != victim_out
        })
        .collect();
    assert!(
        claims.is_empty(),
        "a spoofed NA reached the peer: {claims:?}"
    );

    // The control: the same NAs from the port without port security.
    let cap = Capture::in_netns(&peer.ns, &peer.ifname);
    inject(
        &open.ns,
        &open.ifname,
        &unsolicited_na(open.mac, lls[2], victim.ip6, victim_out),
    );
    sleep(Duration::from_millis(200));
    assert_eq!(
        counter(&d.cli_json(&["stats"]), "port-from-vm-tc", "spoof_dropped") - spoof,
        1,
        "another VM's outside MAC is a spoof without port security too"
    );
    assert_eq!(neighbour6(&peer.ns, victim.ip6), Some(victim_out));
    inject(
        &open.ns,
        &open.ifname,
        &unsolicited_na(open.mac, lls[2], victim.ip6, victim.mac),
    );
    // The peer takes it over. (It then moves on to the open VM's outside MAC: the data plane
    // learns the NA's target for the sender's binding whatever MAC the NA claims, and the daemon
    // announces it from that binding's outside MAC.)
    wait_for(
        "the peer taking the unprotected claim",
        Duration::from_secs(2),
        || neighbour6(&peer.ns, victim.ip6) != Some(victim_out),
    );
    sleep(Duration::from_millis(100));
    let seen = cap.stop();
    let passed = nd_with(&seen, ND_NA, ND_TARGET_LL, victim.mac);
    assert_eq!(passed.len(), 1, "{passed:?}");
    assert_eq!(passed[0].src, open_out);
    assert_eq!(
        counter(
            &d.cli_json(&["stats"]),
            "port-from-vm-tc",
            "port_security_dropped"
        ) - psd,
        2
    );
    eprintln!(
        "a_spoofed_neighbor_advertisement_never_reaches_the_peer: {:?}",
        t.elapsed()
    );
}

/// A VM moves to another hypervisor (new outside MAC, same inside MAC and addresses): the peer
/// still has its IPv6 entries at the old outside MAC. The new hypervisor's daemon, told the
/// addresses at attach, announces them with unsolicited NAs before the VM has sent anything
/// there; the peer's entries move to the new outside MAC. Two hypervisors as in garp.rs.
#[test]
fn unsolicited_na_after_attach_moves_the_peers_entry() {
    let t = Instant::now();
    let lab = Lab::new(1);
    let (vm, peer) = (&lab.vms[0], &lab.peer);
    let SecondHypervisor {
        ns: hv2,
        bridge: br2,
        port: port2,
    } = lab.second_hypervisor();
    let d1 = Daemon::start(&lab.hv, &["--pool", POOL, "--rack", "1", "--host", "1"]);
    let d2 = Daemon::start(&hv2, &["--pool", POOL, "--rack", "1", "--host", "2"]);
    let old = attach(&d1, vm, "vm0", &[]);
    let ll = wait_ipv6_ready(&vm.ns, &vm.ifname);
    wait_ipv6_ready(&peer.ns, &peer.ifname);
    must(ping(&peer.ns, vm.ip6, 2));
    must(ping_scoped(&peer.ns, ll, &peer.ifname, 2));
    assert_eq!(neighbour6(&peer.ns, vm.ip6), Some(old));
    assert_eq!(neighbour6(&peer.ns, ll), Some(old));

    // The move: the VM's NIC goes away on hv1 and comes back on hv2, same MAC, still down.
    lab.hv.ip(&["link", "del", &vm.port]);
    hv2.ip(&[
        "link",
        "add",
        &port2,
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
    hv2.ip(&["link", "set", &port2, "master", &br2, "up"]);
    wait_for("release on hv1", Duration::from_secs(3), || {
        d1.cli_json(&["list"])["bindings"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    // The peer's entries point at the old outside MAC, which no longer leads anywhere.
    let stale: Vec<_> = neighbours6(&peer.ns)
        .into_iter()
        .filter(|n| n.ip == vm.ip6 || n.ip == ll)
        .collect();
    assert_eq!(stale.len(), 2, "{stale:?}");
    assert!(stale.iter().all(|n| n.mac == old), "{stale:?}");

    let cap = Capture::in_netns(&peer.ns, &peer.ifname);
    let attaching = Instant::now();
    let new = attach_port(
        &d2,
        &port2,
        vm,
        "vm0",
        &["--ip", &vm.ip6.to_string(), "--ip", &ll.to_string()],
    );
    assert_ne!(new, old);
    // The announcements start once the binding is in place, when the CLI returns (its first
    // attach on a daemon loads and verifies the programs: about half a second).
    let attached = Instant::now();
    let took = wait_for("the peer's entries", Duration::from_secs(1), || {
        neighbour6(&peer.ns, vm.ip6) == Some(new) && neighbour6(&peer.ns, ll) == Some(new)
    });
    eprintln!(
        "peer's IPv6 entries moved {:?} after the attach ({took:?} after the CLI returned): {:?}",
        attaching.elapsed(),
        neighbours6(&peer.ns)
    );
    sleep(Duration::from_millis(1300).saturating_sub(attached.elapsed()));
    let seen = cap.stop();
    assert_outside_only(&lab, &seen, "the peer");
    for ip in [vm.ip6, ll] {
        assert_eq!(announcements(&seen, new, ip), 3, "{ip}");
    }
    // Nothing came from the VM itself: its link is still down.
    assert!(
        seen.frames
            .iter()
            .all(|f| f.addrs().src != new || f.addrs().nd.is_some_and(|nd| nd.kind == ND_NA)),
        "a frame from the VM before it ran"
    );

    // The VM comes up on hv2 and talks at once, through its new outside MAC.
    vm.ns.ip(&["link", "set", &vm.ifname, "up"]);
    vm.ns.ip(&[
        "addr",
        "add",
        &format!("{}/{PREFIX_LEN}", vm.ip),
        "dev",
        &vm.ifname,
    ]);
    vm.ns.ip(&[
        "addr",
        "add",
        &format!("{}/{PREFIX_LEN6}", vm.ip6),
        "dev",
        &vm.ifname,
    ]);
    wait_ipv6_ready(&vm.ns, &vm.ifname);
    must(ping(&vm.ns, peer.ip6, 2));
    must(ping(&peer.ns, vm.ip6, 2));
    assert_eq!(neighbour6(&peer.ns, vm.ip6), Some(new));
    assert!(ipv6_addrs(&vm.ns, &vm.ifname).iter().all(|a| !a.dad_failed));
    eprintln!(
        "unsolicited_na_after_attach_moves_the_peers_entry: {:?}",
        t.elapsed()
    );
}
