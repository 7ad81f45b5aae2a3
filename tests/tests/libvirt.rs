//! MAT under a real libvirtd with real QEMU guests (TCG): the hook binds a starting guest's tap,
//! a peer beyond the uplink sees only the outside MAC; the daemon binds a hotplugged NIC from
//! libvirt's device event (the peer sees only its outside MAC) and releases it when unplugged, a
//! libvirtd restart resyncs without changing anything while the daemon reconnects, a NIC
//! hotplugged while the daemon is down is bound by its resync, stopping releases; and a live migration between two libvirtd instances
//! (two hypervisors, each with its own bridge, uplink and `mat daemon`) keeps a ping stream
//! going, moves the peer's neighbour entries (IPv4 and IPv6) to the new outside MAC and holds the
//! old one down. The guest runs IPv6 (link-local and a static 2001:db8::/64 address) as real
//! guests do.
//!
//! Layout (every namespace and link the test's own; addresses in 198.51.100.0/24, 2001:db8::/64
//! and link-local only):
//!
//! ```text
//!   hypervisors ns: libvirtd A + mat daemon host 1      peer ns
//!     guest tap --[br0]-- up0 ======================= p0 --+
//!                                                           [sw] 198.51.100.1, 2001:db8::1
//!     guest tap --[br1]-- up1 ======================= p1 --+
//!   libvirtd B + mat daemon host 2 (same namespace: migration runs over its 127.0.0.1)
//! ```
//!
//! The migration's packet loss and longest gap, over IPv4 and over IPv6, are printed and written
//! to target/bench/migration.json (figures, not assertions).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use mat_tests::{
    capture::{Addrs, Capture},
    daemon::{Daemon, POOL, mat_binary},
    guest::{self, GuestImage, READY},
    libvirt::{Libvirtd, Nic, PingStream, domain_xml, wait_for_line},
    netns::{Netns, run},
    pins::unique,
    topology::{eui64_link_local, fmt_mac, neighbour, neighbour6, parse_mac, ping, ping_scoped},
};
use serde_json::Value;

/// One TCG guest at a time: two would share the machine's two cores with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

const PEER_IP: &str = "198.51.100.1";
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const GUEST_ADDR: &str = "198.51.100.10/24";
const PEER_IP6: &str = "2001:db8::1/64";
const GUEST_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const GUEST_ADDR6: &str = "2001:db8::10/64";

/// A hypervisor: its bridge and uplink in the shared namespace, its libvirtd and its daemon.
/// Fields drop in order: libvirtd first (destroying a domain runs the release hook, which needs
/// the daemon).
struct Host {
    libvirtd: Libvirtd,
    daemon: Daemon,
    bridge: String,
}

struct Lab {
    hosts: Vec<Host>,
    peer: Netns,
    hv: Netns,
    dir: PathBuf,
    image: GuestImage,
}

