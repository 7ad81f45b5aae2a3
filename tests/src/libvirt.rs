//! Real libvirt for end-to-end tests: libvirtd and virtlogd started by hand (no systemd), each
//! instance in a private mount namespace with its own /etc/libvirt, /run/libvirt,
//! /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt (bind mounts of a per-run directory),
//! inside a network namespace the test made. libvirt's default network is never defined: the
//! instance's configuration is written from scratch, with no network but the ones a test
//! defines on bridges it created.
//!
//! Everything is removed when the [`Libvirtd`] guard drops, also when the test panics: running
//! domains are destroyed (through libvirtd, or their QEMU killed by the pid libvirt recorded),
//! then libvirtd, virtlogd and the namespace holder are killed by pid; the mount namespace dies
//! with its last process, and the directory is deleted.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{netns::Netns, pins::unique};

/// The directories an instance gets its own copy of.
const PRIVATE: &[(&str, &str)] = &[
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];

/// Where QEMU's capabilities, which libvirtd probes at its first start (several seconds), are
/// kept between runs: `target/mat-guest/libvirt-cache`. libvirtd checks them against the QEMU
/// binary and the host and probes again when they are stale.
fn capabilities_cache() -> PathBuf {
    crate::guest::cache_dir().join("libvirt-cache")
}

/// A libvirtd (with its virtlogd) of a test's own.
#[expect(
    clippy::struct_field_names,
    reason = "libvirtd beside virtlogd: the daemons' names"
)]
pub struct Libvirtd {
    dir: PathBuf,
    netns: String,
    holder: Option<Child>,
    virtlogd: Option<Child>,
    libvirtd: Option<Child>,
}

impl Libvirtd {
    /// Starts an instance in `ns` with this host UUID. `hook`, when given, is written as
    /// etc/hooks/qemu.d/mat before libvirtd starts (libvirtd reads its hooks at start):
    /// `install` gets the hooks directory and must put the hook there.
    pub fn start(ns: &Netns, host_uuid: &str, install: impl FnOnce(&Path)) -> Libvirtd {
        // Short: the sockets live below it (108 bytes at most for a socket path).
        let dir = std::env::temp_dir().join(unique("mat-lv-"));
        for (sub, _) in PRIVATE {
            fs::create_dir_all(dir.join(sub)).expect("creating the instance's directories");
        }
        for sub in [
            "etc/hooks",
            "etc/qemu/networks",
            "lib/qemu",
            "log/qemu",
            "cache/qemu",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("creating the instance's directories");
        }
        let mut lv = Libvirtd {
            dir,
            netns: ns.name().to_owned(),
            holder: None,
            virtlogd: None,
            libvirtd: None,
        };
        lv.write_config(host_uuid);
        install(&lv.dir.join("etc/hooks"));
        let cache = capabilities_cache().join("qemu");
        if cache.is_dir() {
            copy_dir(&cache, &lv.dir.join("cache/qemu"));
        }
        lv.spawn_holder();
        lv.virtlogd = Some(lv.spawn("virtlogd", &["-p", "/run/libvirt/virtlogd.pid"], "virtlogd"));
        lv.spawn_libvirtd();
        // Keep what libvirtd probed for the next run.
        if !cache.is_dir() {
            copy_dir(&lv.dir.join("cache/qemu"), &cache);
        }
        lv
    }

