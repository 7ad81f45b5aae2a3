//! `mat monitor`: a live view of what the data plane drops and why, and of what the daemon
//! learns and announces, as `cilium monitor --type drop` gives for Cilium.
//!
//! The programs report a dropped frame only while a monitor watches (the settings flag
//! `SETTING_MONITOR`, which the daemon sets for the first watcher and clears after the last), so
//! a drop costs one more branch when nobody does. They stop queueing while a quarter of the event
//! ring is unread; the daemon turns at most [`DROPS_PER_SECOND`] of them into records and hands
//! each watcher a bounded queue: a flood swamps neither. What was not shown is counted, from
//! the drop counters, which count every frame.

use std::{
    io::{BufRead, Write},
    net::IpAddr,
    path::Path,
    process::ExitCode,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    client::Client,
    common::{
        counters::{HOOKS, OUTCOMES},
        event::{DropEvent, EventKind},
    },
    mac::Mac,
    proto::Request,
};

/// What a watcher asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Frames the data plane dropped: spoof, port security, malformed, reflected.
    Drop,
    /// Addresses the VMs claimed, as the data plane reported them.
    Learn,
    /// Gratuitous ARP and unsolicited NA the daemon sent.
    Announce,
}

/// One line of `mat monitor --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Drop {
        /// The hook and the counter's outcome (`spoof_dropped`, `port_security_dropped`,
        /// `malformed`, `reflected`).
        hook: String,
        reason: String,
        ifindex: u32,
        port: Option<String>,
        /// The frame's Ethernet destination and source (when it has them), its length and
        /// its first bytes in hex.
        dst: Option<Mac>,
        src: Option<Mac>,
        len: u16,
        head: String,
    },
    Learn {
        ifindex: u32,
        port: Option<String>,
        mac: Mac,
        ip: IpAddr,
    },
    Announce {
        ifindex: u32,
        port: Option<String>,
        outside: Mac,
        ips: Vec<IpAddr>,
    },
    /// Drops the data plane counted but could not show (the rate limit), since the last one.
    Suppressed { drops: u64 },
}

impl Record {
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Record::Drop { .. } => Some(Kind::Drop),
            Record::Learn { .. } => Some(Kind::Learn),
            Record::Announce { .. } => Some(Kind::Announce),
            Record::Suppressed { .. } => None,
        }
    }

    /// The line `mat monitor` prints.
    pub fn line(&self) -> String {
        let port = |p: &Option<String>, i: u32| p.clone().unwrap_or_else(|| format!("#{i}"));
        let mac = |m: &Option<Mac>| m.map_or_else(|| "-".to_owned(), |m| m.to_string());
        match self {
            Record::Drop {
                hook,
                reason,
                ifindex,
                port: p,
                dst,
                src,
                len,
                head,
            } => format!(
                "drop {reason} on {} ({hook}): {} -> {}, {len} bytes: {head}",
                port(p, *ifindex),
                mac(src),
                mac(dst)
            ),
            Record::Learn {
                ifindex,
                port: p,
                mac,
                ip,
            } => format!("learn {mac} on {} claims {ip}", port(p, *ifindex)),
            Record::Announce {
                ifindex,
                port: p,
                outside,
                ips,
            } => {
                let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
                format!(
                    "announce {outside} for {} ({})",
                    port(p, *ifindex),
                    ips.join(", ")
                )
            }
            Record::Suppressed { drops } => {
                format!("({drops} more drops counted, not shown: rate limit)")
            }
        }
    }
}

/// The name of the interface `ifindex` in the daemon's namespace, if it still exists.
fn port_name(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Drop records a second the daemon makes at most (each names its port: a system call).
pub const DROPS_PER_SECOND: u32 = 1000;

/// The daemon's allowance of drop records for the current second.
pub struct Budget {
    since: Instant,
    used: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            used: 0,
        }
    }
}

