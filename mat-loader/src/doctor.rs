//! `mat doctor`: checks a host's set-up and says, one line per finding, what is wrong and what
//! to do. The CLI checks what it can see itself (kernel features, the configuration, the pinned
//! layout, libvirt's hook); the daemon checks what only it knows (its ports' programs, the maps
//! against its store, its pool: [`Request::Doctor`], answered by `Host::doctor`).
//!
//! Exit codes: 0 when no finding is an error (warnings are printed), 1 otherwise.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{client::Client, libvirt, mac::Mac, proto::Request};

/// What a finding is about: a stable code, the protocol's and the scripts' key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The kernel has no BTF (/sys/kernel/btf/vmlinux).
    BtfMissing,
    /// The kernel has no TCX (before 6.6): the programs go on clsact filters instead.
    TcxUnavailable,
    /// The pin directory is not on a BPF filesystem.
    BpffsMissing,
    DaemonUnreachable,
    /// The configuration file or its address plan cannot run a daemon.
    ConfigInvalid,
    /// The pin directory holds a layout this binary does not run.
    LayoutMismatch,
    /// One of the two programs does not run on a bound port.
    ProgramMissing,
    /// A binding of the store has no entry in the maps.
    MapEntryMissing,
    /// A binding of the store has an entry with other values.
    MapEntryWrong,
    /// The maps have an entry the store does not bind.
    MapEntryExtra,
    /// Most of the host pool is bound or held down.
    PoolNearlyFull,
    HookMissing,
    HookNotExecutable,
    /// The hook talks to another socket than the daemon's.
    HookWrongSocket,
    /// Another host sends from this host's outside MACs (the same rack and host id).
    DuplicateOutsideMac,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

impl Check {
    pub fn severity(self) -> Severity {
        match self {
            Check::TcxUnavailable | Check::BpffsMissing | Check::PoolNearlyFull => {
                Severity::Warning
            }
            _ => Severity::Error,
        }
    }

    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One finding: what is wrong, about what, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub code: Check,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The VM's inside MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub message: String,
    pub action: String,
}

impl Finding {
    pub fn new(code: Check, message: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            port: None,
            mac: None,
            program: None,
            path: None,
            message: message.into(),
            action: action.into(),
        }
    }

    #[must_use]
    pub fn port(mut self, port: &str) -> Self {
        self.port = Some(port.to_owned());
        self
    }

    #[must_use]
    pub fn mac(mut self, mac: Mac) -> Self {
        self.mac = Some(mac);
        self
    }

    #[must_use]
    pub fn program(mut self, program: &str) -> Self {
        self.program = Some(program.to_owned());
        self
    }

    #[must_use]
    pub fn path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// `SEVERITY CODE [port P] [mac M]: MESSAGE; ACTION`
    pub fn line(&self) -> String {
        let mut subject = String::new();
        if let Some(p) = &self.port {
            subject.push_str(&format!(" port {p}"));
        }
        if let Some(m) = &self.mac {
            subject.push_str(&format!(" mac {m}"));
        }
        if let Some(p) = &self.path {
            subject.push_str(&format!(" {}", p.display()));
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!(
            "{severity} {}{subject}: {}; {}",
            self.code.as_str(),
            self.message,
            self.action
        )
    }
}

/// The daemon's answer to [`Request::Doctor`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DoctorView {
    /// Where its data plane is pinned.
    pub pin_dir: PathBuf,
    pub findings: Vec<Finding>,
}

/// Duplicates seen this long ago or less are reported: one fixed by then (the other host
/// renumbered) stays in `mat stats` but no longer fails the check.
pub const DUPLICATE_RECENT_MS: u64 = 10 * 60 * 1000;

/// A duplicate outside MAC the daemon's watch saw (see [`crate::duplicates`]).
pub fn duplicate(d: &crate::duplicates::Duplicate) -> Finding {
    Finding::new(
        Check::DuplicateOutsideMac,
        format!(
            "another host claims this host's MAC ({}) on {}{}, from {}: it has this host's rack \
             and host id",
            d.field,
            d.interface,
            d.vlan.map(|v| format!(" VLAN {v}")).unwrap_or_default(),
            d.source
        ),
        "give that host a host id of its own (detach or stop its VMs first), then restart its \
         daemon",
    )
    .mac(d.mac)
}

/// `mat doctor --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// No finding is an error.
    pub healthy: bool,
    pub findings: Vec<Finding>,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The daemon's configuration file, checked when it exists [default: /etc/mat/mat.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The pin directory [default: the daemon's, else the configured one].
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// libvirt's hooks directory; the hook is checked when the directory exists.
    #[arg(
        long,
        env = "MAT_LIBVIRT_HOOKS_DIR",
        default_value = libvirt::HOOKS_DIR,
        value_name = "DIR"
    )]
    pub hooks_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

