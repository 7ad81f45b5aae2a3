//! `mat doctor` against a running set-up in a lab: healthy first, then broken one way at a time
//! (a program's link removed or detached, a map entry deleted or added, libvirt's hook removed,
//! changed or pointed elsewhere, a newer pinned layout, a bad config file, the daemon stopped);
//! each time doctor must name exactly that finding, and what it tells to do (restart the daemon,
//! reinstall the hook) must make it healthy again.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use mat_loader::Dataplane;
use mat_tests::{
    daemon::{Daemon, POOL, TempDir, mac_str, mat_binary, stderr},
    topology::{Lab, parse_mac},
};
use serde_json::Value;

/// rack 1, host 3: the host pool is 02:00:5e:01:03:00/40.
const PLAN: [&str; 6] = ["--pool", POOL, "--rack", "1", "--host", "3"];

/// A finding as the test compares it: (code, port, mac, program).
type Seen = (String, Option<String>, Option<String>, Option<String>);

/// `mat doctor`, with the hook looked for in `hooks` (through the environment, as an operator
/// would point it elsewhere) and `extra` arguments.
fn doctor(d: &Daemon, hooks: &Path, extra: &[&str]) -> Output {
    Command::new(mat_binary())
        .arg("--socket")
        .arg(d.socket())
        .arg("doctor")
        .args(extra)
        .env("MAT_LIBVIRT_HOOKS_DIR", hooks)
        .env_remove("MAT_SOCKET")
        .output()
        .expect("running mat doctor")
}

/// `mat doctor --json`: the exit code, and the findings as [`Seen`], sorted.
fn findings(d: &Daemon, hooks: &Path) -> (Option<i32>, Vec<Seen>) {
    let out = doctor(
        d,
        hooks,
        &["--json", "--pin-dir", &d.pin_dir().to_string_lossy()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {text:?}: {e}; stderr {}", stderr(&out)));
    let field = |f: &Value, k: &str| f[k].as_str().map(str::to_owned);
    let mut seen: Vec<Seen> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            assert!(
                !f["action"].as_str().unwrap_or_default().is_empty(),
                "a finding says what to do: {f}"
            );
            (
                field(f, "code").expect("a code"),
                field(f, "port"),
                field(f, "mac"),
                field(f, "program"),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        report["healthy"].as_bool(),
        Some(out.status.success()),
        "exit status and healthy agree: {text}"
    );
    (out.status.code(), seen)
}

fn healthy(d: &Daemon, hooks: &Path, when: &str) {
    assert_eq!(findings(d, hooks), (Some(0), vec![]), "{when}");
}

fn one(code: &str, port: Option<&str>, mac: Option<&str>, program: Option<&str>) -> Vec<Seen> {
    vec![(
        code.to_owned(),
        port.map(str::to_owned),
        mac.map(str::to_owned),
        program.map(str::to_owned),
    )]
}

/// The pinned link of `program` on the port with index `ifindex`.
fn link_pin(d: &Daemon, ifindex: u32, program: &str) -> PathBuf {
    let links: Vec<PathBuf> = fs::read_dir(d.pin_dir())
        .expect("the pin directory")
        .filter_map(|e| {
            let p = e
                .ok()?
                .path()
                .join("links")
                .join(format!("{ifindex}-{program}"));
            p.exists().then_some(p)
        })
        .collect();
    assert_eq!(links.len(), 1, "one pinned link {ifindex}-{program}");
    links.into_iter().next().unwrap()
}

/// Detaches the link pinned at `pin` and leaves the pin (what `bpftool link detach pinned PIN`
/// does): BPF_OBJ_GET, then BPF_LINK_DETACH.
fn detach_link(pin: &Path) {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).unwrap();
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: bpf(2) with a BPF_OBJ_GET attr that lives through the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            7,
            std::ptr::from_mut(&mut get),
            std::mem::size_of::<ObjGet>(),
        )
    };
    assert!(
        fd >= 0,
        "opening {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let mut detach: [u32; 2] = [u32::try_from(fd).unwrap(), 0];
    // SAFETY: bpf(2) with a BPF_LINK_DETACH attr (link_fd) that lives through the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            34,
            std::ptr::from_mut(&mut detach),
            std::mem::size_of_val(&detach),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: the descriptor BPF_OBJ_GET returned, ours alone.
    unsafe { libc::close(i32::try_from(fd).unwrap()) };
    assert_eq!(r, 0, "detaching {}: {err}", pin.display());
}

fn install_hook(hooks: &Path, socket: &Path) {
    let out = Command::new(mat_binary())
        .arg("--socket")
        .arg(socket)
        .args(["install", "libvirt-hook", "--hooks-dir"])
        .arg(hooks)
        .output()
        .expect("running mat install");
    assert!(out.status.success(), "install: {}", stderr(&out));
}

