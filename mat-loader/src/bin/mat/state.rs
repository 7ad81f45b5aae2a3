//! The daemon's durable state: the plan it was made with, the ports it manages, the bindings and
//! the allocator. One JSON file, replaced atomically: written to a temporary file, fsynced,
//! renamed over the old one, and the directory fsynced, before a change is acknowledged.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{alloc::Allocator, mac::Mac, plan::Plan};

const FILE: &str = "state.json";
const TEMP: &str = "state.json.tmp";
const LOCK: &str = "lock";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub plan: Plan,
    pub alloc: Allocator,
    /// Ports with MAT's programs attached.
    pub ports: Vec<Port>,
    pub bindings: Vec<Binding>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub port: String,
    pub ifindex: u32,
    /// The VM's name ("" when the caller gave none).
    pub vm: String,
    pub inside: Mac,
    pub outside: Mac,
    /// IPv4 addresses the caller gave.
    pub ips: Vec<Ipv4Addr>,
    /// When it was bound, in seconds since the Unix epoch.
    pub since: u64,
}

impl State {
    pub fn new(plan: Plan) -> Self {
        Self {
            version: VERSION,
            plan,
            alloc: Allocator::default(),
            ports: Vec::new(),
            bindings: Vec::new(),
        }
    }

    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Checks what the allocator relies on: every outside MAC is in the host pool, handed out
    /// before, and either bound once or released once.
    pub fn check(&self) -> Result<()> {
        if self.version != VERSION {
            bail!("state version {} (this mat knows {VERSION})", self.version);
        }
        let mut seen = HashSet::new();
        let outside = self
            .bindings
            .iter()
            .map(|b| b.outside)
            .chain(self.alloc.released.iter().map(|r| r.outside));
        for mac in outside {
            let Some(i) = self.plan.index_of(mac) else {
                bail!(
                    "outside MAC {mac} is not in the host pool {}",
                    self.plan.host_pool()
                );
            };
            if i >= self.alloc.next_fresh {
                bail!("outside MAC {mac} was never handed out");
            }
            if !seen.insert(mac) {
                bail!("outside MAC {mac} appears twice");
            }
        }
        let mut inside = HashSet::new();
        let mut ports = HashSet::new();
        for b in &self.bindings {
            if !inside.insert(b.inside) {
                bail!("inside MAC {} is bound twice", b.inside);
            }
            if !ports.insert(&b.port) {
                bail!("port {} is bound twice", b.port);
            }
            if self.port(&b.port).map(|p| p.ifindex) != Some(b.ifindex) {
                bail!("binding on {} has no matching port", b.port);
            }
        }
        Ok(())
    }
}

/// The state directory, locked against a second daemon for as long as this lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Creates `dir` (mode 0700) if needed and takes its lock.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK))
            .with_context(|| format!("opening {}", dir.join(LOCK).display()))?;
        // SAFETY: flock on an open descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "state directory {} is in use by another mat daemon ({})",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state on disk, if any. A temporary file left by a crash is ignored.
    pub fn load(&self) -> Result<Option<State>> {
        let path = self.dir.join(FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: State =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        state
            .check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(Some(state))
    }

    /// Replaces the state on disk; durable when this returns.
    pub fn save(&self, state: &State) -> Result<()> {
        let temp = self.dir.join(TEMP);
        let mut text = serde_json::to_vec_pretty(state).expect("state serializes");
        text.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", temp.display()))?;
        drop(f);
        fs::rename(&temp, self.dir.join(FILE))
            .with_context(|| format!("renaming {} into place", temp.display()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.dir.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(
            "02:00:5e:00:00:00/24".parse().unwrap(),
            8,
            8,
            1,
            3,
            false,
            vec![],
        )
        .unwrap()
    }

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mat-state-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_lock() {
        let dir = temp_dir();
        let store = Store::open(&dir).unwrap();
        assert!(store.load().unwrap().is_none());
        let mut s = State::new(plan());
        s.alloc.next_fresh = 1;
        s.ports.push(Port {
            name: "vp1".into(),
            ifindex: 7,
        });
        s.bindings.push(Binding {
            port: "vp1".into(),
            ifindex: 7,
            vm: "web".into(),
            inside: "52:54:00:00:00:01".parse().unwrap(),
            outside: s.plan.mac_at(0),
            ips: vec![Ipv4Addr::new(192, 0, 2, 10)],
            since: 1,
        });
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        assert!(Store::open(&dir).is_err(), "second daemon locked out");
        // A torn temporary file from a crash does not matter.
        fs::write(dir.join(TEMP), b"{ half").unwrap();
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_finds_double_use() {
        let mut s = State::new(plan());
        s.alloc.next_fresh = 2;
        s.ports.push(Port {
            name: "a".into(),
            ifindex: 1,
        });
        s.bindings.push(Binding {
            port: "a".into(),
            ifindex: 1,
            vm: String::new(),
            inside: Mac([0x52, 0, 0, 0, 0, 1]),
            outside: s.plan.mac_at(0),
            ips: vec![],
            since: 0,
        });
        s.check().unwrap();
        s.alloc
            .release(s.plan.mac_at(0), "", Mac([0x52, 0, 0, 0, 0, 2]), 0);
        assert!(s.check().unwrap_err().to_string().contains("twice"));
        s.alloc.released.clear();
        s.bindings[0].outside = s.plan.mac_at(5);
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("never handed out"));
    }
}
