//! Control-plane rates through the `mat` daemon: attach and detach latency and rate through its
//! socket and through the CLI, with 0, 1,000 and 4,096 bindings already in place (65,536 on
//! demand); the daemon's resident memory and its BPF maps' memory at each size; its first start
//! and its restart after `kill -9`; the size of its store and what one store transaction costs.
//!
//! The daemon allows one binding per port, so each size gets a namespace of its own with that
//! many persistent taps (plus the ones the measured attaches use), all of them ports of bridges
//! the daemon manages (`--bridge`): the daemon puts its programs on a managed bridge's taps when
//! they appear, so the measured attaches only write a store transaction and map entries (the
//! bench waits for the taps' pinned links before timing). A bridge takes at most 1,023 ports, so
//! the seeded taps are spread over bridges of [`BRIDGE_PORTS`] each.
//!
//! Existing bindings are seeded through the import of a legacy `state.json`: the template is
//! `mat state export` of a one-binding state the daemon itself made, with the port list, the
//! bindings and the allocator's next fresh index extended (filling 65,536 through the socket
//! would create 131,072 TCX links one RCU grace period at a time). The daemon's first start
//! imports it (and renames it `state.json.imported`), attaches, pins and binds everything: that
//! is the start-up time; then it is killed (`kill -9`) and started again over the same pins and
//! store: the restart time, to the first answer on the socket.
//!
//! What one store transaction costs at each size is measured on the side, with the daemon's own
//! [`Store`] over the same seeded state, in a directory on the same file system.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use mat_loader::{
    Mode,
    alloc::Released,
    client::Client,
    common::maps::LAYOUT,
    mac::Mac,
    plan::Plan,
    proto::Request,
    state::{Binding, Change, Port},
    store::Store,
};
use mat_tests::{netns::Netns, pins::unique};
use serde::Serialize;
use serde_json::{Value, json};

use super::stats::{median, percentile};

/// The pool: 02:00:5e:00:00:00/24 with 2 rack and 2 host bits leaves 20 VM bits per host.
const POOL: &str = "02:00:5e:00:00:00/24";
const RACK_BITS: &str = "2";
const HOST_BITS: &str = "2";

/// Ports per bridge (the kernel's limit is 1,023: BR_MAX_PORTS less port 0).
const BRIDGE_PORTS: usize = 1_000;

/// How long a request, or the daemon's start, may take before the bench gives up.
const PATIENCE: Duration = Duration::from_mins(10);

pub struct Config {
    pub sizes: Vec<usize>,
    /// Up to this many existing bindings the daemon attaches its programs itself at its first
    /// start (a cold start); above it the bench attaches and pins them first, in parallel (see
    /// [`prelink`]), and the start-up figure is a start over pinned links.
    pub cold_start_max: usize,
    /// Attaches (then detaches) through the socket per size.
    pub socket_ops: usize,
    /// Attaches (then detaches) through the CLI per size.
    pub cli_ops: usize,
    /// Store transactions of each shape (attach, detach) timed per size.
    pub store_ops: usize,
    /// Restarts (`kill -9`, start) per size.
    pub restarts: usize,
}

#[derive(Serialize, Default)]
pub struct Latency {
    pub n: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Operations a second, one after the other on one connection (one process each for the CLI).
    pub per_s: f64,
}