impl Lab {
    /// `hosts` hypervisors; with `hotplug`, each daemon follows its libvirtd's device events
    /// (`--libvirt`).
    fn new(hosts: usize, hotplug: bool) -> Lab {
        let image = guest::image();
        let dir = std::env::temp_dir().join(unique("mat-lvlab-"));
        std::fs::create_dir_all(&dir).expect("creating the lab directory");
        let hv = Netns::new("mlv");
        let peer = Netns::new("mlp");
        peer.ip(&["link", "add", "sw", "type", "bridge"]);
        peer.ip(&["link", "set", "sw", "up"]);
        peer.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", "sw"]);
        peer.ip(&["addr", "add", PEER_IP6, "dev", "sw"]);
        let mut lab = Lab {
            hosts: Vec::new(),
            peer,
            hv,
            dir,
            image,
        };
        for i in 0..hosts {
            let (bridge, up, p) = (format!("br{i}"), format!("up{i}"), format!("p{i}"));
            lab.hv.ip(&["link", "add", &bridge, "type", "bridge"]);
            lab.hv.ip(&["link", "set", &bridge, "up"]);
            lab.hv.ip(&[
                "link",
                "add",
                &up,
                "type",
                "veth",
                "peer",
                "name",
                &p,
                "netns",
                lab.peer.name(),
            ]);
            lab.hv.ip(&["link", "set", &up, "master", &bridge, "up"]);
            lab.peer.ip(&["link", "set", &p, "master", "sw", "up"]);
            let host = (i + 1).to_string();
            let mut daemon =
                Daemon::prepare(&lab.hv, &["--pool", POOL, "--rack", "1", "--host", &host]);
            let socket = daemon.socket();
            let host_uuid = format!(
                "6d617400-{:04x}-4000-8000-{:012x}",
                i + 1,
                std::process::id()
            );
            let libvirtd = Libvirtd::start(&lab.hv, &host_uuid, |hooks| {
                run(std::process::Command::new(mat_binary())
                    .arg("--socket")
                    .arg(&socket)
                    .args(["install", "libvirt-hook", "--hooks-dir"])
                    .arg(hooks));
            });
            libvirtd.bridged_network("matnet", &bridge);
            // The daemon starts after libvirtd here only because the URI names the instance's
            // socket; the hook first runs when a domain starts.
            if hotplug {
                daemon.push_args(&["--libvirt", &libvirtd.uri()]);
            }
            daemon.spawn();
            daemon.wait_ready();
            lab.hosts.push(Host {
                libvirtd,
                daemon,
                bridge,
            });
        }
        lab
    }

    fn console(&self, dom: &str) -> PathBuf {
        self.dir.join(format!("{dom}.console"))
    }

    /// Defines `dom` on host `h` and starts it; returns its UUID.
    fn start_guest(&self, h: usize, dom: &str, mac: &str, nic: Nic) -> String {
        let lv = &self.hosts[h].libvirtd;
        lv.define(
            dom,
            &domain_xml(
                dom,
                &self.image,
                nic,
                mac,
                (GUEST_ADDR, Some(GUEST_ADDR6)),
                &self.console(dom),
            ),
        );
        let t = Instant::now();
        lv.virsh_ok(&["start", dom]);
        eprintln!("libvirt: {dom} started in {:?}", t.elapsed());
        lv.virsh_ok(&["domuuid", dom]).trim().to_owned()
    }

