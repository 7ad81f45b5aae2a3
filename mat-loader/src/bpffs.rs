//! The BPF filesystem under the pin directory. `ip netns exec` starts a new mount namespace with
//! a fresh /sys and no bpffs in it, so a process there must mount one.

use std::{io, path::Path};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::Error;

const BPF_ROOT: &str = "/sys/fs/bpf";

/// Creates `dir` on a BPF filesystem, mounting one at /sys/fs/bpf (for a directory below it) or
/// at `dir` itself when none is there.
pub fn ensure(dir: &Path) -> Result<(), Error> {
    let wrap = |source: io::Error| Error::Bpffs {
        path: dir.to_owned(),
        source,
    };
    if !on_bpffs(dir) {
        let at = if dir.starts_with(BPF_ROOT) && Path::new(BPF_ROOT).is_dir() {
            Path::new(BPF_ROOT)
        } else {
            std::fs::create_dir_all(dir).map_err(wrap)?;
            dir
        };
        mount(Some("bpf"), at, Some("bpf"), MsFlags::empty(), None::<&str>)
            .map_err(|e| wrap(e.into()))?;
    }
    std::fs::create_dir_all(dir).map_err(wrap)
}

/// Whether the deepest existing ancestor of `dir` is on a BPF filesystem.
pub(crate) fn on_bpffs(dir: &Path) -> bool {
    dir.ancestors()
        .find(|p| p.exists())
        .and_then(|p| statfs(p).ok())
        .is_some_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}
