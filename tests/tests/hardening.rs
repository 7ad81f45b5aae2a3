//! Regression tests for the hardening issue (issue 12, items 1-13): each reproduces, with real
//! `mat` daemons in lab namespaces, a defect that the adversarial review found on abae565, and
//! checks the behaviour the fix gives. See control_plane.rs for the style.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    os::{
        fd::AsRawFd,
        unix::{fs::PermissionsExt, net::UnixStream},
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use mat_loader::Dataplane;
use mat_tests::{
    capture::{Capture, Report},
    daemon::{Daemon, MapEntry, POOL, TempDir, bindings, error_code, mac_str, mat_binary, stderr},
    frames::{self, BROADCAST, ZERO},
    netns::{ChildGuard, Netns},
    pins::unique,
    tap::Tap,
    topology::{Lab, PEER_IP, neighbour, parse_mac, ping, random_inside_mac},
};
use serde_json::{Value, json};

/// rack 1, host 3: the host pool is 02:00:5e:01:03:00/40.
const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];

/// The first outside MAC the daemon hands out.
const FIRST_OUTSIDE: [u8; 6] = [2, 0, 0x5e, 1, 3, 0];

fn start(lab: &Lab, extra: &[&str]) -> Daemon {
    let mut args = PLAN.to_vec();
    args.extend_from_slice(extra);
    Daemon::start(&lab.hv, &args)
}

/// Runs the CLI and checks that it was a usage error (exit 2).
fn usage_error(d: &Daemon, args: &[&str]) {
    let out = d.cli(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "mat {args:?} should be a usage error: {}",
        stderr(&out)
    );
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(10));
    }
}

/// The pinned links under the daemon's pin directory, as (ifindex, program), sorted.
fn link_pins(d: &Daemon) -> Vec<(u32, &'static str)> {
    let dp = Dataplane::open(d.pin_dir()).expect("opening the pinned data plane");
    let mut v: Vec<(u32, &'static str)> = dp
        .links()
        .expect("reading the pinned links")
        .into_iter()
        .map(|(i, p)| (i, p.name()))
        .collect();
    v.sort_unstable();
    v
}

/// Whether MAT's programs are on the interface `ifindex` (by the daemon's pinned links).
fn has_programs(d: &Daemon, ifindex: u32) -> bool {
    let on: Vec<&str> = link_pins(d)
        .into_iter()
        .filter(|&(i, _)| i == ifindex)
        .map(|(_, p)| p)
        .collect();
    assert!(
        on.is_empty() || on == ["port_from_vm", "port_to_vm"],
        "{ifindex} has {on:?}"
    );
    !on.is_empty()
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: String,
    maps: (Vec<MapEntry>, Vec<MapEntry>),
    pins: Vec<(u32, &'static str)>,
    list: Value,
    plan: Value,
}

fn snapshot(d: &Daemon) -> Snapshot {
    Snapshot {
        state: String::from_utf8(d.state_file()).unwrap(),
        maps: d.maps(),
        pins: link_pins(d),
        list: d.cli_json(&["list"]),
        plan: d.cli_json(&["plan"]),
    }
}

/// Runs `cmd` to its end, at most `limit` (it is killed by pid, and the test fails, after that).
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = ChildGuard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}")),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("waiting for a child") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} still running after {limit:?}"
        );
        sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A directory under /sys/fs/bpf that something else may create, removed on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// Item 1.