    /// Waits for the guest's ready line, then until the peer's pings get through.
    fn wait_reachable(&self, dom: &str) {
        let t = Instant::now();
        wait_for_line(&self.console(dom), READY, Duration::from_mins(2));
        eprintln!("libvirt: {dom} ready after {:?}", t.elapsed());
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = ping(&self.peer, GUEST_IP, 2) {
            assert!(Instant::now() < deadline, "guest unreachable: {e}");
        }
        eprintln!("libvirt: {dom} answers ping after {:?}", t.elapsed());
        // Its IPv6 address works once duplicate address detection is over.
        while let Err(e) = ping(&self.peer, GUEST_IP6, 2) {
            assert!(
                Instant::now() < deadline,
                "guest unreachable over IPv6: {e}"
            );
        }
        eprintln!(
            "libvirt: {dom} answers ping over IPv6 after {:?}",
            t.elapsed()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Domains and daemons first (their guards), then the namespaces (field order).
        self.hosts.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A random guest MAC under QEMU's 52:54:00 prefix.
fn guest_mac() -> String {
    let r: [u8; 3] = rand::random();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", r[0], r[1], r[2])
}

/// (vm, port, inside, outside, since) of every binding of a daemon.
fn bindings(d: &Daemon) -> Vec<(String, String, String, String, u64)> {
    let list: Value = d.cli_json(&["list"]);
    let mut v: Vec<_> = list["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (
                s("vm"),
                s("port"),
                s("inside"),
                s("outside"),
                b["since"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn held(d: &Daemon) -> Vec<String> {
    d.cli_json(&["plan"])["held"]
        .as_array()
        .expect("held")
        .iter()
        .map(|h| h["outside"].as_str().unwrap().to_owned())
        .collect()
}

/// Hotplugs a NIC with guest MAC `mac` into the running `dom` (`virsh attach-interface`) and
/// waits until the daemon has bound it from libvirt's event (its `nth` hotplug); returns its tap
/// and outside MAC.
fn hotplug(lab: &Lab, dom: &str, uuid: &str, mac: &str, nth: usize) -> (String, String) {
    let (lv, d, bridge) = (
        &lab.hosts[0].libvirtd,
        &lab.hosts[0].daemon,
        &lab.hosts[0].bridge,
    );
    let t = Instant::now();
    lv.virsh_ok(&[
        "attach-interface",
        dom,
        "bridge",
        bridge,
        "--mac",
        mac,
        "--model",
        "virtio",
    ]);
    let tap = lv
        .taps(dom)
        .into_iter()
        .find(|t| t.1 == mac)
        .expect("the new NIC's tap")
        .0;
    wait_until(Duration::from_secs(10), "the hotplugged NIC bound", || {
        bindings(d).iter().any(|b| b.1 == tap)
    });
    eprintln!("libvirt: hotplugged NIC bound after {:?}", t.elapsed());
    wait_log(d, "libvirt: interface hotplugged", nth);
    let b = bindings(d).into_iter().find(|b| b.1 == tap).expect("bound");
    assert_eq!((b.0.as_str(), b.2.as_str()), (uuid, mac));
    assert!(b.3.starts_with("02:00:5e:01:01:"), "{}", b.3);
    assert!(
        bindings(d).iter().filter(|o| o.3 == b.3).count() == 1,
        "a new outside MAC"
    );
    (tap, b.3)
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (a minute at most: the daemon reconnects with backoff) until the daemon's log has
/// `needle` `count` times.
fn wait_log(d: &Daemon, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while d.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {count} x {needle:?} in the daemon log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that no frame seen by the peer carries the guest's inside MAC anywhere.
fn assert_only_outside(frames: &[Vec<u8>], inside: &str, outside: &str) -> usize {
    let inside = parse_mac(inside).expect("a MAC");
    let outside = parse_mac(outside).expect("a MAC");
    let mut with_outside = 0;
    for f in frames {
        let all = Addrs::parse(f).all();
        assert!(
            !all.contains(&inside),
            "the peer saw the inside MAC {}: {f:02x?}",
            fmt_mac(&inside)
        );
        with_outside += usize::from(all.contains(&outside));
    }
    with_outside
}

#[test]
fn start_reconnect_and_stop_under_libvirt() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(1, true);
    let dom = unique("matvm");
    let mac = guest_mac();
    let bridge = lab.hosts[0].bridge.clone();
    let uuid = lab.start_guest(0, &dom, &mac, Nic::Bridge(&bridge));
    let (lv, d) = (&lab.hosts[0].libvirtd, &lab.hosts[0].daemon);
    // Bound at start, before the guest ran: keyed by the domain UUID, on the tap libvirt made.
    let taps = lv.taps(&dom);
    assert_eq!(taps.len(), 1, "{taps:?}");
    let tap = taps[0].0.clone();
    let bound = bindings(d);
    assert_eq!(bound.len(), 1, "{bound:?}");
    let (vm, port, inside, outside, _) = bound[0].clone();
    assert_eq!(
        (vm.as_str(), port.as_str(), inside.as_str()),
        (uuid.as_str(), tap.as_str(), mac.as_str())
    );
    assert!(outside.starts_with("02:00:5e:01:01:"), "{outside}");

    // The peer reaches the guest and sees only the outside MAC.
    let capture = Capture::in_netns(&lab.peer, "p0");
    lab.wait_reachable(&dom);
    ping(&lab.peer, GUEST_IP, 5).expect("ping through MAT");
    ping(&lab.peer, GUEST_IP6, 5).expect("ping over IPv6 through MAT");
    let report = capture.stop();
    let frames: Vec<Vec<u8>> = report.frames.iter().map(|f| f.data.clone()).collect();
    let seen = assert_only_outside(&frames, &mac, &outside);
    assert!(seen >= 5, "only {seen} frames with the outside MAC");
    assert_eq!(
        neighbour(&lab.peer, GUEST_IP).map(|m| fmt_mac(&m)),
        Some(outside.clone())
    );
    assert_eq!(
        neighbour6(&lab.peer, GUEST_IP6).map(|m| fmt_mac(&m)),
        Some(outside.clone())
    );

    // Hotplug: libvirt fires no hook, the daemon binds the new NIC from libvirt's event, keyed
    // by the domain UUID; the peer sees only its outside MAC (the guest brings it up, IPv6
    // link-local only).
    wait_log(d, "libvirt: connected", 1);
    let mac2 = guest_mac();
    let (tap2, outside2) = hotplug(&lab, &dom, &uuid, &mac2, 1);
    let ll2 = eui64_link_local(&parse_mac(&mac2).expect("a MAC"));
    let capture = Capture::in_netns(&lab.peer, "p0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = ping_scoped(&lab.peer, ll2, "sw", 2) {
        assert!(Instant::now() < deadline, "hotplugged NIC unreachable: {e}");
    }
    ping_scoped(&lab.peer, ll2, "sw", 3).expect("ping the hotplugged NIC through MAT");
    let report = capture.stop();
    let frames: Vec<Vec<u8>> = report.frames.iter().map(|f| f.data.clone()).collect();
    let seen = assert_only_outside(&frames, &mac2, &outside2);
    assert!(
        seen >= 3,
        "only {seen} frames with the new NIC's outside MAC"
    );
    assert_only_outside(&frames, &mac, &outside);

    // libvirtd restarts while the guest runs: `reconnect` resyncs and changes nothing; the
    // daemon's libvirt connection is lost, then retried and resynced.
    let before = bindings(d);
    let t = Instant::now();
    lab.hosts[0].libvirtd.restart();
    eprintln!("libvirt: libvirtd restarted in {:?}", t.elapsed());
    let (lv, d) = (&lab.hosts[0].libvirtd, &lab.hosts[0].daemon);
    assert_eq!(
        lv.running(),
        std::slice::from_ref(&dom),
        "the guest survived the restart"
    );
    assert_eq!(bindings(d), before, "reconnect changed a binding");
    ping(&lab.peer, GUEST_IP, 3).expect("ping after the libvirtd restart");
    ping_scoped(&lab.peer, ll2, "sw", 3).expect("the hotplugged NIC after the restart");
    wait_log(d, "libvirt: connected", 2);
    assert_eq!(bindings(d), before, "the daemon's resync changed a binding");

    // Unplugged: released into hold-down.
    lv.virsh_ok(&["detach-interface", &dom, "bridge", "--mac", &mac2]);
    wait_until(
        Duration::from_secs(30),
        "the unplugged NIC released",
        || !bindings(d).iter().any(|b| b.1 == tap2),
    );
    assert!(held(d).contains(&outside2), "{:?}", held(d));
    // Events keep coming on the new connection: another NIC is bound.
    let mac3 = guest_mac();
    let (_, outside3) = hotplug(&lab, &dom, &uuid, &mac3, 2);
    // A NIC hotplugged while the daemon is down: bound by its resync when it connects.
    assert!(lab.hosts[0].daemon.terminate().success());
    let mac4 = guest_mac();
    lab.hosts[0].libvirtd.virsh_ok(&[
        "attach-interface",
        &dom,
        "bridge",
        &bridge,
        "--mac",
        &mac4,
        "--model",
        "virtio",
    ]);
    lab.hosts[0].daemon.spawn();
    lab.hosts[0].daemon.wait_ready();
    let (lv, d) = (&lab.hosts[0].libvirtd, &lab.hosts[0].daemon);
    let tap4 = lv
        .taps(&dom)
        .into_iter()
        .find(|t| t.1 == mac4)
        .expect("the new NIC's tap")
        .0;
    wait_until(Duration::from_secs(10), "the resync binding", || {
        bindings(d).iter().any(|b| b.1 == tap4)
    });
    let outside4 = bindings(d)
        .into_iter()
        .find(|b| b.1 == tap4)
        .map(|b| b.3)
        .expect("bound");
    assert!(
        ![&outside, &outside2, &outside3].contains(&&outside4),
        "{outside4}"
    );

    // Save: released into hold-down. Restore: new taps, the same outside MACs back.
    let saved = lab.dir.join("guest.save");
    lv.virsh_ok(&["save", &dom, &saved.to_string_lossy()]);
    assert!(bindings(d).is_empty(), "{:?}", bindings(d));
    assert!(held(d).contains(&outside), "{:?}", held(d));
    lv.virsh_ok(&["restore", &saved.to_string_lossy()]);
    let restored: Vec<_> = bindings(d)
        .into_iter()
        .map(|(vm, port, inside, outside, _)| (vm, port, inside, outside))
        .collect();
    let mut want: Vec<_> = lv
        .taps(&dom)
        .into_iter()
        .zip([outside.clone(), outside3, outside4])
        .map(|((tap, inside), outside)| (uuid.clone(), tap, inside, outside))
        .collect();
    want.sort();
    assert_eq!(restored, want);
    ping(&lab.peer, GUEST_IP, 3).expect("ping after restore");

    // Stop: released into hold-down.
    lv.virsh_ok(&["destroy", &dom]);
    assert!(bindings(d).is_empty(), "{:?}", bindings(d));
    assert!(held(d).contains(&outside), "{:?}", held(d));
}

/// What the migration measured, for the test output and the bench JSON.
#[derive(Debug)]
struct Figures {
    stream: PingStream,
    /// The same over IPv6, at the same time.
    stream6: PingStream,
    interval_ms: u64,
    migrate_ms: u128,
    /// The guest's pause as QEMU measured it (`virsh domjobinfo --completed`).
    downtime_ms: Option<u64>,
}

fn write_bench(f: &Figures, source: &str, destination: &str) {
    let dir = guest::cache_dir().parent().expect("target/").join("bench");
    std::fs::create_dir_all(&dir).expect("creating target/bench");
    let json = serde_json::json!({
        "test": "libvirt live migration, TCG guest, ping stream from a peer beyond the uplink",
        "ping_interval_ms": f.interval_ms,
        "sent": f.stream.sent,
        "received": f.stream.received,
        "lost": f.stream.lost.len(),
        "gap_ms": (f.stream.max_gap_ms * 10.0).round() / 10.0,
        "ipv6": {
            "sent": f.stream6.sent,
            "received": f.stream6.received,
            "lost": f.stream6.lost.len(),
            "gap_ms": (f.stream6.max_gap_ms * 10.0).round() / 10.0,
        },
        "virsh_migrate_ms": f.migrate_ms,
        "qemu_downtime_ms": f.downtime_ms,
        "outside_before": source,
        "outside_after": destination,
    });
    let path = dir.join("migration.json");
    std::fs::write(&path, format!("{json:#}\n")).expect("writing migration.json");
    eprintln!("libvirt: wrote {}", path.display());
}

/// `ping -D` from the peer every `interval_ms`, stopped with SIGINT (so that it prints its
/// summary) and killed by pid if the test fails first. Its output is read as it comes: a full
/// pipe would stall ping and show up as a gap.
struct PingGuard {
    child: Option<Child>,
    output: Option<std::thread::JoinHandle<String>>,
}

impl PingGuard {
    fn start(ns: &Netns, ip: impl Into<IpAddr>, interval_ms: u64) -> PingGuard {
        let mut child = ns
            .command("ping")
            .args(["-D", "-n", "-W", "1", "-i"])
            .arg(format!("{:.3}", interval_ms as f64 / 1000.0))
            .arg(ip.into().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ping");
        let mut stdout = child.stdout.take().expect("ping's stdout");
        let output = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        PingGuard {
            child: Some(child),
            output: Some(output),
        }
    }

    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child (nsenter exec'd ping in place), not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait().expect("waiting for ping");
        self.output
            .take()
            .expect("reading")
            .join()
            .expect("ping's reader")
    }
}

impl Drop for PingGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn live_migration_between_two_libvirtd() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Lab::new(2, false);
    let a = &lab.hosts[0];
    let dom = unique("matvm");
    let mac = guest_mac();
    let uuid = lab.start_guest(0, &dom, &mac, Nic::Network("matnet"));
    lab.wait_reachable(&dom);
    let source = bindings(&a.daemon);
    assert_eq!(source.len(), 1, "{source:?}");
    let outside_a = source[0].3.clone();
    assert_eq!(
        neighbour(&lab.peer, GUEST_IP).map(|m| fmt_mac(&m)),
        Some(outside_a.clone())
    );
    assert_eq!(
        neighbour6(&lab.peer, GUEST_IP6).map(|m| fmt_mac(&m)),
        Some(outside_a.clone())
    );

    // A failed incoming migration (B's daemon is down, so B's start hook refuses) leaves the
    // source untouched and nothing on the destination.
    lab.hosts[1].daemon.kill9();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let out = a.libvirtd.virsh(&[
        "migrate",
        "--live",
        &dom,
        &b.libvirtd.migration_uri(),
        "tcp://127.0.0.1",
        "--listen-address",
        "127.0.0.1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "migrated without B's daemon");
    assert!(err.contains("cannot reach the mat daemon"), "{err}");
    assert_eq!(a.libvirtd.running(), std::slice::from_ref(&dom));
    assert!(b.libvirtd.running().is_empty());
    assert_eq!(
        bindings(&a.daemon),
        source,
        "the failed migration changed the source"
    );
    ping(&lab.peer, GUEST_IP, 3).expect("ping after the failed migration");
    lab.hosts[1].daemon.spawn();
    lab.hosts[1].daemon.wait_ready();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(bindings(&b.daemon).is_empty(), "{:?}", bindings(&b.daemon));

    // Everything the peer receives from both uplinks during the migration.
    let cap0 = Capture::in_netns(&lab.peer, "p0");
    let cap1 = Capture::in_netns(&lab.peer, "p1");
    let interval_ms = 10;
    let pinger = PingGuard::start(&lab.peer, GUEST_IP, interval_ms);
    let pinger6 = PingGuard::start(&lab.peer, GUEST_IP6, interval_ms);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    a.libvirtd.virsh_ok(&[
        "migrate",
        "--live",
        &dom,
        &b.libvirtd.migration_uri(),
        "tcp://127.0.0.1",
        "--listen-address",
        "127.0.0.1",
    ]);
    let migrate_ms = t.elapsed().as_millis();
    // QEMU's own figure for the time the guest was paused (libvirt keeps the completed job).
    let jobinfo = a.libvirtd.virsh(&["domjobinfo", "--completed", &dom]);
    let downtime_ms: Option<u64> = String::from_utf8_lossy(&jobinfo.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Total downtime:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    // Let the stream settle on the destination, then stop it.
    std::thread::sleep(Duration::from_secs(4));
    let text = pinger.stop();
    let text6 = pinger6.stop();
    let (seen0, seen1) = (cap0.stop(), cap1.stop());
    let frames: Vec<Vec<u8>> = [&seen0, &seen1]
        .iter()
        .flat_map(|r| r.frames.iter().map(|f| f.data.clone()).collect::<Vec<_>>())
        .collect();
    // What came up B's uplink (each frame once).
    let from_b: Vec<&[u8]> = seen1.incoming().map(|f| f.data.as_slice()).collect();
    let stream = PingStream::parse(&text);
    let stream6 = PingStream::parse(&text6);

    // The guest runs on B, bound there under the same domain UUID with B's own outside MAC.
    assert_eq!(b.libvirtd.running(), std::slice::from_ref(&dom));
    assert!(a.libvirtd.running().is_empty());
    let dest = bindings(&b.daemon);
    assert_eq!(dest.len(), 1, "{dest:?}");
    let (vm, port, inside, outside_b, _) = dest[0].clone();
    assert_eq!(
        (vm.as_str(), inside.as_str()),
        (uuid.as_str(), mac.as_str())
    );
    assert_eq!(b.libvirtd.taps(&dom)[0].0, port);
    assert!(outside_b.starts_with("02:00:5e:01:02:"), "{outside_b}");
    // The source released its MAC into hold-down.
    assert!(bindings(&a.daemon).is_empty(), "{:?}", bindings(&a.daemon));
    assert!(
        held(&a.daemon).contains(&outside_a),
        "{:?}",
        held(&a.daemon)
    );
    // The peer follows the new outside MAC, over IPv4 and IPv6; it never saw the inside MAC (in
    // an Ethernet header, an ARP body or an ND option).
    assert_eq!(
        neighbour(&lab.peer, GUEST_IP).map(|m| fmt_mac(&m)),
        Some(outside_b.clone())
    );
    assert_eq!(
        neighbour6(&lab.peer, GUEST_IP6).map(|m| fmt_mac(&m)),
        Some(outside_b.clone())
    );
    assert_only_outside(&frames, &mac, &outside_a);
    assert_only_outside(&frames, &mac, &outside_b);
    // B announced the guest's addresses (from the metadata) from its outside MAC: `attach_vm`
    // announces nothing itself, so this came from the data plane's first-frame event.
    let log = b.daemon.log();
    for ip in ["198.51.100.10", "2001:db8::10"] {
        assert!(
            log.lines()
                .any(|l| l.contains("announced") && l.contains(&outside_b) && l.contains(ip)),
            "B's daemon never announced {ip}:\n{log}"
        );
    }
    // How the destination made itself known: QEMU's RARP, or ARP (the guest's own announcement
    // through virtio's guest-announce, or the daemon's gratuitous ARP), from the new outside MAC.
    let new_mac = parse_mac(&outside_b).expect("a MAC");
    let from_new = |ethertype: u16| {
        from_b
            .iter()
            .filter(|f| {
                f.len() >= 14
                    && f[6..12] == new_mac
                    && u16::from_be_bytes([f[12], f[13]]) == ethertype
            })
            .count()
    };
    let (rarp, arp) = (from_new(0x8035), from_new(0x0806));

    let figures = Figures {
        stream,
        stream6,
        interval_ms,
        migrate_ms,
        downtime_ms,
    };
    eprintln!(
        "libvirt: live migration: virsh migrate took {} ms, QEMU's downtime {:?} ms; ping every \
         {} ms: IPv4 {} sent, {} received, {} lost, longest gap {:.1} ms; IPv6 {} sent, {} \
         received, {} lost, longest gap {:.1} ms; up B's uplink came {rarp} RARP and {arp} ARP \
         frames from the new outside MAC",
        figures.migrate_ms,
        figures.downtime_ms,
        interval_ms,
        figures.stream.sent,
        figures.stream.received,
        figures.stream.lost.len(),
        figures.stream.max_gap_ms,
        figures.stream6.sent,
        figures.stream6.received,
        figures.stream6.lost.len(),
        figures.stream6.max_gap_ms,
    );
    write_bench(&figures, &outside_a, &outside_b);
    // The stream continued: it ended with replies from the destination.
    let s = &figures.stream;
    assert!(s.sent > 100, "{s:?}");
    assert!(
        s.last_answered + 10 >= s.sent && s.lost.last().is_none_or(|&l| l + 50 < s.sent),
        "the ping stream did not recover after the migration: {s:?}\n{text}"
    );
    let s = &figures.stream6;
    assert!(s.sent > 100, "{s:?}");
    assert!(
        s.last_answered + 10 >= s.sent && s.lost.last().is_none_or(|&l| l + 50 < s.sent),
        "the IPv6 ping stream did not recover after the migration: {s:?}\n{text6}"
    );

    // Stopping it on B releases there.
    b.libvirtd.virsh_ok(&["destroy", &dom]);
    assert!(bindings(&b.daemon).is_empty());
    assert!(held(&b.daemon).contains(&outside_b));
}
