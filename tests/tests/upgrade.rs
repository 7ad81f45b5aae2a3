//! Upgrading over what the first release left: its `state.json` and its data plane pinned in
//! layout 1. The new daemon imports the state, migrates the pins to its own layout while a VM
//! pings a peer every 10 ms, and nothing is lost; a newer layout than it knows is refused with
//! nothing touched.

use std::{fs, thread::sleep, time::Duration};

use mat_common::pool::PoolPrefix;
use mat_tests::{
    daemon::{Daemon, POOL, bindings, mac_str},
    legacy::pin_layout_1,
    topology::{Lab, PEER_IP, PingStream, neighbour, ping},
};
use serde_json::Value;

/// A state.json the first release (abae565) wrote: one VM bound (with a given address), one
/// MAC released, and a port without a binding that no longer exists.
const RELEASE_1_STATE: &str = include_str!("../fixtures/state/release-1.json");

const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];

#[test]
fn first_release_state_and_pins_are_taken_over_without_loss() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let mut d = Daemon::prepare(&lab.hv, &PLAN);

    // The first release's state, moved onto this lab's port and VM.
    let mut state: Value = serde_json::from_str(RELEASE_1_STATE).unwrap();
    let outside = state["bindings"][0]["outside"].as_str().unwrap().to_owned();
    let held = state["alloc"]["released"][0]["outside"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_port = state["bindings"][0]["port"].clone();
    for p in state["ports"].as_array_mut().unwrap() {
        if p["name"] == old_port {
            p["name"] = vm.port.clone().into();
            p["ifindex"] = vm.port_index.into();
        }
    }
    let b = &mut state["bindings"][0];
    b["port"] = vm.port.clone().into();
    b["ifindex"] = vm.port_index.into();
    b["inside"] = mac_str(&vm.mac).into();
    fs::create_dir_all(d.state_dir()).unwrap();
    fs::write(d.state_dir().join("state.json"), state.to_string()).unwrap();

    // ... and its data plane.
    let out_mac = mat_tests::topology::parse_mac(&outside).unwrap();
    let pool = PoolPrefix::new([2, 0, 0x5e, 0, 0, 0], 24);
    let pins = d.pin_dir().to_owned();
    lab.hv
        .enter(|| pin_layout_1(&pins, &vm.port, vm.mac, out_mac, pool));
    ping(&vm.ns, PEER_IP, 2).expect("layout 1 translates");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(out_mac));

    let stream = PingStream::start(&vm.ns, PEER_IP);
    sleep(Duration::from_millis(300));
    d.spawn();
    d.wait_ready();
    sleep(Duration::from_millis(500));
    let (answered, missing) = stream.stop();
    assert!(answered > 40, "only {answered} echoes answered");
    assert!(missing.is_empty(), "lost {missing:?} across the upgrade");

    // The binding, the held-down MAC and the translation are all still there.
    let list = d.cli_json(&["list"]);
    assert_eq!(
        bindings(&list),
        [(vm.port.clone(), mac_str(&vm.mac), outside.clone())]
    );
    // Held down still, or past its hold-down and reusable: either way not lost.
    let plan = d.cli_json(&["plan"]);
    let released: Vec<&Value> = plan["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["outside"])
        .chain(plan["free"]["reusable"].as_array().unwrap())
        .collect();
    assert_eq!(released, [held.as_str()], "{plan}");
    assert!(d.state_dir().join("state.json.imported").exists());
    assert!(!d.state_dir().join("state.json").exists());
    // Layout 1's pins are gone; this layout's maps hold the binding.
    assert!(!pins.join("MAT_FROM_VM").exists());
    assert!(!pins.join("links").exists());
    let (from, to) = d.maps();
    assert_eq!(from.len(), 1);
    assert_eq!(to.len(), 1);
    let log = d.log();
    assert!(log.contains("migrated from layout 1"), "{log}");
    // The frames go through this layout's programs now: its counters move.
    let translated = |d: &Daemon| -> u64 {
        d.cli_json(&["stats"])["counters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["hook"] == "port-from-vm-tc" && c["outcome"] == "translated")
            .map(|c| c["packets"].as_u64().unwrap())
            .sum()
    };
    let before = translated(&d);
    ping(&vm.ns, PEER_IP, 5).expect("still translating");
    assert!(translated(&d) >= before + 5, "the old programs still run");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(out_mac));

    // A restart finds nothing left to migrate or import.
    d.restart();
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 1);
}

#[test]
fn a_newer_layout_is_refused_and_left_alone() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let mut d = Daemon::start(&lab.hv, &PLAN);
    d.cli_ok(&["attach", &vm.port, "--mac", &mac_str(&vm.mac)]);
    let maps = d.maps();
    d.kill9();
    // What a later release would add beside (or instead of) this layout's directory.
    let newer = d.pin_dir().join("v99");
    fs::create_dir(&newer).unwrap();
    d.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.log().matches("data-plane layout 99").count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal:\n{}",
            d.log()
        );
        sleep(Duration::from_millis(20));
    }
    ping(&vm.ns, PEER_IP, 2).expect("still translating");
    fs::remove_dir(&newer).unwrap();
    assert_eq!(d.maps(), maps, "the refused daemon changed the maps");
}
