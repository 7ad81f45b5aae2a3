//! The daemon's durable state: an SQLite database (`state.db`) in the state directory, in WAL
//! mode with `synchronous=FULL`, so that a committed transaction survives a crash or a power cut.
//! Every request's changes are one transaction whose cost does not depend on how many bindings
//! there are. The directory is locked (`flock`) against a second daemon.
//!
//! A `state.json` left by a release before the store is imported on first start, in the same
//! transaction that creates the tables, and then renamed `state.json.imported`.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    net::IpAddr,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::{
    alloc::{Allocator, Released},
    mac::Mac,
    plan::Plan,
    state::{Binding, Change, Port, State, VERSION},
};

const DB: &str = "state.db";
const LEGACY: &str = "state.json";
const IMPORTED: &str = "state.json.imported";
const LOCK: &str = "lock";
/// The database's own schema version (`PRAGMA user_version`): 2 added `port_security`.
const SCHEMA: i64 = 2;

const CREATE: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE ports (ifindex INTEGER PRIMARY KEY, name TEXT NOT NULL) STRICT;
    CREATE TABLE bindings (
        ifindex INTEGER PRIMARY KEY REFERENCES ports(ifindex),
        port TEXT NOT NULL,
        vm TEXT NOT NULL,
        inside TEXT NOT NULL UNIQUE,
        outside TEXT NOT NULL UNIQUE,
        ips TEXT NOT NULL,
        since INTEGER NOT NULL,
        port_security INTEGER NOT NULL DEFAULT 1
    ) STRICT;
    CREATE TABLE released (
        seq INTEGER PRIMARY KEY,
        outside TEXT NOT NULL UNIQUE,
        vm TEXT NOT NULL,
        inside TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    ) STRICT;
";

/// The state directory's database, locked against a second daemon for as long as this lives.
pub struct Store {
    dir: PathBuf,
    db: Connection,
    _lock: File,
}

impl Store {
    /// Creates `dir` (mode 0700) if needed, takes its lock (waiting up to `wait` for a daemon
    /// that is still exiting), opens the database and imports a legacy `state.json`.
    pub fn open(dir: &Path, wait: Duration) -> Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK))
            .with_context(|| format!("opening {}", dir.join(LOCK).display()))?;
        flock(&lock, wait).map_err(|e| {
            anyhow::anyhow!(
                "state directory {} is in use by another mat daemon ({e})",
                dir.display()
            )
        })?;
        let db = open_db(&dir.join(DB), OpenFlags::default())?;
        let mut store = Self {
            dir: dir.to_owned(),
            db,
            _lock: lock,
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the tables on first start, with the legacy `state.json` in them when there is one;
    /// brings an older schema up to date.
    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self.db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let legacy = self.dir.join(LEGACY);
        match version {
            0 => {
                let imported = match fs::read(&legacy) {
                    Ok(text) => Some(
                        serde_json::from_slice::<State>(&text)
                            .map_err(anyhow::Error::from)
                            .and_then(|s| s.check().map(|()| s))
                            .with_context(|| format!("importing {}", legacy.display()))?,
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading {}", legacy.display()));
                    }
                };
                let tx = self.db.transaction()?;
                tx.execute_batch(CREATE)?;
                if let Some(state) = &imported {
                    write_all(&tx, state)?;
                }
                tx.pragma_update(None, "user_version", SCHEMA)?;
                tx.commit().context("creating the state database")?;
                if let Some(s) = imported {
                    tracing::info!(
                        bindings = s.bindings.len(),
                        from = %legacy.display(),
                        "imported the state of an earlier release"
                    );
                }
            }
            1 => {
                let tx = self.db.transaction()?;
                tx.execute_batch(
                    "ALTER TABLE bindings ADD COLUMN port_security INTEGER NOT NULL DEFAULT 1",
                )?;
                tx.pragma_update(None, "user_version", SCHEMA)?;
                tx.commit().context("upgrading the state database")?;
            }
            SCHEMA => {}
            v => bail!(
                "{} has schema version {v}; this mat knows {SCHEMA}: run the release that wrote it",
                self.dir.join(DB).display()
            ),
        }
        // After a crash between the import's commit and the rename, the rename is all that is
        // left to do.
        if legacy.exists() {
            fs::rename(&legacy, self.dir.join(IMPORTED))
                .with_context(|| format!("renaming {}", legacy.display()))?;
            File::open(&self.dir).and_then(|d| d.sync_all())?;
        }
        Ok(())
    }

    /// The state on disk, if a daemon ever started here.
    pub fn load(&self) -> Result<Option<State>> {
        read_state(&self.db).with_context(|| format!("reading {}", self.dir.join(DB).display()))
    }

    /// Replaces everything with `state` (a new plan, or the first start).
    pub fn reset(&mut self, state: &State) -> Result<()> {
        let tx = self.db.transaction()?;
        tx.execute_batch("DELETE FROM bindings; DELETE FROM ports; DELETE FROM released;")?;
        write_all(&tx, state)?;
        tx.commit().context("writing the state")
    }

    /// Records a new plan that hands out the same MACs (VLANs changed, say).
    pub fn set_plan(&mut self, plan: &Plan) -> Result<()> {
        set_meta(&self.db, "plan", &serde_json::to_string(plan)?)
    }

    /// Where the bindings are translated (`port` or `uplink`, see [`crate::uplink`]): `port`
    /// when never recorded, the only mode before uplink mode.
    pub fn mode(&self) -> Result<String> {
        let mode = self
            .db
            .query_row("SELECT value FROM meta WHERE key = 'mode'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(mode.unwrap_or_else(|| "port".to_owned()))
    }

    pub fn set_mode(&mut self, mode: &str) -> Result<()> {
        set_meta(&self.db, "mode", mode)
    }

    /// Makes `changes` durable, all or none.
    pub fn commit(&mut self, changes: &[Change]) -> Result<()> {
        let tx = self.db.transaction()?;
        for c in changes {
            write_change(&tx, c)?;
        }
        tx.commit().context("committing to the state database")
    }
}

