//! The `mat` daemon and CLI end to end: real binary, daemons inside lab hypervisors (own socket,
//! state directory and pins), traffic through the data plane they program.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use mat_tests::{
    capture::Capture,
    daemon::{Daemon, POOL, TempDir, bindings, error_code, mac_str, mat_binary, stderr},
    netns::Netns,
    pins::unique,
    topology::{Lab, PEER_IP, neighbour, ping},
};
use serde_json::Value;

/// rack 1, host 3: the host pool is 02:00:5e:01:03:00/40.
const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];

fn start(lab: &Lab, extra: &[&str]) -> Daemon {
    let mut args = PLAN.to_vec();
    args.extend_from_slice(extra);
    Daemon::start(&lab.hv, &args)
}

#[test]
fn attach_traffic_list_stats_detach_reattach() {
    let lab = Lab::new(2);
    let d = start(&lab, &[]);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    let out = d.cli_ok(&[
        "attach",
        &vm0.port,
        "--mac",
        &mac_str(&vm0.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm0.ip.to_string(),
    ]);
    assert_eq!(out, "02:00:5e:01:03:00\n", "first MAC of the host pool");
    let a1 = d.cli_json(&[
        "attach",
        &vm1.port,
        "--mac",
        &mac_str(&vm1.mac),
        "--vm",
        "vm1",
    ]);
    assert_eq!(a1["outside"], "02:00:5e:01:03:01");
    assert_eq!(a1["source"], "fresh");
    assert_eq!(a1["port"], vm1.port.as_str());

    // Traffic: only outside MACs on the wire beyond the hypervisor.
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
    let outside0: [u8; 6] = [2, 0, 0x5e, 1, 3, 0];
    assert!(report.incoming().any(|f| f.addrs().src == outside0));
    assert_eq!(neighbour(&lab.peer.ns, vm0.ip), Some(outside0));

    // list: both, with given and learned addresses.
    let list = d.cli_json(&["list"]);
    assert_eq!(bindings(&list), {
        let mut v = vec![
            (
                vm0.port.clone(),
                mac_str(&vm0.mac),
                "02:00:5e:01:03:00".into(),
            ),
            (
                vm1.port.clone(),
                mac_str(&vm1.mac),
                "02:00:5e:01:03:01".into(),
            ),
        ];
        v.sort();
        v
    });
    let b0 = list["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["vm"] == "vm0")
        .expect("vm0 listed");
    assert_eq!(b0["ips"], serde_json::json!([vm0.ip.to_string()]));
    assert_eq!(b0["learned"], serde_json::json!([vm0.ip.to_string()]));
    assert!(b0["since"].as_u64().unwrap() > 1_700_000_000);
    let text = d.cli_ok(&["list"]);
    assert!(text.starts_with("VM "), "{text}");
    assert!(
        text.contains(&vm0.port) && text.contains("02:00:5e:01:03:00"),
        "{text}"
    );

    // stats: per program/direction counters and per-port numbers.
    let stats = d.cli_json(&["stats"]);
    let counter = |hook: &str, outcome: &str| {
        stats["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["hook"] == hook && c["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no counter {hook}/{outcome}"))["packets"]
            .as_u64()
            .unwrap()
    };
    assert!(counter("port-from-vm-tc", "translated") >= 6);
    assert!(counter("port-to-vm-tc", "translated") >= 6);
    assert!(counter("port-from-vm-tc", "arp_rewritten") >= 1);
    let port0 = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == vm0.port.as_str())
        .expect("vm0's port in stats");
    assert_eq!(
        port0["programs"],
        serde_json::json!(["port_from_vm", "port_to_vm"])
    );
    assert!(port0["from_vm_packets"].as_u64().unwrap() >= 3);
    assert!(d.cli_ok(&["stats"]).contains("port-from-vm-tc"));

    // detach: into hold-down; the same VM port gets its MAC back.
    let out = d.cli_ok(&["detach", &vm0.port]);
    assert!(
        out.contains("released") && out.contains("02:00:5e:01:03:00"),
        "{out}"
    );
    let plan = d.cli_json(&["plan"]);
    assert_eq!(plan["held"][0]["outside"], "02:00:5e:01:03:00");
    assert_eq!(plan["held"][0]["vm"], "vm0");
    assert!(plan["held"][0]["remaining_ms"].as_u64().unwrap() > 250_000);
    assert_eq!(plan["bound"].as_array().unwrap().len(), 1);
    assert_eq!(plan["free"]["next"], "02:00:5e:01:03:02");
    let again = d.cli_json(&[
        "attach",
        &vm0.port,
        "--mac",
        &mac_str(&vm0.mac),
        "--vm",
        "vm0",
    ]);
    assert_eq!(again["outside"], "02:00:5e:01:03:00");
    assert_eq!(again["source"], "returned");
    ping(&vm0.ns, PEER_IP, 2).expect("vm0 reaches the peer after re-attach");

    // detach --vm, and the plan text.
    let out = d.cli_json(&["detach", "--vm", "vm1"]);
    assert_eq!(out["released"][0]["outside"], "02:00:5e:01:03:01");
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 1);
    let text = d.cli_ok(&["plan"]);
    assert!(text.contains("02:00:5e:01:03:00/40"), "{text}");
    assert!(text.contains("held   02:00:5e:01:03:01"), "{text}");
}

#[test]
fn hold_down_lru_and_exhaustion() {
    let lab = Lab::new(3);
    // 24 + 8 + 15 bits: one VM bit, two outside MACs.
    let d = start(&lab, &["--host-bits", "15", "--hold-down", "2s"]);
    let vm = |i: usize| {
        let v = &lab.vms[i];
        (v.port.as_str(), mac_str(&v.mac), format!("vm{i}"))
    };
    let attach = |i: usize| {
        let (port, mac, name) = vm(i);
        d.cli(&["attach", port, "--mac", &mac, "--vm", &name, "--json"])
    };
    let plan = d.cli_json(&["plan"]);
    assert_eq!(plan["capacity"], 2);
    assert_eq!(plan["vm_bits"], 1);
    let m0 = d.cli_json(&["attach", vm(0).0, "--mac", &vm(0).1, "--vm", "vm0"])["outside"].clone();
    let m1 = d.cli_json(&["attach", vm(1).0, "--mac", &vm(1).1, "--vm", "vm1"])["outside"].clone();
    assert_ne!(m0, m1);

    let before = d.state_file();
    let out = attach(2);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pool exhausted"), "{}", stderr(&out));
    assert_eq!(d.state_file(), before, "a refused attach changes nothing");

    // Released MACs are held down.
    d.cli_ok(&["detach", vm(0).0]);
    let out = attach(2);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("held down (1)") && err.contains("frees up in"),
        "{err}"
    );
    // ... except for the same VM port, which gets its own MAC back.
    let back = d.cli_json(&["attach", vm(0).0, "--mac", &vm(0).1, "--vm", "vm0"]);
    assert_eq!(back["outside"], m0);
    assert_eq!(back["source"], "returned");
    // Release m0, then m1: after the hold-down, m0 (the least recently released) goes first.
    d.cli_ok(&["detach", vm(0).0]);
    d.cli_ok(&["detach", vm(1).0]);
    sleep(Duration::from_millis(2100));
    let c = d.cli_json(&["attach", vm(2).0, "--mac", &vm(2).1, "--vm", "vm2"]);
    assert_eq!(c["outside"], m0, "least recently released first");
    assert_eq!(c["source"], "reused");
    let plan = d.cli_json(&["plan"]);
    assert_eq!(plan["bound"].as_array().unwrap().len(), 1);
}

