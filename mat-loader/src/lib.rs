//! MAT's loader: loads the kernel programs, attaches them to ports and uplinks, and manages the
//! pinned maps and links that keep the data plane running while no process holds it.

mod bpffs;
mod dataplane;
mod error;
mod program;
pub mod test_run;

pub use dataplane::{Counters, Dataplane};
pub use error::Error;
pub use mat_common as common;
pub use program::{Mode, Program};

/// Where the data plane pins its maps and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mat";

/// The kernel object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mat"));