#[test]
fn doctor_names_exactly_what_is_broken() {
    let lab = Lab::new(2);
    let mut d = Daemon::start(&lab.hv, &PLAN);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    let mut outside = Vec::new();
    for (vm, name) in [(vm0, "vm0"), (vm1, "vm1")] {
        let a = d.cli_json(&["attach", &vm.port, "--mac", &mac_str(&vm.mac), "--vm", name]);
        outside.push(parse_mac(a["outside"].as_str().unwrap()).unwrap());
    }
    let hooks = TempDir::new("mat-doctor-hooks");
    install_hook(hooks.path(), &d.socket());
    healthy(&d, hooks.path(), "a running set-up");
    // Text: one line when healthy.
    let out = doctor(&d, hooks.path(), &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "healthy: no findings\n"
    );

    // One direction's program taken off one port: its pinned link was the only reference.
    fs::remove_file(link_pin(&d, vm0.port_index, "port_to_vm")).unwrap();
    let (code, seen) = findings(&d, hooks.path());
    assert_eq!(
        (code, seen),
        (
            Some(1),
            one("program_missing", Some(&vm0.port), None, Some("port_to_vm"))
        ),
        "a detached program"
    );
    let out = doctor(&d, hooks.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one line per finding: {text}");
    assert!(
        text.starts_with(&format!("error program_missing port {}:", vm0.port)),
        "{text}"
    );
    d.restart();
    healthy(&d, hooks.path(), "restarted: the program is back");

    // The other direction on the other port detached by hand, its pin left behind: doctor sees
    // it in the kernel; a restart unpins the dead link and attaches the program anew.
    let pin = link_pin(&d, vm1.port_index, "port_from_vm");
    detach_link(&pin);
    assert_eq!(
        findings(&d, hooks.path()),
        (
            Some(1),
            one(
                "program_missing",
                Some(&vm1.port),
                None,
                Some("port_from_vm")
            )
        ),
        "a link detached by hand"
    );
    d.restart();
    healthy(
        &d,
        hooks.path(),
        "restarted: the detached link unpinned, the program back",
    );

    // A map entry deleted behind the daemon's back.
    let mut dp = Dataplane::open(d.pin_dir()).expect("opening the pinned maps");
    dp.unbind(vm1.port_index, vm1.mac, outside[1]).unwrap();
    assert_eq!(
        findings(&d, hooks.path()),
        (
            Some(1),
            one(
                "map_entry_missing",
                Some(&vm1.port),
                Some(&mac_str(&vm1.mac)),
                None
            )
        ),
        "a deleted map entry"
    );
    d.restart();
    healthy(&d, hooks.path(), "restarted: the entry is back");

    // An entry the store does not have (on the bridge, which is no port of the daemon's).
    let stray = [0x52, 0x54, 0, 0xd0, 0xc7, 0x01];
    let bridge = lab.hv_ifindex(&lab.bridge);
    dp.bind(bridge, stray, [2, 0, 0x5e, 1, 3, 0xff], 0).unwrap();
    assert_eq!(
        findings(&d, hooks.path()),
        (
            Some(1),
            one(
                "map_entry_extra",
                Some(&lab.bridge),
                Some(&mac_str(&stray)),
                None
            )
        ),
        "an extra map entry"
    );
    d.restart();
    healthy(&d, hooks.path(), "restarted: the extra entry is gone");
    drop(dp);

    // libvirt's hook: removed, not executable, talking to another socket.
    let hook = hooks.path().join("qemu.d/mat");
    fs::remove_file(&hook).unwrap();
    assert_eq!(
        findings(&d, hooks.path()),
        (Some(1), one("hook_missing", None, None, None)),
        "a removed hook"
    );
    install_hook(hooks.path(), &d.socket());
    healthy(&d, hooks.path(), "the hook reinstalled");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        findings(&d, hooks.path()),
        (Some(1), one("hook_not_executable", None, None, None)),
        "a hook without its execute bit"
    );
    install_hook(hooks.path(), Path::new("/run/mat-elsewhere.sock"));
    assert_eq!(
        findings(&d, hooks.path()),
        (Some(1), one("hook_wrong_socket", None, None, None)),
        "a hook for another socket"
    );
    install_hook(hooks.path(), &d.socket());
    healthy(&d, hooks.path(), "the hook reinstalled");

    // A pinned layout this binary does not know (a newer release's), beside the daemon's.
    let newer = d.pin_dir().join("v99");
    fs::create_dir(&newer).unwrap();
    let seen = findings(&d, hooks.path());
    fs::remove_dir(&newer).unwrap();
    assert_eq!(
        seen,
        (Some(1), one("layout_mismatch", None, None, None)),
        "a newer layout"
    );

    // A configuration file the daemon would refuse, checked as the daemon reads it.
    let config = hooks.path().join("mat.toml");
    fs::write(
        &config,
        "pool = \"01:00:5e:00:00:00/24\"\nrack = 1\nhost = 3\n",
    )
    .unwrap();
    let out = doctor(
        &d,
        hooks.path(),
        &["--json", "--config", &config.to_string_lossy()],
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        (out.status.code(), codes),
        (Some(1), vec!["config_invalid"]),
        "a multicast pool: {report}"
    );
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid address plan"),
        "{report}"
    );

    // The daemon stopped: its pins stay, and only the daemon is missing.
    assert!(d.terminate().success());
    assert_eq!(
        findings(&d, hooks.path()),
        (Some(1), one("daemon_unreachable", None, None, None)),
        "a stopped daemon"
    );
}

#[test]
fn a_nearly_full_pool_is_a_warning() {
    let lab = Lab::new(2);
    // 48 - 24 (pool) - 8 (rack) - 15 (host) leaves 1 VM bit: two MACs.
    let mut args = PLAN.to_vec();
    args.extend(["--host-bits", "15"]);
    let d = Daemon::start(&lab.hv, &args);
    let hooks = TempDir::new("mat-doctor-hooks");
    install_hook(hooks.path(), &d.socket());
    d.cli_ok(&[
        "attach",
        &lab.vms[0].port,
        "--mac",
        &mac_str(&lab.vms[0].mac),
    ]);
    healthy(&d, hooks.path(), "one of two MACs bound");
    d.cli_ok(&[
        "attach",
        &lab.vms[1].port,
        "--mac",
        &mac_str(&lab.vms[1].mac),
    ]);
    // A warning: reported, and still exit 0.
    assert_eq!(
        findings(&d, hooks.path()),
        (Some(0), one("pool_nearly_full", None, None, None)),
        "two of two MACs bound"
    );
    let out = doctor(&d, hooks.path(), &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("warning pool_nearly_full: 2 of the host pool's 2 MACs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
