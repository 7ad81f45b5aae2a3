//! The pinned data plane's layout version, and the migration from the layout before it.
//!
//! Each layout ([`LAYOUT`]) is pinned in a directory of its own, `<pin dir>/v<N>/` (its maps, and
//! `links/` with one pinned link per attached program). Layout 1, of the first release, had no
//! version: its maps and `links/` sat directly in the pin directory. A loader that finds layout 1
//! migrates it without stopping translation: the new maps are created, the old entries copied
//! into them, every pinned link switched to the new program atomically (`BPF_LINK_UPDATE`), and
//! only then the old pins removed. A layout it does not know (a newer release's, say) is refused
//! before anything is touched.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, Xdp,
    },
};
use mat_common::{
    counters::ENTRIES,
    maps::{self as names, Binding, BindingKey, LAYOUT},
    pool::Pools,
};
use tracing::info;

use crate::{program::Hookpoint, Dataplane, Error, Program};

/// What a pin directory holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing yet, or this layout only.
    Current,
    /// Layout 1's pins (maybe beside a half-made current layout, after a crash mid-migration).
    V1,
}

/// The directory of this layout's pins.
pub fn dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{LAYOUT}"))
}

/// Reads which layouts `pin_dir` holds; refuses one this loader does not know.
pub fn detect(pin_dir: &Path) -> Result<Found, Error> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(Found::Current);
    };
    let mut found = Found::Current;
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name == names::FROM_VM {
            found = Found::V1;
        } else if let Some(v) = name.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) {
            if v != LAYOUT {
                return Err(Error::Layout {
                    pin_dir: pin_dir.to_owned(),
                    found: v,
                });
            }
        }
    }
    Ok(found)
}

/// Moves layout 1's entries and links under `pin_dir` onto `dp` (loaded with this layout), then
/// removes layout 1's pins. Safe to run again after a crash at any point.
pub fn migrate_v1(pin_dir: &Path, dp: &mut Dataplane) -> Result<(), Error> {
    let old = |name: &str| MapData::from_pin(pin_dir.join(name));
    // Entries first, so that every program sees them before it runs.
    for name in [names::FROM_VM, names::TO_VM] {
        let from: HashMap<MapData, BindingKey, Binding> =
            HashMap::try_from(Map::HashMap(old(name)?))?;
        let mut to: HashMap<&mut MapData, BindingKey, Binding> =
            HashMap::try_from(dp.map_mut(name))?;
        let mut copied = 0;
        for entry in from.iter() {
            let (k, v) = entry?;
            to.insert(k, v, 0)?;
            copied += 1;
        }
        info!(map = name, copied, "layout 1 entries copied");
    }
    let pools: Array<MapData, Pools> = Array::try_from(Map::Array(old(names::POOLS)?))?;
    Array::<&mut MapData, Pools>::try_from(dp.map_mut(names::POOLS))?.set(
        0,
        pools.get(&0, 0)?,
        0,
    )?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(old(names::COUNTERS)?))?;
    let mut new_counters: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(dp.map_mut(names::COUNTERS))?;
    for i in 0..ENTRIES {
        let old: Vec<u64> = counters.get(&i, 0)?.iter().copied().collect();
        let now = new_counters.get(&i, 0)?;
        let sum: Vec<u64> = old.iter().zip(now.iter()).map(|(a, b)| a + b).collect();
        new_counters.set(i, PerCpuValues::try_from(sum)?, 0)?;
    }
    // Then every link, switched to this layout's program in one step each.
    let old_links = pin_dir.join("links");
    if let Ok(entries) = std::fs::read_dir(&old_links) {
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Some((ifindex, program)) = crate::dataplane::parse_link_pin(&name) else {
                continue;
            };
            let new_pin = dp.link_pin(ifindex, program);
            if !new_pin.exists() {
                swap(dp, &path, program)?.pin(&new_pin)?;
            }
            std::fs::remove_file(&path)?;
            info!(
                ifindex,
                program = program.name(),
                "link moved to layout {LAYOUT}"
            );
        }
        std::fs::remove_dir(&old_links)?;
    }
    // Layout 1's maps go last: the old programs are detached, nothing uses them any more.
    for name in [
        names::FROM_VM,
        names::TO_VM,
        names::POOLS,
        names::COUNTERS,
        names::EVENTS,
    ] {
        match std::fs::remove_file(pin_dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    info!(pin_dir = %pin_dir.display(), "data plane migrated from layout 1 to {LAYOUT}");
    Ok(())
}

/// Points the pinned link at `pin` to this layout's `program` (BPF_LINK_UPDATE: the hook never
/// runs without a program), and returns it, to be pinned in its new place.
fn swap(dp: &mut Dataplane, pin: &Path, program: Program) -> Result<FdLink, Error> {
    // The old pin keeps the link attached until the new one exists.
    let link: FdLink = PinnedLink::from_pin(pin)?.into();
    dp.program(program)?;
    let prog = dp.program_mut(program);
    Ok(match program.hookpoint() {
        Hookpoint::Tc(_) => {
            let tc = <&mut SchedClassifier>::try_from(prog)?;
            let id = tc.attach_to_link(SchedClassifierLink::try_from(link)?)?;
            tc.take_link(id)?.try_into()?
        }
        Hookpoint::Xdp => {
            let xdp = <&mut Xdp>::try_from(prog)?;
            let id = xdp.attach_to_link(XdpLink::try_from(link)?)?;
            xdp.take_link(id)?.try_into()?
        }
    })
}
