//! What the daemon checks for `mat doctor`: that its programs run on every port it has, and that
//! the maps hold exactly the bindings of the store. What the CLI checks itself is in
//! [`crate::doctor`].

use super::Host;
use crate::{
    Mode,
    doctor::{Check, DoctorView, Finding},
    refusal::Refusal,
};

/// Pool use above this share of the capacity is reported.
pub const POOL_WARN_PERCENT: u64 = 90;

const RESTART: &str = "restart the daemon (systemctl restart mat): at start it attaches the \
                       programs of every port and corrects the maps to the store";

impl Host {
    pub fn doctor(&self) -> Result<DoctorView, Refusal> {
        let mut findings = Vec::new();
        for p in &self.state.ports {
            for program in Mode::Port.programs() {
                let runs = self
                    .dp
                    .runs(&p.name, p.ifindex, program)
                    .map_err(|e| Refusal::internal(format!("querying {}: {e}", p.name)))?;
                if runs != Some(false) {
                    continue;
                }
                // A link detached by hand stays pinned; a restart unpins it and attaches anew.
                let pin = self.dp.link_pin(p.ifindex, program);
                let finding = if pin.exists() {
                    Finding::new(
                        Check::ProgramMissing,
                        format!(
                            "{} does not run on the port: its pinned link is detached",
                            program.name()
                        ),
                        RESTART,
                    )
                    .path(&pin)
                } else {
                    Finding::new(
                        Check::ProgramMissing,
                        format!("{} does not run on the port", program.name()),
                        RESTART,
                    )
                };
                findings.push(finding.port(&p.name).program(program.name()));
            }
        }
        let diff = self
            .map_diff()
            .map_err(|e| Refusal::internal(format!("reading the maps: {e:#}")))?;
        for &(i, wrong) in &diff.missing {
            let b = &self.state.bindings[i];
            let (check, what) = if wrong {
                (Check::MapEntryWrong, "has other values than")
            } else {
                (Check::MapEntryMissing, "is missing for")
            };
            findings.push(
                Finding::new(
                    check,
                    format!(
                        "the map entry {what} the binding {} -> {}",
                        b.inside, b.outside
                    ),
                    RESTART,
                )
                .port(&b.port)
                .mac(b.inside),
            );
        }
        for &(ifindex, inside, outside) in &diff.extra {
            let port = crate::ports::ifname(ifindex);
            let port = match port {
                crate::ports::Lookup::Found(name) => name,
                _ => format!("ifindex {ifindex}"),
            };
            findings.push(
                Finding::new(
                    Check::MapEntryExtra,
                    format!(
                        "the maps translate {inside} -> {outside}, which the store does not bind"
                    ),
                    RESTART,
                )
                .port(&port)
                .mac(inside),
            );
        }
        let plan = self.plan();
        let used = (plan.bound.len() + plan.held.len()) as u64;
        if used * 100 > plan.capacity * POOL_WARN_PERCENT {
            findings.push(Finding::new(
                Check::PoolNearlyFull,
                format!(
                    "{used} of the host pool's {} MACs are bound or held down (above {POOL_WARN_PERCENT}%)",
                    plan.capacity
                ),
                "detach VMs that are gone, shorten hold_down, or give the host a larger pool (host_bits)",
            ));
        }
        Ok(DoctorView {
            pin_dir: self.dp.pin_dir().to_owned(),
            findings,
        })
    }
}
