//! Uplink mode and duplicate outside MACs, end to end through the real `mat daemon`: a lab
//! hypervisor with a bridge, VMs on veth ports and a peer beyond the uplink (see
//! `mat_tests::topology`), and a second hypervisor trunked to it for the duplicate.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use mat_tests::{
    capture::{Capture, inject},
    daemon::{Daemon, POOL, bindings, counter, mac_str, mat_binary},
    frames::Mac,
    netns::Netns,
    topology::{
        Lab, PEER_IP, PREFIX_LEN, PingStream, SecondHypervisor, fmt_mac, neighbour, ping,
        random_inside_mac,
    },
};
use serde_json::Value;

/// rack 1, host 3: the host pool is 02:00:5e:01:03:00/40.
const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];

fn outside(i: u8) -> Mac {
    [2, 0, 0x5e, 1, 3, i]
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = PLAN.to_vec();
    a.extend_from_slice(extra);
    a
}

/// Polls `f` every 20 ms until it holds; panics after `timeout`. Returns how long it took.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// An Ethernet frame (an IPv4 broadcast-ish UDP-less header is enough) from `src`.
fn frame_from(src: Mac) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype: nothing answers it
    f.resize(60, 0);
    f
}

/// `mat daemon` run once in `ns` with the directories of `d` and `extra` options; returns its
/// exit status and stderr (it must exit by itself within 10 s).
fn run_daemon_once(ns: &Netns, d: &Daemon, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name()))
        .arg("--")
        .arg(mat_binary())
        .arg("daemon")
        .arg("--socket")
        .arg(d.socket())
        .arg("--state-dir")
        .arg(d.state_dir())
        .arg("--pin-dir")
        .arg(d.pin_dir())
        .args(args(extra))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting mat daemon");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for mat daemon") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mat daemon {extra:?} did not exit");
        }
        sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn uplink_mode_translates_on_the_uplink_and_survives_restarts() {
    let lab = Lab::new(2);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    let mut d = Daemon::start(&lab.hv, &args(&["--uplink", &lab.uplink]));

    // plan and stats say which mode runs.
    let plan = d.cli_json(&["plan"]);
    assert_eq!(plan["mode"]["mode"], "uplink");
    assert_eq!(plan["mode"]["uplink"], lab.uplink.as_str());
    assert_eq!(plan["mode"]["uplink_xdp"], "native");
    assert_eq!(plan["mode"]["watching"], serde_json::json!([lab.uplink]));
    let text = d.cli_ok(&["plan"]);
    assert!(
        text.contains(&format!("mode        uplink {} (XDP native)", lab.uplink)),
        "{text}"
    );
    assert_eq!(d.cli_json(&["stats"])["mode"]["mode"], "uplink");
    // The uplink is no VM port.
    d.cli_refused(
        &["attach", &lab.uplink, "--mac", "52:54:00:00:00:01"],
        "not_vm_port",
    );

    for (vm, name) in [(vm0, "vm0"), (vm1, "vm1")] {
        d.cli_ok(&[
            "attach",
            &vm.port,
            "--mac",
            &mac_str(&vm.mac),
            "--vm",
            name,
            "--ip",
            &vm.ip.to_string(),
        ]);
    }
    // Every binding keyed by MAC only (the uplink's maps), none in the port table.
    let maps = d.maps();
    let uplink_keyed = |m: &[(u32, Mac, Mac)]| m.len() == 2 && m.iter().all(|e| e.0 == 0);
    assert!(uplink_keyed(&maps.0) && uplink_keyed(&maps.1), "{maps:?}");
    // The uplink's links are pinned in the layout's directory; the ports carry the guard.
    let links = d.pin_dir().join("v3/links");
    for p in ["uplink_out", "uplink_in"] {
        let pin = links.join(format!("{}-{p}", lab.uplink_index));
        assert!(pin.exists(), "{} missing", pin.display());
    }
    let stats = d.cli_json(&["stats"]);
    for p in stats["ports"].as_array().unwrap() {
        assert_eq!(
            p["programs"],
            serde_json::json!(["port_from_vm", "port_to_vm"])
        );
    }

    // The peer sees outside MACs only.
    let cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    ping(&vm0.ns, PEER_IP, 3).expect("vm0 reaches the peer");
    ping(&vm1.ns, PEER_IP, 3).expect("vm1 reaches the peer");
    let report = cap.stop();
    report.assert_complete("the peer");
    for f in &report.frames {
        let all = f.addrs().all();
        assert!(
            !all.contains(&vm0.mac) && !all.contains(&vm1.mac),
            "an inside MAC on the wire: {:?}",
            f.addrs()
        );
    }
    assert!(report.incoming().any(|f| f.addrs().src == outside(0)));
    assert_eq!(neighbour(&lab.peer.ns, vm0.ip), Some(outside(0)));
    assert_eq!(neighbour(&lab.peer.ns, vm1.ip), Some(outside(1)));

    // VM to VM on the same bridge: untranslated, by inside MACs (it never crosses the uplink).
    let port1 = Capture::in_netns(&lab.hv, &vm1.port);
    ping(&vm0.ns, vm1.ip, 3).expect("vm0 reaches vm1");
    let report = port1.stop();
    report.assert_complete("vm1's port");
    assert!(report.outgoing().any(|f| f.addrs().src == vm0.mac));
    assert!(
        !report
            .frames
            .iter()
            .any(|f| f.addrs().all().contains(&outside(0)))
    );
    assert_eq!(neighbour(&vm0.ns, vm1.ip), Some(vm1.mac));

    let stats = d.cli_json(&["stats"]);
    assert!(counter(&stats, "uplink-out-tc", "translated") >= 6);
    assert!(counter(&stats, "uplink-in-xdp", "translated") >= 6);
    assert_eq!(counter(&stats, "port-from-vm-tc", "translated"), 0);
    assert_eq!(counter(&stats, "port-to-vm-tc", "translated"), 0);
    // The announcements went out of the uplink and came back from nowhere: no duplicate.
    assert_eq!(stats["duplicates"], 0, "{stats}");

    // The guard: a VM sending from an outside-pool MAC (unbound, or another VM's) is dropped
    // on its port.
    let spoofed = counter(&stats, "port-from-vm-tc", "spoof_dropped");
    inject(&vm0.ns, &vm0.ifname, &frame_from(outside(0x42)));
    inject(&vm0.ns, &vm0.ifname, &frame_from(outside(1)));
    wait_for("the spoofed frames dropped", Duration::from_secs(5), || {
        counter(&d.cli_json(&["stats"]), "port-from-vm-tc", "spoof_dropped") >= spoofed + 2
    });

    // Restarts keep the data plane: no ping from the peer lost across kill -9 and start.
    let stream = PingStream::start(&lab.peer.ns, vm0.ip);
    sleep(Duration::from_millis(300));
    d.kill9_and_restart();
    sleep(Duration::from_millis(300));
    let (answered, missing) = stream.stop();
    assert!(
        answered > 20 && missing.is_empty(),
        "{answered} answered, missing {missing:?}"
    );
    assert_eq!(d.maps(), maps, "the restart changed the maps");
    assert_eq!(d.cli_json(&["plan"])["mode"]["mode"], "uplink");

    // A start in port mode while bindings exist is refused with the reason, and changes nothing.
    assert!(d.terminate().success());
    let (code, err) = run_daemon_once(&lab.hv, &d, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("2 bindings made in uplink mode"), "{err}");
    assert_eq!(d.maps(), maps);
    ping(&vm0.ns, PEER_IP, 2).expect("still translating after the refused start");
    assert_eq!(neighbour(&lab.peer.ns, vm0.ip), Some(outside(0)));
    // A missing uplink is refused too.
    let (code, err) = run_daemon_once(&lab.hv, &d, &["--uplink", "nosuch0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the uplink nosuch0 does not exist"), "{err}");

    // A restart in uplink mode takes the bindings back.
    d.spawn();
    d.wait_ready();
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 2);
    assert_eq!(d.maps(), maps);
}

