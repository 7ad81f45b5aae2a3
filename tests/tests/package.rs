//! The Debian package (`cargo xtask package`): its contents, lintian, `systemd-analyze verify` of
//! its unit, and its own binary and conffile, unpacked with `dpkg -x`, running a daemon in a lab
//! hypervisor namespace under the unit's capability bounding set and, traced, within its system
//! call filter.
//!
//! `cargo xtask test` builds the package first and passes its path in `MAT_DEB`; without it (a
//! `cargo test --test package` alone), the first test to need it runs `cargo xtask package`.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
    time::{Duration, Instant},
};

use mat_loader::paths;
use mat_tests::{
    daemon::{Daemon, TempDir, bindings, mac_str, use_mat_binary},
    topology::{Lab, PEER_IP, PingStream, neighbour, ping},
};

/// The package, and where it is unpacked (`dpkg -x`) for this test process.
struct Package {
    deb: PathBuf,
    root: PathBuf,
}

impl Package {
    /// A file of the unpacked package, by its installed path (`/usr/bin/mat`).
    fn file(&self, installed: &str) -> PathBuf {
        self.root.join(installed.trim_start_matches('/'))
    }
}

fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let p = unpack("MAT_DEB", &["package"]);
        use_mat_binary(&p.file("/usr/bin/mat"));
        p
    })
}

/// The previous release's package (`cargo xtask package --previous`), which the upgrade test
/// installs first.
fn previous_package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| unpack("MAT_PREVIOUS_DEB", &["package", "--previous"]))
}

