use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no interface named {0:?}")]
    NoInterface(String),
    #[error("{ifname} already runs {attached} in another mode; detach it first")]
    ModeConflict {
        ifname: String,
        attached: &'static str,
    },
    #[error("at most {max} outside pools, got {got}")]
    TooManyPools { max: usize, got: usize },
    #[error(
        "pin directory {} holds data-plane layout {found}; this mat knows layout {}: run the \
         release that made it (or remove the pins, which stops translation)",
        pin_dir.display(), mat_common::maps::LAYOUT
    )]
    Layout { pin_dir: PathBuf, found: u32 },
    #[error("pin directory {} is in use by another mat daemon", .0.display())]
    PinsInUse(PathBuf),
    #[error("BPF filesystem at {path}: {source}")]
    Bpffs { path: PathBuf, source: io::Error },
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("pinning: {0}")]
    Pin(#[from] aya::pin::PinError),
    #[error("BPF link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error(transparent)]
    Io(#[from] io::Error),
}