/// The state in `dir` as it is on disk, read without taking the daemon's lock (WAL lets readers
/// in beside the writer): what `mat state export` prints.
pub fn export(dir: &Path) -> Result<State> {
    let path = dir.join(DB);
    if !path.exists() {
        bail!("no state database at {}", path.display());
    }
    let db = open_db(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    read_state(&db)?.with_context(|| format!("{} holds no state yet", path.display()))
}

fn open_db(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let db = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        db.pragma_update(None, "journal_mode", "WAL")?;
    }
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

/// Takes an exclusive `flock` on `file`, retrying for up to `wait`.
fn flock(file: &File, wait: Duration) -> std::io::Result<()> {
    let until = Instant::now() + wait;
    loop {
        // SAFETY: flock on an open descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() >= until {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_meta(db: &Connection, key: &str, value: &str) -> Result<()> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn write_all(tx: &Transaction, s: &State) -> Result<()> {
    set_meta(tx, "plan", &serde_json::to_string(&s.plan)?)?;
    set_meta(tx, "next_fresh", &s.alloc.next_fresh.to_string())?;
    for p in &s.ports {
        write_change(tx, &Change::AddPort(p.clone()))?;
    }
    for b in &s.bindings {
        write_change(tx, &Change::Bind(b.clone()))?;
    }
    // A legacy file has no sequence numbers: its order is the queue's.
    for (seq, r) in (0u64..).zip(&s.alloc.released) {
        let seq = if s.alloc.released.iter().all(|r| r.seq == 0) {
            seq
        } else {
            r.seq
        };
        write_change(tx, &Change::Release(Released { seq, ..r.clone() }))?;
    }
    Ok(())
}

fn write_change(tx: &Connection, c: &Change) -> Result<()> {
    let n = match c {
        Change::AddPort(p) => tx.execute(
            "INSERT INTO ports (ifindex, name) VALUES (?1, ?2)",
            params![p.ifindex, p.name],
        )?,
        Change::RemovePort(p) => {
            tx.execute("DELETE FROM ports WHERE ifindex = ?1", params![p.ifindex])?
        }
        Change::RenamePort { ifindex, to, .. } => {
            tx.execute(
                "UPDATE bindings SET port = ?2 WHERE ifindex = ?1",
                params![ifindex, to],
            )?;
            tx.execute(
                "UPDATE ports SET name = ?2 WHERE ifindex = ?1",
                params![ifindex, to],
            )?
        }
        Change::Bind(b) => tx.execute(
            "INSERT INTO bindings (ifindex, port, vm, inside, outside, ips, since, port_security)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                b.ifindex,
                b.port,
                b.vm,
                b.inside.to_string(),
                b.outside.to_string(),
                serde_json::to_string(&b.ips)?,
                b.since,
                b.port_security
            ],
        )?,
        Change::Unbind(b) => tx.execute(
            "DELETE FROM bindings WHERE ifindex = ?1 AND inside = ?2",
            params![b.ifindex, b.inside.to_string()],
        )?,
        Change::Reuse(r) => tx.execute(
            "DELETE FROM released WHERE outside = ?1",
            params![r.outside.to_string()],
        )?,
        Change::NextFresh { to, .. } => {
            set_meta(tx, "next_fresh", &to.to_string())?;
            1
        }
        Change::Release(r) => tx.execute(
            "INSERT INTO released (seq, outside, vm, inside, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                r.seq,
                r.outside.to_string(),
                r.vm,
                r.inside.to_string(),
                r.at_ms
            ],
        )?,
    };
    // Every change touches exactly one row of its table: anything else means the memory and the
    // disk disagree, and the transaction is rolled back.
    if n != 1 {
        bail!("the state database does not match the daemon's state at {c:?}");
    }
    Ok(())
}

