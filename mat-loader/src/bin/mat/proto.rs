//! The control socket's protocol: JSON lines over a Unix stream socket.
//!
//! The daemon listens on a stream socket (default `/run/mat/mat.sock`, mode 0600) and serves only
//! peers whose uid is 0 (checked with `SO_PEERCRED`). A client writes one request per line, a
//! JSON object; the daemon answers each with one line, in order, on the same connection. A
//! connection may carry any number of requests. Empty lines are ignored.
//!
//! Requests name their operation in `op`; unknown operations, unknown fields, wrong types and
//! lines longer than [`MAX_LINE`] bytes are refused (`bad_request`, `line_too_long`; after the
//! latter the daemon closes the connection).
//!
//! ```text
//! {"op":"attach","port":"tap0","mac":"52:54:00:12:34:56","vm":"web1","ips":["192.0.2.10"]}
//! {"op":"detach","port":"tap0"}                 (optionally "mac": only that binding)
//! {"op":"detach","vm":"web1"}                   (every binding of the VM)
//! {"op":"attach_vm","vm":"UUID","ports":[{"port":"vnet0","mac":"52:54:00:12:34:56","ips":[]}]}
//! {"op":"list"}
//! {"op":"stats"}
//! {"op":"plan"}
//! {"op":"routes"}
//! ```
//!
//! A reply is `{"ok": RESULT}` or `{"error": {"code": CODE, "message": TEXT}}`. Results:
//!
//! - attach: a [`BindingView`] plus `"source"`: `fresh`, `returned` (the VM port's own MAC from
//!   its last attachment) or `reused` (another VM's, after its hold-down).
//! - detach: `{"released": [BindingView...]}`.
//! - attach_vm: `{"attached": [AttachView...], "kept": [BindingView...]}` (see
//!   [`Request::AttachVm`]).
//! - list: `{"bindings": [BindingView...]}`.
//! - stats: [`StatsView`]; plan: [`PlanView`]; routes: `{"routes": [Route...]}`.
//!
//! Error codes ([`Code`]): `bad_request`, `line_too_long`, `not_root`, `pool_exhausted`,
//! `unknown_port`, `invalid_mac`, `mac_in_use` (the inside MAC is bound on another port),
//! `port_bound` (the port already has a binding), `not_bound`, `internal`. A refused request
//! changes nothing. An acknowledged change is on disk.
//!
//! Field names and codes are stable; new fields may be added to results (clients ignore what
//! they do not know), never to requests without a new `op`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{alloc::Source, mac::Mac, plan::Route};

/// Longest request line, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Attach {
        port: String,
        /// The VM's (inside) MAC; checked by the daemon so that a bad one is `invalid_mac`.
        mac: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ips: Vec<Ipv4Addr>,
    },
    Detach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<String>,
    },
    /// Binds a VM's ports at once, keyed by (VM, inside MAC) rather than by port: what the
    /// libvirt hook sends at `start` and `reconnect`, with the domain UUID as the VM. A port
    /// already bound to this VM and MAC is kept as it is (so a resync changes nothing); the VM's
    /// MAC bound on another port (its tap changed) is released there first, so that it gets its
    /// outside MAC back. New bindings are announced when the data plane sees the VM's first
    /// frame (an incoming migration's VM still runs on its source when the hook fires), not at
    /// once. All or nothing: a refused port undoes what the request bound.
    AttachVm {
        vm: String,
        ports: Vec<VmPort>,
    },
    // Empty struct variants rather than unit ones, so that unknown fields are refused here too.
    List {},
    Stats {},
    Plan {},
    Routes {},
}

/// One port of an [`Request::AttachVm`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPort {
    pub port: String,
    /// The VM's (inside) MAC on this port.
    pub mac: String,
    /// Addresses to announce once the VM runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Ipv4Addr>,
}

/// Parses one request line: a JSON object with a known `op` and only its fields.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("a request is a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(ErrorBody),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: Code,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    BadRequest,
    LineTooLong,
    NotRoot,
    PoolExhausted,
    UnknownPort,
    InvalidMac,
    MacInUse,
    PortBound,
    NotBound,
    Internal,
}

/// A refusal: what the daemon answers instead of a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl Reply {
    pub fn ok<T: Serialize>(value: &T) -> Self {
        Reply::Ok(serde_json::to_value(value).expect("results serialize"))
    }

    pub fn refused(r: Refusal) -> Self {
        Reply::Error(ErrorBody {
            code: r.code,
            message: r.message,
        })
    }

    /// The reply as one line (with its newline).
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("replies serialize");
        s.push('\n');
        s
    }
}