#[test]
fn refusals_change_nothing() {
    let lab = Lab::new(2);
    let d = start(&lab, &[]);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    let m0 = mac_str(&vm0.mac);
    let m1 = mac_str(&vm1.mac);
    d.cli_ok(&["attach", &vm0.port, "--mac", &m0, "--vm", "vm0"]);
    let state = d.state_file();
    let list = d.cli_json(&["list"]);
    let maps = d.maps();
    assert_eq!(maps.0.len(), 1);

    d.cli_refused(&["attach", "nosuchport0", "--mac", &m1], "unknown_port");
    d.cli_refused(&["attach", "lo", "--mac", &m1], "not_vm_port");
    for bad in [
        "00:00:00:00:00:00",
        "01:00:5e:00:00:01",
        "33:33:00:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "02:00:5e:01:03:07",
        "02:00:5e:7f:00:01",
    ] {
        d.cli_refused(&["attach", &vm1.port, "--mac", bad], "invalid_mac");
    }
    d.cli_refused(&["attach", &vm1.port, "--mac", &m0], "mac_in_use");
    d.cli_refused(&["attach", &vm0.port, "--mac", &m1], "port_bound");
    d.cli_refused(
        &["attach", &vm0.port, "--mac", &m0, "--vm", "vm0"],
        "port_bound",
    );
    d.cli_refused(&["detach", &vm1.port], "not_bound");
    d.cli_refused(&["detach", &vm0.port, "--mac", &m1], "not_bound");
    d.cli_refused(&["detach", "--vm", "nobody"], "not_bound");

    // Usage errors: exit 2, nothing sent.
    for args in [
        vec!["attach", vm1.port.as_str()],
        vec!["attach", vm1.port.as_str(), "--mac", "zz:00:00:00:00:01"],
        vec![
            "attach",
            vm1.port.as_str(),
            "--mac",
            &m1,
            "--ip",
            "192.0.2.300",
        ],
        vec!["detach"],
        vec!["frobnicate"],
    ] {
        let out = d.cli(&args);
        assert_eq!(out.status.code(), Some(2), "mat {args:?}: {}", stderr(&out));
    }

    // Malformed requests on the socket.
    for (line, code) in [
        (r#"{"op":"#.to_owned(), "bad_request"),
        ("not json".into(), "bad_request"),
        (r#"["list"]"#.into(), "bad_request"),
        (r#"{"op":"list","extra":1}"#.into(), "bad_request"),
        (r#"{"op":"launch"}"#.into(), "bad_request"),
        (r#"{"port":"x"}"#.into(), "bad_request"),
        (
            format!(
                r#"{{"op":"attach","port":"{}","mac":"{m1}","colour":"red"}}"#,
                vm1.port
            ),
            "bad_request",
        ),
        (
            format!(r#"{{"op":"attach","port":"{}","mac":7}}"#, vm1.port),
            "bad_request",
        ),
        (
            format!(
                r#"{{"op":"attach","port":"{}","mac":"{m1}","ips":["1.2.3"]}}"#,
                vm1.port
            ),
            "bad_request",
        ),
        (
            format!(r#"{{"op":"attach","port":"{}","mac":"banana"}}"#, vm1.port),
            "invalid_mac",
        ),
        (r#"{"op":"detach"}"#.into(), "bad_request"),
    ] {
        assert_eq!(error_code(&d.request(&line)), code, "{line}");
    }
    let mut invalid_utf8 = br#"{"op":"list","x":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}', b'\n']);
    assert_eq!(error_code(&d.raw(&invalid_utf8).unwrap()), "bad_request");
    let mut long = vec![b' '; 70 * 1024];
    long.push(b'\n');
    assert_eq!(error_code(&d.raw(&long).unwrap()), "line_too_long");
    // Several requests on one connection, answered in order; the daemon still serves.
    let two = d
        .raw(b"\n{\"op\":\"routes\"}\n{\"op\":\"list\"}\n")
        .unwrap();
    assert!(two["ok"]["routes"].is_array());

    // A peer that is not root: refused by the socket's mode, and by SO_PEERCRED when the mode
    // is opened up.
    let as_nobody = |d: &Daemon| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(mat_binary())
            .arg("--socket")
            .arg(d.socket())
            .arg("list")
            .output()
            .expect("running setpriv")
    };
    let mode = fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = as_nobody(&d);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    // The directory above must let nobody through for the second check.
    let dir = d.socket().parent().unwrap().to_owned();
    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(d.socket(), fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&d);
    fs::set_permissions(d.socket(), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(dir_mode)).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("(not_root)"), "{}", stderr(&out));

    // Nothing changed: state on disk, what the daemon lists, and the maps.
    assert_eq!(d.state_file(), state, "state file changed");
    assert_eq!(d.cli_json(&["list"]), list);
    assert_eq!(d.maps(), maps);
    ping(&vm0.ns, PEER_IP, 2).expect("still forwarding");
}

#[test]
fn a_port_that_disappears_is_released_and_not_rebound() {
    let lab = Lab::new(2);
    let d = start(&lab, &[]);
    let vm0 = &lab.vms[0];
    let m0 = mac_str(&vm0.mac);
    d.cli_ok(&["attach", &vm0.port, "--mac", &m0, "--vm", "vm0"]);
    d.cli_ok(&[
        "attach",
        &lab.vms[1].port,
        "--mac",
        &mac_str(&lab.vms[1].mac),
    ]);
    lab.hv.ip(&["link", "del", &vm0.port]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while bindings(&d.cli_json(&["list"])).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "binding of a removed port not released"
        );
        sleep(Duration::from_millis(20));
    }
    let plan = d.cli_json(&["plan"]);
    assert_eq!(plan["held"][0]["outside"], "02:00:5e:01:03:00");
    assert!(d.log().contains("port went away"), "{}", d.log());
    let (from, to) = d.maps();
    assert_eq!((from.len(), to.len()), (1, 1), "its map entries are gone");

    // The port comes back (same name): not rebound until asked.
    lab.hv.ip(&[
        "link",
        "add",
        &vm0.port,
        "type",
        "veth",
        "peer",
        "name",
        &unique("mrb"),
    ]);
    lab.hv.ip(&["link", "set", &vm0.port, "up"]);
    sleep(Duration::from_millis(300));
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 1);
    let again = d.cli_json(&["attach", &vm0.port, "--mac", &m0, "--vm", "vm0"]);
    assert_eq!(again["outside"], "02:00:5e:01:03:00");
    assert_eq!(again["source"], "returned");
    // The other VM kept forwarding throughout.
    ping(&lab.vms[1].ns, PEER_IP, 2).expect("vm1 still forwards");
}

#[test]
fn restart_reconciles_maps_to_the_state() {
    let lab = Lab::new(2);
    let mut d = start(&lab, &["--log-format", "json"]);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    d.cli_ok(&["attach", &vm0.port, "--mac", &mac_str(&vm0.mac)]);
    d.cli_ok(&["attach", &vm1.port, "--mac", &mac_str(&vm1.mac)]);
    let maps = d.maps();
    assert_eq!(maps.0.len(), 2);

    // Down: the data plane keeps translating.
    d.kill9();
    ping(&vm0.ns, PEER_IP, 3).expect("forwarding without a daemon");
    assert_eq!(neighbour(&lab.peer.ns, vm0.ip), Some([2, 0, 0x5e, 1, 3, 0]));

    // Break the maps behind its back: drop one binding, add a stray one.
    {
        let mut dp = mat_loader::Dataplane::open(d.pin_dir()).unwrap();
        let (i, inside, outside) = maps.0[0];
        dp.unbind(i, inside, outside).unwrap();
        dp.bind(4242, [0x52, 0, 0, 0, 0, 9], [2, 0, 0x5e, 1, 3, 0x99], 0)
            .unwrap();
    }
    d.spawn();
    d.wait_ready();
    assert_eq!(d.maps(), maps, "maps corrected to the state");
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 2);
    ping(&vm0.ns, PEER_IP, 2).expect("forwarding after the restart");
    ping(&vm1.ns, PEER_IP, 2).expect("forwarding after the restart");

    // SIGTERM: a clean exit that leaves the data plane in place and removes the socket.
    assert!(d.terminate().success());
    assert!(!d.socket().exists());
    assert_eq!(d.maps(), maps);

    // --log-format json: every line is a JSON object with a message.
    let log = d.log();
    assert!(log.lines().count() >= 4, "{log}");
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["message"].is_string(), "{line}");
    }
    assert!(log.contains("\"message\":\"ready\""), "{log}");
}

#[test]
fn plan_validation_routes_and_config_file() {
    let tmp = TempDir::new("mat-cfg-");
    let dir = tmp.path();
    // The daemon must refuse these before touching anything; every path points at our directory.
    let daemon = |args: &[&str]| {
        Command::new(mat_binary())
            .arg("daemon")
            .arg("--socket")
            .arg(dir.join("sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--pin-dir")
            .arg(dir.join("pins-unused"))
            .args(args)
            .output()
            .expect("running mat daemon")
    };
    for (args, message) in [
        (
            vec![
                "--pool",
                "03:00:5e:00:00:00/24",
                "--rack",
                "1",
                "--host",
                "1",
            ],
            "multicast",
        ),
        (
            vec![
                "--pool",
                "00:00:5e:00:00:00/24",
                "--rack",
                "1",
                "--host",
                "1",
            ],
            "universally administered",
        ),
        (
            vec![
                "--pool",
                POOL,
                "--rack-bits",
                "16",
                "--host-bits",
                "9",
                "--rack",
                "1",
                "--host",
                "1",
            ],
            "more than the 48",
        ),
        (
            vec![
                "--pool",
                POOL,
                "--rack-bits",
                "16",
                "--host-bits",
                "8",
                "--rack",
                "1",
                "--host",
                "1",
            ],
            "no bit is left",
        ),
        (
            vec!["--pool", POOL, "--rack", "256", "--host", "1"],
            "rack id 256 does not fit in 8",
        ),
        (
            vec![
                "--pool",
                POOL,
                "--rack",
                "1",
                "--host-bits",
                "4",
                "--host",
                "16",
            ],
            "host id 16 does not fit in 4",
        ),
        (
            vec![
                "--pool",
                "02:00:5e:00:00:01/24",
                "--rack",
                "1",
                "--host",
                "1",
            ],
            "bits set past",
        ),
        (
            vec!["--rack", "1", "--host", "1"],
            "not configured: set pool in",
        ),
        (
            vec!["--pool", POOL, "--host", "1"],
            "not configured: set rack in",
        ),
        (
            vec![
                "--pool", POOL, "--rack", "1", "--host", "1", "--vlan", "4095",
            ],
            "VLAN id 4095",
        ),
    ] {
        let out = daemon(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(!dir.join("state").exists() && !dir.join("sock").exists());
    let out = daemon(&["--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    fs::write(
        dir.join("bad.toml"),
        "pool = \"02:00:5e:00:00:00/24\"\ncolour = 1\n",
    )
    .unwrap();
    let out = daemon(&["--config", dir.join("bad.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));

    // A config file with VLANs, one id overridden by a flag; `routes` and `plan` reflect both.
    let ns = Netns::new("mcf");
    fs::write(
        dir.join("mat.toml"),
        format!("pool = \"{POOL}\"\nrack = 1\nhost = 9\nvlans = [20, 10]\nhold_down = \"90s\"\n"),
    )
    .unwrap();
    let cfg = dir.join("mat.toml");
    let d = Daemon::start(&ns, &["--config", cfg.to_str().unwrap(), "--host", "3"]);
    let routes = d.cli_json(&["routes"]);
    let routes = routes["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 8, "{routes:?}");
    let core: Vec<(&str, u64)> = routes
        .iter()
        .filter(|r| r["scope"] == "core")
        .map(|r| (r["prefix"].as_str().unwrap(), r["vlan"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        core,
        [("02:00:5e:01:00:00/32", 10), ("02:00:5e:01:00:00/32", 20)]
    );
    assert!(
        routes
            .iter()
            .any(|r| r["scope"] == "tor" && r["prefix"] == "02:00:5e:01:03:00/40")
    );
    let text = d.cli_ok(&["routes"]);
    assert!(
        text.contains("core  02:00:5e:01:00:00/32  via rack 1  vlan 10"),
        "{text}"
    );
    let plan = d.cli_json(&["plan"]);
    assert_eq!(plan["host_pool"], "02:00:5e:01:03:00/40");
    assert_eq!(plan["rack_route"], "02:00:5e:01:00:00/32");
    assert_eq!(plan["capacity"], 256);
    assert_eq!(plan["hold_down_ms"], 90_000);
    assert_eq!(
        plan["free"]["ranges"],
        serde_json::json!(["02:00:5e:01:03:00-02:00:5e:01:03:ff"])
    );
    drop(d);
    drop(ns);
}

#[test]
fn the_cli_without_a_daemon() {
    let dir = std::env::temp_dir().join(unique("mat-nod-"));
    let out = Command::new(mat_binary())
        .arg("list")
        .env("MAT_SOCKET", dir.join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("none.sock"), "{}", stderr(&out));
}
