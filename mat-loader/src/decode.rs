//! `mat decode MAC`: whose is an outside MAC seen on a switch? The address plan says which
//! rack, host and VM slot it is (`pool | rack | host | vm`); on the host that owns it, the daemon
//! says which VM holds it, or since when and until when it is held down. Without a daemon the
//! CLI decodes from the configuration alone.

use std::{path::Path, process::ExitCode, time::Duration, time::UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{
    cli,
    client::{self, Client},
    mac::Mac,
    plan::Plan,
    proto::{Reply, Request},
    refusal::{Code, Refusal},
    views::BindingView,
};

/// What is known of the MAC on the host that decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Bound to a VM on this host (see `binding`).
    Bound,
    /// Released on this host and in its hold-down (see `held`).
    HeldDown,
    /// This host's, and neither bound nor held down.
    Free,
    /// Another rack's or host's slot: ask the daemon there.
    OtherHost,
    /// This host's slot, decoded from the configuration: no daemon answered.
    Unchecked,
}

/// A MAC in its hold-down, with when it was released and when it may be given out again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDown {
    pub vm: String,
    pub inside: Mac,
    pub released_ms: u64,
    pub released_rfc3339: String,
    pub until_ms: u64,
    pub until_rfc3339: String,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeView {
    pub mac: Mac,
    pub pool: String,
    pub rack: u64,
    pub host: u64,
    /// The VM bits: the MAC's place in its host's pool.
    pub vm_slot: u64,
    pub rack_route: String,
    pub host_pool: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldDown>,
}

fn bits(v: u64, shift: u8, width: u8) -> u64 {
    (v >> shift) & ((1u64 << width) - 1)
}

/// Where `mac` sits in `plan`'s pool; `status` is `other_host` or `unchecked` (this host's, to be
/// looked up). Refused `not_in_pool` outside the pool.
pub fn slot(plan: &Plan, mac: Mac) -> Result<DecodeView, Refusal> {
    if !plan.pool.contains(mac) {
        return Err(Refusal::new(
            Code::NotInPool,
            format!("{mac} is not in the outside pool {}", plan.pool),
        ));
    }
    let (v, vm_bits) = (mac.to_u64(), plan.vm_bits());
    let rack = bits(v, vm_bits + plan.host_bits, plan.rack_bits);
    let host = bits(v, vm_bits, plan.host_bits);
    let other = Plan {
        rack,
        host,
        ..plan.clone()
    };
    Ok(DecodeView {
        mac,
        pool: plan.pool.to_string(),
        rack,
        host,
        vm_slot: bits(v, 0, vm_bits),
        rack_route: other.rack_route().to_string(),
        host_pool: other.host_pool().to_string(),
        status: if (rack, host) == (plan.rack, plan.host) {
            Status::Unchecked
        } else {
            Status::OtherHost
        },
        binding: None,
        held: None,
    })
}

/// Milliseconds since the epoch as RFC 3339.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `mat decode MAC`: asks the daemon; when none answers at `socket`, decodes from the
/// configuration (`config`, or the default file).
pub fn run(
    socket: &Path,
    timeout: Duration,
    mac: Mac,
    config: Option<&Path>,
    json: bool,
) -> ExitCode {
    let req = Request::Decode {
        mac: mac.to_string(),
    };
    let reply = match Client::connect(socket, timeout).and_then(|mut c| c.reply(&req)) {
        Ok(r) => r,
        Err(client::Error::Connect { .. }) => {
            let plan = match crate::config::plan(config) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!(
                        "mat: no daemon at {} and no plan to decode with: {e:#}",
                        socket.display()
                    );
                    return ExitCode::from(1);
                }
            };
            match slot(&plan, mac) {
                Ok(v) => Reply::ok(&v),
                Err(r) => Reply::refused(r),
            }
        }
        Err(e) => {
            eprintln!("mat: {e}");
            return ExitCode::from(1);
        }
    };
    cli::print(reply, json, text)
}

pub fn text(d: &DecodeView) -> String {
    let mut out = format!(
        "{}  pool {}  rack {}  host {}  vm slot {}\nrack route  {}\nhost pool   {}\n",
        d.mac, d.pool, d.rack, d.host, d.vm_slot, d.rack_route, d.host_pool
    );
    let vm = |vm: &str| {
        if vm.is_empty() {
            "-".to_owned()
        } else {
            vm.to_owned()
        }
    };
    out.push_str(&match (d.status, &d.binding, &d.held) {
        (Status::Bound, Some(b), _) => {
            let ips: Vec<String> = b
                .ips
                .iter()
                .chain(&b.learned)
                .map(ToString::to_string)
                .collect();
            format!(
                "bound       VM {}, port {} (ifindex {}), inside {}, since {}{}\n",
                vm(&b.vm),
                b.port,
                b.ifindex,
                b.inside,
                b.since_rfc3339,
                if ips.is_empty() {
                    String::new()
                } else {
                    format!(", addresses {}", ips.join(","))
                }
            )
        }
        (Status::HeldDown, _, Some(h)) => format!(
            "held down   since {} (VM {}, inside {}), until {} ({:.1} s more)\n",
            h.released_rfc3339,
            vm(&h.vm),
            h.inside,
            h.until_rfc3339,
            h.remaining_ms as f64 / 1000.0
        ),
        (Status::Free, ..) => "free        this host's, neither bound nor held down\n".to_owned(),
        (Status::OtherHost, ..) => format!(
            "other host  rack {} host {}: ask the daemon there\n",
            d.rack, d.host
        ),
        _ => "this host   no daemon answered: bound or free is not known\n".to_owned(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        let d = slot(&Plan::example(), "02:00:5e:01:03:2a".parse().unwrap()).unwrap();
        assert_eq!(
            (d.rack, d.host, d.vm_slot, d.status),
            (1, 3, 42, Status::Unchecked)
        );
        assert_eq!(d.host_pool, "02:00:5e:01:03:00/40");
        let d = slot(&Plan::example(), "02:00:5e:07:09:ff".parse().unwrap()).unwrap();
        assert_eq!(
            (d.rack, d.host, d.vm_slot, d.status),
            (7, 9, 255, Status::OtherHost)
        );
        assert_eq!(d.rack_route, "02:00:5e:07:00:00/32");
        let r = slot(&Plan::example(), "52:54:00:00:00:01".parse().unwrap()).unwrap_err();
        assert_eq!(r.code, Code::NotInPool);
        // Widths that do not fall on octets.
        let p = Plan::new(
            "0a:00:00:00:00:00/20".parse().unwrap(),
            5,
            7,
            17,
            100,
            false,
            vec![],
        )
        .unwrap();
        let mac = p.mac_at(12_345);
        let d = slot(&p, mac).unwrap();
        assert_eq!((d.rack, d.host, d.vm_slot), (17, 100, 12_345));
    }
}