#[test]
fn a_mode_switch_without_bindings_moves_the_programs() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let mut d = Daemon::start(
        &lab.hv,
        &args(&["--uplink", &lab.uplink, "--uplink-xdp", "generic"]),
    );
    assert_eq!(d.cli_json(&["plan"])["mode"]["uplink_xdp"], "generic");
    d.cli_ok(&["attach", &vm.port, "--mac", &mac_str(&vm.mac)]);
    ping(&vm.ns, PEER_IP, 2).expect("generic XDP translates");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(outside(0)));
    d.cli_ok(&["detach", &vm.port]);
    assert!(d.terminate().success());
    let links = d.pin_dir().join("v3/links");
    let uplink_pin = links.join(format!("{}-uplink_in", lab.uplink_index));
    assert!(uplink_pin.exists());

    // The same directories in port mode: nothing was bound, so it starts; the uplink's links go.
    d.set_args(&PLAN);
    d.spawn();
    d.wait_ready();
    assert_eq!(d.cli_json(&["plan"])["mode"]["mode"], "port");
    assert!(!uplink_pin.exists(), "the uplink's programs stayed");
    let out = d.cli_ok(&["attach", &vm.port, "--mac", &mac_str(&vm.mac)]);
    assert_eq!(out.trim(), fmt_mac(&outside(0)));
    // Port mode now holds the binding in the port table.
    let maps = d.maps();
    assert!(maps.0.iter().all(|e| e.0 == vm.port_index), "{maps:?}");
    ping(&vm.ns, PEER_IP, 2).expect("port mode translates");
}

