//! The libvirt qemu hook's contract, with the domain XML libvirt really writes
//! (tests/fixtures/libvirt): every operation, exit codes, stdout, and a daemon that is down.
//!
//! The hook runs as libvirtd runs it: the script `mat install libvirt-hook` writes, four
//! arguments, the XML on stdin, stdout and stderr pipes that must reach EOF when it exits (no
//! child left holding them). The taps the fixtures name (vnet0, ...) are made in a namespace of
//! the test's own, in the bridges the fixtures name, with a real `mat daemon` beside them.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use mat_tests::{
    daemon::{Daemon, POOL, mat_binary},
    netns::Netns,
};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/libvirt");
const UUID_TWO: &str = "1a1a2041-d18d-483e-a1b9-5f57ceffe17d";
const UUID_ONE: &str = "7b89abb6-76db-42ff-9775-a447d5245255";
const MAC_A: &str = "52:54:00:aa:00:01";
const MAC_B: &str = "52:54:00:aa:00:02";
const MAC_ONE: &str = "52:54:00:aa:00:03";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// What one run of the hook did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// A hook installed in a directory of the test's own, for one daemon socket.
struct Hook {
    dir: PathBuf,
    script: PathBuf,
}

impl Hook {
    fn install(socket: &Path) -> Hook {
        let dir = std::env::temp_dir().join(mat_tests::pins::unique("mat-hook-"));
        let out = Command::new(mat_binary())
            .arg("--socket")
            .arg(socket)
            .args(["install", "libvirt-hook", "--hooks-dir"])
            .arg(&dir)
            .output()
            .expect("running mat install");
        assert!(
            out.status.success(),
            "mat install libvirt-hook: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = dir.join("qemu.d/mat");
        assert!(script.is_file(), "no hook at {}", script.display());
        Hook { dir, script }
    }

    /// Runs the hook as libvirtd does, in `ns` (libvirtd's network namespace), and waits at most
    /// 15 s for it to exit and for its stdout and stderr to close.
    fn run(&self, ns: &Netns, domain: &str, op: &str, sub: &str, xml: &str) -> Run {
        let start = Instant::now();
        let mut child = ns
            .command(&self.script.to_string_lossy())
            .args([domain, op, sub, "-"])
            // libvirtd gives hooks only these.
            .env_clear()
            .env("LC_ALL", "C")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the hook");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let xml = xml.to_owned();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = stdin.write_all(xml.as_bytes());
            drop(stdin);
            let mut out = String::new();
            let mut err = String::new();
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            let _ = tx.send((out, err));
        });
        let (stdout, stderr) = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("hook {op} {sub}: stdout/stderr still open after 15 s")
            });
        let status = child.wait().expect("waiting for the hook");
        Run {
            code: status.code(),
            stdout,
            stderr,
            took: start.elapsed(),
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A namespace with the bridges and taps the fixtures name.
fn hypervisor() -> Netns {
    let ns = Netns::new("mhk");
    for br in ["mxbrA", "mxbrB"] {
        ns.ip(&["link", "add", br, "type", "bridge"]);
        ns.ip(&["link", "set", br, "up"]);
    }
    for (tap, br) in [
        ("vnet0", "mxbrA"),
        ("vnet1", "mxbrB"),
        ("vnet2", "mxbrA"),
        ("vnet4", "mxbrA"),
        ("vnet5", "mxbrB"),
    ] {
        ns.ip(&["tuntap", "add", tap, "mode", "tap"]);
        ns.ip(&["link", "set", tap, "master", br, "up"]);
    }
    ns
}

/// (vm, port, inside, outside) of every binding.
fn bindings(d: &Daemon) -> Vec<(String, String, String, String)> {
    let list = d.cli_json(&["list"]);
    let mut v: Vec<_> = list["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
            (s("vm"), s("port"), s("inside"), s("outside"))
        })
        .collect();
    v.sort();
    v
}

