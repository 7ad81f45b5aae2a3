//! End to end with real Linux stacks: a hypervisor namespace with a bridge, VMs on ports, a peer
//! beyond the uplink (see `mat_tests::topology`). Ping and TCP must work, the wire beyond the
//! uplink must carry outside MACs only, and the counters must match, frame for frame and outcome
//! for outcome, what captures saw.
//!
//! How the counters are checked soundly: every endpoint (VMs and peer) is set down, so nothing
//! can enter the hypervisor; then the captures start and the counters are read; the endpoints come
//! up, the traffic runs, the endpoints go down again and, once everything in flight has landed, the
//! counters are read again. Each hook then saw exactly the frames a capture can list:
//! - from-VM (TC ingress or XDP on a port): what each VM sent, captured on the VM's own interface
//!   (before any translation);
//! - to-VM (TC egress on a port): what left each port, captured there (after translation);
//! - uplink out (TC egress): what left the uplink, captured there (after translation);
//! - uplink in (XDP): what the peer sent, captured on the peer's interface (before translation).
//!
//! Each captured frame's expected outcome follows from its addresses and the bindings.

use std::{collections::BTreeMap, path::PathBuf, thread, time::Duration, time::Instant};

use mat_common::{
    counters::{HOOKS, Hook, OUTCOMES, Outcome},
    maps::{Binding, BindingKey, UPLINK_IFINDEX},
    pool::PoolPrefix,
};
use mat_loader::{Counters, Dataplane, Mode, Program};
use mat_tests::{
    capture::{Addrs, Capture, Report},
    frames::Mac,
    pins::{TestDataplane, unique},
    topology::{
        Lab, fmt_mac, neighbour, neighbour6, ping, ping_scoped, tcp_transfer, wait_ipv6_ready,
    },
};

/// The host's outside pool: outside MACs are 02:00:5e:01:03:xx.
const POOL: [u8; 6] = [0x02, 0x00, 0x5e, 0x01, 0x03, 0x00];
const POOL_LEN: u8 = 40;
const TCP_BYTES: usize = 4 << 20;

fn outside(i: usize) -> Mac {
    let mut mac = POOL;
    mac[5] = 0x10 + i as u8;
    mac
}

/// Turns IPv6 off on the hypervisor's own devices (bridge, ports, uplink; the VMs and the peer
/// keep it). A port's own IPv6 stack sends out of that port (MLD, router solicitations), through
/// the hook on it; one such frame sent while the VM's end is down passes the hook and is then
/// dropped by the port's carrier-less qdisc, out of every capture's sight, and the counters no
/// longer match the captures.
fn quiet_hypervisor(lab: &Lab) {
    lab.hv.enter(|| {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            std::fs::write(&path, "1").unwrap_or_else(|e| panic!("writing {path}: {e}"));
        }
    });
}

/// Loads a data plane, sets the pool, attaches `mode` (on every VM port, or on the uplink for
/// [`Mode::Uplink`]) and binds VM i's inside MAC to [`outside`]`(i)`.
fn translate(lab: &Lab, mode: Mode) -> TestDataplane {
    quiet_hypervisor(lab);
    let mut dp = TestDataplane::new();
    dp.set_pools(&[PoolPrefix::new(POOL, POOL_LEN)])
        .expect("set_pools");
    attach_and_bind(lab, &mut dp, mode);
    dp
}

fn attach_and_bind(lab: &Lab, dp: &mut Dataplane, mode: Mode) {
    lab.hv.enter(|| match mode {
        Mode::Uplink => dp.attach(&lab.uplink, mode).expect("attach uplink"),
        _ => {
            for vm in &lab.vms {
                dp.attach(&vm.port, mode).expect("attach port");
            }
        }
    });
    for (i, vm) in lab.vms.iter().enumerate() {
        let ifindex = match mode {
            Mode::Uplink => UPLINK_IFINDEX,
            _ => vm.port_index,
        };
        dp.bind(ifindex, vm.mac, outside(i), 0).expect("bind");
    }
}

/// What the captures and counters saw during [`observe`].
struct Observed {
    counters: Counters,
    /// Per VM: its own interface.
    vm: Vec<Report>,
    /// Per VM: its port in the hypervisor.
    port: Vec<Report>,
    /// The hypervisor's uplink.
    uplink: Report,
    /// The peer's interface, beyond the uplink.
    peer: Report,
}