/// A binding as the daemon shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingView {
    pub vm: String,
    pub port: String,
    pub ifindex: u32,
    pub inside: Mac,
    pub outside: Mac,
    /// Addresses the caller gave.
    pub ips: Vec<Ipv4Addr>,
    /// The address the data plane learned from the VM's own ARP, if any.
    pub learned: Vec<Ipv4Addr>,
    /// Seconds since the Unix epoch, and the same as RFC 3339.
    pub since: u64,
    pub since_rfc3339: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachView {
    #[serde(flatten)]
    pub binding: BindingView,
    pub source: Source,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachVmView {
    /// Bound by this request.
    pub attached: Vec<AttachView>,
    /// Already bound as asked: unchanged.
    pub kept: Vec<BindingView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachView {
    pub released: Vec<BindingView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListView {
    pub bindings: Vec<BindingView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoutesView {
    pub routes: Vec<Route>,
}

/// One data-plane counter: a program (and so a direction) and an outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub hook: String,
    /// `from_vm` or `to_vm`.
    pub direction: String,
    pub outcome: String,
    pub packets: u64,
}

/// A managed port: the programs on it and the kernel's packet counts for it (frames from the VM
/// are the port's rx, frames to it its tx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub port: String,
    pub ifindex: u32,
    pub programs: Vec<String>,
    pub bindings: usize,
    pub from_vm_packets: Option<u64>,
    pub to_vm_packets: Option<u64>,
    pub from_vm_dropped: Option<u64>,
    pub to_vm_dropped: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsView {
    /// Every counter of the data plane, zeros included, summed over CPUs.
    pub counters: Vec<CounterView>,
    pub ports: Vec<PortView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeldView {
    pub outside: Mac,
    pub vm: String,
    pub inside: Mac,
    pub released_ms: u64,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FreeView {
    pub count: u64,
    /// Never-used MACs, as `first-last` ranges.
    pub ranges: Vec<String>,
    /// Released MACs past their hold-down, next to be reused first.
    pub reusable: Vec<Mac>,
    /// What the next attach of a new VM port would get.
    pub next: Option<Mac>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoundView {
    pub outside: Mac,
    pub vm: String,
    pub port: String,
    pub inside: Mac,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanView {
    pub pool: String,
    pub host_pool: String,
    pub rack_route: String,
    pub rack: u64,
    pub host: u64,
    pub rack_bits: u8,
    pub host_bits: u8,
    pub vm_bits: u8,
    pub capacity: u64,
    pub hold_down_ms: u64,
    pub bound: Vec<BoundView>,
    pub held: Vec<HeldView>,
    pub free: FreeView,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, String> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn requests() {
        assert_eq!(
            parse(r#"{"op":"attach","port":"tap0","mac":"52:54:00:00:00:01","ips":["192.0.2.1"]}"#)
                .unwrap(),
            Request::Attach {
                port: "tap0".into(),
                mac: "52:54:00:00:00:01".into(),
                vm: None,
                ips: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }
        );
        assert_eq!(parse(r#"{"op":"list"}"#).unwrap(), Request::List {});
        let r = Request::Detach {
            port: None,
            mac: None,
            vm: Some("x".into()),
        };
        assert_eq!(parse(&serde_json::to_string(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn attach_vm() {
        let r = parse(
            r#"{"op":"attach_vm","vm":"1a1a2041-d18d-483e-a1b9-5f57ceffe17d","ports":[{"port":"vnet0","mac":"52:54:00:00:00:01","ips":["192.0.2.1"]},{"port":"vnet1","mac":"52:54:00:00:00:02"}]}"#,
        )
        .unwrap();
        let Request::AttachVm { vm, ports } = &r else {
            panic!("{r:?}");
        };
        assert_eq!(vm, "1a1a2041-d18d-483e-a1b9-5f57ceffe17d");
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].ips, [Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(ports[1].ips.is_empty());
        assert_eq!(parse(&serde_json::to_string(&r).unwrap()).unwrap(), r);
        for bad in [
            r#"{"op":"attach_vm","vm":"x"}"#,
            r#"{"op":"attach_vm","vm":"x","ports":[{"port":"vnet0"}]}"#,
            r#"{"op":"attach_vm","vm":"x","ports":[{"port":"vnet0","mac":"52:54:00:00:00:01","x":1}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strict() {
        for bad in [
            r#"{"op":"list","x":1}"#,
            r#"{"op":"attach","port":"tap0","mac":"52:54:00:00:00:01","colour":"red"}"#,
            r#"{"op":"attach","port":"tap0"}"#,
            r#"{"op":"attach","port":7,"mac":"52:54:00:00:00:01"}"#,
            r#"{"op":"attach","port":"t","mac":"52:54:00:00:00:01","ips":["300.0.0.1"]}"#,
            r#"{"op":"launch"}"#,
            r#"{"port":"tap0"}"#,
            r#"["list"]"#,
            r#"{"op":"list"} {"op":"list"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies() {
        let r = Reply::refused(Refusal::new(Code::PoolExhausted, "full"));
        assert_eq!(
            r.line(),
            "{\"error\":{\"code\":\"pool_exhausted\",\"message\":\"full\"}}\n"
        );
        let ok = Reply::ok(&RoutesView { routes: vec![] });
        assert_eq!(ok.line(), "{\"ok\":{\"routes\":[]}}\n");
    }
}