#[derive(Serialize)]
pub struct Size {
    pub existing_bindings: usize,
    /// Managed bridges in the namespace (all given to the daemon with `--bridge`).
    pub bridges: usize,
    /// From spawning the daemon the first time, with a seeded `state.json`, until its socket
    /// answers: import the state into the store, attach 2 programs per port (unless
    /// `links_prepinned`), pin, bind, and guard the measured (still unbound) taps of the
    /// managed bridges.
    pub startup_s: f64,
    pub links_prepinned: bool,
    /// Seconds the bench took to attach and pin the links itself, when it did.
    pub prelink_s: Option<f64>,
    /// Seconds from the first answer until every measured tap had both pinned links (0 when the
    /// daemon guarded them before answering).
    pub guard_wait_s: f64,
    /// Restarts: `kill -9`, then start over the same pins and store, until the socket answers.
    pub restart_s: Vec<f64>,
    pub restart_median_s: f64,
    pub restart_max_s: f64,
    pub socket_attach: Latency,
    pub socket_detach: Latency,
    pub cli_attach: Latency,
    pub cli_detach: Latency,
    /// VmRSS after the first start (the import), after the last restart, and after the measured
    /// operations.
    pub rss_mib_first_start: f64,
    pub rss_mib_idle: f64,
    pub rss_mib_after: f64,
    /// Sum of `memlock` over the BPF maps the daemon holds (the kernel's charge for them).
    pub bpf_map_mib: f64,
    /// Sizes of `state.db` and its write-ahead log after the measured operations.
    pub state_db_bytes: u64,
    pub state_wal_bytes: u64,
    /// What the store's transactions cost at this size, measured beside the daemon.
    pub store: StoreCost,
    /// Seconds to create the namespace's taps and bridges (not part of any figure).
    pub setup_s: f64,
}

/// One store transaction at a size: the daemon's [`Store`] opened on the seeded state (the same
/// legacy import the daemon does), then the transactions an attach and a detach on a known port
/// commit (`synchronous=FULL`: durable when they return).
#[derive(Serialize)]
pub struct StoreCost {
    /// Opening the store over the seeded `state.json`: create the tables, import, commit.
    pub import_s: f64,
    /// Next fresh index and one binding row.
    pub attach_tx: Latency,
    /// One binding row out, one released row in.
    pub detach_tx: Latency,
}

#[derive(Serialize)]
pub struct Report {
    pub daemon: String,
    pub pool: String,
    pub sizes: Vec<Size>,
    pub notes: Vec<String>,
}

/// The sizes to measure: `MAT_BENCH_CONTROL_SIZES=0,1000,65536` overrides `default`. 65,536 is
/// not in the default: every port needs two TCX links, and creating one waits for an RCU grace
/// period under RTNL (about 13 ms on this machine), so 65,536 ports take about half an hour to
/// set up and as long again to remove ([`PortsNs`]), with RTNL taken in turns against everything
/// else on the machine.
pub fn sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("MAT_BENCH_CONTROL_SIZES").ok().map_or_else(
        || default.to_vec(),
        |v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
    )
}

pub fn run(cfg: &Config) -> Result<Report> {
    let mat = build_mat()?;
    let run_dir = std::env::temp_dir().join(unique("mat-bench-ctl-"));
    std::fs::create_dir_all(&run_dir)?;
    let result = (|| -> Result<Vec<Size>> {
        let template = template(&mat, &run_dir)?;
        let mut sizes = Vec::new();
        for &n in &cfg.sizes {
            eprintln!("bench: control plane: {n} existing bindings");
            sizes.push(
                size(&mat, &run_dir, &template, n, cfg)
                    .with_context(|| format!("with {n} existing bindings"))?,
            );
        }
        Ok(sizes)
    })();
    let _ = std::fs::remove_dir_all(&run_dir);
    let sizes = result?;
    let mut notes = vec![
        "existing bindings seeded as a legacy state.json that the daemon imports at its first \
         start (see xtask/src/bench/control.rs); each attach and detach is one SQLite \
         transaction (WAL, synchronous=FULL), durable before its reply"
            .to_owned(),
        "the measured taps are ports of a bridge the daemon manages (--bridge): the daemon \
         attached its programs when it started (the bench waits for their pinned links), so an \
         attach or detach writes one store transaction and two map entries and creates no link"
            .to_owned(),
        "an attach or detach costs about one store transaction (the WAL's fsync) and a few \
         tenths of a millisecond more: compare the store line, measured just before on the same \
         disk; the disk's fsync latency at the time sets both"
            .to_owned(),
        "restart: kill -9, then start over the same pins and store, until the socket answers; \
         RSS is the largest of first start, after the restarts and after the operations"
            .to_owned(),
    ];
    for z in sizes
        .iter()
        .filter(|z| !z.links_prepinned && z.existing_bindings > 0)
    {
        let ports = z.existing_bindings + z.socket_attach.n + z.cli_attach.n;
        notes.push(format!(
            "cold start-up at {} bindings: {:.1} ms per port ({ports} ports: seeded and measured)",
            z.existing_bindings,
            z.startup_s * 1e3 / ports as f64
        ));
    }
    Ok(Report {
        daemon: format!("{} (release build)", mat.display()),
        pool: format!("{POOL}, {RACK_BITS} rack bits, {HOST_BITS} host bits, rack 1, host 3"),
        sizes,
        notes,
    })
}