fn read_state(db: &Connection) -> Result<Option<State>> {
    let meta = |key: &str| -> Result<Option<String>> {
        Ok(db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    };
    let Some(plan) = meta("plan")? else {
        return Ok(None);
    };
    let plan: Plan = serde_json::from_str(&plan).context("the stored plan")?;
    let next_fresh = meta("next_fresh")?.unwrap_or_default().parse().unwrap_or(0);
    let mac = |s: String| -> rusqlite::Result<Mac> {
        s.parse()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let ports = db
        .prepare("SELECT ifindex, name FROM ports ORDER BY ifindex")?
        .query_map([], |r| {
            Ok(Port {
                ifindex: r.get(0)?,
                name: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let bindings = db
        .prepare(
            "SELECT ifindex, port, vm, inside, outside, ips, since, port_security FROM bindings
             ORDER BY ifindex",
        )?
        .query_map([], |r| {
            let ips: String = r.get(5)?;
            Ok(Binding {
                ifindex: r.get(0)?,
                port: r.get(1)?,
                vm: r.get(2)?,
                inside: mac(r.get(3)?)?,
                outside: mac(r.get(4)?)?,
                ips: serde_json::from_str::<Vec<IpAddr>>(&ips)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                since: r.get(6)?,
                port_security: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let released = db
        .prepare("SELECT seq, outside, vm, inside, at_ms FROM released ORDER BY seq")?
        .query_map([], |r| {
            Ok(Released {
                seq: r.get(0)?,
                outside: mac(r.get(1)?)?,
                vm: r.get(2)?,
                inside: mac(r.get(3)?)?,
                at_ms: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let state = State {
        version: VERSION,
        plan,
        alloc: Allocator {
            next_fresh,
            released,
        },
        ports,
        bindings,
    };
    state.check()?;
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mat-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn bound_state() -> (State, Vec<Change>) {
        let mut s = State::new(Plan::example());
        let inside = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let (outside, _, taken) = s.alloc.choose(&s.plan, "web", inside, 0, 0, 0).unwrap();
        let changes = vec![
            Change::AddPort(Port {
                name: "vp1".into(),
                ifindex: 7,
            }),
            Change::take(taken),
            Change::Bind(Binding {
                port: "vp1".into(),
                ifindex: 7,
                vm: "web".into(),
                inside,
                outside,
                ips: vec![IpAddr::from([192, 0, 2, 10])],
                port_security: true,
                since: 1,
            }),
        ];
        for c in &changes {
            s.apply(c);
        }
        (s, changes)
    }

    #[test]
    fn commit_round_trip_and_lock() {
        let dir = temp_dir("round");
        let mut store = Store::open(&dir, Duration::ZERO).unwrap();
        assert!(store.load().unwrap().is_none());
        let (mut s, changes) = bound_state();
        store.reset(&State::new(Plan::example())).unwrap();
        store.commit(&changes).unwrap();
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        let b = s.bindings[0].clone();
        let r = s.alloc.next_release(b.outside, &b.vm, b.inside, 5);
        let detach = [Change::Unbind(b), Change::Release(r)];
        store.commit(&detach).unwrap();
        for c in &detach {
            s.apply(c);
        }
        assert_eq!(store.load().unwrap(), Some(s.clone()));
        assert_eq!(export(&dir).unwrap(), s);
        let e = Store::open(&dir, Duration::from_millis(100)).err().unwrap();
        assert!(e.to_string().contains("in use by another"), "{e}");
        // A change that does not match the disk rolls the whole transaction back.
        assert!(store.commit(&detach).is_err());
        assert_eq!(store.load().unwrap(), Some(s));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn imports_legacy_state_json() {
        let dir = temp_dir("legacy");
        fs::create_dir_all(&dir).unwrap();
        let (mut s, _) = bound_state();
        // As the release before the store wrote it: no sequence numbers in the queue.
        let r = Released {
            seq: 0,
            outside: s.plan.mac_at(1),
            vm: "db".into(),
            inside: Mac([0x52, 0x54, 0, 0, 0, 2]),
            at_ms: 9,
        };
        s.alloc.next_fresh = 3;
        s.alloc.released.push_back(r.clone());
        s.alloc.released.push_back(Released {
            outside: s.plan.mac_at(2),
            ..r
        });
        let mut json = serde_json::to_value(&s).unwrap();
        for r in json["alloc"]["released"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("seq");
        }
        fs::write(dir.join(LEGACY), json.to_string()).unwrap();
        let store = Store::open(&dir, Duration::ZERO).unwrap();
        s.alloc.released[1].seq = 1;
        assert_eq!(store.load().unwrap(), Some(s));
        assert!(!dir.join(LEGACY).exists());
        assert!(dir.join(IMPORTED).exists());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