impl Budget {
    /// Whether one more record fits in this second.
    pub fn take(&mut self) -> bool {
        if self.since.elapsed() >= Duration::from_secs(1) {
            *self = Self::default();
        }
        self.used += 1;
        self.used <= DROPS_PER_SECOND
    }
}

/// Whether a ring record is a dropped frame's.
pub fn is_drop(item: &[u8]) -> bool {
    item.get(..4).is_some_and(|k| {
        u32::from_ne_bytes(k.try_into().expect("4 bytes")) == EventKind::Dropped as u32
    })
}

/// A dropped frame's ring record, or `None` if `item` is not one.
pub fn drop_record(item: &[u8]) -> Option<Record> {
    if item.len() < size_of::<DropEvent>() {
        return None;
    }
    // SAFETY: the item holds a DropEvent, a plain repr(C) type; unaligned read.
    let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) };
    if e.kind != EventKind::Dropped as u32 {
        return None;
    }
    let head = &e.head[..usize::from(e.captured).min(e.head.len())];
    let mac_at = |at: usize| {
        head.get(at..at + 6)
            .map(|b| Mac(b.try_into().expect("6 bytes")))
    };
    Some(Record::Drop {
        hook: HOOKS
            .get(usize::from(e.hook))
            .map_or_else(|| e.hook.to_string(), |h| h.name().to_owned()),
        reason: OUTCOMES
            .get(usize::from(e.outcome))
            .map_or_else(|| e.outcome.to_string(), |o| o.name().to_owned()),
        ifindex: e.ifindex,
        port: port_name(e.ifindex),
        dst: mac_at(0),
        src: mac_at(6),
        len: e.len,
        head: head.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

pub fn learn_record(ifindex: u32, mac: Mac, ip: IpAddr) -> Record {
    Record::Learn {
        ifindex,
        port: port_name(ifindex),
        mac,
        ip,
    }
}

pub fn announce_record(a: &crate::announce::Announce) -> Record {
    Record::Announce {
        ifindex: a.ifindex,
        port: port_name(a.ifindex),
        outside: a.outside,
        ips: a.ips.clone(),
    }
}

/// Records a watcher may fall behind by before it misses some (and is told how many).
const QUEUE: usize = 1024;

/// The daemon's side: records fanned out to every watcher.
pub struct Hub {
    tx: broadcast::Sender<Record>,
    watchers: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(QUEUE).0,
            watchers: AtomicUsize::new(0),
        }
    }
}

impl Hub {
    /// Whether anyone watches: records are only made then.
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    pub fn publish(&self, r: Record) {
        // No receiver is not an error: the last watcher just left.
        let _ = self.tx.send(r);
    }

    /// A new watcher; returns its queue and whether it is the first (the data plane's flag
    /// goes on).
    pub fn join(&self) -> (broadcast::Receiver<Record>, bool) {
        let rx = self.tx.subscribe();
        (rx, self.watchers.fetch_add(1, Ordering::SeqCst) == 0)
    }

    /// A watcher left; returns whether it was the last (the flag goes off).
    pub fn leave(&self) -> bool {
        self.watchers.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

#[derive(Args, Clone, Debug)]
pub struct MonitorArgs {
    /// Only these kinds (repeatable; default: all).
    #[arg(long = "type", value_enum)]
    pub types: Vec<Kind>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `mat monitor`: prints records until the daemon goes away or the user stops it.
pub fn run(args: &MonitorArgs, socket: &Path, timeout: Duration) -> ExitCode {
    let req = Request::Monitor {
        types: args.types.clone(),
    };
    let client = match Client::connect(socket, timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mat: {e}");
            return ExitCode::from(1);
        }
    };
    let stream = match client.stream(&req) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mat: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for line in stream.lines() {
        let Ok(line) = line else { break };
        let text = if args.json {
            line
        } else {
            match serde_json::from_str::<Record>(&line) {
                Ok(r) => r.line(),
                Err(_) => line,
            }
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}
