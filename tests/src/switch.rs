//! The MAC-route switch in tests and the lab: a switch guard that detaches and unpins it on
//! drop (also when a test panics), and the `mat-switch` binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use mat_switch::{PortSpec, Switch};

use crate::{netns::Netns, pins::unique};

/// The directory tests pin switches under (each switch in a uniquely named one below it).
pub fn pin_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf")
}

/// A switch created inside a namespace under a unique pin directory; destroyed on drop.
pub struct SwitchGuard {
    pub ns_name: String,
    pub pin_dir: PathBuf,
    pub name: String,
}

impl SwitchGuard {
    /// Creates a switch over `ports` (names in `ns`), `ageing` for learned MACs.
    pub fn create(ns: &Netns, ports: &[&str], ageing: std::time::Duration, xdp: bool) -> Self {
        let pin_dir = pin_root().join(unique("mat-sw-"));
        std::fs::create_dir_all(&pin_dir).expect("creating the switch pin directory");
        let name = "sw".to_owned();
        let specs: Vec<PortSpec> = ports.iter().map(|p| p.parse().expect("port")).collect();
        let guard = SwitchGuard {
            ns_name: ns.name().to_owned(),
            pin_dir,
            name,
        };
        ns.enter(|| Switch::create(&guard.pin_dir, &guard.name, &specs, ageing, xdp))
            .unwrap_or_else(|e| panic!("creating the switch: {e}"));
        guard
    }

    /// Opens the switch; call it inside the switch's namespace (port names resolve there).
    pub fn open(&self) -> Switch {
        Switch::open(&self.pin_dir, &self.name).expect("opening the switch")
    }

    /// `mat-switch --pin-dir DIR args...` inside the namespace.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns_name))
            .arg("--")
            .arg(switch_binary())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(args)
            .output()
            .expect("running mat-switch")
    }
}

impl Drop for SwitchGuard {
    fn drop(&mut self) {
        if let Ok(s) = Switch::open(&self.pin_dir, &self.name)
            && let Err(e) = s.destroy()
        {
            eprintln!("could not remove switch {}: {e}", self.pin_dir.display());
        }
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}

/// The `mat-switch` binary, built once per process (`MAT_SWITCH_BIN` overrides).
pub fn switch_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MAT_SWITCH_BIN") {
            return PathBuf::from(p);
        }
        crate::daemon::cargo_binary("mat-switch", "mat-switch", &[])
    })
}