/// Runs `traffic` between two quiet points (every endpoint down) and returns what happened.
fn observe(lab: &Lab, dp: &Dataplane, traffic: impl FnOnce()) -> Observed {
    lab.set_endpoints_up(false);
    thread::sleep(Duration::from_millis(100));
    let vm_caps: Vec<Capture> = lab
        .vms
        .iter()
        .map(|vm| Capture::in_netns(&vm.ns, &vm.ifname))
        .collect();
    let port_caps: Vec<Capture> = lab
        .vms
        .iter()
        .map(|vm| Capture::in_netns(&lab.hv, &vm.port))
        .collect();
    let uplink_cap = Capture::in_netns(&lab.hv, &lab.uplink);
    let peer_cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    let before = dp.counters().expect("counters");
    lab.set_endpoints_up(true);
    traffic();
    lab.set_endpoints_up(false);
    // Let frames in flight (backlogs, softirqs) land.
    thread::sleep(Duration::from_millis(300));
    let counters = dp.counters().expect("counters").since(&before);
    let stop = |caps: Vec<Capture>, what: &str| -> Vec<Report> {
        caps.into_iter()
            .map(|c| {
                let r = c.stop();
                r.assert_complete(what);
                r
            })
            .collect()
    };
    let vm = stop(vm_caps, "a VM interface");
    let port = stop(port_caps, "a port");
    let uplink = stop(vec![uplink_cap], "the uplink").remove(0);
    let peer = stop(vec![peer_cap], "the peer").remove(0);
    lab.set_endpoints_up(true);
    Observed {
        counters,
        vm,
        port,
        uplink,
        peer,
    }
}

/// Expected outcome of a frame from a VM, before translation; `bound` says which MACs have a
/// from-VM binding on the hook's key. An ND message with a link-level option to translate counts
/// as `NdRewritten` (the VMs' DAD, router solicitations, neighbour solicitations and
/// advertisements), one without (a DAD NS from ::, an MLD report) as an Ethernet translation.
fn from_vm_outcome(a: &Addrs, bound: impl Fn(&Mac) -> bool) -> Outcome {
    match (a.arp, &a.nd) {
        (Some(arp), _) if bound(&arp.sha) || bound(&arp.tha) => Outcome::ArpRewritten,
        (_, Some(nd)) if nd.options.iter().any(|(_, m)| bound(m)) => Outcome::NdRewritten,
        _ if bound(&a.src) => Outcome::Translated,
        _ => Outcome::Passed,
    }
}

/// Expected outcome of a frame to a VM given its addresses before translation (`bound`: MACs
/// with a to-VM binding) or after (`bound`: the inside MACs they became); the rules rewrite the
/// same fields either way.
fn to_vm_outcome(a: &Addrs, bound: impl Fn(&Mac) -> bool) -> Outcome {
    match (a.arp, &a.nd) {
        (Some(arp), _) if bound(&arp.tha) => Outcome::ArpRewritten,
        (_, Some(nd)) if nd.options.iter().any(|(_, m)| bound(m)) => Outcome::NdRewritten,
        _ if bound(&a.dst) => Outcome::Translated,
        _ => Outcome::Passed,
    }
}

type Table = BTreeMap<(u32, u32), u64>;

fn table(c: &Counters) -> Table {
    let mut t = Table::new();
    for h in HOOKS {
        for o in OUTCOMES {
            if c.get(h, o) != 0 {
                t.insert((h as u32, o as u32), c.get(h, o));
            }
        }
    }
    t
}

fn add(t: &mut Table, hook: Hook, outcome: Outcome) {
    *t.entry((hook as u32, outcome as u32)).or_default() += 1;
}

fn show(t: &Table) -> String {
    t.iter()
        .map(|(&(h, o), n)| {
            format!(
                "  {:<17} {:<14} {n}\n",
                HOOKS[h as usize].name(),
                OUTCOMES[o as usize].name()
            )
        })
        .collect()
}

