//! The pinned data plane's layout version, and the migration from the layouts before it.
//!
//! Each layout ([`LAYOUT`]) is pinned in a directory of its own, `<pin dir>/v<N>/` (its maps, and
//! `links/` with one pinned link per attached program). Layout 1, of the first release, had no
//! version: its maps and `links/` sat directly in the pin directory. Layout 2 put the same maps
//! under `v2/`. Layout 3 keeps port bindings in a port table (one slot per port) instead of the
//! hash maps, adds ND and DHCP counters and the settings map, and grows the binding value.
//!
//! A loader that finds an older layout migrates it without stopping translation: the new maps
//! are created, the old entries converted into them, every pinned link switched to the new
//! program atomically (`BPF_LINK_UPDATE`), and only then the old pins removed. A layout it does
//! not know (a newer release's, say) is refused before anything is touched.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use mat_common::{
    counters::{ENTRIES, OUTCOMES},
    maps::{self as names, Binding, BindingKey, LAYOUT, PortSlot, UPLINK_IFINDEX},
    pool::Pools,
};
use tracing::info;

use crate::{Dataplane, Error};

/// The binding value of layouts 1 and 2.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct BindingV2 {
    mac: [u8; 6],
    flags: u16,
    ipv4: [u8; 4],
}

// SAFETY: plain repr(C) data with no implicit padding.
unsafe impl aya::Pod for BindingV2 {}

/// Outcomes per hook in the counter map of layouts 1 and 2.
const OUTCOMES_V2: u32 = 6;

/// An older layout found in a pin directory: its version and the directory of its pins.
#[derive(Debug, PartialEq, Eq)]
pub struct Older {
    pub version: u32,
    pub dir: PathBuf,
}

/// The directory of this layout's pins.
pub fn dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{LAYOUT}"))
}

/// The older layouts `pin_dir` holds (oldest first), beside this one maybe (after a crash
/// mid-migration); refuses a layout this loader does not know.
pub fn detect(pin_dir: &Path) -> Result<Vec<Older>, Error> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(Vec::new());
    };
    let mut older = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name == names::FROM_VM {
            older.push(Older {
                version: 1,
                dir: pin_dir.to_owned(),
            });
        } else if let Some(v) = name.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) {
            match v {
                2 => older.push(Older {
                    version: 2,
                    dir: pin_dir.join(&*name),
                }),
                LAYOUT => {}
                _ => {
                    return Err(Error::Layout {
                        pin_dir: pin_dir.to_owned(),
                        found: v,
                    });
                }
            }
        }
    }
    older.sort_by_key(|o| o.version);
    Ok(older)
}

/// Moves an older layout's entries and links onto `dp` (loaded with this layout), then removes
/// the older pins. Safe to run again after a crash at any point.
pub fn migrate(old: &Older, dp: &mut Dataplane) -> Result<(), Error> {
    let map = |name: &str| MapData::from_pin(old.dir.join(name));
    // Entries first, so that every program sees them before it runs. Port bindings go into the
    // port table, uplink ones into the hash maps.
    let from: HashMap<MapData, BindingKey, BindingV2> =
        HashMap::try_from(Map::HashMap(map(names::FROM_VM)?))?;
    let mut copied = 0;
    for entry in from.iter() {
        let (k, v) = entry?;
        let binding = Binding {
            ipv4: v.ipv4,
            ..Binding::new(v.mac, v.flags)
        };
        if k.ifindex == UPLINK_IFINDEX {
            let mut to: HashMap<&mut MapData, BindingKey, Binding> =
                HashMap::try_from(dp.map_mut(names::FROM_VM))?;
            to.insert(k, binding, 0)?;
        } else {
            dp.set_port(PortSlot {
                ifindex: k.ifindex,
                inside: k.mac,
                _pad: [0; 2],
                binding,
            })?;
        }
        copied += 1;
    }
    let reverse: HashMap<MapData, BindingKey, BindingV2> =
        HashMap::try_from(Map::HashMap(map(names::TO_VM)?))?;
    for entry in reverse.iter() {
        let (k, v) = entry?;
        if k.ifindex == UPLINK_IFINDEX {
            let mut to: HashMap<&mut MapData, BindingKey, Binding> =
                HashMap::try_from(dp.map_mut(names::TO_VM))?;
            to.insert(k, Binding::new(v.mac, v.flags), 0)?;
        }
    }
    info!(
        version = old.version,
        copied, "bindings copied from the older layout"
    );
    let pools: Array<MapData, Pools> = Array::try_from(Map::Array(map(names::POOLS)?))?;
    Array::<&mut MapData, Pools>::try_from(dp.map_mut(names::POOLS))?.set(
        0,
        pools.get(&0, 0)?,
        0,
    )?;
    // Counters: the same hooks, with the outcomes this layout added after the old ones.
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(map(names::COUNTERS)?))?;
    let mut new_counters: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(dp.map_mut(names::COUNTERS))?;
    let hooks = ENTRIES / OUTCOMES.len() as u32;
    for hook in 0..hooks {
        for outcome in 0..OUTCOMES_V2 {
            let old_counts = counters.get(&(hook * OUTCOMES_V2 + outcome), 0)?;
            let i = hook * OUTCOMES.len() as u32 + outcome;
            let now = new_counters.get(&i, 0)?;
            let sum: Vec<u64> = old_counts
                .iter()
                .zip(now.iter())
                .map(|(a, b)| a + b)
                .collect();
            new_counters.set(i, PerCpuValues::try_from(sum)?, 0)?;
        }
    }
    // Then every link, switched to this layout's program in one step each.
    let old_links = old.dir.join("links");
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
                dp.relink(&path, program)?.pin(&new_pin)?;
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
    // The older maps go last: the old programs are detached, nothing uses them any more.
    for name in [
        names::FROM_VM,
        names::TO_VM,
        names::POOLS,
        names::COUNTERS,
        names::EVENTS,
    ] {
        match std::fs::remove_file(old.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    if old.version > 1 {
        std::fs::remove_dir(&old.dir)?;
    }
    info!(dir = %old.dir.display(), "data plane migrated from layout {} to {LAYOUT}", old.version);
    Ok(())
}
