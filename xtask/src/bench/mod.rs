//! `cargo xtask bench`: per-packet cost against the floors, traffic through real interfaces
//! against the alternatives, and control-plane rates, measured side by side in one run. Prints a
//! table and writes target/bench/bench.json. Nothing here asserts a timing: the targets are
//! reported as met or missed.

mod prog;
mod stats;

use std::{fmt::Write as _, path::PathBuf, time::Instant};

use anyhow::{bail, Context, Result};
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

    fn get(&self) -> Option<&T> {
        match self {
            Part::Measured(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Serialize)]
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
    targets: Vec<Target>,
    notes: Vec<String>,
}

pub fn run(quick: bool) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench loads BPF programs and creates network namespaces: run as root");
    }
    let start = Instant::now();
    let out = crate::workspace().join("target/bench/bench.json");
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
        prog: Part::Skipped("not run yet".into()),
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
    report.prog = Part::from(prog::run(&cfg));
    if let Some(rows) = report.prog.get() {
        report.targets.extend(prog::targets(rows));
    }
    report.seconds = start.elapsed().as_secs_f64();
    write(&out, &report)?;
    print!("{}", table(&report));
    println!("\nwritten: {}", out.display());
    Ok(())
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
    if !report.targets.is_empty() {
        let _ = writeln!(s, "\n{:<58} {:<18} {:<22} ", "target", "wanted", "measured");
        for t in &report.targets {
            let _ = writeln!(
                s,
                "{:<58} {:<18} {:<22} {}",
                t.what,
                t.target,
                t.measured,
                if t.met { "met" } else { "MISSED" }
            );
        }
    }
    s
}