#[test]
fn a_second_daemon_is_refused_without_touching_the_first_ones_data_plane() {
    let lab = Lab::new(1);
    let d = start(&lab, &[]);
    let vm = &lab.vms[0];
    d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
    ]);
    let before = snapshot(&d);
    assert_eq!(before.maps.0.len(), 1);
    assert!(has_programs(&d, vm.port_index));

    let other = TempDir::new("mat-2nd-");
    let second = |socket: &Path, pin_dir: &Path| {
        let mut cmd = lab.hv.command(mat_binary().to_str().unwrap());
        cmd.arg("daemon")
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(other.path().join("state"))
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(PLAN)
            .env("RUST_LOG", "info")
            .env_remove("MAT_SOCKET");
        output_within(&mut cmd, Duration::from_secs(20))
    };
    // Its own state directory, the first one's pins and socket: refused at the pin directory's
    // lock (after waiting for it, as for a daemon that is still exiting).
    let out = second(&d.socket(), d.pin_dir());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "pin directory {} is in use by another mat daemon",
            d.pin_dir().display()
        )),
        "{}",
        stderr(&out)
    );
    // Its own pins, the first one's socket: refused at the socket.
    let own_pins = RemoveOnDrop(Path::new("/sys/fs/bpf").join(unique("mat-2nd-")));
    let out = second(&d.socket(), &own_pins.0);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "another daemon is listening on {}",
            d.socket().display()
        )),
        "{}",
        stderr(&out)
    );

    // The first daemon's data plane, state and socket are as they were, and it translates.
    assert_eq!(
        snapshot(&d),
        before,
        "the refused daemons changed something"
    );
    assert!(has_programs(&d, vm.port_index));
    lab.peer.ns.ip(&["neigh", "flush", "all"]);
    ping(&vm.ns, PEER_IP, 2).expect("vm0 reaches the peer");
    assert_eq!(neighbour(&lab.peer.ns, vm.ip), Some(FIRST_OUTSIDE));
}

// Item 2, with a managed bridge.
#[test]
fn a_managed_bridge_its_uplink_are_refused_and_new_vm_ports_are_guarded_at_once() {
    let mut lab = Lab::new(1);
    let bridge = lab.bridge.clone();
    let id = bridge[3..].to_owned();
    let d = start(&lab, &["--bridge", &bridge, "--vm-ports", "p*"]);
    let m = mac_str(&random_inside_mac());
    for port in [&bridge, &lab.uplink] {
        d.cli_refused(&["attach", port, "--mac", &m], "not_vm_port");
        d.cli_refused(&["attach", port, "--mac", &m, "--force"], "not_vm_port");
    }
    assert!(
        !has_programs(&d, lab.uplink_index),
        "programs on the uplink"
    );
    assert!(
        !has_programs(&d, lab.hv_ifindex(&bridge)),
        "programs on the bridge"
    );
    assert!(d.maps().0.is_empty());
    // The VM port that was in the bridge at start is guarded already.
    assert!(has_programs(&d, lab.vms[0].port_index));

    // A VM port (veth, by --vm-ports) and a tap added to the bridge get the programs before any
    // attach.
    let vm1_index = lab.add_vm().port_index;
    let tap = Tap::in_netns(&lab.hv, &format!("tq-{id}"));
    lab.add_port(tap.name());
    let tap_index = lab.hv_ifindex(tap.name());
    wait_for("programs on the new ports", Duration::from_secs(3), || {
        has_programs(&d, vm1_index) && has_programs(&d, tap_index)
    });
    let stats = d.cli_json(&["stats"]);
    for name in [lab.vms[1].port.as_str(), tap.name()] {
        let port = stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == name)
            .unwrap_or_else(|| panic!("{name} not in stats: {stats}"));
        assert_eq!(port["programs"], json!(["port_from_vm", "port_to_vm"]));
        assert_eq!(port["bindings"], 0);
    }
    assert!(!has_programs(&d, lab.uplink_index));

    // Attaches to them work.
    lab.wait_forwarding();
    let vm1 = &lab.vms[1];
    d.cli_ok(&["attach", &vm1.port, "--mac", &mac_str(&vm1.mac)]);
    d.cli_ok(&["attach", tap.name(), "--mac", &m]);
    ping(&vm1.ns, PEER_IP, 2).expect("vm1 reaches the peer");
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 2);
}

