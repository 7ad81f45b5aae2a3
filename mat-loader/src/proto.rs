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
//! {"op":"release_port","port":"tap0"}          (take MAT's programs off an unbound port)
//! {"op":"doctor"}                               (the daemon's checks for `mat doctor`)
//! {"op":"decode","mac":"02:00:5e:01:03:00"}     (whose is this outside MAC?)
//! {"op":"monitor","types":["drop"]}             (a stream of records: `mat monitor`)
//! ```
//!
//! `attach` also takes `"force": true` for a port that is not a tap or a veth (see
//! [`crate::ports::VmPorts`]), and `"port_security": false` for a guest that sends from other
//! MACs (a nested bridge). `ips` holds IPv4 and IPv6 addresses.
//!
//! A reply is `{"ok": RESULT}` or `{"error": {"code": CODE, "message": TEXT}}`. Results:
//!
//! - attach: a [`BindingView`](crate::views::BindingView) plus `"source"`: `fresh`, `returned` (the VM port's own MAC from
//!   its last attachment) or `reused` (another VM's, after its hold-down).
//! - detach: `{"released": [BindingView...]}`.
//! - attach_vm: `{"attached": [AttachView...], "kept": [BindingView...]}` (see
//!   [`Request::AttachVm`]).
//! - list: `{"bindings": [BindingView...]}`.
//! - release_port: `{"port": NAME}`.
//! - doctor: [`DoctorView`](crate::doctor::DoctorView): the pin directory and the findings.
//! - decode: [`DecodeView`](crate::decode::DecodeView); a MAC outside the pool is refused
//!   `not_in_pool`, one that is not a MAC `invalid_mac`.
//! - stats: [`StatsView`](crate::views::StatsView); plan: [`PlanView`](crate::views::PlanView); routes: `{"routes": [Route...]}`.
//!
//! The result types are in [`crate::views`].
//!
//! Error codes ([`Code`]): `bad_request`, `line_too_long`, `not_root`, `pool_exhausted`,
//! `unknown_port`, `not_vm_port` (a bridge, a managed bridge's uplink, or not a tap or veth),
//! `invalid_mac`, `invalid_ip` (not a unicast address), `mac_in_use` (the inside MAC is bound on
//! another port), `port_bound` (the port already has a binding), `not_bound`, `not_in_pool` (a
//! MAC to decode outside the outside pool), `busy` (too many
//! connections), `internal`. A refused request changes nothing. An acknowledged change is on
//! disk.
//!
//! Duplicate keys are refused. A connection idle for [`IDLE`] is closed.
//!
//! Field names and codes are stable; new fields may be added to results (clients ignore what
//! they do not know), never to requests without a new `op` or an optional field.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    host::{Attach, Detach},
    mac::Mac,
    refusal::{Code, Refusal},
};

/// Longest request line, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// A connection that sends no complete request for this long is closed.
pub const IDLE: Duration = Duration::from_mins(1);

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
        ips: Vec<IpAddr>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// `false`: this port may claim other MACs (a guest that bridges); default: the
        /// daemon's setting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port_security: Option<bool>,
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
    ReleasePort {
        port: String,
    },
    Doctor {},
    /// Which rack, host and VM slot an outside MAC belongs to and, on this host, who holds it.
    Decode {
        mac: String,
    },
    /// A stream: `{"ok":{}}`, then one [`crate::monitor::Record`] per line (of these kinds; none
    /// named: all) until the client closes the connection.
    Monitor {
        #[serde(default)]
        types: Vec<crate::monitor::Kind>,
    },
}

impl Request {
    /// The operation's name on the wire (`op`).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Attach { .. } => "attach",
            Request::Detach { .. } => "detach",
            Request::AttachVm { .. } => "attach_vm",
            Request::List {} => "list",
            Request::Stats {} => "stats",
            Request::Plan {} => "plan",
            Request::Routes {} => "routes",
            Request::ReleasePort { .. } => "release_port",
            Request::Doctor {} => "doctor",
            Request::Decode { .. } => "decode",
            Request::Monitor { .. } => "monitor",
        }
    }
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
    pub ips: Vec<IpAddr>,
}

/// Parses one request line: a JSON object with a known `op` and only its fields, each once.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    // serde would also read a tagged enum from an array; a request is an object.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("a request is a JSON object".into());
    }
    // Straight into the typed request, not through a map: serde refuses duplicate keys.
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

/// A MAC as a request spells it.
pub fn mac(s: &str) -> Result<Mac, Refusal> {
    s.parse()
        .map_err(|e: crate::mac::ParseMacError| Refusal::new(Code::InvalidMac, e.to_string()))
}

impl VmPort {
    /// The typed attach of one port of an `attach_vm`.
    pub fn to_attach(&self, vm: &str) -> Result<Attach, Refusal> {
        Ok(Attach {
            port: self.port.clone(),
            inside: mac(&self.mac)?,
            vm: vm.to_owned(),
            ips: self.ips.clone(),
            force: false,
            port_security: None,
        })
    }
}

/// The typed detach of a `detach` request.
pub fn detach(
    port: Option<String>,
    mac_: Option<&str>,
    vm: Option<String>,
) -> Result<Detach, Refusal> {
    Ok(Detach {
        port,
        inside: mac_.map(mac).transpose()?,
        vm,
    })
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
                ips: vec![IpAddr::from([192, 0, 2, 1])],
                force: false,
                port_security: None,
            }
        );
        assert_eq!(parse(r#"{"op":"list"}"#).unwrap(), Request::List {});
        for r in [
            Request::List {},
            Request::Decode { mac: "x".into() },
            Request::ReleasePort { port: "p".into() },
        ] {
            let wire = serde_json::to_value(&r).unwrap();
            assert_eq!(wire["op"], r.op());
        }
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
        assert_eq!(ports[0].ips, [IpAddr::from([192, 0, 2, 1])]);
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
            r#"{"op":"attach","op":"list"}"#,
            r#"{"op":"list","op":"list"}"#,
            r#"{"op":"attach","port":"a","port":"b","mac":"52:54:00:00:00:01"}"#,
            r#"{"op":"attach_vm","vm":"x","ports":[{"port":"a","port":"b","mac":"52:54:00:00:00:01"}]}"#,
            r#"{"op":"detach","vm":"x","vm":"y"}"#,
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
        let ok = Reply::ok(&crate::views::RoutesView { routes: vec![] });
        assert_eq!(ok.line(), "{\"ok\":{\"routes\":[]}}\n");
    }
}
