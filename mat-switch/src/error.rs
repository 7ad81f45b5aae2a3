use std::path::PathBuf;

/// Why a switch operation was refused or failed. A refusal changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no interface named {0} in this network namespace")]
    UnknownInterface(String),
    #[error("{0} is not a port of this switch")]
    UnknownPort(String),
    #[error("{0} is given twice")]
    DuplicatePort(String),
    #[error("a switch has at most {max} ports, {given} given")]
    TooManyPorts { given: usize, max: u32 },
    #[error("invalid VLAN {0} (0 for untagged, or 1..=4094)")]
    InvalidVlan(u32),
    #[error("invalid VLAN list {0:?} (expected e.g. 0,10,20-29)")]
    InvalidVlanList(String),
    #[error("invalid switch name {0:?} (letters, digits, '-' and '_', at most 64)")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPrefix(#[from] mat_loader::mac::ParsePrefixError),
    #[error("route {prefix} in VLAN {vlan} already goes to {port}; delete it first")]
    RouteConflict {
        prefix: String,
        vlan: u16,
        port: String,
    },
    #[error("no route {prefix} in VLAN {vlan}")]
    NoRoute { prefix: String, vlan: u16 },
    #[error("the switch is full ({0} routes)")]
    RoutesFull(u32),
    #[error("a switch already exists at {0}")]
    Exists(PathBuf),
    #[error("no switch at {0}")]
    NotFound(PathBuf),
    #[error("{path} is not on a BPF filesystem (mount one at /sys/fs/bpf)")]
    NotBpffs { path: PathBuf },
    #[error("invalid routes file: {0}")]
    RoutesFile(String),
    #[error("invalid --via {0:?} (expected LABEL=PORT, e.g. \"rack 1=eth1\")")]
    InvalidVia(String),
    #[error(transparent)]
    Ebpf(#[from] aya::EbpfError),
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
    #[error(transparent)]
    Program(#[from] aya::programs::ProgramError),
    #[error(transparent)]
    Pin(#[from] aya::pin::PinError),
    #[error(transparent)]
    Link(#[from] aya::programs::links::LinkError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A stable code for scripts (`mat-switch: refused (CODE): ...`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownInterface(_) | Error::UnknownPort(_) => "unknown_port",
            Error::DuplicatePort(_) => "duplicate_port",
            Error::TooManyPorts { .. } => "too_many_ports",
            Error::InvalidVlan(_) | Error::InvalidVlanList(_) => "invalid_vlan",
            Error::InvalidName(_) => "invalid_name",
            Error::InvalidPrefix(_) => "invalid_prefix",
            Error::RouteConflict { .. } => "route_conflict",
            Error::NoRoute { .. } => "no_route",
            Error::RoutesFull(_) => "routes_full",
            Error::Exists(_) => "exists",
            Error::NotFound(_) => "not_found",
            Error::RoutesFile(_) | Error::InvalidVia(_) => "bad_request",
            Error::NotBpffs { .. } => "not_bpffs",
            Error::Ebpf(_)
            | Error::Map(_)
            | Error::Program(_)
            | Error::Pin(_)
            | Error::Link(_)
            | Error::Io(_) => "internal",
        }
    }

    /// Whether the input was refused (as opposed to a failure of the system).
    pub fn is_refusal(&self) -> bool {
        self.code() != "internal" && self.code() != "not_bpffs"
    }
}