// Item 2, without a managed bridge; `mat port release`.
#[test]
fn only_taps_and_veths_unless_forced_never_a_bridge_and_port_release() {
    let lab = Lab::new(1);
    let id = lab.bridge[3..].to_owned();
    let mut d = start(&lab, &[]);
    let vm = &lab.vms[0];
    let m = mac_str(&random_inside_mac());
    d.cli_refused(&["attach", &lab.bridge, "--mac", &m], "not_vm_port");
    d.cli_refused(
        &["attach", &lab.bridge, "--mac", &m, "--force"],
        "not_vm_port",
    );
    assert!(!has_programs(&d, lab.hv_ifindex(&lab.bridge)));
    // Neither a tap nor a veth (an ifb stands for a NIC): only with --force.
    let dummy = format!("ifb-{id}");
    lab.hv.ip(&["link", "add", &dummy, "type", "ifb"]);
    lab.hv.ip(&["link", "set", &dummy, "up"]);
    let dummy_index = lab.hv_ifindex(&dummy);
    d.cli_refused(&["attach", &dummy, "--mac", &m], "not_vm_port");
    assert!(!has_programs(&d, dummy_index));
    d.cli_ok(&["attach", &dummy, "--mac", &m, "--force"]);
    // A tap and a veth.
    let tap = Tap::in_netns(&lab.hv, &format!("tr-{id}"));
    lab.add_port(tap.name());
    let tap_index = lab.hv_ifindex(tap.name());
    d.cli_ok(&[
        "attach",
        tap.name(),
        "--mac",
        &mac_str(&random_inside_mac()),
    ]);
    d.cli_ok(&["attach", &vm.port, "--mac", &mac_str(&vm.mac)]);

    // `mat port release`: refused while bound; after the detach (the programs stay on), it takes
    // them off.
    d.cli_refused(&["port", "release", &vm.port], "port_bound");
    d.cli_ok(&["detach", &vm.port]);
    assert!(
        has_programs(&d, vm.port_index),
        "programs stay after a detach"
    );
    let out = d.cli_json(&["port", "release", &vm.port]);
    assert_eq!(out["port"], vm.port.as_str());
    assert!(!has_programs(&d, vm.port_index));
    let stats = d.cli_json(&["stats"]);
    assert!(
        !stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == vm.port.as_str()),
        "{stats}"
    );
    d.cli_refused(&["port", "release", &vm.port], "not_bound");
    d.cli_refused(&["port", "release", "nosuchport0"], "unknown_port");
    d.cli_ok(&["detach", &dummy]);
    d.cli_ok(&["port", "release", &dummy]);
    assert!(!has_programs(&d, dummy_index));

    // Released stays released across a restart; the bound tap keeps its programs.
    d.restart();
    assert!(!has_programs(&d, vm.port_index));
    assert!(!has_programs(&d, dummy_index));
    assert!(has_programs(&d, tap_index));
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 1);
}

/// Raises this process's soft limit on open files to the hard one (the tests below hold
/// hundreds of connections).
fn raise_own_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= 2048, "the hard open-file limit ({hard}) is too low");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// CPU time (user + system) the process `pid` used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th of them.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A connection that sent one request: `Ok` once the daemon answered it (the daemon accepted it
/// and holds it open), `Err` with the connection when no answer came within `wait` (it waits in
/// the listen queue).
fn answered_connection(d: &Daemon, wait: Duration) -> Result<UnixStream, UnixStream> {
    let mut s = UnixStream::connect(d.socket()).expect("connecting to the daemon");
    s.write_all(b"{\"op\":\"routes\"}\n").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => Ok(s),
        Ok(_) => panic!("the daemon closed a connection"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(s),
        Err(e) => panic!("reading a reply: {e}"),
    }
}

/// Opens connections that the daemon accepts and keeps until it accepts no more (out of file
/// descriptors); returns the first one it did not accept.
fn exhaust(d: &Daemon, held: &mut Vec<UnixStream>) -> UnixStream {
    for _ in 0..1000 {
        match answered_connection(d, Duration::from_secs(2)) {
            Ok(s) => held.push(s),
            Err(pending) => return pending,
        }
    }
    panic!("the daemon accepted 1,000 connections under its limit of 256 files");
}