    fn write_config(&self, host_uuid: &str) {
        let etc = self.dir.join("etc");
        let write = |name: &str, text: String| {
            fs::write(etc.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
        };
        write(
            "libvirtd.conf",
            format!(
                "host_uuid = \"{host_uuid}\"\n\
                 auth_unix_rw = \"none\"\n\
                 auth_unix_ro = \"none\"\n\
                 unix_sock_rw_perms = \"0700\"\n\
                 log_outputs = \"3:stderr\"\n"
            ),
        );
        // QEMU runs as root without confinement, cgroups or a private /dev: what this machine
        // (no systemd) can give it.
        write(
            "qemu.conf",
            "user = \"root\"\n\
             group = \"root\"\n\
             dynamic_ownership = 0\n\
             remember_owner = 0\n\
             security_driver = \"none\"\n\
             cgroup_controllers = [ ]\n\
             namespaces = [ ]\n"
                .into(),
        );
        write("virtlogd.conf", "log_outputs = \"3:stderr\"\n".into());
        write("libvirt.conf", String::new());
    }

    /// A process that holds the instance's mount namespace (inside the test's network
    /// namespace): the private directories bind-mounted over libvirt's.
    fn spawn_holder(&mut self) {
        // The mount points must exist; /run/libvirt does not until a libvirtd ran once.
        for (_, target) in PRIVATE {
            fs::create_dir_all(target).unwrap_or_else(|e| panic!("creating {target}: {e}"));
        }
        let mut script = String::from("set -e\n");
        for (sub, target) in PRIVATE {
            script.push_str(&format!("mount --bind \"$1/{sub}\" {target}\n"));
        }
        script.push_str("echo ready > \"$1/holder.ready\"\nexec sleep infinity\n");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", &script, "sh"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("holder"))
            .spawn()
            .expect("starting the mount namespace holder");
        self.holder = Some(child);
        let ready = self.dir.join("holder.ready");
        self.wait(Duration::from_secs(10), "the mount namespace", || {
            ready.exists()
        });
    }

    fn holder_pid(&self) -> u32 {
        self.holder.as_ref().expect("holder running").id()
    }

    /// Runs `program` in the instance's namespaces (mount and network), stderr to `log`.log.
    fn spawn(&self, program: &str, args: &[&str], log: &str) -> Child {
        Command::new("nsenter")
            .args(["-t", &self.holder_pid().to_string(), "-m", "-n", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"))
    }

    fn spawn_libvirtd(&mut self) {
        assert!(self.libvirtd.is_none());
        self.libvirtd =
            Some(self.spawn("libvirtd", &["-p", "/run/libvirt/libvirtd.pid"], "libvirtd"));
        // The first connection waits for the QEMU driver (capabilities probed or loaded).
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(status) = self
                .libvirtd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.libvirtd = None;
                panic!("libvirtd exited with {status}:\n{}", self.log());
            }
            if self.socket().exists() && self.virsh(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "libvirtd not answering:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops libvirtd (SIGTERM, by pid) while its domains keep running, and starts it again:
    /// the qemu hook's `reconnect` fires for each running domain before it answers.
    pub fn restart(&mut self) {
        let mut c = self.libvirtd.take().expect("libvirtd running");
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
        self.spawn_libvirtd();
    }

    fn log_file(&self, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .expect("opening a log file")
    }

    /// What libvirtd and virtlogd wrote to stderr.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in ["holder", "virtlogd", "libvirtd"] {
            let text = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            if !text.is_empty() {
                out.push_str(&format!("--- {name} ---\n{text}"));
            }
        }
        out
    }

    /// QEMU's own log of a domain.
    pub fn qemu_log(&self, domain: &str) -> String {
        fs::read_to_string(self.dir.join(format!("log/qemu/{domain}.log"))).unwrap_or_default()
    }

    /// The instance's directory (its libvirt directories are below it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/libvirt-sock")
    }

    /// The URI virsh connects with.
    pub fn uri(&self) -> String {
        format!("qemu:///system?socket={}", self.socket().display())
    }

    /// The URI of this instance as a migration destination.
    pub fn migration_uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket().display())
    }

    /// `virsh -c URI args...` (from the test's own namespaces: only the socket path matters),
    /// killed after two minutes so that a wedged libvirtd fails the test instead of hanging it.
    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["--kill-after=5", "120", "virsh", "-q", "-c", &self.uri()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running virsh")
    }

    /// Like [`Libvirtd::virsh`]; panics with the output and libvirtd's log unless it succeeded.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Defines and starts a network that puts its guests in `bridge` (one the test made):
    /// libvirt creates nothing for it, no dnsmasq, no firewall rules.
    pub fn bridged_network(&self, name: &str, bridge: &str) {
        let xml = self.dir.join(format!("net-{name}.xml"));
        fs::write(
            &xml,
            format!(
                "<network><name>{name}</name><forward mode='bridge'/><bridge name='{bridge}'/>\
                 </network>"
            ),
        )
        .expect("writing the network XML");
        self.virsh_ok(&["net-define", &xml.to_string_lossy()]);
        self.virsh_ok(&["net-start", name]);
    }

    /// Defines a domain from `xml` (persistent, so that a migration can keep it).
    pub fn define(&self, name: &str, xml: &str) {
        let path = self.dir.join(format!("dom-{name}.xml"));
        fs::write(&path, xml).expect("writing the domain XML");
        self.virsh_ok(&["define", &path.to_string_lossy()]);
    }

    /// The names of running domains.
    pub fn running(&self) -> Vec<String> {
        let out = self.virsh(&["list", "--name"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The host side of each interface of a running domain: (tap, guest MAC).
    pub fn taps(&self, domain: &str) -> Vec<(String, String)> {
        self.virsh_ok(&["domiflist", domain])
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() >= 5).then(|| (w[0].to_owned(), w[4].to_owned()))
            })
            .collect()
    }

    fn wait(&self, timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the QEMU processes libvirt recorded in run/qemu/*.pid (when libvirtd could not
    /// destroy them), checking first that each pid is a QEMU.
    fn kill_qemus(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("run/qemu")) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "pid") {
                continue;
            }
            let Some(pid) = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("qemu-system") {
                // SAFETY: kill(2) on a QEMU this instance's libvirtd started for the test.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- libvirt instance {} ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        if self.libvirtd.is_some() {
            for dom in self.running() {
                let _ = self.virsh(&["destroy", &dom]);
            }
        }
        self.kill_qemus();
        for child in [
            self.libvirtd.take(),
            self.virtlogd.take(),
            self.holder.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut c = child;
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::create_dir_all(to);
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            let _ = fs::copy(&src, &dst);
        }
    }
}

/// How a test guest is plugged in.
pub enum Nic<'a> {
    /// `<interface type='bridge'>` in this bridge.
    Bridge(&'a str),
    /// `<interface type='network'>` on this libvirt network.
    Network(&'a str),
}

/// The XML of a TCG guest booting the test kernel (see [`crate::guest`]) with one virtio NIC
/// (guest MAC `mac`, static address `addr` like `198.51.100.10/24`, and `addr6` like
/// `2001:db8::10/64` if given), its serial console appended to `console`, and MAT metadata
/// announcing the addresses.
#[expect(
    clippy::needless_pass_by_value,
    reason = "a NIC description is built for one domain"
)]
pub fn domain_xml(
    name: &str,
    image: &crate::guest::GuestImage,
    nic: Nic,
    mac: &str,
    (addr, addr6): (&str, Option<&str>),
    console: &Path,
) -> String {
    let ip = addr.split('/').next().expect("an address");
    let ip6 = addr6
        .and_then(|a| a.split('/').next())
        .map(|a| format!("<mat:ipv6 address='{a}'/>"))
        .unwrap_or_default();
    let source = match nic {
        Nic::Bridge(b) => format!("<interface type='bridge'><source bridge='{b}'/>"),
        Nic::Network(n) => format!("<interface type='network'><source network='{n}'/>"),
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <metadata>
    <mat:vm xmlns:mat='urn:x-mat:libvirt:1'>
      <mat:interface mac='{mac}'><mat:ipv4 address='{ip}'/>{ip6}</mat:interface>
    </mat:vm>
  </metadata>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {source}
      <mac address='{mac}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'>
      <source path='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
    <!-- Free PCIe slots for `virsh attach-interface` (q35 has no hotplug slot otherwise). -->
    <controller type='pci' index='1' model='pcie-root-port'/>
    <controller type='pci' index='2' model='pcie-root-port'/>
    <controller type='pci' index='3' model='pcie-root-port'/>
    <controller type='pci' index='4' model='pcie-root-port'/>
    <controller type='pci' index='5' model='pcie-root-port'/>
    <controller type='pci' index='6' model='pcie-root-port'/>
  </devices>
</domain>
",
        kernel = image.kernel.display(),
        initrd = image.initrd.display(),
        cmdline = crate::guest::GuestImage::cmdline(addr, addr6),
        console = console.display(),
    )
}

/// Waits until `path` has a line containing `needle`; panics after `timeout` with the file.
pub fn wait_for_line(path: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {} after {timeout:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A ping stream's result, from `ping -D` output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PingStream {
    pub sent: u64,
    pub received: u64,
    /// The longest time between two consecutive replies, in milliseconds.
    pub max_gap_ms: f64,
    /// The sequence numbers of the echoes that got no reply, up to the last one answered (the
    /// echoes still in flight when ping stopped are not lost).
    pub lost: Vec<u64>,
    /// The last sequence number answered.
    pub last_answered: u64,
}

impl PingStream {
    /// Parses `ping -D -n` output: `[EPOCH.FRAC] 64 bytes from ...: icmp_seq=N ...` lines and the
    /// `N packets transmitted, M received` summary.
    pub fn parse(text: &str) -> PingStream {
        let mut replies: Vec<(f64, u64)> = Vec::new();
        let mut sent = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('[') {
                let Some((ts, tail)) = rest.split_once(']') else {
                    continue;
                };
                let seq = tail
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("icmp_seq="))
                    .and_then(|s| s.parse().ok());
                if let (Ok(ts), Some(seq), true) =
                    (ts.parse::<f64>(), seq, tail.contains("bytes from"))
                {
                    replies.push((ts, seq));
                }
            } else if line.contains("packets transmitted") {
                sent = line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
        let max_gap_ms = replies
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * 1000.0)
            .fold(0.0, f64::max);
        let got: std::collections::HashSet<u64> = replies.iter().map(|r| r.1).collect();
        let last_answered = got.iter().copied().max().unwrap_or(0);
        let lost = (1..=last_answered).filter(|s| !got.contains(s)).collect();
        PingStream {
            sent,
            received: got.len() as u64,
            max_gap_ms,
            lost,
            last_answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_stream() {
        let text = "PING 198.51.100.10 (198.51.100.10) 56(84) bytes of data.
[1700000000.000000] 64 bytes from 198.51.100.10: icmp_seq=1 ttl=64 time=0.5 ms
[1700000000.010000] 64 bytes from 198.51.100.10: icmp_seq=2 ttl=64 time=0.5 ms
[1700000000.250000] 64 bytes from 198.51.100.10: icmp_seq=5 ttl=64 time=0.5 ms
[1700000000.260000] 64 bytes from 198.51.100.10: icmp_seq=6 ttl=64 time=0.5 ms

--- 198.51.100.10 ping statistics ---
7 packets transmitted, 4 received, 42.8571% packet loss, time 70ms
";
        let p = PingStream::parse(text);
        assert_eq!(p.sent, 7);
        assert_eq!(p.received, 4);
        assert_eq!(p.lost, [3, 4]);
        assert_eq!(p.last_answered, 6);
        assert!((p.max_gap_ms - 240.0).abs() < 0.01, "{}", p.max_gap_ms);
    }
}
