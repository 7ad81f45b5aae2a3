//! `cargo xtask <task>`: what cargo alone cannot do.

#[cfg(feature = "bench")]
mod bench;
#[cfg(any(feature = "bench", feature = "demo"))]
mod demo;
#[cfg(feature = "lab")]
mod lab;
mod package;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "MAT's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need, where missing (idempotent).
    Setup,
    /// Set up, build, check formatting and lints, and run every test (as root).
    Test {
        /// Extra arguments for `cargo test` (a test name filter, `--nocapture`, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure per-packet cost, throughput against the alternatives, and control-plane rates
    /// (as root); prints a table and writes target/bench/bench.json.
    Bench {
        /// Fewer repeats and shorter runs: under two minutes.
        #[arg(long)]
        quick: bool,
    },
    /// A small hypervisor in namespaces running the mat daemon, two VMs attached, and a capture
    /// showing only outside MACs on the wire; cleans up after itself (as root).
    Demo,
    /// The fabric: MAT (mat-switch core and ToRs, mat daemons on the hypervisors) beside flat
    /// Linux bridges, same topology: reachability, table sizes, a core flush, a VM moved across
    /// racks, forwarding cost (as root; the default size takes under a minute).
    Lab(LabArgs),
    /// Build the Debian package (cargo-deb) into target/debian/; prints its path.
    Package {
        /// Build the previous release's package instead (from its commit, once, kept under
        /// target/previous-release/), which the upgrade test installs first.
        #[arg(long)]
        previous: bool,
    },
}

#[derive(clap::Args, Clone)]
struct LabArgs {
    #[arg(long, default_value_t = 2)]
    racks: usize,
    /// Hypervisors per rack.
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// VMs in all, spread over the hypervisors.
    #[arg(long, default_value_t = 8)]
    vms: usize,
    /// Routes per VLAN: untagged plus VLANs 1..N-1.
    #[arg(long, default_value_t = 1)]
    vlans: usize,
    /// Leave the MAT fabric up afterwards (until `--clean`).
    #[arg(long)]
    keep: bool,
    /// Remove a fabric left up by `--keep`, and nothing else.
    #[arg(long, conflicts_with = "keep")]
    clean: bool,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

impl LabArgs {
    #[cfg_attr(
        feature = "lab",
        expect(dead_code, reason = "used to re-run without the feature")
    )]
    fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "lab".to_owned(),
            format!("--racks={}", self.racks),
            format!("--hosts={}", self.hosts),
            format!("--vms={}", self.vms),
            format!("--vlans={}", self.vlans),
        ];
        v.extend(self.keep.then(|| "--keep".to_owned()));
        v.extend(self.clean.then(|| "--clean".to_owned()));
        if let Some(j) = &self.json {
            let abs = std::env::current_dir()
                .map(|d| d.join(j))
                .unwrap_or(j.clone());
            v.push(format!("--json={}", abs.display()));
        }
        v
    }
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test { args } => test(&args),
        Task::Bench { quick } => bench(quick),
        Task::Demo => demo(),
        Task::Lab(args) => lab(&args),
        Task::Package { previous } => if previous {
            package::previous()
        } else {
            package::run()
        }
        .map(|deb| println!("{}", deb.display())),
    }
}

/// The lab links the loader and the switch: it runs in an xtask built with the `lab` feature,
/// once setup has installed what building them takes.
#[cfg(not(feature = "lab"))]
fn lab(args: &LabArgs) -> Result<()> {
    setup::run()?;
    let rest = args.to_args();
    let mut all = vec![
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--features",
        "lab",
        "--",
    ];
    all.extend(rest.iter().map(String::as_str));
    cargo(&all)
}

#[cfg(feature = "lab")]
fn lab(args: &LabArgs) -> Result<()> {
    if args.clean {
        return lab::clean();
    }
    lab::run(
        lab::Size {
            racks: args.racks,
            hosts: args.hosts,
            vms: args.vms,
            vlans: args.vlans,
        },
        args.keep,
        args.json.clone(),
    )
}

/// Like the benchmark, the demo links the loader (through mat-tests): it runs in an xtask built
/// with the `demo` feature, once setup has installed what building the loader takes.
#[cfg(not(any(feature = "bench", feature = "demo")))]
fn demo() -> Result<()> {
    setup::run()?;
    cargo(&[
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--features",
        "demo",
        "--",
        "demo",
    ])
}

#[cfg(any(feature = "bench", feature = "demo"))]
fn demo() -> Result<()> {
    demo::run()
}

/// The benchmark needs the loader, so it runs in an xtask built with the `bench` feature, once
/// setup has installed what building the loader takes.
#[cfg(not(feature = "bench"))]
fn bench(quick: bool) -> Result<()> {
    setup::run()?;
    let mut args = vec![
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--features",
        "bench",
        "--",
    ];
    args.extend(["bench"].into_iter().chain(quick.then_some("--quick")));
    cargo(&args)
}

#[cfg(feature = "bench")]
fn bench(quick: bool) -> Result<()> {
    bench::run(quick)
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("the tests load BPF programs and create network namespaces: run as root");
    }
    cargo(&["fmt", "--all", "--", "--check"])?;
    // The default members are the host crates; the kernel crate is linted for its own target.
    cargo(&[
        "clippy",
        "--all-targets",
        "--features",
        "xtask/bench,xtask/lab,mat-loader/libvirt-events",
        "--",
        "-D",
        "warnings",
    ])?;
    for kernel_crate in ["mat-ebpf", "mat-switch-ebpf"] {
        nightly_cargo(&[
            "clippy",
            "--package",
            kernel_crate,
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // The package's tests (tests/tests/package.rs) check this .deb, and upgrade to it from the
    // previous release's.
    let deb = package::run()?;
    let previous = package::previous()?;
    let mut test = vec!["test", "--no-fail-fast", "--"];
    test.extend(args.iter().map(String::as_str));
    let tests = cargo_env(
        &test,
        &[
            ("MAT_DEB", deb.as_os_str()),
            ("MAT_PREVIOUS_DEB", previous.as_os_str()),
        ],
    );
    // The fabric lab at its default size (under a minute), when every test ran.
    if args.is_empty() {
        tests?;
        return cargo(&[
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "lab",
            "--",
            "lab",
        ]);
    }
    tests
}

/// Runs the nightly toolchain's cargo with `args` in the workspace.
fn nightly_cargo(args: &[&str]) -> Result<()> {
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo"])
        .args(args)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(workspace())
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("cargo +nightly {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Runs cargo (the one running xtask) with `args` in the workspace.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_env(args, &[])
}

/// Like [`cargo`], with `env` added to its environment.
pub fn cargo_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}

pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || workspace().join("target"),
            |p| {
                if p.is_absolute() {
                    p
                } else {
                    workspace().join(p)
                }
            },
        )
}
