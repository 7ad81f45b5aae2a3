//! The toolchain and tools on a fresh Debian 12 machine, each checked first and installed only
//! when missing.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod libvirt;

/// Debian packages the build and the tests need, by the command that shows each is present.
const PACKAGES: &[(&str, &str)] = &[
    // bpf-linker links against LLVM 22, rustc's own LLVM.
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    // mat-loader's libvirt-events feature (the package's and the tests' build) links libvirt,
    // found by the virt crate's build script through pkg-config.
    ("libvirt-dev", "/usr/include/libvirt/libvirt.h"),
    ("pkg-config", "/usr/bin/pkg-config"),
    // End-to-end tests ping between namespaces.
    ("iputils-ping", "/usr/bin/ping"),
    // `cargo xtask bench`: the traffic generator, the peers MAT is compared with (ebtables-nft
    // comes with iptables; this kernel has no legacy ebtables), and offload state.
    ("iperf3", "/usr/bin/iperf3"),
    ("nftables", "/usr/sbin/nft"),
    ("iptables", "/usr/sbin/ebtables-nft"),
    ("ethtool", "/usr/sbin/ethtool"),
    // `cargo xtask package` and its tests: the package is checked with lintian.
    ("lintian", "/usr/bin/lintian"),
    // The package's tests trace the daemon's system calls against the unit's filter.
    ("strace", "/usr/bin/strace"),
    // The DHCP tests: a real server beyond the uplink and a real client in the VM (busybox's
    // udhcpc). dnsmasq-base is the binary alone: no service is installed or started.
    ("dnsmasq-base", "/usr/sbin/dnsmasq"),
    ("udhcpc", "/usr/sbin/udhcpc"),
    // The metrics test checks the exposition with promtool, which Debian ships only in the
    // server's package (see `quiet_prometheus`).
    ("prometheus", "/usr/bin/promtool"),
];

/// cargo-deb, for `cargo xtask package`, at this version.
const CARGO_DEB: &str = "3.8.0";

pub fn run() -> Result<()> {
    rust_src()?;
    packages()?;
    libvirt::run()?;
    bpf_linker()?;
    cargo_deb()
}

/// cargo-deb at [`CARGO_DEB`], installed (or replaced) when another version or none is there.
fn cargo_deb() -> Result<()> {
    let installed = Command::new("cargo-deb")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if installed.split_whitespace().any(|w| w == CARGO_DEB) {
        return Ok(());
    }
    println!("setup: installing cargo-deb {CARGO_DEB} (a few minutes)");
    status(
        "cargo",
        &[
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB,
            "--locked",
            "--force",
        ],
    )
}

fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    status(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, path)| !std::path::Path::new(path).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    status("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    status("apt-get", &args)?;
    if missing.contains(&"prometheus") {
        quiet_prometheus()?;
    }
    Ok(())
}

/// The prometheus package enables and starts its server (port 9090); the tests want only
/// promtool, so a server it started under systemd is stopped and disabled again.
fn quiet_prometheus() -> Result<()> {
    if std::path::Path::new("/run/systemd/system").exists() {
        status("systemctl", &["disable", "--now", "prometheus.service"])?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    println!("setup: building bpf-linker against LLVM 22 (about a minute)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let ok = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .env("PATH", path)
        .status()
        .context("running cargo install")?
        .success();
    if !ok {
        bail!("cargo install bpf-linker failed");
    }
    Ok(())
}

pub(crate) fn status(program: &str, args: &[&str]) -> Result<()> {
    let ok = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running {program}"))?
        .success();
    if !ok {
        bail!("{program} {} failed", args.join(" "));
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