/// Waits until every member of `bridge` in `ns` forwards.
fn wait_bridge_forwarding(ns: &Netns, bridge: &str) {
    wait_for("bridge ports forwarding", Duration::from_secs(10), || {
        let out = ns.ip(&["-d", "link", "show", "master", bridge]);
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("bridge_slave") && !l.contains("state forwarding"))
    });
}

#[test]
fn a_second_host_with_the_same_rack_and_host_id_is_detected() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let d1 = Daemon::start(
        &lab.hv,
        &args(&["--bridge", &lab.bridge, "--vm-ports", "p[0-9]*"]),
    );
    // Port mode: the managed bridge's network-side port is watched, not the VM's.
    let watching = |d: &Daemon| d.cli_json(&["stats"])["mode"]["watching"].clone();
    assert_eq!(watching(&d1), serde_json::json!([lab.uplink]));
    let out = d1.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm.ip.to_string(),
    ]);
    assert_eq!(out.trim(), fmt_mac(&outside(0)));
    ping(&vm.ns, PEER_IP, 2).expect("vm0 reaches the peer");

    // A second hypervisor on the same segment: its trunk port is watched once it appears.
    let SecondHypervisor {
        ns: hv2,
        bridge: br2,
        port: port2,
    } = lab.second_hypervisor();
    let trunk = format!("t1-{}", &lab.bridge[3..]);
    wait_for("the trunk watched", Duration::from_secs(5), || {
        watching(&d1)
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == trunk.as_str())
    });
    // vm0's own announcements (out of the uplink and the trunk, and flooded back to its port)
    // are no duplicate.
    sleep(announce_done());
    assert_eq!(d1.cli_json(&["stats"])["duplicates"], 0);

    // ... configured with the same rack and host id: its first VM gets vm0's outside MAC.
    let d2 = Daemon::start(&hv2, &PLAN);
    let vm2 = Netns::new("mvm");
    let vm2_if = format!("w0-{}", &lab.bridge[3..]);
    let vm2_mac = random_inside_mac();
    hv2.ip(&[
        "link",
        "add",
        &port2,
        "type",
        "veth",
        "peer",
        "name",
        &vm2_if,
        "address",
        &fmt_mac(&vm2_mac),
        "netns",
        vm2.name(),
    ]);
    hv2.ip(&["link", "set", &port2, "master", &br2, "up"]);
    vm2.ip(&["link", "set", &vm2_if, "up"]);
    let vm2_ip = Ipv4Addr::new(192, 0, 2, 77);
    vm2.ip(&[
        "addr",
        "add",
        &format!("{vm2_ip}/{PREFIX_LEN}"),
        "dev",
        &vm2_if,
    ]);
    wait_bridge_forwarding(&hv2, &br2);
    let attached = Instant::now();
    let out = d2.cli_ok(&[
        "attach",
        &port2,
        "--mac",
        &mac_str(&vm2_mac),
        "--vm",
        "dup",
        "--ip",
        &vm2_ip.to_string(),
    ]);
    assert_eq!(out.trim(), fmt_mac(&outside(0)), "the same outside MAC");
    // Its first gratuitous ARP is seen by the first host.
    let took = wait_for("the duplicate detected", Duration::from_secs(5), || {
        d1.cli_json(&["stats"])["duplicates"].as_u64().unwrap() >= 1
    });
    let since_attach = attached.elapsed();
    eprintln!(
        "duplicate detected {took:?} after polling began, {since_attach:?} after the attach began"
    );
    let stats = d1.cli_json(&["stats"]);
    let dup = &stats["recent_duplicates"][0];
    assert_eq!(dup["mac"], fmt_mac(&outside(0)), "{stats}");
    assert_eq!(dup["field"], "ethernet source");
    assert_eq!(dup["interface"], trunk.as_str());
    assert_eq!(dup["source"], fmt_mac(&outside(0)));
    assert_eq!(dup["vlan"], Value::Null);

    // Every frame is counted, the MAC logged once per minute; plan shows it too.
    sleep(announce_done());
    let stats = d1.cli_json(&["stats"]);
    assert!(stats["duplicates"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["recent_duplicates"][0]["frames"].as_u64().unwrap() >= 3);
    let logged = d1
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("duplicate outside MAC:"))
        .count();
    assert_eq!(logged, 1, "{}", d1.log());
    let plan = d1.cli_json(&["plan"]);
    assert!(plan["duplicates"].as_u64().unwrap() >= 3);
    // `mat doctor` names it, as an error.
    let doctor = d1.cli(&[
        "doctor",
        "--json",
        "--pin-dir",
        &d1.pin_dir().to_string_lossy(),
    ]);
    assert_eq!(doctor.status.code(), Some(1), "{doctor:?}");
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let found: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "duplicate_outside_mac")
        .collect();
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0]["mac"], fmt_mac(&outside(0)), "{report}");
    let text = d1.cli_ok(&["plan"]);
    assert!(
        text.contains(&format!(
            "DUPLICATE {} (ethernet source) on {trunk}",
            fmt_mac(&outside(0))
        )),
        "{text}"
    );
    assert!(
        d1.cli_ok(&["stats"])
            .contains("DUPLICATE 02:00:5e:01:03:00")
    );

    // Claims beyond the Ethernet source, from a host whose frames carry its own MAC: an ARP
    // sender in VLAN 7 and an ND target link-layer option, sent into the trunk from hv2's side.
    let t2 = format!("t2-{}", &lab.bridge[3..]);
    let stranger = random_inside_mac();
    let mut arp = mat_loader::announce::frame(
        mat_loader::mac::Mac(outside(5)),
        "192.0.2.99".parse().unwrap(),
    );
    arp[6..12].copy_from_slice(&stranger);
    arp.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    inject(&hv2, &t2, &arp);
    let mut na = mat_loader::announce::frame(
        mat_loader::mac::Mac(outside(6)),
        "2001:db8::99".parse().unwrap(),
    );
    na[6..12].copy_from_slice(&stranger);
    inject(&hv2, &t2, &na);
    let seen = |mac: Mac| {
        d1.cli_json(&["stats"])["recent_duplicates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["mac"] == fmt_mac(&mac))
            .cloned()
    };
    wait_for("the ARP and ND claims", Duration::from_secs(5), || {
        seen(outside(5)).is_some() && seen(outside(6)).is_some()
    });
    let arp_dup = seen(outside(5)).unwrap();
    assert_eq!(arp_dup["field"], "arp sender", "{arp_dup}");
    assert_eq!(arp_dup["vlan"], 7, "{arp_dup}");
    assert_eq!(arp_dup["source"], fmt_mac(&stranger));
    let nd_dup = seen(outside(6)).unwrap();
    assert_eq!(nd_dup["field"], "nd tllao", "{nd_dup}");
    assert_eq!(nd_dup["vlan"], Value::Null);
}