/// Builds the daemon in release mode (cached after the first run) and returns its path.
fn build_mat() -> Result<PathBuf> {
    crate::cargo(&[
        "build",
        "--quiet",
        "--release",
        "--package",
        "mat-loader",
        "--bin",
        "mat",
    ])?;
    Ok(crate::target_dir().join("release/mat"))
}

/// A daemon running in a namespace, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon, managing `bridges`, and waits until its socket answers; returns it and
    /// the seconds that took. `MAT_BENCH_RUST_LOG` sets its `RUST_LOG` (default `warn`); its
    /// log goes to the bench's stderr.
    fn start(
        mat: &Path,
        ns: &Netns,
        dir: &Path,
        pins: &Path,
        bridges: &[String],
    ) -> Result<(Daemon, f64)> {
        let socket = dir.join("mat.sock");
        let mut cmd = ns.command(mat.to_str().context("UTF-8 path")?);
        cmd.arg("--socket")
            .arg(&socket)
            .args(["daemon", "--pool", POOL, "--rack-bits", RACK_BITS])
            .args(["--host-bits", HOST_BITS, "--rack", "1", "--host", "3"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--pin-dir")
            .arg(pins);
        for b in bridges {
            cmd.args(["--bridge", b]);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("MAT_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let start = Instant::now();
        let child = cmd.spawn().context("starting mat daemon")?;
        let mut d = Daemon { child, socket };
        let deadline = start + PATIENCE;
        loop {
            // The daemon binds its socket before it reconciles and answers once it is ready.
            if let Ok(mut c) = Client::connect(&d.socket, PATIENCE)
                && c.call::<Value>(&Request::Routes {}).is_ok()
            {
                return Ok((d, start.elapsed().as_secs_f64()));
            }
            if let Some(status) = d.child.try_wait()? {
                bail!("mat daemon exited: {status}");
            }
            ensure!(
                Instant::now() < deadline,
                "mat daemon not ready in {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.socket, PATIENCE)?)
    }

    /// SIGTERM, and wait (SIGKILL after 30 s).
    fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    /// SIGKILL, and reap: a crash.
    fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on our own child's pid, which it keeps until we reap it.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("mat daemon ignored SIGTERM for 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Waits until MAT's port programs are pinned on every one of `ports` (the daemon guards a
    /// managed bridge's taps by itself); returns the seconds waited.
    fn wait_guarded(&mut self, pins: &Path, ports: &[(String, u32)]) -> Result<f64> {
        let start = Instant::now();
        // The links of this loader's layout: `<pin dir>/v<LAYOUT>/links/<ifindex>-<program>`.
        let links = pins.join(format!("v{LAYOUT}")).join("links");
        let pinned = |ifindex: u32| {
            Mode::Port
                .programs()
                .iter()
                .all(|p| links.join(format!("{ifindex}-{}", p.name())).exists())
        };
        let mut left: Vec<u32> = ports.iter().map(|&(_, i)| i).collect();
        loop {
            left.retain(|&i| !pinned(i));
            if left.is_empty() {
                return Ok(start.elapsed().as_secs_f64());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("mat daemon exited: {status}");
            }
            ensure!(
                start.elapsed() < PATIENCE,
                "the daemon did not attach its programs to {} managed taps in {PATIENCE:?}",
                left.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Taps by name and ifindex.
type Taps = Vec<(String, u32)>;

/// Persistent taps (what QEMU gives a VM; this kernel has no dummy driver) named `{prefix}{i}`
/// for i in 0..n, made in one `ip -batch` as ports of bridges named `{bridge}{k}` of
/// [`BRIDGE_PORTS`] ports each; the taps with their ifindexes, and the bridges.
fn ports(ns: &Netns, prefix: &str, bridge: &str, n: usize) -> Result<(Taps, Vec<String>)> {
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let bridges: Vec<String> = (0..n.div_ceil(BRIDGE_PORTS))
        .map(|k| format!("{bridge}{k}"))
        .collect();
    let mut batch = String::new();
    for b in &bridges {
        batch.push_str(&format!("link add name {b} type bridge\n"));
    }
    for (i, name) in names.iter().enumerate() {
        batch.push_str(&format!(
            "tuntap add mode tap name {name}\nlink set {name} master {}\n",
            bridges[i / BRIDGE_PORTS]
        ));
    }
    let mut child = Command::new("ip")
        .args(["-n", ns.name(), "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(batch.as_bytes())?;
    ensure!(child.wait()?.success(), "ip -batch failed");
    let out = ns.ip(&["-o", "link", "show"]);
    let index: HashMap<&str, u32> = std::str::from_utf8(&out.stdout)?
        .lines()
        .filter_map(|l| {
            let mut f = l.split(": ");
            let i = f.next()?.trim().parse().ok()?;
            Some((f.next()?.split('@').next()?, i))
        })
        .collect();
    let ports = names
        .iter()
        .map(|n| {
            let i = *index
                .get(n.as_str())
                .with_context(|| format!("{n} not made"))?;
            Ok((n.clone(), i))
        })
        .collect::<Result<_>>()?;
    Ok((ports, bridges))
}

fn inside_mac(kind: u8, i: usize) -> String {
    let [_, hi, mid, lo] = (i as u32).to_be_bytes();
    format!("52:54:{kind:02x}:{hi:02x}:{mid:02x}:{lo:02x}")
}

fn attach(port: &str, mac: String, vm: String) -> Request {
    Request::Attach {
        port: port.to_owned(),
        mac,
        vm: Some(vm),
        ips: Vec::new(),
        force: false,
        port_security: None,
    }
}

/// A state with one binding, made by the daemon (on a tap of a managed bridge) and exported with
/// `mat state export`: the shape the seeded states copy.
fn template(mat: &Path, run_dir: &Path) -> Result<Value> {
    let ns = PortsNs::new();
    let id = unique("");
    let (ports, bridges) = ports(&ns, &format!("t{id}x"), &format!("b{id}t"), 1)?;
    let dir = run_dir.join("template");
    std::fs::create_dir_all(&dir)?;
    let pins = Pins::new();
    let (mut d, _) = Daemon::start(mat, &ns, &dir, &pins.0, &bridges)?;
    d.wait_guarded(&pins.0, &ports)?;
    d.client()?
        .call::<Value>(&attach(&ports[0].0, inside_mac(1, 0), "seed-0".into()))?;
    d.stop()?;
    let out = Command::new(mat)
        .args(["state", "export", "--state-dir"])
        .arg(dir.join("state"))
        .output()?;
    ensure!(
        out.status.success(),
        "mat state export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The template state with `ports` bound, in order, to the pool's first outside MACs.
fn seeded(template: &Value, ports: &[(String, u32)]) -> Result<Value> {
    let mut state = template.clone();
    let b0 = state["bindings"][0].clone();
    let first = b0["outside"].as_str().context("outside MAC as a string")?;
    let base = first.parse::<Mac>()?.to_u64();
    let mut bindings = Vec::new();
    let mut port_list = Vec::new();
    for (i, (name, ifindex)) in ports.iter().enumerate() {
        let mut b = b0.clone();
        b["port"] = json!(name);
        b["ifindex"] = json!(ifindex);
        b["vm"] = json!(format!("seed-{i}"));
        b["inside"] = json!(inside_mac(1, i));
        b["outside"] = json!(Mac::from_u64(base + i as u64).to_string());
        bindings.push(b);
        port_list.push(json!({"name": name, "ifindex": ifindex}));
    }
    state["bindings"] = Value::Array(bindings);
    state["ports"] = Value::Array(port_list);
    state["alloc"]["next_fresh"] = json!(ports.len());
    state["alloc"]["released"] = json!([]);
    Ok(state)
}

/// Times the store's transactions at the size of `state` (its bindings): `ops` attach-shaped
/// ones on ports the store already knows (as a managed bridge's taps are), then as many
/// detach-shaped ones releasing them.
fn store_cost(state: &Value, ops: usize, dir: &Path) -> Result<StoreCost> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("state.json"), serde_json::to_vec(state)?)?;
    let t = Instant::now();
    let mut store = Store::open(dir, Duration::ZERO)?;
    let import_s = t.elapsed().as_secs_f64();
    let plan: Plan = serde_json::from_value(state["plan"].clone())?;
    let n = state["bindings"].as_array().map_or(0, Vec::len);
    let ports: Vec<Port> = (0..ops)
        .map(|i| Port {
            name: format!("m{i}"),
            ifindex: 1_000_000 + i as u32,
        })
        .collect();
    store.commit(
        &ports
            .iter()
            .cloned()
            .map(Change::AddPort)
            .collect::<Vec<_>>(),
    )?;
    let mut bindings = Vec::new();
    let attach_tx = timed(&ports, |i, p| {
        let fresh = (n + i) as u64;
        let b = Binding {
            port: p.name.clone(),
            ifindex: p.ifindex,
            vm: format!("bench-{i}"),
            inside: inside_mac(4, i).parse()?,
            outside: plan.mac_at(fresh),
            ips: Vec::new(),
            since: 0,
            port_security: true,
        };
        store.commit(&[
            Change::NextFresh {
                from: fresh,
                to: fresh + 1,
            },
            Change::Bind(b.clone()),
        ])?;
        bindings.push(b);
        Ok(())
    })?;
    let detach_tx = timed(&bindings, |i, b| {
        store.commit(&[
            Change::Unbind(b.clone()),
            Change::Release(Released {
                seq: i as u64,
                outside: b.outside,
                vm: b.vm.clone(),
                inside: b.inside,
                at_ms: 0,
            }),
        ])
    })?;
    drop(store);
    std::fs::remove_dir_all(dir)?;
    Ok(StoreCost {
        import_s,
        attach_tx,
        detach_tx,
    })
}

/// The namespace of a size's ports. Deleting a namespace removes its devices in one batch under
/// RTNL, and the kernel waits for an RCU grace period for each device with TCX links
/// (tcx_uninstall): 4,096 ports would hold RTNL for about a minute, 65,536 for about fifteen,
/// stalling every network change on the machine. So the ports go first, one request each, which
/// lets other RTNL users in between; then the bridges (a bridge removed with its ports would
/// release them all in one request); then the empty namespace.
struct PortsNs(Netns);

impl PortsNs {
    fn new() -> PortsNs {
        PortsNs(Netns::new("bct"))
    }

    fn links(&self, kind: Option<&str>) -> Vec<String> {
        let mut args = vec!["-n", self.0.name(), "-o", "link", "show"];
        if let Some(kind) = kind {
            args.extend(["type", kind]);
        }
        let Ok(out) = Command::new("ip").args(&args).output() else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .filter(|name| name != "lo")
            .collect()
    }
}

impl std::ops::Deref for PortsNs {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.0
    }
}

impl Drop for PortsNs {
    fn drop(&mut self) {
        let bridges = self.links(Some("bridge"));
        let mut names: Vec<String> = self
            .links(None)
            .into_iter()
            .filter(|n| !bridges.contains(n))
            .collect();
        names.extend(bridges);
        let batch: String = names.iter().map(|n| format!("link del {n}\n")).collect();
        if batch.is_empty() {
            return;
        }
        let child = Command::new("ip")
            .args(["-n", self.0.name(), "-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(batch.as_bytes());
            }
            let _ = child.wait();
        }
    }
}

/// A pin directory of its own, removed (with whatever the daemon pinned) on drop.
struct Pins(PathBuf);

impl Pins {
    fn new() -> Pins {
        Pins(PathBuf::from("/sys/fs/bpf").join(unique("mat-bench-")))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.0)
        {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn size(mat: &Path, run_dir: &Path, template: &Value, n: usize, cfg: &Config) -> Result<Size> {
    let setup = Instant::now();
    let ns = PortsNs::new();
    let id = unique("");
    let (seeded_ports, mut bridges) = ports(&ns, &format!("s{id}x"), &format!("b{id}s"), n)?;
    // At tens of thousands of bindings: fewer samples (the CLI's process start dominates it).
    let (socket_ops, cli_ops) = if n > 10_000 {
        (cfg.socket_ops.min(200), cfg.cli_ops.min(20))
    } else {
        (cfg.socket_ops, cfg.cli_ops)
    };
    // The measured taps: ports of one more managed bridge, unknown to the state.
    let (measured, b) = ports(
        &ns,
        &format!("a{id}x"),
        &format!("b{id}a"),
        socket_ops + cli_ops,
    )?;
    bridges.extend(b);
    let (socket_ports, cli_ports) = measured.split_at(socket_ops);
    let setup_s = setup.elapsed().as_secs_f64();

    let dir = run_dir.join(format!("size-{n}"));
    std::fs::create_dir_all(dir.join("state"))?;
    let state = seeded(template, &seeded_ports)?;
    if n > 0 {
        std::fs::write(dir.join("state/state.json"), serde_json::to_vec(&state)?)?;
    }
    let store = store_cost(&state, cfg.store_ops, &dir.join("store-model"))?;
    let pins = Pins::new();
    let links_prepinned = n > cfg.cold_start_max;
    let prelink_s = if links_prepinned {
        let t = Instant::now();
        prelink(&ns, &pins.0, &seeded_ports)?;
        Some(t.elapsed().as_secs_f64())
    } else {
        None
    };
    let (mut d, startup_s) = Daemon::start(mat, &ns, &dir, &pins.0, &bridges)?;
    let guard_wait_s = d.wait_guarded(&pins.0, &measured)?;
    if n > 0 {
        ensure!(
            dir.join("state/state.json.imported").exists(),
            "the daemon did not import the seeded state.json"
        );
    }
    let rss_mib_first_start = rss_mib(d.pid())?;
    let mut restart_s = Vec::new();
    for _ in 0..cfg.restarts.max(1) {
        d.kill()?;
        let (again, s) = Daemon::start(mat, &ns, &dir, &pins.0, &bridges)?;
        d = again;
        restart_s.push(s);
    }
    let rss_mib_idle = rss_mib(d.pid())?;
    let bpf_map_mib = map_memlock_mib(d.pid())?;

    let mut client = d.client()?;
    let socket_attach = timed(socket_ports, |i, (port, _)| {
        let r: Value = client.call(&attach(port, inside_mac(2, i), format!("bench-{i}")))?;
        ensure!(r["outside"].is_string(), "attach gave no outside MAC: {r}");
        Ok(())
    })?;
    let socket_detach = timed(socket_ports, |_, (port, _)| {
        client.call::<Value>(&Request::Detach {
            port: Some(port.clone()),
            mac: None,
            vm: None,
        })?;
        Ok(())
    })?;
    let cli = |args: &[&str]| -> Result<()> {
        let out = Command::new(mat)
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "mat {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let cli_attach = timed(cli_ports, |i, (port, _)| {
        cli(&["attach", port, "--mac", &inside_mac(3, i), "--json"])
    })?;
    let cli_detach = timed(cli_ports, |_, (port, _)| cli(&["detach", port, "--json"]))?;
    let rss_mib_after = rss_mib(d.pid())?;
    // Last: a list of every binding is a large reply, which would weigh on the RSS figures.
    let count: usize = d
        .client()?
        .call::<Value>(&Request::List {})?
        .get("bindings")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    ensure!(
        count == n,
        "{count} bindings after the measured operations, not {n}"
    );
    let state_db_bytes = file_len(&dir.join("state/state.db"));
    let state_wal_bytes = file_len(&dir.join("state/state.db-wal"));
    d.stop()?;
    drop(ns);
    Ok(Size {
        existing_bindings: n,
        bridges: bridges.len(),
        startup_s,
        links_prepinned,
        prelink_s,
        guard_wait_s,
        restart_median_s: median(&restart_s),
        restart_max_s: restart_s.iter().copied().fold(0.0, f64::max),
        restart_s,
        socket_attach,
        socket_detach,
        cli_attach,
        cli_detach,
        rss_mib_first_start,
        rss_mib_idle,
        rss_mib_after,
        bpf_map_mib,
        state_db_bytes,
        state_wal_bytes,
        store,
        setup_s,
    })
}

/// Attaches MAT's port programs to every port and pins the links where the daemon looks for
/// them, from many threads at once. Creating a TCX link waits for an RCU grace period (about
/// 15 ms here), so the daemon's one-by-one start-up over 65,536 fresh ports would take over half
/// an hour; concurrent waiters share grace periods.
fn prelink(ns: &Netns, pins: &Path, ports: &[(String, u32)]) -> Result<()> {
    const THREADS: usize = 64;
    let chunk = ports.len().div_ceil(THREADS).max(1);
    // Create and pin the maps once: loaders racing to pin the same map fail with EEXIST.
    drop(mat_loader::Dataplane::open(pins)?);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = ports
            .chunks(chunk)
            .map(|part| {
                let failed = &failed;
                s.spawn(move || {
                    ns.enter(|| -> Result<()> {
                        let result = (|| -> Result<()> {
                            let mut dp = mat_loader::Dataplane::open(pins)?;
                            for (name, _) in part {
                                if failed.load(Ordering::Relaxed) {
                                    break;
                                }
                                dp.attach(name, mat_loader::Mode::Port)?;
                            }
                            Ok(())
                        })();
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                })
            })
            .collect();
        for w in workers {
            w.join().expect("prelink thread")?;
        }
        Ok(())
    })
}

/// Runs `op` on each item in turn and summarises the latencies.
fn timed<T>(items: &[T], mut op: impl FnMut(usize, &T) -> Result<()>) -> Result<Latency> {
    if items.is_empty() {
        return Ok(Latency::default());
    }
    let start = Instant::now();
    let mut ms = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let t = Instant::now();
        op(i, item)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    Ok(Latency {
        n: ms.len(),
        median_ms: median(&ms),
        p99_ms: percentile(&ms, 99.0),
        max_ms: ms.iter().copied().fold(0.0, f64::max),
        per_s: ms.len() as f64 / total,
    })
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// Sum of `memlock` over the process's BPF map file descriptors.
fn map_memlock_mib(pid: u32) -> Result<f64> {
    let mut bytes = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !info.contains("map_type:") {
            continue;
        }
        bytes += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

impl Size {
    /// The largest resident size measured.
    fn rss_mib(&self) -> f64 {
        self.rss_mib_first_start
            .max(self.rss_mib_idle)
            .max(self.rss_mib_after)
    }
}

/// The targets for the control plane: attach and detach through the socket at every
/// size; restart and RSS at every size too (the issue sets them at 65,536, where they are
/// hardest: a miss below it is a miss there).
pub fn targets(report: &Report) -> Vec<super::Target> {
    let mut out = Vec::new();
    for s in &report.sizes {
        let n = s.existing_bindings;
        for (what, l) in [("attach", &s.socket_attach), ("detach", &s.socket_detach)] {
            out.push(super::Target {
                what: format!("control: {what} median (socket, managed port) at {n} bindings"),
                target: "<= 2 ms".into(),
                measured: format!("{:.2} ms", l.median_ms),
                met: l.median_ms <= 2.0,
            });
            out.push(super::Target {
                what: format!("control: {what} p99 (socket, managed port) at {n} bindings"),
                target: "<= 5 ms".into(),
                measured: format!("{:.2} ms", l.p99_ms),
                met: l.p99_ms <= 5.0,
            });
        }
        out.push(super::Target {
            what: format!("control: restart (kill -9) to first answer at {n} bindings"),
            target: "<= 1 s (at 65,536)".into(),
            measured: format!("{:.3} s (max {:.3})", s.restart_median_s, s.restart_max_s),
            met: s.restart_max_s <= 1.0,
        });
        out.push(super::Target {
            what: format!("control: daemon RSS at {n} bindings"),
            target: "<= 64 MiB (at 65,536)".into(),
            measured: format!("{:.1} MiB", s.rss_mib()),
            met: s.rss_mib() <= 64.0,
        });
    }
    out
}

pub fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ncontrol plane ({}; pool {})",
        report.daemon, report.pool
    );
    let _ = writeln!(
        s,
        "{:>9} {:>8} {:>13} {:>21} {:>21} {:>21} {:>21} {:>8} {:>8} {:>11}",
        "bindings",
        "start s",
        "restart s",
        "sock attach med/p99",
        "sock detach med/p99",
        "CLI attach med/p99",
        "CLI detach med/p99",
        "RSS MiB",
        "maps MiB",
        "db+wal KiB"
    );
    let lat = |l: &Latency| format!("{:.2}/{:.2} ms", l.median_ms, l.p99_ms);
    for z in &report.sizes {
        let _ = writeln!(
            s,
            "{:>9} {:>8.3} {:>13} {:>21} {:>21} {:>21} {:>21} {:>8.1} {:>8.1} {:>11}",
            z.existing_bindings,
            z.startup_s,
            format!("{:.3}/{:.3}", z.restart_median_s, z.restart_max_s),
            lat(&z.socket_attach),
            lat(&z.socket_detach),
            lat(&z.cli_attach),
            lat(&z.cli_detach),
            z.rss_mib(),
            z.bpf_map_mib,
            format!("{}+{}", z.state_db_bytes / 1024, z.state_wal_bytes / 1024)
        );
    }
    let _ = writeln!(
        s,
        "{:>9} {:>8} {:>13} {:>21} {:>21} {:>21} {:>21}",
        "", "", "(med/max)", "(ops/s)", "", "", ""
    );
    for z in &report.sizes {
        let _ = writeln!(
            s,
            "{:>9} {:>8} {:>13} {:>21.0} {:>21.0} {:>21.0} {:>21.0}",
            z.existing_bindings,
            "",
            "",
            z.socket_attach.per_s,
            z.socket_detach.per_s,
            z.cli_attach.per_s,
            z.cli_detach.per_s
        );
    }
    for z in &report.sizes {
        let _ = writeln!(
            s,
            "store at {} bindings: attach transaction {}, detach transaction {} (median/p99, \
             durable); import of state.json {:.3} s",
            z.existing_bindings,
            lat(&z.store.attach_tx),
            lat(&z.store.detach_tx),
            z.store.import_s
        );
    }
    for n in &report.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
