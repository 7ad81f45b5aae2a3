//! Gratuitous ARP from the `mat` daemon: a VM that moves to another hypervisor (and so to another
//! outside MAC) is found there by a peer within a second, and never hears its own announcement.
//!
//! ```text
//!  peer ==== [uplink] hv1 bridge [trunk] ==== [trunk] hv2 bridge
//!               |  (daemon: rack 1 host 1)          |  (daemon: rack 1 host 2)
//!              vm0 (before the move)               vm0 (after the move)
//! ```

use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use mat_tests::{
    capture::{Capture, Report},
    daemon::{Daemon, POOL, counter, mac_str},
    frames::Mac,
    topology::{Lab, PEER_IP, PREFIX_LEN, SecondHypervisor, fmt_mac, neighbour, ping},
};

/// Gratuitous ARP requests for `ip` from `mac` in a capture.
fn announcements(report: &Report, mac: Mac, ip: [u8; 4]) -> usize {
    report
        .frames
        .iter()
        .filter_map(|f| f.addrs().arp.map(|a| (f.addrs().src, a)))
        .filter(|(src, a)| *src == mac && a.op == 1 && a.sha == mac && a.spa == ip && a.tpa == ip)
        .count()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn a_moved_vm_is_found_at_its_new_outside_mac_within_a_second() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let ip = vm.ip.octets();

    // A second hypervisor, its bridge trunked to the first one's.
    let SecondHypervisor {
        ns: hv2,
        bridge: br2,
        port: port2,
    } = lab.second_hypervisor();

    let d1 = Daemon::start(&lab.hv, &["--pool", POOL, "--rack", "1", "--host", "1"]);
    let d2 = Daemon::start(&hv2, &["--pool", POOL, "--rack", "1", "--host", "2"]);
    let old: Mac = [2, 0, 0x5e, 1, 1, 0];
    let new: Mac = [2, 0, 0x5e, 1, 2, 0];
    let ip_arg = vm.ip.to_string();
    let out = d1.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
    ]);
    assert_eq!(out.trim(), fmt_mac(&old));
    ping(&vm.ns, PEER_IP, 2).expect("vm0 reaches the peer from hv1");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(old));

    // The move: the VM's NIC goes away on hv1 and comes back, same MAC and address, on hv2,
    // where it is bound before it runs (as libvirt does): with IPv6 on, a running VM talks at
    // once (duplicate address detection, MLD, router solicitations), and unbound it would do so
    // from its inside MAC.
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
    // hv1's daemon saw the port go and released the binding.
    wait_for("release on hv1", Duration::from_secs(3), || {
        d1.cli_json(&["list"])["bindings"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    // The peer still has the old outside MAC.
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(old));

    let peer_cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    let vm_cap = Capture::in_netns(&vm.ns, &vm.ifname);
    let attached = Instant::now();
    let out = d2.cli_ok(&[
        "attach",
        &port2,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
        "--ip",
        &ip_arg,
    ]);
    assert_eq!(out.trim(), fmt_mac(&new));
    // The announcements start now (the CLI's first attach on a daemon loads and verifies the
    // programs first), while the VM comes up.
    let returned = Instant::now();
    vm.ns.ip(&["link", "set", &vm.ifname, "up"]);
    vm.ns.ip(&[
        "addr",
        "add",
        &format!("{ip_arg}/{PREFIX_LEN}"),
        "dev",
        &vm.ifname,
    ]);
    let took = wait_for(
        "the peer's neighbour update",
        Duration::from_secs(1),
        || neighbour(&lab.peer.ns, vm.ip) == Some(new),
    );
    eprintln!(
        "peer updated {:?} after the attach ({:?} after the CLI returned)",
        attached.elapsed(),
        took
    );
    wait_for("hv2's port forwarding", Duration::from_secs(10), || {
        let out = hv2.ip(&["-d", "link", "show", &port2]);
        String::from_utf8_lossy(&out.stdout).contains("state forwarding")
    });
    // All three announcements, spaced over about a second.
    sleep(Duration::from_millis(1300).saturating_sub(returned.elapsed()));
    let peer_seen = peer_cap.stop();
    let vm_seen = vm_cap.stop();
    peer_seen.assert_complete("the peer");
    vm_seen.assert_complete("the VM");
    // Three at the attach; three more may follow the VM's first frame (the daemon announces
    // a VM again when it starts running).
    let garps = announcements(&peer_seen, new, ip);
    assert!(garps == 3 || garps == 6, "{garps} gratuitous ARPs");
    // Nothing from the inside MAC reached the wire, in any address field.
    for f in &peer_seen.frames {
        assert!(!f.addrs().all().contains(&vm.mac), "{:?}", f.addrs());
    }
    // The VM never hears its own announcement, under either MAC.
    let echoes: Vec<_> = vm_seen
        .incoming()
        .filter_map(|f| f.addrs().arp)
        .filter(|a| a.spa == ip)
        .collect();
    assert!(
        echoes.is_empty(),
        "the VM heard its announcement: {echoes:?}"
    );
    let stats = d2.cli_json(&["stats"]);
    // Those that reached its port (the first may have gone out before the port forwarded).
    assert!(counter(&stats, "port-to-vm-tc", "reflected") >= 2);

    ping(&vm.ns, PEER_IP, 2).expect("vm0 reaches the peer from hv2");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(new));
}