/// The package named by the environment variable `var` (set by `cargo xtask test`), or built
/// by `cargo xtask <task>`; unpacked anew by every run beside the .deb (under the target
/// directory), for the whole test process.
fn unpack(var: &str, task: &[&str]) -> Package {
    let deb = std::env::var_os(var).map_or_else(|| build(task), PathBuf::from);
    assert!(deb.is_file(), "no package at {}", deb.display());
    let root = deb.with_file_name(format!(
        "root-{}",
        deb.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&root);
    ok(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    Package { deb, root }
}

/// `cargo xtask <task>`, whose last line of output is the package's path.
fn build(task: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = ok(Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--manifest-path"])
        .arg(manifest)
        .arg("--")
        .args(task)
        .stderr(std::process::Stdio::inherit()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("cargo xtask package printed its path"),
    )
}

/// The package's conffile with its example plan uncommented (rack 1, host 3), written into
/// `dir`; returns its path.
fn configured(p: &Package, dir: &Path) -> PathBuf {
    let shipped = fs::read_to_string(p.file(paths::CONFIG)).unwrap();
    let mut config = String::new();
    for line in shipped.lines() {
        let line = ["pool", "rack", "host"]
            .iter()
            .find_map(|k| {
                line.strip_prefix("# ")
                    .filter(|l| l.starts_with(&format!("{k} = ")))
            })
            .unwrap_or(line);
        config.push_str(line);
        config.push('\n');
    }
    let path = dir.join("mat.toml");
    fs::write(&path, config).unwrap();
    path
}

/// Runs `cmd`; panics with its output unless it succeeded.
fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A `Key=` of the unit, split on whitespace.
fn unit_list(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn contents() {
    let p = package();
    let listing = text(&ok(Command::new("dpkg-deb").arg("-c").arg(&p.deb)).stdout);
    // A file's mode and owner ("-rw-r--r-- 0/0").
    let entry = |path: &str| {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        let fields: Vec<&str> = line.split_whitespace().take(2).collect();
        fields.join(" ").replace("root/root", "0/0")
    };
    assert_eq!(entry(paths::BINARY), "-rwxr-xr-x 0/0");
    for path in [
        "/usr/lib/systemd/system/mat.service",
        paths::CONFIG,
        "/usr/share/bash-completion/completions/mat",
        "/usr/share/zsh/vendor-completions/_mat",
        "/usr/share/fish/vendor_completions.d/mat.fish",
        "/usr/share/man/man1/mat.1.gz",
        "/usr/share/man/man1/mat-daemon.1.gz",
        "/usr/share/man/man1/mat-attach.1.gz",
        "/usr/share/man/man1/mat-install-libvirt-hook.1.gz",
        "/usr/share/doc/mat/copyright",
    ] {
        assert_eq!(entry(path), "-rw-r--r-- 0/0", "{path}");
    }
    assert!(
        !listing.contains("mat-generate"),
        "the hidden generate subcommand has no man page:\n{listing}"
    );
    assert!(
        !listing.contains("libvirt/hooks"),
        "the hook is `mat install libvirt-hook`'s"
    );

    // The unit and conffile are the ones in the tree (src/paths.rs is checked against those).
    let installed = |path: &str| fs::read_to_string(p.file(path)).unwrap();
    assert_eq!(
        installed("/usr/lib/systemd/system/mat.service"),
        paths::UNIT
    );
    let conffile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mat-loader/debian/mat.toml");
    assert_eq!(
        installed(paths::CONFIG),
        fs::read_to_string(conffile).unwrap()
    );
    let conffiles = text(
        &ok(Command::new("dpkg-deb")
            .arg("-I")
            .arg(&p.deb)
            .arg("conffiles"))
        .stdout,
    );
    assert_eq!(conffiles.trim(), paths::CONFIG);

    // The changelog's latest entry is this version (bump both together).
    let version = text(
        &ok(Command::new("dpkg-deb")
            .arg("-f")
            .arg(&p.deb)
            .arg("Version"))
        .stdout,
    );
    let changelog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mat-loader/debian/changelog");
    let changelog = fs::read_to_string(changelog).unwrap();
    assert!(
        changelog.starts_with(&format!("mat ({}) ", version.trim())),
        "mat-loader/debian/changelog needs an entry for {}",
        version.trim()
    );

    // Completions and man pages come from the clap definitions.
    for (path, needle) in [
        ("/usr/share/bash-completion/completions/mat", "attach"),
        ("/usr/share/zsh/vendor-completions/_mat", "#compdef mat"),
        (
            "/usr/share/fish/vendor_completions.d/mat.fish",
            "complete -c mat",
        ),
    ] {
        assert!(installed(path).contains(needle), "{path}");
    }
    let man =
        text(&ok(Command::new("zcat").arg(p.file("/usr/share/man/man1/mat-daemon.1.gz"))).stdout);
    assert!(man.contains("pool") && man.contains("hold\\-down"), "{man}");

    // The maintainer scripts neither enable nor start the service (they enable it again only if
    // it was, and restart it after an upgrade only if it runs), nor touch libvirt.
    let postinst = text(
        &ok(Command::new("dpkg-deb")
            .arg("-I")
            .arg(&p.deb)
            .arg("postinst"))
        .stdout,
    );
    assert!(!postinst.contains("libvirt"), "{postinst}");
    assert!(postinst.contains("was-enabled mat.service"), "{postinst}");
    assert!(
        !postinst.contains("deb-systemd-invoke start") && !postinst.contains("_dh_action"),
        "the service must not be started on install:\n{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-invoke try-restart mat.service"),
        "{postinst}"
    );
}

#[test]
fn lintian_finds_no_error() {
    let p = package();
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--info"])
        .arg(&p.deb)
        .output()
        .expect("running lintian (cargo xtask setup installs it)");
    print!("{}", text(&out.stdout));
    assert!(
        out.status.success(),
        "lintian found errors:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let p = package();
    // verify checks that ExecStart='s /usr/bin/mat is executable and that Documentation='s man
    // pages exist: in a mount namespace of its own, the package's /usr/bin is laid over the
    // machine's (an overlay, nothing written), and MANPATH is the package's.
    let unit = p.file("/usr/lib/systemd/system/mat.service");
    let script = format!(
        "mount -t overlay overlay -o lowerdir={}:/usr/bin /usr/bin && exec systemd-analyze verify {}",
        p.file("/usr/bin").display(),
        unit.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("MANPATH", p.file("/usr/share/man"))
        .output()
        .expect("running unshare");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{all}"
    );
    // Unknown keys and the like are warnings: exit 0, but a line about the unit.
    assert!(
        all.trim().is_empty(),
        "systemd-analyze verify has something to say:\n{all}"
    );
}

#[test]
fn unconfigured_daemon_names_the_missing_keys_and_exits_2() {
    let p = package();
    let dir = TempDir::new("mat-pkg-");
    let config = p.file(paths::CONFIG);
    let out = Command::new(p.file(paths::BINARY))
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("mat.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--pin-dir")
        .arg(dir.path().join("pins"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "mat daemon: not configured: set pool, rack, host in {} (or --pool, --rack, --host)\n",
            config.display()
        )
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

/// The capabilities the unit bounds the daemon to, as setpriv names them (`+bpf,+net_admin`).
fn unit_capabilities() -> Vec<String> {
    let caps = unit_list(paths::UNIT, "CapabilityBoundingSet");
    assert!(!caps.is_empty());
    caps.iter()
        .map(|c| {
            let name = c.strip_prefix("CAP_").expect("CAP_ names");
            format!("+{}", name.to_lowercase())
        })
        .collect()
}

/// Capability numbers (linux/capability.h) of the names the unit uses.
fn cap_bit(name: &str) -> u32 {
    match name {
        "+net_admin" => 12,
        "+net_raw" => 13,
        "+sys_admin" => 21,
        "+perfmon" => 38,
        "+bpf" => 39,
        other => panic!("add {other} to cap_bit"),
    }
}

/// A field of /proc/PID/status, parsed as hex (`CapEff`).
fn proc_caps(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[test]
fn packaged_daemon_smoke() {
    let p = package();
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let dir = TempDir::new("mat-pkg-");

    let config_path = configured(p, dir.path());

    // systemd's notification socket, and the unit's capability bounding set and
    // NoNewPrivileges, applied by setpriv (root, like the unit).
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o600)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let caps = unit_capabilities();
    assert_eq!(unit_list(paths::UNIT, "NoNewPrivileges"), ["yes"]);
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let bounding = format!("--bounding-set=-all,{}", caps.join(","));
    let wrapper = [
        "env",
        notify_env.as_str(),
        "setpriv",
        "--no-new-privs",
        "--inh-caps=-all",
        bounding.as_str(),
        "--",
    ];
    let mut d = Daemon::start_wrapped(
        &lab.hv,
        &wrapper,
        &["--config", config_path.to_str().unwrap()],
    );
    let pid = d.pid().unwrap();
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(
        proc_caps(pid, "CapEff"),
        want,
        "the daemon runs with the unit's capabilities only"
    );
    assert_eq!(proc_caps(pid, "CapBnd"), want);

    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from the daemon");
    assert_eq!(&buf[..n], b"READY=1\n");

    let outside = d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm.ip.to_string(),
    ]);
    assert_eq!(
        outside, "02:00:5e:01:03:00\n",
        "first MAC of rack 1, host 3"
    );
    assert_eq!(
        bindings(&d.cli_json(&["list"])),
        [(
            vm.port.clone(),
            mac_str(&vm.mac),
            "02:00:5e:01:03:00".to_owned()
        )]
    );
    ping(&vm.ns, PEER_IP, 2).expect("the VM reaches the peer");
    let deadline = Instant::now() + Duration::from_secs(5);
    while neighbour(&lab.peer.ns, vm.ip) != Some([2, 0, 0x5e, 1, 3, 0]) {
        assert!(
            Instant::now() < deadline,
            "the peer never saw the outside MAC"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(d.terminate().success(), "{}", d.log());
    let n = notify.recv(&mut buf).expect("STOPPING=1 from the daemon");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
}

/// The upgrade an operator makes (stop, install the new package, start) and the rollback,
/// while a VM pings a peer every 10 ms: nothing lost, the binding unchanged, and the new
/// release's programs running on the port's links, switched in place.
#[test]
fn upgrade_from_the_previous_package_and_back_without_loss() {
    let new = package();
    let old = previous_package();
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let dir = TempDir::new("mat-upgrade-");
    let config = configured(old, dir.path());
    let mut d = Daemon::prepare(&lab.hv, &["--config", config.to_str().unwrap()]);
    d.use_binary(&old.file("/usr/bin/mat"));
    d.spawn();
    d.wait_ready();
    d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm.ip.to_string(),
    ]);
    ping(&vm.ns, PEER_IP, 2).expect("the previous release translates");
    let bound = bindings(&d.cli_json(&["list"]));
    let links_dir = d
        .pin_dir()
        .join(format!("v{}", mat_common::maps::LAYOUT))
        .join("links");
    let links = || -> Vec<(u32, u32)> {
        let mut pins: Vec<PathBuf> = fs::read_dir(&links_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        pins.sort();
        pins.iter()
            .map(|p| {
                let l = mat_loader::linkinfo::of_pin(p).expect("reading a pinned link");
                (l.id, l.prog_id)
            })
            .collect()
    };
    let before = links();
    assert_eq!(before.len(), 2, "one link per direction on the port");

    let stream = PingStream::start(&vm.ns, PEER_IP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.terminate().success(), "{}", d.log());
    d.use_binary(&new.file("/usr/bin/mat"));
    d.spawn();
    d.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    let after = links();
    let upgraded = bindings(&d.cli_json(&["list"]));

    // And back: the previous release runs again over what the new one left.
    assert!(d.terminate().success(), "{}", d.log());
    d.use_binary(&old.file("/usr/bin/mat"));
    d.spawn();
    d.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    let (answered, missing) = stream.stop();
    assert!(answered > 50, "only {answered} echoes answered");
    assert!(
        missing.is_empty(),
        "lost {missing:?} across the upgrade and the rollback"
    );

    assert_eq!(upgraded, bound, "the upgrade kept the binding");
    assert_eq!(
        bindings(&d.cli_json(&["list"])),
        bound,
        "the rollback kept it"
    );
    for ((link, prog), (link_after, prog_after)) in before.iter().zip(&after) {
        assert_eq!(link, link_after, "the same link, updated in place");
        assert_ne!(
            prog, prog_after,
            "the new release's program runs on link {link}"
        );
    }
    assert!(
        d.log()
            .contains("this release's programs run on every pinned link"),
        "{}",
        d.log()
    );
    ping(&vm.ns, PEER_IP, 2).expect("still translating after the rollback");
}

/// The system calls the unit's `SystemCallFilter=` allows: its groups expanded through
/// `systemd-analyze syscall-filter`.
fn allowed_syscalls() -> std::collections::BTreeSet<String> {
    let out = ok(Command::new("systemd-analyze").arg("syscall-filter"));
    let mut groups: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::default();
    let mut current = None;
    for line in text(&out.stdout).lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
        } else if let (Some(g), Some(item)) = (&current, line.strip_prefix("    "))
            && !item.starts_with('#')
            && !item.trim().is_empty()
        {
            groups
                .entry(g.clone())
                .or_default()
                .push(item.trim().to_owned());
        }
    }
    fn expand(
        item: &str,
        groups: &std::collections::HashMap<String, Vec<String>>,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        if item.starts_with('@') {
            let members = groups
                .get(item)
                .unwrap_or_else(|| panic!("no group {item}"));
            for m in members {
                expand(m, groups, out);
            }
        } else {
            out.insert(item.to_owned());
        }
    }
    let mut allowed = std::collections::BTreeSet::new();
    for item in unit_list(paths::UNIT, "SystemCallFilter") {
        assert!(!item.starts_with('~'), "an allow list is expected");
        expand(&item, &groups, &mut allowed);
    }
    allowed
}

/// Without systemd as PID 1 the sandbox cannot run here; its system call filter is checked by
/// tracing the packaged daemon through start, attach (with an announcement), stats, detach, a
/// vanished port and SIGTERM, and comparing with what the filter allows.
#[test]
fn packaged_daemon_syscalls_pass_the_unit_filter() {
    // The helpers run the packaged binary.
    package();
    let allowed = allowed_syscalls();
    assert!(allowed.contains("bpf") && allowed.contains("openat"));
    let lab = Lab::new(1);
    let vm = &lab.vms[0];
    let dir = TempDir::new("mat-pkg-");
    let trace = dir.path().join("trace");
    let wrapper = ["strace", "-f", "-qq", "-o", trace.to_str().unwrap(), "--"];
    // libvirt's client library too (its event loop, a failed connection and the retry): at a
    // socket that does not exist, so that no libvirtd of the machine is ever reached.
    let libvirt = format!(
        "qemu:///system?socket={}",
        dir.path().join("no-libvirtd").display()
    );
    let mut d = Daemon::start_wrapped(
        &lab.hv,
        &wrapper,
        &[
            "--pool",
            "02:00:5e:00:00:00/24",
            "--rack",
            "1",
            "--host",
            "3",
            "--libvirt",
            &libvirt,
        ],
    );
    // The daemon is strace's child: killed by pid on the way out, also when the test fails
    // (killing strace alone would leave it running).
    let strace = d.pid().unwrap();
    let children = fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap();
    let daemon: i32 = children.trim().parse().expect("strace runs one child");
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the daemon's pid, which this test started (through strace).
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(daemon);

    d.cli_ok(&[
        "attach",
        &vm.port,
        "--mac",
        &mac_str(&vm.mac),
        "--ip",
        &vm.ip.to_string(),
    ]);
    ping(&vm.ns, PEER_IP, 1).expect("the VM reaches the peer");
    d.cli_ok(&["stats"]);
    d.cli_ok(&["detach", &vm.port]);
    lab.hv.ip(&["link", "del", &vm.port]);
    std::thread::sleep(Duration::from_millis(1200)); // announcements are 0.5 s apart
    // SAFETY: kill(2) on the daemon's pid, as above.
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{daemon}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // strace has exited with it, or does now.
    let _ = d.terminate();

    let used: std::collections::BTreeSet<String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let call = l.split_once(' ')?.1.trim_start();
            let name: String = call
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty() && call[name.len()..].starts_with('(')).then_some(name)
        })
        .collect();
    assert!(used.contains("bpf") && used.contains("sendto"), "{used:?}");
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the daemon makes system calls mat.service's SystemCallFilter= refuses: {refused:?}"
    );
}
