//! `cargo xtask bench`: per-packet cost against the floors, traffic through real interfaces
//! against the alternatives, and control-plane rates, measured side by side in one run. Prints a
//! table and writes target/bench/bench.json. Nothing here asserts a timing: the targets are
//! reported as met or missed.

mod control;
mod prog;
mod relay;
mod stats;
mod traffic;

use std::{fmt::Write as _, path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// A part of the bench: its figures, or why there are none.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Part<T> {
    Measured(T),
    Skipped(String),
    Failed(String),
}

impl<T> Part<T> {
    fn from(r: Result<T>) -> Self {
        match r {
            Ok(t) => Part::Measured(t),
            Err(e) => Part::Failed(format!("{e:#}")),
        }
    }

    /// Runs `f`, turning an error or a panic (the namespace helpers panic) into `Failed`.
    fn catch(f: impl FnOnce() -> Result<T>) -> Self {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => Part::from(r),
            Err(p) => Part::Failed(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
        }
    }

    fn get(&self) -> Option<&T> {
        match self {
            Part::Measured(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Serialize)]
#[expect(
    clippy::struct_field_names,
    reason = "`target` is the JSON field's stable name"
)]
struct Target {
    what: String,
    target: String,
    measured: String,
    met: bool,
}

#[derive(Serialize)]
struct Report {
    command: String,
    quick: bool,
    kernel: String,
    cpus: usize,
    started_unix_s: u64,
    seconds: f64,
    prog: Part<Vec<prog::Row>>,
    traffic: Part<traffic::Report>,
    control: Part<control::Report>,
    /// target/bench/migration.json as the libvirt migration test wrote it, if it ran.
    migration: Part<serde_json::Value>,
    targets: Vec<Target>,
    notes: Vec<String>,
}

pub fn run(quick: bool) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench loads BPF programs and creates network namespaces: run as root");
    }
    let start = Instant::now();
    // MAT_BENCH_OUT writes elsewhere (a partial run kept beside a full one).
    let out = std::env::var_os("MAT_BENCH_OUT").map_or_else(
        || crate::workspace().join("target/bench/bench.json"),
        PathBuf::from,
    );
    let mut report = Report {
        command: format!("cargo xtask bench{}", if quick { " --quick" } else { "" }),
        quick,
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seconds: 0.0,
        prog: Part::Skipped("not picked by MAT_BENCH_PARTS".into()),
        traffic: Part::Skipped("not picked by MAT_BENCH_PARTS".into()),
        control: Part::Skipped("not picked by MAT_BENCH_PARTS".into()),
        migration: migration(),
        targets: Vec::new(),
        notes: vec![prog::NOTE.into()],
    };

    let cfg = if quick {
        prog::Config {
            repeats: 1_000_000,
            rounds: 3,
        }
    } else {
        prog::Config {
            repeats: 10_000_000,
            rounds: 5,
        }
    };
    eprintln!(
        "bench: per-packet cost, {} rounds of {} test runs per case",
        cfg.rounds, cfg.repeats
    );
    if wanted("prog") {
        report.prog = Part::catch(|| prog::run(&cfg));
    }
    if let Some(rows) = report.prog.get() {
        report.targets.extend(prog::targets(rows));
    }
    report.seconds = start.elapsed().as_secs_f64();
    write(&out, &report)?;

    let cfg = traffic::Config {
        seconds: if quick { 1 } else { 4 },
        rounds: if quick { 1 } else { 5 },
    };
    if wanted("traffic") {
        report.traffic = Part::catch(|| traffic::run(&cfg));
    }
    if let Some(t) = report.traffic.get() {
        report.targets.extend(traffic::targets(t));
    }
    report.seconds = start.elapsed().as_secs_f64();
    write(&out, &report)?;

    let cfg = if quick {
        control::Config {
            sizes: control::sizes(&[0, 256]),
            cold_start_max: 1_000,
            socket_ops: 20,
            cli_ops: 5,
            store_ops: 20,
            restarts: 2,
        }
    } else {
        control::Config {
            sizes: control::sizes(&[0, 1_000, 4_096]),
            cold_start_max: 1_000,
            socket_ops: 200,
            cli_ops: 50,
            store_ops: 200,
            restarts: 3,
        }
    };
    if wanted("control") {
        report.control = Part::catch(|| control::run(&cfg));
    }
    if let Some(c) = report.control.get() {
        report.targets.extend(control::targets(c));
    }
    report.seconds = start.elapsed().as_secs_f64();
    write(&out, &report)?;
    print!("{}", table(&report));
    println!("\nwritten: {}", out.display());
    Ok(())
}