/// Long enough for one announcement's three rounds, 0.5 s apart, to be over.
fn announce_done() -> Duration {
    Duration::from_millis(1500)
}

#[test]
fn an_uplink_that_comes_back_gets_its_programs_again() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let d = Daemon::start(&lab.hv, &args(&["--uplink", &lab.uplink]));
    d.cli_ok(&["attach", &vm.port, "--mac", &mac_str(&vm.mac)]);
    ping(&vm.ns, PEER_IP, 2).expect("vm0 reaches the peer");

    // The uplink goes (both ends of the veth) and comes back under the same name.
    lab.hv.ip(&["link", "del", &lab.uplink]);
    lab.hv.ip(&[
        "link",
        "add",
        &lab.uplink,
        "type",
        "veth",
        "peer",
        "name",
        &lab.peer.ifname,
        "address",
        &fmt_mac(&lab.peer.mac),
        "netns",
        lab.peer.ns.name(),
    ]);
    lab.hv
        .ip(&["link", "set", &lab.uplink, "master", &lab.bridge, "up"]);
    let peer = &lab.peer.ns;
    peer.ip(&["link", "set", &lab.peer.ifname, "up"]);
    let addr = format!("{PEER_IP}/{PREFIX_LEN}");
    peer.ip(&["addr", "add", &addr, "dev", &lab.peer.ifname]);
    lab.wait_forwarding();
    let new_index = u64::from(lab.hv_ifindex(&lab.uplink));
    assert_ne!(new_index, u64::from(lab.uplink_index));
    wait_for("the new uplink translated", Duration::from_secs(5), || {
        let mode = d.cli_json(&["plan"])["mode"].clone();
        mode["uplink_ifindex"] == new_index && mode["watching"] == serde_json::json!([lab.uplink])
    });
    ping(&vm.ns, PEER_IP, 2).expect("vm0 reaches the peer over the new uplink");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(outside(0)));
    let links = d.pin_dir().join("v3/links");
    assert!(links.join(format!("{new_index}-uplink_in")).exists());
    assert!(
        !links
            .join(format!("{}-uplink_in", lab.uplink_index))
            .exists()
    );
}