fn held(d: &Daemon) -> Vec<String> {
    let plan = d.cli_json(&["plan"]);
    let mut v: Vec<String> = plan["held"]
        .as_array()
        .expect("held")
        .iter()
        .map(|h| h["outside"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn assert_ok(r: &Run, what: &str) {
    assert_eq!(r.code, Some(0), "{what}: {r:?}");
    assert!(
        r.stdout.is_empty(),
        "{what}: the hook wrote to stdout: {r:?}"
    );
    assert!(
        r.took < Duration::from_secs(5),
        "{what}: the hook took {:?}",
        r.took
    );
}

#[test]
fn every_operation_of_a_domains_life() {
    let ns = hypervisor();
    let d = Daemon::start(&ns, &["--pool", POOL, "--rack", "1", "--host", "1"]);
    let hook = Hook::install(&d.socket());
    let run = |op: &str, sub: &str, file: &str| hook.run(&ns, "matg1", op, sub, &fixture(file));

    // Nothing before start: no tap exists at prepare.
    assert_ok(&run("prepare", "begin", "two-nics.prepare.xml"), "prepare");
    assert!(bindings(&d).is_empty());

    // start: both interfaces (a bridge and a bridged network) bound, keyed by the domain UUID.
    assert_ok(&run("start", "begin", "two-nics.start.xml"), "start");
    let bound = bindings(&d);
    let ports: Vec<_> = bound
        .iter()
        .map(|(vm, port, inside, _)| (vm.as_str(), port.as_str(), inside.as_str()))
        .collect();
    assert_eq!(
        ports,
        [(UUID_TWO, "vnet0", MAC_A), (UUID_TWO, "vnet1", MAC_B)]
    );
    let outside: Vec<String> = bound.iter().map(|b| b.3.clone()).collect();
    assert!(
        outside.iter().all(|m| m.starts_with("02:00:5e:01:01:")),
        "{outside:?}"
    );
    // The metadata's address is kept for the announcement when the guest runs.
    let list = d.cli_json(&["list"]);
    let a = list["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["port"] == "vnet0")
        .unwrap();
    assert_eq!(a["ips"], serde_json::json!(["198.51.100.2"]));

    // started, stopped-free operations and migrate/restore change nothing and print nothing
    // (empty output: libvirt keeps the XML as it is).
    for (op, sub, file) in [
        ("started", "begin", "two-nics.started.xml"),
        ("migrate", "begin", "two-nics.migrate.xml"),
        ("restore", "begin", "two-nics.restore.xml"),
        ("attach", "begin", "two-nics.started.xml"),
        ("some-future-op", "begin", "two-nics.started.xml"),
    ] {
        assert_ok(&run(op, sub, file), op);
        assert_eq!(bindings(&d), bound, "{op} changed bindings");
    }

    // reconnect (libvirtd restarted) with the same taps: a resync that changes nothing.
    let since = list["bindings"][0]["since"].clone();
    assert_ok(
        &run("reconnect", "begin", "two-nics.started.xml"),
        "reconnect",
    );
    assert_eq!(bindings(&d), bound);
    assert_eq!(d.cli_json(&["list"])["bindings"][0]["since"], since);

    // Taps changed (a restarted QEMU): the VM port moves and keeps its outside MAC.
    assert_ok(
        &run("reconnect", "begin", "two-nics.reconnect.xml"),
        "moved",
    );
    let moved = bindings(&d);
    assert_eq!(
        moved
            .iter()
            .map(|b| (b.1.as_str(), b.3.clone()))
            .collect::<Vec<_>>(),
        [("vnet4", outside[0].clone()), ("vnet5", outside[1].clone())]
    );

    // stopped: nothing yet; release: both released into hold-down; release again: fine.
    assert_ok(&run("stopped", "end", "two-nics.stopped.xml"), "stopped");
    assert_eq!(bindings(&d), moved);
    assert_ok(&run("release", "end", "two-nics.release.xml"), "release");
    assert!(bindings(&d).is_empty());
    assert_eq!(held(&d), outside);
    assert_ok(
        &run("release", "end", "two-nics.release.xml"),
        "release again",
    );

    // Started again within the hold-down: the same outside MACs come back.
    assert_ok(&run("start", "begin", "two-nics.start.xml"), "start again");
    let again: Vec<String> = bindings(&d).iter().map(|b| b.3.clone()).collect();
    assert_eq!(again, outside);

    // One NIC, no metadata, a network interface.
    let one = hook.run(
        &ns,
        "matg2",
        "start",
        "begin",
        &fixture("one-nic.start.xml"),
    );
    assert_ok(&one, "one NIC");
    assert!(
        bindings(&d)
            .iter()
            .any(|b| b.1 == "vnet2" && b.2 == MAC_ONE)
    );
    let rel = hook.run(
        &ns,
        "matg2",
        "release",
        "end",
        &fixture("one-nic.release.xml"),
    );
    assert_ok(&rel, "one NIC release");
    assert_eq!(bindings(&d).len(), 2, "only matg2's binding was released");

    // A tap bound by hand with the domain UUID (what a hotplugged interface needs) is the same
    // VM port to the hook: a reconnect keeps it as it is.
    d.cli_ok(&["attach", "vnet2", "--mac", MAC_ONE, "--vm", UUID_ONE]);
    let before = bindings(&d);
    let r = hook.run(
        &ns,
        "matg2",
        "reconnect",
        "begin",
        &fixture("one-nic.start.xml"),
    );
    assert_ok(&r, "reconnect after a hand attach");
    assert_eq!(bindings(&d), before);
}

#[test]
fn refusals_and_a_daemon_that_is_down() {
    let ns = hypervisor();
    let mut d = Daemon::start(&ns, &["--pool", POOL, "--rack", "1", "--host", "2"]);
    let hook = Hook::install(&d.socket());

    // Bad MAT metadata: start fails with the reason, nothing bound.
    let xml = fixture("two-nics.start.xml").replace(
        "<mat:ipv4 address=\"198.51.100.2\"/>",
        "<mat:ipv4 address=\"198.51.100.300\"/>",
    );
    let r = hook.run(&ns, "matg1", "start", "begin", &xml);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("198.51.100.300"), "{r:?}");
    assert!(r.stdout.is_empty());
    assert!(bindings(&d).is_empty());

    // A tap that does not exist: refused by the daemon, all or nothing.
    let xml = fixture("two-nics.start.xml").replace("vnet1", "vnet9");
    let r = hook.run(&ns, "matg1", "start", "begin", &xml);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("vnet9"), "{r:?}");
    assert!(bindings(&d).is_empty(), "a refused start left bindings");

    // Not a domain XML at all.
    let r = hook.run(&ns, "matg1", "start", "begin", "<domain");
    assert_eq!(r.code, Some(1), "{r:?}");

    // Wrong number of arguments: a usage error.
    let out = Command::new(&hook.script)
        .args(["matg1", "start"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The daemon is down: start must fail (a VM never runs untranslated), with a clear reason.
    assert_ok(
        &hook.run(
            &ns,
            "matg1",
            "start",
            "begin",
            &fixture("two-nics.start.xml"),
        ),
        "start",
    );
    let before = bindings(&d);
    d.kill9();
    let r = hook.run(
        &ns,
        "matg1",
        "start",
        "begin",
        &fixture("one-nic.start.xml"),
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("cannot reach the mat daemon") && r.stderr.contains("does not start"),
        "{}",
        r.stderr
    );
    // Operations that need no daemon still succeed.
    assert_ok(
        &hook.run(
            &ns,
            "matg1",
            "prepare",
            "begin",
            &fixture("two-nics.prepare.xml"),
        ),
        "prepare without daemon",
    );
    assert_ok(
        &hook.run(
            &ns,
            "matg1",
            "migrate",
            "begin",
            &fixture("two-nics.migrate.xml"),
        ),
        "migrate without daemon",
    );
    // reconnect must not kill a running guest: exit 0, the reason on stderr.
    let r = hook.run(
        &ns,
        "matg1",
        "reconnect",
        "begin",
        &fixture("two-nics.started.xml"),
    );
    assert_ok(&r, "reconnect without daemon");
    assert!(r.stderr.contains("cannot reach the mat daemon"), "{r:?}");
    // release reports the failure (libvirt ignores it); the bindings stay for the daemon to
    // release when it sees the taps gone.
    let r = hook.run(
        &ns,
        "matg1",
        "release",
        "end",
        &fixture("two-nics.release.xml"),
    );
    assert_eq!(r.code, Some(1), "{r:?}");

    d.spawn();
    d.wait_ready();
    assert_eq!(
        bindings(&d),
        before,
        "the bindings survived the daemon's absence"
    );
    let v: Value = d.cli_json(&["list"]);
    assert_eq!(v["bindings"].as_array().unwrap().len(), 2);

    // A daemon restarting (a package upgrade) while a domain starts: the hook waits for it and
    // the domain starts translated.
    d.kill9();
    let r = std::thread::scope(|s| {
        let start = s.spawn(|| {
            hook.run(
                &ns,
                "matg2",
                "start",
                "begin",
                &fixture("one-nic.start.xml"),
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        d.spawn();
        start.join().expect("the hook's thread")
    });
    d.wait_ready();
    assert_ok(&r, "start while the daemon restarts");
    assert!(r.took >= Duration::from_secs(1), "{r:?}");
    assert_eq!(bindings(&d).len(), 3, "the domain started translated");
}