const BTF: &str = "/sys/kernel/btf/vmlinux";

/// Runs every check and prints the findings.
pub fn run(args: &DoctorArgs, socket: &Path, timeout: Duration) -> ExitCode {
    let mut findings = kernel();
    let configured = match crate::config::check(args.config.as_deref()) {
        None => None,
        Some(Ok(pin_dir)) => Some(pin_dir),
        Some(Err(e)) => {
            findings.push(Finding::new(
                Check::ConfigInvalid,
                format!("{e:#}"),
                "fix the configuration file (every key is described in the packaged /etc/mat/mat.toml)",
            ));
            None
        }
    };
    let daemon = Client::connect(socket, timeout)
        .and_then(|mut c| c.call::<DoctorView>(&Request::Doctor {}));
    let daemon_pins = match daemon {
        Ok(view) => {
            findings.extend(view.findings);
            Some(view.pin_dir)
        }
        Err(e) => {
            findings.push(
                Finding::new(
                    Check::DaemonUnreachable,
                    e.to_string(),
                    "start it (systemctl start mat), or name its socket with --socket",
                )
                .path(socket),
            );
            None
        }
    };
    let pin_dir = args
        .pin_dir
        .clone()
        .or(daemon_pins)
        .or(configured)
        .unwrap_or_else(|| crate::DEFAULT_PIN_DIR.into());
    findings.extend(pins(&pin_dir));
    findings.extend(hook(&args.hooks_dir, socket));
    let report = Report {
        healthy: findings.iter().all(|f| f.severity != Severity::Error),
        findings,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
    } else if report.findings.is_empty() {
        println!("healthy: no findings");
    } else {
        for f in &report.findings {
            println!("{}", f.line());
        }
    }
    if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// BTF and TCX.
fn kernel() -> Vec<Finding> {
    let mut out = Vec::new();
    if !Path::new(BTF).exists() {
        out.push(
            Finding::new(
                Check::BtfMissing,
                "the kernel has no BTF",
                "run a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            )
            .path(Path::new(BTF)),
        );
    }
    if !crate::dataplane::tcx_available() {
        out.push(Finding::new(
            Check::TcxUnavailable,
            "the kernel has no TCX (Linux 6.6): the programs go on clsact filters, which doctor \
             cannot check",
            "run Linux 6.6 or later; meanwhile keep the sch_ingress module (clsact) available",
        ));
    }
    out
}

/// The pin directory: on bpffs, and in a layout this binary runs.
fn pins(pin_dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    if !crate::bpffs::on_bpffs(pin_dir) {
        out.push(
            Finding::new(
                Check::BpffsMissing,
                "the pin directory is not on a BPF filesystem: the daemon mounts one, whose pins \
                 live only as long as its mount namespace",
                "mount bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf, or in fstab)",
            )
            .path(pin_dir),
        );
    }
    match crate::layout::detect(pin_dir) {
        Ok(older) => {
            for o in older {
                out.push(
                    Finding::new(
                        Check::LayoutMismatch,
                        format!(
                            "pins of layout {} are there; this binary runs layout {}",
                            o.version,
                            crate::common::maps::LAYOUT
                        ),
                        "restart the daemon with this binary: it migrates the older layout",
                    )
                    .path(&o.dir),
                );
            }
        }
        Err(e) => out.push(
            Finding::new(
                Check::LayoutMismatch,
                e.to_string(),
                "run the release that made those pins, or upgrade mat",
            )
            .path(pin_dir),
        ),
    }
    out
}

/// libvirt's qemu hook, when libvirt's hooks directory exists.
fn hook(hooks_dir: &Path, socket: &Path) -> Option<Finding> {
    let (check, message, path) = match libvirt::hook_status(hooks_dir, socket)? {
        libvirt::HookStatus::Missing(p) => (
            Check::HookMissing,
            "libvirt's hook is not installed".to_owned(),
            p,
        ),
        libvirt::HookStatus::NotExecutable(p) => (
            Check::HookNotExecutable,
            "libvirt's hook is not executable".to_owned(),
            p,
        ),
        libvirt::HookStatus::OtherSocket(p) => (
            Check::HookWrongSocket,
            format!("libvirt's hook does not talk to {}", socket.display()),
            p,
        ),
    };
    Some(
        Finding::new(
            check,
            message,
            format!(
                "run: mat --socket {} install libvirt-hook --hooks-dir {}, then restart libvirtd",
                socket.display(),
                hooks_dir.display()
            ),
        )
        .path(&path),
    )
}
