//! MAT's user space: the loader (load, attach and pin the kernel programs, fill their maps) and
//! the control plane built on it (the host's address plan and allocator, the durable store, the
//! daemon and its protocol, the CLI and the libvirt hook). The `mat` binary is a thin `main` over
//! this library.

mod bpffs;
mod dataplane;
mod error;
mod layout;
pub mod linkinfo;
mod mmap;
mod program;
mod ringbuf;
mod systemd;
pub mod test_run;

pub mod alloc;
pub mod announce;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod doctor;
pub mod duplicates;
pub mod generate;
pub mod host;
pub mod libvirt;
#[cfg(feature = "libvirt-events")]
pub mod libvirt_events;
pub mod libvirt_xml;
pub mod mac;
pub mod metrics;
pub mod monitor;
pub mod paths;
pub mod plan;
pub mod ports;
pub mod proto;
pub mod refusal;
pub mod state;
pub mod store;
pub mod uplink;
pub mod views;

pub use dataplane::{Counters, Dataplane, PinLock};
pub use error::Error;
pub use mat_common as common;
pub use program::{Mode, Program};
pub use ringbuf::EventRing;

/// Where the data plane pins its maps and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = paths::PIN_DIR;

/// This release's version (the package's, and `mat_build_info`'s).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the CLI and the daemon meet unless told otherwise.
pub const DEFAULT_SOCKET: &str = paths::SOCKET;

/// The kernel object, built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mat"));