// Items 3 and 4.
#[test]
fn out_of_descriptors_the_daemon_backs_off_keeps_its_bindings_and_stores_only_what_it_acknowledged()
{
    raise_own_nofile();
    let lab = Lab::new(2);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    let began = Instant::now();
    // A hard limit of 256: the soft one cannot be raised past it.
    let d = Daemon::start_wrapped(&lab.hv, &["prlimit", "--nofile=256:256", "--"], &PLAN);
    let pid = d.pid().unwrap();
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "mat",
        "the pid is the daemon's"
    );
    d.cli_ok(&[
        "attach",
        &vm0.port,
        "--mac",
        &mac_str(&vm0.mac),
        "--vm",
        "vm0",
    ]);
    let before = snapshot(&d);

    let mut held = Vec::new();
    let pending = exhaust(&d, &mut held);
    assert!(held.len() > 100, "only {} connections", held.len());
    wait_for("the accept warning", Duration::from_secs(2), || {
        d.log().contains("accepting a connection; backing off")
    });
    let (cpu0, t0) = (cpu_time(pid), Instant::now());

    // Item 4: an attach that fails for want of a descriptor is not stored. Closing one held
    // connection frees one descriptor: the daemon takes the pending connection (closed, so it
    // gives the descriptor back), then this one, and has none left for the attach.
    drop(pending);
    let mut a = UnixStream::connect(d.socket()).unwrap();
    let attach = json!({"op": "attach", "port": vm1.port, "mac": mac_str(&vm1.mac), "vm": "vm1"});
    a.write_all(format!("{attach}\n").as_bytes()).unwrap();
    drop(held.pop());
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(&a)
        .read_line(&mut line)
        .expect("a reply to the attach");
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(error_code(&reply), "internal", "{reply}");
    drop(a);
    assert_eq!(
        d.state_file(),
        before.state.as_bytes(),
        "a failed attach was stored"
    );
    assert_eq!(d.maps(), before.maps);
    assert_eq!(link_pins(&d), before.pins);

    // Item 3: the CLI gives up after its timeout instead of hanging.
    let pending = exhaust(&d, &mut held);
    let t = Instant::now();
    let out = d.cli(&["--timeout", "1", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(stderr(&out).contains("mat daemon"), "{}", stderr(&out));

    // The periodic port check (10 s after the start) runs while no descriptor is free: it
    // cannot look the port up, and must not take that for the port being gone.
    sleep((began + Duration::from_secs(10)).saturating_duration_since(Instant::now()));
    wait_for("the port check", Duration::from_secs(4), || {
        d.log().contains("cannot tell whether a port still exists")
    });
    let (cpu, window) = (cpu_time(pid).checked_sub(cpu0).unwrap(), t0.elapsed());
    let log_len = fs::metadata(d.log_path()).unwrap().len();
    eprintln!("out of descriptors for {window:?}: {cpu:?} CPU, log {log_len} bytes");
    assert!(log_len < 100_000, "the log grew to {log_len} bytes");
    assert!(
        cpu < Duration::from_secs(1),
        "{cpu:?} of CPU in {window:?} out of descriptors"
    );

    // The connections close: the daemon answers again, the binding is still there.
    drop(pending);
    held.clear();
    wait_for("an answer", Duration::from_secs(5), || {
        d.cli(&["list"]).status.success()
    });
    assert!(!d.log().contains("port went away"), "{}", d.log());
    assert_eq!(snapshot(&d), before);
    // And the attach that failed works now.
    d.cli_ok(&[
        "attach",
        &vm1.port,
        "--mac",
        &mac_str(&vm1.mac),
        "--vm",
        "vm1",
    ]);
}

// Item 3: the connection cap, and the soft limit raised to the hard one.
#[test]
fn at_most_512_connections_at_once_the_others_are_told_busy() {
    raise_own_nofile();
    let ns = Netns::new("mcap");
    // systemd's soft limit is 1,024; this one is lower still.
    let d = Daemon::start_wrapped(&ns, &["prlimit", "--nofile=256:4096", "--"], &PLAN);
    let pid = d.pid().unwrap();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(files[3..5], ["4096", "4096"], "{limits}");

    let conns: Vec<UnixStream> = (0..600)
        .map(|_| UnixStream::connect(d.socket()).expect("connecting"))
        .collect();
    for c in &conns {
        c.set_nonblocking(true).unwrap();
    }
    let mut replies: Vec<Option<String>> = vec![None; conns.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (c, r) in conns.iter().zip(&mut replies) {
            let mut buf = [0u8; 512];
            if let Ok(n) = (&*c).read(&mut buf) {
                r.get_or_insert_with(String::new)
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        let answered = replies.iter().flatten().count();
        if answered >= 600 - 512 || Instant::now() > deadline {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_millis(300));
    let busy = replies
        .iter()
        .flatten()
        .inspect(|r| {
            let v: Value = serde_json::from_str(r.trim()).unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(error_code(&v), "busy", "{v}");
        })
        .count();
    assert!(
        (600 - 512..=600 - 500).contains(&busy),
        "{busy} of 600 idle connections were told busy"
    );
    // With 512 connections open, the CLI is told so too.
    d.cli_refused(&["list"], "busy");
    drop(conns);
    wait_for("an answer", Duration::from_secs(5), || {
        d.cli(&["list"]).status.success()
    });
    assert!(!d.log().contains("backing off"), "{}", d.log());
}

fn attach_vm(d: &Daemon, vm: &str, ports: &[(&str, &str)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(port, mac)| json!({"port": port, "mac": mac}))
        .collect();
    d.request(&json!({"op": "attach_vm", "vm": vm, "ports": ports}).to_string())
}

// Item 5.
#[test]
fn a_refused_attach_vm_changes_nothing() {
    let lab = Lab::new(4);
    // One VM bit: two outside MACs.
    let d = start(&lab, &["--host-bits", "15"]);
    let p = |i: usize| lab.vms[i].port.as_str();
    let m: Vec<String> = lab.vms.iter().map(|v| mac_str(&v.mac)).collect();
    let r = attach_vm(&d, "vmM", &[(p(0), &m[0])]);
    let outside = r["ok"]["attached"][0]["outside"].clone();
    assert!(outside.is_string(), "{r}");
    let refused_vm = |vm: &str, ports: &[(&str, &str)], code: &str| {
        let before = snapshot(&d);
        let r = attach_vm(&d, vm, ports);
        assert_eq!(error_code(&r), code, "{vm} {ports:?}: {r}");
        assert_eq!(
            snapshot(&d),
            before,
            "{vm} {ports:?} refused ({code}) changed things"
        );
    };
    // A new VM whose second port is refused, for every reason there is.
    refused_vm(
        "vmN",
        &[(p(1), &m[1]), ("nosuchport0", &m[2])],
        "unknown_port",
    );
    refused_vm(
        "vmN",
        &[(p(1), &m[1]), (p(2), "02:00:5e:01:03:07")],
        "invalid_mac",
    );
    refused_vm("vmN", &[(p(1), &m[1]), (p(2), &m[0])], "mac_in_use");
    refused_vm("vmN", &[(p(1), &m[1]), (p(0), &m[2])], "port_bound");
    refused_vm("vmN", &[(p(1), &m[1]), (p(2), &m[2])], "pool_exhausted");
    assert!(!has_programs(&d, lab.vms[1].port_index));

    // The pool full; vmM's MAC moving to another port, refused: its binding stays where it is.
    d.cli_ok(&["attach", p(3), "--mac", &m[3], "--vm", "vmO"]);
    refused_vm("vmM", &[(p(3), &m[0])], "port_bound");
    refused_vm("vmM", &[(p(1), &m[0]), (p(2), &m[2])], "pool_exhausted");
    refused_vm(
        "vmM",
        &[(p(1), &m[0]), (p(2), "01:00:5e:00:00:01")],
        "invalid_mac",
    );
    let list = d.cli_json(&["list"]);
    let b = list["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["vm"] == "vmM")
        .expect("vmM still bound");
    assert_eq!((&b["port"], &b["outside"]), (&json!(p(0)), &outside));
    ping(&lab.vms[0].ns, PEER_IP, 1).expect("vm0 still forwards");

    // The move alone is accepted, and takes the outside MAC along.
    let r = attach_vm(&d, "vmM", &[(p(1), &m[0])]);
    assert_eq!(r["ok"]["attached"][0]["outside"], outside, "{r}");
    assert_eq!(r["ok"]["attached"][0]["source"], "returned", "{r}");
}

/// Gratuitous ARP requests from `mac` in a capture: the addresses announced, one per frame.
fn garps_from(report: &Report, mac: [u8; 6]) -> Vec<[u8; 4]> {
    report
        .frames
        .iter()
        .filter_map(|f| {
            let a = f.addrs();
            let arp = a.arp?;
            (a.src == mac && arp.op == 1 && arp.sha == mac && arp.spa == arp.tpa).then_some(arp.spa)
        })
        .collect()
}

// Item 6.
#[test]
fn a_vm_cannot_make_the_daemon_flood_announcements() {
    let lab = Lab::new(1);
    let id = lab.bridge[3..].to_owned();
    let d = start(&lab, &[]);
    let vm0 = &lab.vms[0];
    // vm0 is given its address.
    d.cli_ok(&[
        "attach",
        &vm0.port,
        "--mac",
        &mac_str(&vm0.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm0.ip.to_string(),
    ]);
    // The VM that floods: a tap driven by the test.
    let tap = Tap::in_netns(&lab.hv, &format!("tf-{id}"));
    lab.add_port(tap.name());
    lab.wait_forwarding();
    let inside = random_inside_mac();
    let out = d.cli_ok(&[
        "attach",
        tap.name(),
        "--mac",
        &mac_str(&inside),
        "--vm",
        "flood",
    ]);
    let outside = parse_mac(out.trim()).expect("an outside MAC");
    let cap = Capture::in_netns(&lab.peer.ns, &lab.peer.ifname);
    let arp_from = |spa: [u8; 4]| {
        tap.send(&frames::arp(
            BROADCAST,
            inside,
            &[],
            1,
            inside,
            spa,
            ZERO,
            [192, 0, 2, 253],
        ))
        .expect("sending from the tap");
    };
    // Its first frame (not ARP): "the VM runs", nothing to announce yet.
    tap.send(&frames::ipv4_udp(lab.peer.mac, inside, &[], 16))
        .unwrap();
    sleep(Duration::from_millis(300));

    // Addresses no VM can own, and the one vm0 was given, claimed over and over (each change
    // of the claimed address is a data-plane event).
    let reserved = [[255, 255, 255, 255], [224, 0, 0, 1], [127, 0, 0, 1]];
    for _ in 0..50 {
        for spa in reserved.into_iter().chain([vm0.ip.octets()]) {
            arp_from(spa);
        }
    }
    // The first claim of vm0's address is logged; the others are handled a moment later.
    const CONFLICT: &str = "a VM claims an address given to another: not announced";
    wait_for("the conflict warning", Duration::from_secs(3), || {
        d.log().contains(CONFLICT)
    });
    sleep(Duration::from_millis(200));
    // 200 addresses, as fast as the tap takes them.
    let flood: Vec<[u8; 4]> = (1..=200).map(|i| [198, 51, 100, i]).collect();
    let flood_start = Instant::now();
    for &spa in &flood {
        arp_from(spa);
    }
    // Every announcement started so far is done after a second.
    sleep(Duration::from_millis(1500));
    let elapsed = flood_start.elapsed();
    let seen = cap.stop();
    seen.assert_complete("the peer");

    let garps = garps_from(&seen, outside);
    let announced: BTreeSet<[u8; 4]> = garps.iter().copied().collect();
    eprintln!(
        "{} gratuitous ARPs for {} addresses in {elapsed:?}",
        garps.len(),
        announced.len()
    );
    for ip in reserved.iter().chain([&vm0.ip.octets()]) {
        assert!(!announced.contains(ip), "{ip:?} announced");
    }
    assert!(
        announced.iter().all(|ip| flood.contains(ip)),
        "{announced:?}"
    );
    let allowance = 8.0 + elapsed.as_secs_f64() / 2.0;
    assert!(
        (8..=allowance as usize).contains(&announced.len()),
        "{} addresses announced in {elapsed:?}",
        announced.len()
    );
    assert!(garps.len() <= 3 * announced.len(), "{} frames", garps.len());
    // What the VM does at will is logged at a rate of the daemon's choosing, not once per frame.
    let log = d.log();
    for warning in [CONFLICT, "learned addresses announced too often"] {
        let n = log.matches(warning).count();
        assert!((1..=2).contains(&n), "{n} times {warning:?}:\n{log}");
    }
}

// Item 7.
#[test]
fn attach_refuses_addresses_a_vm_cannot_own() {
    let lab = Lab::new(1);
    let d = start(&lab, &[]);
    let vm = &lab.vms[0];
    let mac = mac_str(&vm.mac);
    let before = snapshot(&d);
    for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1"] {
        d.cli_refused(
            &["attach", &vm.port, "--mac", &mac, "--ip", ip],
            "invalid_ip",
        );
        d.cli_refused(
            &[
                "attach",
                &vm.port,
                "--mac",
                &mac,
                "--ip",
                "192.0.2.10",
                "--ip",
                ip,
            ],
            "invalid_ip",
        );
        let r = d.request(
            &json!({"op": "attach_vm", "vm": "vm0",
                    "ports": [{"port": vm.port, "mac": mac, "ips": [ip]}]})
            .to_string(),
        );
        assert_eq!(error_code(&r), "invalid_ip", "{r}");
    }
    assert_eq!(snapshot(&d), before);
    assert!(!has_programs(&d, vm.port_index));
    assert!(!d.log().contains("announced"), "{}", d.log());
    let a = d.cli_json(&[
        "attach",
        &vm.port,
        "--mac",
        &mac,
        "--ip",
        &vm.ip.to_string(),
    ]);
    assert_eq!(a["ips"], json!([vm.ip.to_string()]));
}

// Item 8.
#[test]
fn detach_refuses_an_empty_vm_name() {
    let lab = Lab::new(2);
    let d = start(&lab, &[]);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    d.cli_ok(&["attach", &vm0.port, "--mac", &mac_str(&vm0.mac)]);
    d.cli_ok(&["attach", &vm1.port, "--mac", &mac_str(&vm1.mac), "--vm", ""]);
    let before = snapshot(&d);
    d.cli_refused(&["detach", "--vm", ""], "bad_request");
    for line in [
        r#"{"op":"detach","vm":""}"#.to_owned(),
        json!({"op": "detach", "port": vm0.port, "vm": ""}).to_string(),
    ] {
        assert_eq!(error_code(&d.request(&line)), "bad_request", "{line}");
    }
    assert_eq!(snapshot(&d), before, "an empty VM name released something");
    d.cli_ok(&["detach", &vm0.port]);
    assert_eq!(bindings(&d.cli_json(&["list"])).len(), 1);
}

// Item 9.
#[test]
fn the_state_directory_is_created_0700() {
    let ns = Netns::new("mst");
    let d = Daemon::start(&ns, &PLAN);
    let mode = fs::metadata(d.state_dir()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "state directory mode {mode:o}");
}

// Item 10.
#[test]
fn macs_are_six_two_digit_octets() {
    let lab = Lab::new(1);
    let d = start(&lab, &[]);
    let vm = &lab.vms[0];
    let before = snapshot(&d);
    for bad in [
        "+2:54:00:ab:cd:ef",
        "2:54:00:ab:cd:ef",
        "02:54:00:ab:cd:f",
        "02:54:00:ab:cd:0ef",
        "02:54:00:ab:cd:+f",
    ] {
        usage_error(&d, &["attach", &vm.port, "--mac", bad]);
        usage_error(&d, &["detach", &vm.port, "--mac", bad]);
        for line in [
            json!({"op": "attach", "port": vm.port, "mac": bad}),
            json!({"op": "detach", "port": vm.port, "mac": bad}),
            json!({"op": "attach_vm", "vm": "vm0", "ports": [{"port": vm.port, "mac": bad}]}),
        ] {
            let r = d.request(&line.to_string());
            assert_eq!(error_code(&r), "invalid_mac", "{line}: {r}");
        }
    }
    assert_eq!(snapshot(&d), before);
    d.cli_ok(&["attach", &vm.port, "--mac", "02:54:00:ab:cd:ef"]);
}

// Item 11.
#[test]
fn duplicate_keys_are_refused() {
    let lab = Lab::new(1);
    let d = start(&lab, &[]);
    let (port, mac) = (lab.vms[0].port.as_str(), mac_str(&lab.vms[0].mac));
    let before = snapshot(&d);
    for line in [
        r#"{"op":"attach","op":"list"}"#.to_owned(),
        r#"{"op":"list","op":"list"}"#.to_owned(),
        format!(r#"{{"op":"list","op":"attach","port":"{port}","mac":"{mac}"}}"#),
        format!(r#"{{"op":"attach","port":"nosuchport0","port":"{port}","mac":"{mac}"}}"#),
        format!(r#"{{"op":"attach","port":"{port}","mac":"{mac}","mac":"{mac}"}}"#),
        format!(
            r#"{{"op":"attach_vm","vm":"a","vm":"b","ports":[{{"port":"{port}","mac":"{mac}"}}]}}"#
        ),
        format!(
            r#"{{"op":"attach_vm","vm":"a","ports":[{{"port":"x","port":"{port}","mac":"{mac}"}}]}}"#
        ),
        r#"{"op":"detach","vm":"x","vm":"y"}"#.to_owned(),
    ] {
        assert_eq!(error_code(&d.request(&line)), "bad_request", "{line}");
    }
    assert_eq!(snapshot(&d), before);
}

// Item 12.
#[test]
fn the_cr_of_a_crlf_line_does_not_count_towards_the_limit() {
    let ns = Netns::new("mcr");
    let d = Daemon::start(&ns, &PLAN);
    // `{"op":"list"}` padded with spaces to exactly 64 KiB.
    let mut line = br#"{"op":"list"}"#.to_vec();
    line.resize(64 * 1024, b' ');
    let with = |tail: &[u8]| [line.as_slice(), tail].concat();
    for ok in [with(b"\r\n"), with(b"\n")] {
        let r = d.raw(&ok).unwrap();
        assert!(r["ok"]["bindings"].is_array(), "{r}");
    }
    for long in [with(b" \n"), with(b" \r\n")] {
        assert_eq!(error_code(&d.raw(&long).unwrap()), "line_too_long");
    }
    // Two such CRLF lines on one connection: two replies.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[with(b"\r\n"), with(b"\r\n")].concat())
        .unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let mut reply = String::new();
        r.read_line(&mut reply).unwrap();
        assert!(reply.starts_with(r#"{"ok":{"bindings":"#), "{reply}");
    }
}

/// Takes an exclusive flock on `path` (a file or a directory), held until the file drops.
fn hold_lock(path: &Path) -> File {
    let f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(
        r,
        0,
        "locking {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    f
}

// Item 13.
#[test]
fn a_daemon_started_right_after_kill_9_comes_up() {
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let mut d = start(&lab, &[]);
    d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
    ]);
    let before = snapshot(&d);
    // kill -9 and a new daemon at once, while the old one may still be exiting.
    for _ in 0..3 {
        d.kill9_and_restart();
        assert_eq!(snapshot(&d), before);
    }
    // A previous daemon that takes a second to let go of its state directory, then of its pin
    // directory (the locks held here, as its exiting threads would).
    for lock in [d.state_dir().join("lock"), d.pin_dir().to_owned()] {
        d.kill9();
        let held = hold_lock(&lock);
        let t = Instant::now();
        d.spawn();
        sleep(Duration::from_secs(1));
        assert!(
            d.try_request(r#"{"op":"list"}"#).is_err(),
            "serving while {} is locked",
            lock.display()
        );
        drop(held);
        d.wait_ready();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(snapshot(&d), before);
    }
    assert!(
        !d.log().contains("in use by another mat daemon"),
        "{}",
        d.log()
    );
    ping(&vm.ns, PEER_IP, 1).expect("vm0 reaches the peer");
}