/// The counter deltas every hook must show, from the captures.
fn expected_counters(lab: &Lab, mode: Mode, obs: &Observed) -> Table {
    let mut t = Table::new();
    let outsides: Vec<Mac> = (0..lab.vms.len()).map(outside).collect();
    match mode {
        Mode::Port | Mode::PortXdp => {
            let from = if mode == Mode::Port {
                Hook::PortFromVmTc
            } else {
                Hook::PortFromVmXdp
            };
            for (i, vm) in lab.vms.iter().enumerate() {
                for f in obs.vm[i].outgoing() {
                    add(&mut t, from, from_vm_outcome(&f.addrs(), |m| *m == vm.mac));
                }
                for f in obs.port[i].outgoing() {
                    add(
                        &mut t,
                        Hook::PortToVmTc,
                        to_vm_outcome(&f.addrs(), |m| *m == vm.mac),
                    );
                }
            }
        }
        Mode::Uplink => {
            // What left the uplink, after translation: a translated field now holds an outside
            // MAC; none came from a VM with one (that would be a spoof).
            for f in obs.uplink.outgoing() {
                add(
                    &mut t,
                    Hook::UplinkOutTc,
                    from_vm_outcome(&f.addrs(), |m| outsides.contains(m)),
                );
            }
            for f in obs.peer.outgoing() {
                add(
                    &mut t,
                    Hook::UplinkInXdp,
                    to_vm_outcome(&f.addrs(), |m| outsides.contains(m)),
                );
            }
        }
    }
    t
}

fn check_counters(lab: &Lab, mode: Mode, obs: &Observed) {
    let got = table(&obs.counters);
    let want = expected_counters(lab, mode, obs);
    println!("counters ({mode:?}):\n{}", show(&got));
    assert_eq!(
        got,
        want,
        "counters differ from the captures\ngot:\n{}want:\n{}",
        show(&got),
        show(&want)
    );
    for o in [
        Outcome::SpoofDropped,
        Outcome::Malformed,
        Outcome::Reflected,
    ] {
        assert!(HOOKS.iter().all(|&h| obs.counters.get(h, o) == 0), "{o:?}");
    }
}

/// Beyond the uplink: no inside MAC in any Ethernet or ARP hardware address field or ND
/// link-layer option, and every ND checksum right; each VM's outside MAC as a source, as an ARP
/// sender and as an ND link-layer option. Checked on the peer's interface (everything) and
/// on what the hypervisor's uplink sent (what it received was captured after its XDP program,
/// which in uplink mode has already translated it back).
fn check_wire(lab: &Lab, obs: &Observed, vms: &[usize]) {
    let peer: Vec<Addrs> = obs
        .peer
        .frames
        .iter()
        .map(mat_tests::capture::Captured::addrs)
        .collect();
    let uplink: Vec<Addrs> = obs
        .uplink
        .outgoing()
        .map(mat_tests::capture::Captured::addrs)
        .collect();
    for (what, addrs) in [("peer", &peer), ("uplink", &uplink)] {
        assert!(!addrs.is_empty(), "nothing captured at the {what}");
        for a in addrs {
            for vm in &lab.vms {
                assert!(
                    !a.all().contains(&vm.mac),
                    "inside MAC {} on the wire at the {what}: {a:?}",
                    fmt_mac(&vm.mac)
                );
            }
            if let Some(nd) = &a.nd {
                assert_ne!(nd.checksum_ok, Some(false), "{what}: bad checksum: {a:?}");
            }
        }
        for &i in vms {
            let out = outside(i);
            assert!(
                addrs.iter().any(|a| a.src == out),
                "{what}: no frame from outside MAC {}",
                fmt_mac(&out)
            );
            assert!(
                addrs
                    .iter()
                    .any(|a| a.arp.is_some_and(|arp| arp.sha == out)),
                "{what}: no ARP with sender {}",
                fmt_mac(&out)
            );
            assert!(
                addrs.iter().any(|a| a
                    .nd
                    .as_ref()
                    .is_some_and(|nd| nd.options.iter().any(|(_, m)| *m == out))),
                "{what}: no ND link-layer option {}",
                fmt_mac(&out)
            );
        }
    }
}

fn must(r: Result<(), String>) {
    r.unwrap_or_else(|e| panic!("{e}"));
}

fn transfer(
    server: &mat_tests::netns::Netns,
    ip: std::net::Ipv4Addr,
    client: &mat_tests::netns::Netns,
) {
    let took = tcp_transfer(server, ip, client, TCP_BYTES).unwrap_or_else(|e| panic!("TCP: {e}"));
    println!(
        "TCP {} MiB to {ip}: {took:?} ({:.0} MB/s)",
        TCP_BYTES >> 20,
        TCP_BYTES as f64 / took.as_secs_f64() / 1e6
    );
}