#[test]
fn an_address_learned_from_the_vm_is_announced() {
    let lab = Lab::new(2);
    let (vm, other) = (&lab.vms[0], &lab.vms[1]);
    let d = Daemon::start(&lab.hv, &["--pool", POOL, "--rack", "1", "--host", "3"]);
    let outside: Mac = [2, 0, 0x5e, 1, 3, 0];
    // No --ip: the daemon learns the address from the VM's own ARP.
    d.cli_ok(&["attach", &vm.port, "--mac", &mac_str(&vm.mac)]);
    let cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    let neighbour_cap = Capture::in_netns(&other.ns, &other.ifname);
    ping(&vm.ns, PEER_IP, 1).expect("vm0 reaches the peer");
    wait_for("the learned address", Duration::from_secs(3), || {
        let list = d.cli_json(&["list"]);
        list["bindings"][0]["learned"] == serde_json::json!([vm.ip.to_string()])
    });
    sleep(Duration::from_millis(1300));
    let seen = cap.stop();
    let seen_by_other = neighbour_cap.stop();
    // Beyond the uplink, and by the other VM on the same bridge.
    assert_eq!(announcements(&seen, outside, vm.ip.octets()), 3);
    assert_eq!(announcements(&seen_by_other, outside, vm.ip.octets()), 3);
    assert!(d.log().contains("announced"), "{}", d.log());
}

#[test]
fn a_vm_bound_ahead_of_time_is_announced_on_its_first_frame() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let d = Daemon::start(&lab.hv, &["--pool", POOL, "--rack", "1", "--host", "3"]);
    let outside: Mac = [2, 0, 0x5e, 1, 3, 0];
    let cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    // As for an incoming migration: bound before the VM runs here, announced once it does.
    let reply = d.request(&format!(
        r#"{{"op":"attach_vm","vm":"vm0","ports":[{{"port":"{}","mac":"{}","ips":["{}"]}}]}}"#,
        vm.port,
        mac_str(&vm.mac),
        vm.ip
    ));
    assert_eq!(
        reply["ok"]["attached"][0]["outside"],
        fmt_mac(&outside),
        "{reply}"
    );
    sleep(Duration::from_millis(700));
    ping(&vm.ns, PEER_IP, 1).expect("vm0 reaches the peer");
    sleep(Duration::from_millis(1300));
    let seen = cap.stop();
    let garps: Vec<usize> = seen
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            f.addrs().arp.is_some_and(|a| {
                a.sha == outside && a.spa == vm.ip.octets() && a.tpa == vm.ip.octets()
            })
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(garps.len(), 3, "three announcements");
    // None before the VM's first frame (its ARP for the peer) reached the wire.
    let first_from_vm = (0..seen.frames.len())
        .find(|i| !garps.contains(i) && seen.frames[*i].addrs().src == outside)
        .expect("a frame from the VM");
    assert!(first_from_vm < garps[0], "announced before the VM ran");
}
