//! A minimal Linux guest for QEMU tests: Debian's kernel and a busybox initramfs, assembled from
//! Debian packages into a cache under `target/` (reused across runs, rebuilt only when missing).
//! Nothing is installed on the system: the packages are fetched with `apt-get download` and
//! unpacked with `dpkg -x` into a scratch directory.
//!
//! The guest loads the virtio-net modules, sets the static addresses given on the kernel command
//! line (`mat.ip=ADDR/LEN`, and `mat.ip6=ADDR/LEN` for IPv6) on eth0 and prints [`READY`] on the
//! serial console (ttyS0). IPv6 stays on, as in every real guest: eth0 gets its link-local address
//! and runs duplicate address detection, MLD and router solicitation when it comes up. A NIC
//! hotplugged later is brought up within a second (IPv6 link-local only), as a distribution's
//! hotplug handling would.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use crate::netns::run;

/// The line the guest prints on its console once its address is set.
pub const READY: &str = "MAT-GUEST-READY";

/// Modules that virtio-net needs, in dependency order (Debian ships no modules.dep in the
/// package, and busybox insmod resolves nothing).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The guest's /init. Debian's kernel does not mount devtmpfs by itself.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    insmod /lib/modules/$m.ko || echo "MAT-GUEST-ERROR insmod $m"
done
addr=
addr6=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        mat.ip=*) addr="${arg#mat.ip=}" ;;
        mat.ip6=*) addr6="${arg#mat.ip6=}" ;;
    esac
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
[ -n "$addr" ] && ip addr add "$addr" dev eth0
[ -n "$addr6" ] && ip -6 addr add "$addr6" dev eth0
echo "MAT-GUEST-READY addr=$addr addr6=$addr6 mac=$(cat /sys/class/net/eth0/address)"
while true; do
    for n in /sys/class/net/eth*; do [ -e "$n" ] && ip link set "${n##*/}" up; done
    sleep 1
done
"#;

/// The kernel and initramfs of the test guest.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The Debian package the kernel came from, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
}

impl GuestImage {
    /// The kernel command line for a guest with `addr` (e.g. `198.51.100.2/24`) on eth0, and
    /// the IPv6 address `addr6` (e.g. `2001:db8::2/64`) if given.
    pub fn cmdline(addr: &str, addr6: Option<&str>) -> String {
        let ip6 = addr6.map(|a| format!(" mat.ip6={a}")).unwrap_or_default();
        format!("console=ttyS0 mat.ip={addr}{ip6} panic=-1 quiet loglevel=3")
    }
}

/// The cache directory: `target/mat-guest`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("tests/ lives in the workspace")
                    .join("target")
            },
            PathBuf::from,
        )
        .join("mat-guest")
}

/// The guest image, built into the cache the first time (about 5 s and 70 MB of download). The
/// cache is keyed by the kernel package and by what goes into the initramfs, so that a changed
/// /init is never served from an older image.
pub fn image() -> GuestImage {
    let package = kernel_package();
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for b in INIT.bytes().chain(MODULES.concat().bytes()) {
        key = (key ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let dir = cache_dir().join(format!("{package}-{key:016x}"));
    let image = GuestImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
        package: package.clone(),
    };
    if image.kernel.is_file() && image.initrd.is_file() {
        return image;
    }
    build(&package, &dir);
    image
}

/// The versioned kernel package that `linux-image-amd64` depends on.
fn kernel_package() -> String {
    let find = || {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends: ")?;
            dep.starts_with("linux-image-").then(|| dep.to_owned())
        })
    };
    if let Some(p) = find() {
        return p;
    }
    // apt's lists may never have been fetched on a fresh machine.
    run(Command::new("apt-get").args(["update", "-qq"]));
    find().expect("apt-cache names no linux-image package that linux-image-amd64 depends on")
}

fn build(package: &str, dir: &Path) {
    let parent = dir.parent().expect("cache dir has a parent");
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    let scratch = parent.join(crate::pins::unique(".build-"));
    let _cleanup = RemoveDir(scratch.clone());
    fs::create_dir_all(&scratch).expect("creating the scratch directory");
    eprintln!(
        "guest: downloading {package} and busybox-static into {}",
        scratch.display()
    );
    run(Command::new("apt-get")
        .args(["download", "-qq", package, "busybox-static"])
        .current_dir(&scratch));
    let root = scratch.join("root");
    for deb in fs::read_dir(&scratch).expect("listing the scratch directory") {
        let deb = deb.expect("reading the scratch directory").path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
        }
    }
    let out = scratch.join("out");
    fs::create_dir_all(&out).expect("creating the output directory");

    let vmlinuz = find_file(&root.join("boot"), |n| n.starts_with("vmlinuz-"))
        .unwrap_or_else(|| panic!("{package} has no /boot/vmlinuz-*"));
    fs::copy(&vmlinuz, out.join("vmlinuz")).expect("copying the kernel");

    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    let busybox = root.join("bin/busybox");
    cpio.file(
        "bin/busybox",
        0o755,
        &fs::read(&busybox).expect("busybox-static has /bin/busybox"),
    );
    cpio.file("init", 0o755, INIT.as_bytes());
    let modules = root.join("lib/modules");
    for m in MODULES {
        let name = format!("{m}.ko");
        let path = find_file(&modules, |n| n == name)
            .unwrap_or_else(|| panic!("{package} has no module {name} (compressed, or built in?)"));
        cpio.file(
            &format!("lib/modules/{name}"),
            0o644,
            &fs::read(&path).expect("reading a module"),
        );
    }
    fs::write(out.join("initrd.cpio"), cpio.finish()).expect("writing the initramfs");
    // Whole or not at all: a concurrent build that won keeps its copy.
    assert!(
        fs::rename(&out, dir).is_ok() || dir.join("initrd.cpio").is_file(),
        "could not move the guest image into {}",
        dir.display()
    );
}

/// The first file under `dir` (recursively) whose name satisfies `pred`.
fn find_file(dir: &Path, pred: impl Fn(&str) -> bool + Copy) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let path = entry.path();
        let ty = entry.file_type().ok()?;
        if ty.is_dir() {
            if let Some(p) = find_file(&path, pred) {
                return Some(p);
            }
        } else if ty.is_file() && entry.file_name().to_str().is_some_and(pred) {
            return Some(path);
        }
    }
    None
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An uncompressed initramfs in the "newc" cpio format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, (0, 0), data);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let size = u32::try_from(data.len()).expect("initramfs member under 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("short name");
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        write!(self.out, "070701").expect("write to Vec");
        for f in fields {
            write!(self.out, "{f:08x}").expect("write to Vec");
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
