//! What libvirt's device events need beyond `attach_vm` (see `crate::libvirt_events`).

use super::{Detach, Host};
use crate::{mac::Mac, refusal::Refusal, views::BindingView};

impl Host {
    /// Releases into hold-down the bindings of `vm` whose inside MAC is not in `present` (the
    /// guest MACs the running domain still has); returns what it released.
    pub fn release_absent(
        &mut self,
        vm: &str,
        present: &[Mac],
    ) -> Result<Vec<BindingView>, Refusal> {
        let gone: Vec<Mac> = self
            .state
            .bindings
            .iter()
            .filter(|b| !vm.is_empty() && b.vm == vm && !present.contains(&b.inside))
            .map(|b| b.inside)
            .collect();
        let mut released = Vec::new();
        for inside in gone {
            let sel = Detach {
                port: None,
                inside: Some(inside),
                vm: Some(vm.to_owned()),
            };
            released.extend(self.detach(&sel)?.released);
        }
        Ok(released)
    }
}