/// A snapshot of the machine's load, to report how quiet a part ran.
pub struct Load {
    loadavg: f64,
    cpu: Vec<u64>,
}

#[derive(Serialize)]
pub struct LoadReport {
    pub loadavg_before: f64,
    pub loadavg_after: f64,
    /// Share of CPU time the hypervisor took from this machine.
    pub steal_pct: f64,
    /// Share of CPU time busy (anything but idle and iowait), the bench's own work included.
    pub busy_pct: f64,
}

impl Load {
    pub fn now() -> Load {
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        let cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_owned();
                Some(
                    line.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse().ok())
                        .collect(),
                )
            })
            .unwrap_or_default();
        Load { loadavg, cpu }
    }

    pub fn since(&self) -> LoadReport {
        let now = Load::now();
        let d: Vec<f64> = now
            .cpu
            .iter()
            .zip(&self.cpu)
            .map(|(a, b)| a.saturating_sub(*b) as f64)
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: f64 = d.iter().take(8).sum();
        let at = |i: usize| d.get(i).copied().unwrap_or(0.0);
        LoadReport {
            loadavg_before: self.loadavg,
            loadavg_after: now.loadavg,
            steal_pct: 100.0 * at(7) / total,
            busy_pct: 100.0 * (total - at(3) - at(4)) / total,
        }
    }
}

/// The gap the libvirt live-migration test measured (it writes target/bench/migration.json);
/// the bench does not migrate by itself.
fn migration() -> Part<serde_json::Value> {
    let path = crate::workspace().join("target/bench/migration.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => Part::Measured(v),
            Err(e) => Part::Failed(format!("{}: {e}", path.display())),
        },
        Err(_) => Part::Skipped(format!(
            "{} not found: the libvirt live-migration test (cargo xtask test) writes it",
            path.display()
        )),
    }
}

/// `MAT_BENCH_PARTS=prog,traffic,control` (the default: all) picks parts, for working on one.
fn wanted(part: &str) -> bool {
    std::env::var("MAT_BENCH_PARTS").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}

fn write(path: &PathBuf, report: &Report) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

fn table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} (kernel {}, {} CPUs, {:.0} s)",
        report.command, report.kernel, report.cpus, report.seconds
    );
    match &report.prog {
        Part::Measured(rows) => s.push_str(&prog::table(rows)),
        Part::Skipped(why) => {
            let _ = writeln!(s, "\nper-packet cost: skipped: {why}");
        }
        Part::Failed(why) => {
            let _ = writeln!(s, "\nper-packet cost: FAILED: {why}");
        }
    }
    match &report.traffic {
        Part::Measured(t) => s.push_str(&traffic::table(t)),
        Part::Skipped(why) => {
            let _ = writeln!(s, "\ntraffic: skipped: {why}");
        }
        Part::Failed(why) => {
            let _ = writeln!(s, "\ntraffic: FAILED: {why}");
        }
    }
    match &report.control {
        Part::Measured(c) => s.push_str(&control::table(c)),
        Part::Skipped(why) => {
            let _ = writeln!(s, "\ncontrol plane: skipped: {why}");
        }
        Part::Failed(why) => {
            let _ = writeln!(s, "\ncontrol plane: FAILED: {why}");
        }
    }
    match &report.migration {
        Part::Measured(v) => {
            let _ = writeln!(
                s,
                "\nmigration (libvirt live-migration test, TCG guest): gap {} ms, {} of {} pings \
                 lost at {} ms, QEMU downtime {} ms",
                v["gap_ms"], v["lost"], v["sent"], v["ping_interval_ms"], v["qemu_downtime_ms"]
            );
        }
        Part::Skipped(why) => {
            let _ = writeln!(s, "\nmigration: skipped: {why}");
        }
        Part::Failed(why) => {
            let _ = writeln!(s, "\nmigration: FAILED: {why}");
        }
    }
    if !report.targets.is_empty() {
        let _ = writeln!(s, "\n{:<72} {:<21} {:<34}", "target", "wanted", "measured");
        for t in &report.targets {
            let _ = writeln!(
                s,
                "{:<72} {:<21} {:<34} {}",
                t.what,
                t.target,
                t.measured,
                if t.met { "met" } else { "MISSED" }
            );
        }
    }
    s
}