/// Pings over IPv6, global and link-local: every VM to the peer, and VM 0 to VM 1 if there is
/// one. Waits first for duplicate address detection to end on every endpoint (their links have
/// just come up).
fn ping6(lab: &Lab) {
    let peer = &lab.peer;
    let peer_ll = wait_ipv6_ready(&peer.ns, &peer.ifname);
    let lls: Vec<_> = lab
        .vms
        .iter()
        .map(|vm| wait_ipv6_ready(&vm.ns, &vm.ifname))
        .collect();
    for vm in &lab.vms {
        must(ping(&vm.ns, peer.ip6, 3));
        must(ping_scoped(&vm.ns, peer_ll, &vm.ifname, 2));
    }
    if let [vm0, vm1, ..] = &lab.vms[..] {
        must(ping(&vm0.ns, vm1.ip6, 3));
        must(ping_scoped(&vm1.ns, lls[0], &vm1.ifname, 2));
    }
}

#[test]
fn port_mode_end_to_end() {
    let t = Instant::now();
    let lab = Lab::new(2);
    let dp = translate(&lab, Mode::Port);
    let (vm0, vm1, peer) = (&lab.vms[0], &lab.vms[1], &lab.peer);
    let obs = observe(&lab, &dp, || {
        must(ping(&vm0.ns, peer.ip, 3));
        must(ping(&vm1.ns, peer.ip, 3));
        must(ping(&vm0.ns, vm1.ip, 3));
        transfer(&peer.ns, peer.ip, &vm0.ns);
        transfer(&vm0.ns, vm0.ip, &vm1.ns);
        // Everyone knows the VMs by their outside MACs, the peer by its own.
        for (i, vm) in lab.vms.iter().enumerate() {
            assert_eq!(
                neighbour(&peer.ns, vm.ip),
                Some(outside(i)),
                "peer's entry for VM {i}"
            );
            assert_eq!(
                neighbour(&vm.ns, peer.ip),
                Some(peer.mac),
                "VM {i}'s entry for the peer"
            );
        }
        assert_eq!(neighbour(&vm0.ns, vm1.ip), Some(outside(1)));
        assert_eq!(neighbour(&vm1.ns, vm0.ip), Some(outside(0)));
        ping6(&lab);
        for (i, vm) in lab.vms.iter().enumerate() {
            assert_eq!(neighbour6(&peer.ns, vm.ip6), Some(outside(i)), "VM {i}");
            assert_eq!(neighbour6(&vm.ns, peer.ip6), Some(peer.mac), "VM {i}");
        }
        assert_eq!(neighbour6(&vm0.ns, vm1.ip6), Some(outside(1)));
    });
    check_wire(&lab, &obs, &[0, 1]);
    // The VMs only ever see their own inside MAC: frames to them arrive translated back.
    for (i, vm) in lab.vms.iter().enumerate() {
        assert!(
            obs.vm[i].incoming().any(|f| f.addrs().dst == vm.mac),
            "VM {i} received nothing addressed to its inside MAC"
        );
        for f in obs.vm[i].incoming() {
            assert!(
                !f.addrs().all().contains(&outside(i)),
                "VM {i} saw its own outside MAC: {:?}",
                f.addrs()
            );
        }
    }
    check_counters(&lab, Mode::Port, &obs);
    println!("port_mode_end_to_end: {:?}", t.elapsed());
}

#[test]
fn uplink_mode_end_to_end() {
    let t = Instant::now();
    let lab = Lab::new(2);
    let dp = translate(&lab, Mode::Uplink);
    let (vm0, vm1, peer) = (&lab.vms[0], &lab.vms[1], &lab.peer);
    let obs = observe(&lab, &dp, || {
        must(ping(&vm0.ns, peer.ip, 3));
        must(ping(&vm1.ns, peer.ip, 3));
        transfer(&peer.ns, peer.ip, &vm0.ns);
        transfer(&vm1.ns, vm1.ip, &peer.ns);
        // VM to VM stays on the bridge, untranslated.
        must(ping(&vm0.ns, vm1.ip, 3));
        transfer(&vm0.ns, vm0.ip, &vm1.ns);
        for (i, vm) in lab.vms.iter().enumerate() {
            assert_eq!(
                neighbour(&peer.ns, vm.ip),
                Some(outside(i)),
                "peer's entry for VM {i}"
            );
            assert_eq!(
                neighbour(&vm.ns, peer.ip),
                Some(peer.mac),
                "VM {i}'s entry for the peer"
            );
        }
        assert_eq!(neighbour(&vm0.ns, vm1.ip), Some(vm1.mac));
        assert_eq!(neighbour(&vm1.ns, vm0.ip), Some(vm0.mac));
        ping6(&lab);
        for (i, vm) in lab.vms.iter().enumerate() {
            assert_eq!(neighbour6(&peer.ns, vm.ip6), Some(outside(i)), "VM {i}");
            assert_eq!(neighbour6(&vm.ns, peer.ip6), Some(peer.mac), "VM {i}");
        }
        assert_eq!(neighbour6(&vm0.ns, vm1.ip6), Some(vm1.mac));
    });
    check_wire(&lab, &obs, &[0, 1]);
    check_counters(&lab, Mode::Uplink, &obs);
    assert!(obs.counters.get(Hook::UplinkInXdp, Outcome::Translated) > 0);
    println!("uplink_mode_end_to_end: {:?}", t.elapsed());
}

