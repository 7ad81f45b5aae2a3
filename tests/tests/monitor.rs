//! `mat monitor`: every drop reason shows once per crafted frame, with its port and MACs; the
//! data plane reports drops only while a monitor watches (the settings flag); what a flood
//! makes that is not shown is counted; announcements show too.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use mat_common::maps::{LAYOUT, SETTING_MONITOR, Settings};
use mat_tests::{
    capture::inject,
    daemon::{Daemon, POOL, counter, mac_str, mat_binary},
    frames::{self, Mac},
    netns::ChildGuard,
    topology::{Lab, PEER_IP, ping},
};
use serde_json::Value;

const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];

/// The data plane's settings flags, read from the pinned map.
fn settings(pin_dir: &Path) -> u32 {
    let map = MapData::from_pin(pin_dir.join(format!("v{LAYOUT}/MAT_SETTINGS")))
        .expect("the pinned settings map");
    let a: Array<MapData, Settings> = Array::try_from(Map::Array(map)).unwrap();
    a.get(&0, 0).unwrap().flags
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mat monitor --json`, its lines arriving on a channel.
struct Watcher {
    _child: ChildGuard,
    lines: mpsc::Receiver<Value>,
}

impl Watcher {
    fn start(d: &Daemon) -> Watcher {
        let mut child = Command::new(mat_binary())
            .arg("--socket")
            .arg(d.socket())
            .args(["monitor", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting mat monitor");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Watcher {
            _child: ChildGuard(child),
            lines,
        }
    }

    /// Every record that arrives within `quiet` of the one before.
    fn drain(&self, quiet: Duration) -> Vec<Value> {
        let mut v = Vec::new();
        while let Ok(r) = self.lines.recv_timeout(quiet) {
            v.push(r);
        }
        v
    }
}

#[test]
fn each_drop_reason_shows_once_and_only_while_watched() {
    let lab = Lab::new(2);
    let (vm, open) = (&lab.vms[0], &lab.vms[1]);
    let d = Daemon::start(&lab.hv, &PLAN);
    let outside = d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--ip",
        &vm.ip.to_string(),
    ]);
    let outside: Mac = mat_tests::topology::parse_mac(outside.trim()).unwrap();
    d.cli_ok(&[
        "attach",
        &open.port,
        "--mac",
        &mac_str(&open.mac),
        "--no-port-security",
    ]);
    ping(&vm.ns, PEER_IP, 1).expect("the VM reaches the peer");
    assert_eq!(settings(d.pin_dir()) & SETTING_MONITOR, 0, "nobody watches");

    let w = Watcher::start(&d);
    wait("the monitor flag", || {
        settings(d.pin_dir()) & SETTING_MONITOR != 0
    });
    // One crafted frame per reason.
    let stranger: Mac = [0x52, 0x54, 0, 0x99, 0x99, 0x99];
    let unbound: Mac = [2, 0, 0x5e, 1, 3, 0xee];
    let broadcast: Mac = [0xff; 6];
    // Port security: a source that is not the port's inside MAC.
    inject(
        &vm.ns,
        &vm.ifname,
        &frames::ipv4_udp(lab.peer.mac, stranger, &[], 18),
    );
    // Spoof: on a port without port security, an outside-pool source not bound there.
    inject(
        &open.ns,
        &open.ifname,
        &frames::ipv4_udp(lab.peer.mac, unbound, &[], 18),
    );
    // Malformed: an ARP cut short.
    inject(
        &vm.ns,
        &vm.ifname,
        &frames::ethernet(broadcast, vm.mac, &[], 0x0806, &[0, 1, 8, 0]),
    );
    // Reflected: the VM's own announcement coming back from the network (a reply, told apart
    // from the daemon's own announcements, which come back too).
    let garp = frames::arp(
        broadcast,
        outside,
        &[],
        2,
        outside,
        vm.ip.octets(),
        broadcast,
        PEER_IP.octets(),
    );
    inject(&lab.peer.ns, &lab.peer.ifname, &garp);

    let records = w.drain(Duration::from_millis(1500));
    let drops: Vec<&Value> = records.iter().filter(|r| r["type"] == "drop").collect();
    let garp_hex: String = garp.iter().map(|b| format!("{b:02x}")).collect();
    let one = |reason: &str, port: &str, src: &Mac| {
        let found: Vec<&&Value> = drops
            .iter()
            .filter(|r| r["reason"] == reason)
            .filter(|r| reason != "reflected" || r["head"] == garp_hex.as_str())
            .collect();
        assert_eq!(found.len(), 1, "one {reason} record: {records:#?}");
        assert_eq!(found[0]["port"], port, "{reason}: {}", found[0]);
        assert_eq!(found[0]["src"], mac_str(src), "{reason}: {}", found[0]);
        assert!(
            found[0]["head"].as_str().unwrap().starts_with(&format!(
                "{}{}",
                hex(&found[0]["dst"]),
                hex(&found[0]["src"])
            )),
            "{reason}: the frame's first bytes: {}",
            found[0]
        );
    };
    one("port_security_dropped", &vm.port, &stranger);
    one("spoof_dropped", &open.port, &unbound);
    // The frame as the program dropped it: its source already translated.
    one("malformed", &vm.port, &outside);
    one("reflected", &vm.port, &outside);
    // Nothing else but the daemon's own announcements of the VM (ARP requests), flooded back.
    let arp_request = "0806000108000604000";
    assert!(
        drops.iter().all(|r| r["reason"] != "reflected"
            || r["head"] == garp_hex.as_str()
            || r["head"].as_str().unwrap().contains(arp_request)),
        "{records:#?}"
    );
    assert_eq!(
        drops.iter().filter(|r| r["reason"] != "reflected").count(),
        3,
        "nothing else dropped: {records:#?}"
    );

    // A flood: every drop is either shown or counted as not shown, and the daemon answers.
    // (Compared with the counter: a veth may drop part of a burst before the program runs.)
    let dropped = || {
        counter(
            &d.cli_json(&["stats"]),
            "port-from-vm-tc",
            "port_security_dropped",
        )
    };
    let before = dropped();
    let frame = frames::ipv4_udp(lab.peer.mac, stranger, &[], 18);
    for _ in 0..2000 {
        inject(&vm.ns, &vm.ifname, &frame);
    }
    d.cli_ok(&["list"]);
    let records = w.drain(Duration::from_millis(2500));
    let shown = records.iter().filter(|r| r["type"] == "drop").count() as u64;
    let suppressed: u64 = records
        .iter()
        .filter(|r| r["type"] == "suppressed")
        .map(|r| r["drops"].as_u64().unwrap())
        .sum();
    let flood = dropped() - before;
    assert!(
        flood > 1000,
        "only {flood} of 2,000 frames reached the program"
    );
    assert_eq!(
        shown + suppressed,
        flood,
        "{shown} shown and {suppressed} counted as not shown"
    );
    assert!(
        shown <= u64::from(mat_loader::monitor::DROPS_PER_SECOND) * 3,
        "the daemon's budget: {shown} shown"
    );

    // Announcements: a VM bound while the monitor watches, announced at its first frame.
    d.cli_ok(&["detach", &vm.port]);
    d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--ip",
        &vm.ip.to_string(),
    ]);
    ping(&vm.ns, PEER_IP, 1).expect("the VM reaches the peer again");
    let records = w.drain(Duration::from_millis(1500));
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "announce" && r["port"] == vm.port.as_str()),
        "{records:#?}"
    );

    drop(w);
    wait("the monitor flag off", || {
        settings(d.pin_dir()) & SETTING_MONITOR == 0
    });
}

/// A MAC as the hex of a frame's bytes.
fn hex(mac: &Value) -> String {
    mac.as_str().unwrap().replace(':', "")
}
