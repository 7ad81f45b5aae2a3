//! A data plane pinned under a directory of its own, removed (programs detached, maps unpinned)
//! when the guard drops, even if the test fails.

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use mat_loader::Dataplane;

pub struct TestDataplane(Option<Dataplane>);

/// A name unique to this process and call, for pins, namespaces and links.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{:x}{}",
        std::process::id() & 0xffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDataplane {
    pub fn new() -> Self {
        let dir = PathBuf::from("/sys/fs/bpf").join(unique("mat-test-"));
        let dp = Dataplane::open(&dir)
            .unwrap_or_else(|e| panic!("loading the data plane under {}: {e}", dir.display()));
        Self(Some(dp))
    }
}

impl Default for TestDataplane {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for TestDataplane {
    type Target = Dataplane;
    fn deref(&self) -> &Dataplane {
        self.0.as_ref().expect("present until drop")
    }
}

impl DerefMut for TestDataplane {
    fn deref_mut(&mut self) -> &mut Dataplane {
        self.0.as_mut().expect("present until drop")
    }
}

impl Drop for TestDataplane {
    fn drop(&mut self) {
        if let Some(dp) = self.0.take() {
            let dir = dp.pin_dir().to_owned();
            if let Err(e) = dp.remove() {
                eprintln!("cleaning up {}: {e}", dir.display());
            }
        }
    }
}