#[test]
fn port_xdp_mode_ping() {
    let t = Instant::now();
    let lab = Lab::new(1);
    let dp = translate(&lab, Mode::PortXdp);
    let (vm0, peer) = (&lab.vms[0], &lab.peer);
    let obs = observe(&lab, &dp, || {
        must(ping(&vm0.ns, peer.ip, 3));
        assert_eq!(neighbour(&peer.ns, vm0.ip), Some(outside(0)));
        ping6(&lab);
        assert_eq!(neighbour6(&peer.ns, vm0.ip6), Some(outside(0)));
    });
    check_wire(&lab, &obs, &[0]);
    check_counters(&lab, Mode::PortXdp, &obs);
    assert!(obs.counters.get(Hook::PortFromVmXdp, Outcome::Translated) >= 3);
    println!("port_xdp_mode_ping: {:?}", t.elapsed());
}

/// Removes a data plane's pins on drop, for a test that drops its [`Dataplane`] on purpose.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if self.0.exists() {
            match Dataplane::open(&self.0).and_then(Dataplane::remove) {
                Ok(()) => {}
                Err(e) => eprintln!("cleaning up {}: {e}", self.0.display()),
            }
        }
    }
}

#[test]
fn data_plane_outlives_its_loader() {
    let t = Instant::now();
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(unique("mat-test-")));
    {
        let mut dp = Dataplane::open(&pins.0).expect("open");
        dp.set_pools(&[PoolPrefix::new(POOL, POOL_LEN)])
            .expect("set_pools");
        attach_and_bind(&lab, &mut dp, Mode::Port);
        // Dropped here without `remove`: the pinned links and maps stay.
    }
    let capture = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    must(ping(&vm.ns, lab.peer.ip, 3));
    thread::sleep(Duration::from_millis(100));
    let report = capture.stop();
    let addrs: Vec<Addrs> = report
        .frames
        .iter()
        .map(mat_tests::capture::Captured::addrs)
        .collect();
    assert!(addrs.iter().any(|a| a.src == outside(0)));
    assert!(
        addrs
            .iter()
            .any(|a| a.arp.is_some_and(|arp| arp.sha == outside(0)))
    );
    assert!(
        addrs.iter().all(|a| !a.all().contains(&vm.mac)),
        "inside MAC beyond the uplink"
    );
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(outside(0)));

    let dp = Dataplane::open(&pins.0).expect("reopen");
    assert_eq!(
        dp.bindings().expect("bindings"),
        vec![(
            BindingKey::new(vm.port_index, vm.mac),
            // The VM's ARP taught the binding its address.
            Binding {
                ipv4: vm.ip.octets(),
                ..Binding::new(outside(0), 0)
            }
        )]
    );
    assert_eq!(
        dp.reverse_bindings().expect("reverse bindings"),
        vec![(
            BindingKey::new(vm.port_index, outside(0)),
            Binding::new(vm.mac, 0)
        )]
    );
    let mut attached = dp.attached(vm.port_index);
    attached.sort_by_key(|p| p.name());
    assert_eq!(attached, vec![Program::PortFromVm, Program::PortToVm]);
    let c = dp.counters().expect("counters");
    assert!(c.get(Hook::PortFromVmTc, Outcome::Translated) >= 3, "{c:?}");
    assert!(
        c.get(Hook::PortFromVmTc, Outcome::ArpRewritten) >= 1,
        "{c:?}"
    );
    assert!(c.get(Hook::PortToVmTc, Outcome::Translated) >= 3, "{c:?}");
    drop(dp);
    drop(pins);
    println!("data_plane_outlives_its_loader: {:?}", t.elapsed());
}
