//! Control-plane rates through the `mat` daemon: attach and detach latency and rate through its
//! socket and through the CLI, with 0, 1,000 and 65,536 bindings already in place; the daemon's
//! resident memory and its BPF maps' memory at each size; start-up (fresh pins) and restart
//! (pins kept: reconciliation) time.
//!
//! The daemon allows one binding per port, so each size gets a namespace of its own with that
//! many persistent tap interfaces (plus the ones the measured attaches use). Existing bindings are seeded
//! in the daemon's state file, built from a one-binding state the daemon itself wrote (only the
//! port list, the bindings and the allocator's next fresh index are extended): filling 65,536
//! through the socket would rewrite the whole state file 65,536 times. The daemon then starts
//! against that state with an empty pin directory and attaches, pins and binds everything: that
//! is the start-up time; a second start over the same pins is the restart time.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use mat_tests::{netns::Netns, pins::unique};
use serde::Serialize;
use serde_json::{json, Value};

use super::stats::{median, percentile};

/// The pool: 02:00:5e:00:00:00/24 with 2 rack and 2 host bits leaves 20 VM bits per host.
const POOL: &str = "02:00:5e:00:00:00/24";
const RACK_BITS: &str = "2";
const HOST_BITS: &str = "2";

pub struct Config {
    pub sizes: Vec<usize>,
    /// Up to this many existing bindings the daemon attaches its programs itself at start-up
    /// (a cold start); above it the bench attaches and pins them first, in parallel (see
    /// [`prelink`]), and the start-up figure is a start over pinned links.
    pub cold_start_max: usize,
    /// Attaches (then detaches) through the socket per size.
    pub socket_ops: usize,
    /// Attaches (then detaches) through the CLI per size.
    pub cli_ops: usize,
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
    /// From spawning the daemon, with the state seeded, until its socket answers: load, attach
    /// 2 programs per port, pin, bind (the links already pinned when `links_prepinned`).
    pub startup_s: f64,
    pub links_prepinned: bool,
    /// Seconds the bench took to attach and pin the links itself, when it did.
    pub prelink_s: Option<f64>,
    /// The same with the pins of the previous run kept: reconciliation.
    pub restart_s: f64,
    pub socket_attach: Latency,
    pub socket_detach: Latency,
    pub cli_attach: Latency,
    pub cli_detach: Latency,
    /// VmRSS after the restart, and after the measured operations.
    pub rss_mib_idle: f64,
    pub rss_mib_after: f64,
    /// Sum of `memlock` over the BPF maps the daemon holds (the kernel's charge for them).
    pub bpf_map_mib: f64,
    /// Size of the state file at this many bindings.
    pub state_file_bytes: u64,
    /// Seconds to create the namespace's taps (not part of any figure).
    pub setup_s: f64,
}

/// The daemon's durable write, reproduced outside it: its state file at a size, serialised,
/// written to a temporary file, fsynced, renamed over the old one, directory fsynced.
#[derive(Serialize)]
pub struct WriteModel {
    pub bindings: usize,
    pub bytes: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub daemon: String,
    pub pool: String,
    pub sizes: Vec<Size>,
    /// What every attach and detach pays for durability at 1,000 and 65,536 bindings, measured
    /// on a state file of the daemon's own shape (see [`WriteModel`]).
    pub state_write: Vec<WriteModel>,
    pub notes: Vec<String>,
}

/// The sizes to measure: `MAT_BENCH_CONTROL_SIZES=0,1000,65536` overrides `default`. 65,536 is
/// not in the default: every port needs two TCX links, and creating one waits for an RCU grace
/// period under RTNL (about 13 ms on this machine), so 65,536 ports take about half an hour to
/// set up and as long again to remove ([`PortsNs`]), with RTNL taken in turns against everything
/// else on the machine.
pub fn sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("MAT_BENCH_CONTROL_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

pub fn run(cfg: &Config) -> Result<Report> {
    let mat = build_mat()?;
    let run_dir = std::env::temp_dir().join(unique("mat-bench-ctl-"));
    std::fs::create_dir_all(&run_dir)?;
    let result = (|| -> Result<(Vec<Size>, Vec<WriteModel>)> {
        let template = template(&mat, &run_dir)?;
        let mut models = Vec::new();
        for n in [1_000, 65_536] {
            models.push(write_model(&template, n, &run_dir)?);
        }
        let mut sizes = Vec::new();
        for &n in &cfg.sizes {
            eprintln!("bench: control plane: {n} existing bindings");
            sizes.push(
                size(&mat, &run_dir, &template, n, cfg)
                    .with_context(|| format!("with {n} existing bindings"))?,
            );
        }
        Ok((sizes, models))
    })();
    let _ = std::fs::remove_dir_all(&run_dir);
    let (sizes, state_write) = result?;
    let mut notes = vec![
        "state seeded through the state file (see xtask/src/bench/control.rs); each attach and \
         detach is durable (the daemon fsyncs the whole state file) before its reply"
            .to_owned(),
        "an attach on a new port creates two TCX links; the kernel creates each under RTNL and \
         waits for an RCU grace period (tcx_entry_sync), which dominates attach latency at any \
         size"
            .to_owned(),
    ];
    for z in sizes
        .iter()
        .filter(|z| !z.links_prepinned && z.existing_bindings > 0)
    {
        notes.push(format!(
            "cold start-up at {} bindings: {:.1} ms per port",
            z.existing_bindings,
            z.startup_s * 1e3 / z.existing_bindings as f64
        ));
    }
    Ok(Report {
        daemon: format!("{} (release build)", mat.display()),
        pool: format!("{POOL}, {RACK_BITS} rack bits, {HOST_BITS} host bits, rack 1, host 3"),
        sizes,
        state_write,
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
    Ok(crate::workspace().join("target/release/mat"))
}

/// A daemon running in a namespace, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until its socket answers; returns it and the seconds that took.
    fn start(mat: &Path, ns: &Netns, dir: &Path, pins: &Path) -> Result<(Daemon, f64)> {
        let socket = dir.join("mat.sock");
        let start = Instant::now();
        let child = ns
            .command(mat.to_str().context("UTF-8 path")?)
            .arg("--socket")
            .arg(&socket)
            .args(["daemon", "--pool", POOL, "--rack-bits", RACK_BITS])
            .args(["--host-bits", HOST_BITS, "--rack", "1", "--host", "3"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--pin-dir")
            .arg(pins)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mat daemon")?;
        let mut d = Daemon { child, socket };
        let deadline = start + Duration::from_secs(600);
        loop {
            if let Ok(mut c) = Client::connect(&d.socket) {
                if c.call(&json!({"op": "routes"})).is_ok() {
                    return Ok((d, start.elapsed().as_secs_f64()));
                }
            }
            if let Some(status) = d.child.try_wait()? {
                bail!("mat daemon exited: {status}");
            }
            ensure!(Instant::now() < deadline, "mat daemon not ready in 600 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and wait (SIGKILL after 30 s).
    fn stop(mut self) -> Result<()> {
        self.terminate()
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
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A connection to the control socket: one JSON line out, one back.
struct Client {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &Path) -> Result<Client> {
        let out = UnixStream::connect(path)?;
        out.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client {
            input: BufReader::new(out.try_clone()?),
            out,
        })
    }

    /// The request's `ok` result, or an error with the daemon's refusal.
    fn call(&mut self, req: &Value) -> Result<Value> {
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        let mut reply = String::new();
        self.input.read_line(&mut reply)?;
        let mut v: Value = serde_json::from_str(&reply)
            .with_context(|| format!("reply is not JSON: {reply:?}"))?;
        match v.get_mut("ok") {
            Some(ok) => Ok(ok.take()),
            None => bail!("{req} refused: {}", v["error"]),
        }
    }
}

/// Persistent taps (what QEMU gives a VM; this kernel has no dummy driver) named `{prefix}{i}`
/// for i in 0..n, made in one `ip -batch`; their ifindexes.
fn ports(ns: &Netns, prefix: &str, n: usize) -> Result<Vec<(String, u32)>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let batch: String = names
        .iter()
        .map(|name| format!("tuntap add mode tap name {name}\n"))
        .collect();
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
    names
        .iter()
        .map(|n| {
            let i = *index
                .get(n.as_str())
                .with_context(|| format!("{n} not made"))?;
            Ok((n.clone(), i))
        })
        .collect()
}

fn inside_mac(kind: u8, i: usize) -> String {
    let [_, hi, mid, lo] = (i as u32).to_be_bytes();
    format!("52:54:{kind:02x}:{hi:02x}:{mid:02x}:{lo:02x}")
}

/// A state with one binding, written by the daemon: the shape the seeded states copy.
fn template(mat: &Path, run_dir: &Path) -> Result<Value> {
    let ns = PortsNs::new();
    let id = unique("");
    let ports = ports(&ns, &format!("t{id}x"), 1)?;
    let dir = run_dir.join("template");
    std::fs::create_dir_all(&dir)?;
    let pins = Pins::new();
    let (d, _) = Daemon::start(mat, &ns, &dir, &pins.0)?;
    Client::connect(&d.socket)?.call(&json!({
        "op": "attach", "port": ports[0].0, "mac": inside_mac(1, 0), "vm": "seed-0",
    }))?;
    d.stop()?;
    let text = std::fs::read_to_string(dir.join("state/state.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// The template state with `ports` bound, in order, to the pool's first outside MACs.
fn seeded(template: &Value, ports: &[(String, u32)]) -> Result<Value> {
    let mut state = template.clone();
    let b0 = state["bindings"][0].clone();
    let first = b0["outside"].as_str().context("outside MAC as a string")?;
    let base = u64::from_str_radix(&first.replace(':', ""), 16)?;
    let mut bindings = Vec::new();
    let mut port_list = Vec::new();
    for (i, (name, ifindex)) in ports.iter().enumerate() {
        let mut b = b0.clone();
        b["port"] = json!(name);
        b["ifindex"] = json!(ifindex);
        b["vm"] = json!(format!("seed-{i}"));
        b["inside"] = json!(inside_mac(1, i));
        let o = (base + i as u64).to_be_bytes();
        b["outside"] = json!(format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[2], o[3], o[4], o[5], o[6], o[7]
        ));
        bindings.push(b);
        port_list.push(json!({"name": name, "ifindex": ifindex}));
    }
    state["bindings"] = Value::Array(bindings);
    state["ports"] = Value::Array(port_list);
    state["alloc"]["next_fresh"] = json!(ports.len());
    state["alloc"]["released"] = json!([]);
    Ok(state)
}

/// Times the daemon's durable-write sequence on a state of `n` bindings (fake ports: only the
/// bytes matter here), the median of 7.
fn write_model(template: &Value, n: usize, run_dir: &Path) -> Result<WriteModel> {
    let ports: Vec<(String, u32)> = (0..n)
        .map(|i| (format!("tap{i}"), 100 + i as u32))
        .collect();
    let state = seeded(template, &ports)?;
    let dir = run_dir.join(format!("write-model-{n}"));
    std::fs::create_dir_all(&dir)?;
    let mut ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let data = serde_json::to_vec(&state)?;
        bytes = data.len();
        let temp = dir.join("state.json.tmp");
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&temp, dir.join("state.json"))?;
        std::fs::File::open(&dir)?.sync_all()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(WriteModel {
        bindings: n,
        bytes,
        median_ms: median(&ms),
        max_ms: ms.iter().copied().fold(0.0, f64::max),
    })
}

/// The namespace of a size's ports. Deleting a namespace removes its devices in one batch under
/// RTNL, and the kernel waits for an RCU grace period for each device with TCX links
/// (tcx_uninstall): 4,096 ports would hold RTNL for about a minute, 65,536 for about fifteen,
/// stalling every network change on the machine. So the ports go first, one request each, which
/// lets other RTNL users in between; then the empty namespace.
struct PortsNs(Netns);

impl PortsNs {
    fn new() -> PortsNs {
        PortsNs(Netns::new("bct"))
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
        let Ok(out) = Command::new("ip")
            .args(["-n", self.0.name(), "-o", "link", "show"])
            .output()
        else {
            return;
        };
        let batch: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name))
            .filter(|name| *name != "lo")
            .map(|name| format!("link del {name}\n"))
            .collect();
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
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                eprintln!("removing {}: {e}", self.0.display());
            }
        }
    }
}

fn size(mat: &Path, run_dir: &Path, template: &Value, n: usize, cfg: &Config) -> Result<Size> {
    let setup = Instant::now();
    let ns = PortsNs::new();
    let id = unique("");
    let seeded_ports = ports(&ns, &format!("s{id}x"), n)?;
    // At tens of thousands of bindings every change rewrites megabytes: fewer samples.
    let (socket_ops, cli_ops) = if n > 10_000 {
        (cfg.socket_ops.min(50), cfg.cli_ops.min(10))
    } else {
        (cfg.socket_ops, cfg.cli_ops)
    };
    let socket_ports = ports(&ns, &format!("a{id}x"), socket_ops)?;
    let cli_ports = ports(&ns, &format!("c{id}x"), cli_ops)?;
    let setup_s = setup.elapsed().as_secs_f64();
    let dir = run_dir.join(format!("size-{n}"));
    std::fs::create_dir_all(dir.join("state"))?;
    if n > 0 {
        std::fs::write(
            dir.join("state/state.json"),
            serde_json::to_vec(&seeded(template, &seeded_ports)?)?,
        )?;
    }
    let state_file_bytes = std::fs::metadata(dir.join("state/state.json")).map_or(0, |m| m.len());
    let pins = Pins::new();
    let links_prepinned = n > cfg.cold_start_max;
    let prelink_s = if links_prepinned {
        let t = Instant::now();
        prelink(&ns, &pins.0, &seeded_ports)?;
        Some(t.elapsed().as_secs_f64())
    } else {
        None
    };
    let (d, startup_s) = Daemon::start(mat, &ns, &dir, &pins.0)?;
    d.stop()?;
    let (d, restart_s) = Daemon::start(mat, &ns, &dir, &pins.0)?;
    let rss_mib_idle = rss_mib(d.pid())?;
    let bpf_map_mib = map_memlock_mib(d.pid())?;

    let mut client = Client::connect(&d.socket)?;
    let socket_attach = timed(&socket_ports, |i, (port, _)| {
        let r = client.call(&json!({
            "op": "attach", "port": port, "mac": inside_mac(2, i), "vm": format!("bench-{i}"),
        }))?;
        ensure!(r["outside"].is_string(), "attach gave no outside MAC: {r}");
        Ok(())
    })?;
    let socket_detach = timed(&socket_ports, |_, (port, _)| {
        client.call(&json!({"op": "detach", "port": port}))?;
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
    let cli_attach = timed(&cli_ports, |i, (port, _)| {
        cli(&["attach", port, "--mac", &inside_mac(3, i), "--json"])
    })?;
    let cli_detach = timed(&cli_ports, |_, (port, _)| cli(&["detach", port, "--json"]))?;
    let rss_mib_after = rss_mib(d.pid())?;
    d.stop()?;
    drop(ns);
    Ok(Size {
        existing_bindings: n,
        startup_s,
        links_prepinned,
        prelink_s,
        restart_s,
        socket_attach,
        socket_detach,
        cli_attach,
        cli_detach,
        rss_mib_idle,
        rss_mib_after,
        bpf_map_mib,
        state_file_bytes,
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

/// The targets for the control plane.
pub fn targets(report: &Report) -> Vec<super::Target> {
    let mut out = Vec::new();
    if let Some(s) = report.sizes.iter().find(|s| s.existing_bindings == 65_536) {
        out.push(super::Target {
            what: "control: attach p99 (socket) at 65,536 bindings, durable".into(),
            target: "< 5 ms".into(),
            measured: format!("{:.2} ms", s.socket_attach.p99_ms),
            met: s.socket_attach.p99_ms < 5.0,
        });
        out.push(super::Target {
            what: "control: attach p99 (CLI) at 65,536 bindings, durable".into(),
            target: "< 5 ms".into(),
            measured: format!("{:.2} ms", s.cli_attach.p99_ms),
            met: s.cli_attach.p99_ms < 5.0,
        });
        out.push(super::Target {
            what: "control: daemon RSS at 65,536 bindings".into(),
            target: "< 64 MiB".into(),
            measured: format!("{:.1} MiB", s.rss_mib_after.max(s.rss_mib_idle)),
            met: s.rss_mib_after.max(s.rss_mib_idle) < 64.0,
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
        "{:>9} {:>9} {:>9} {:>21} {:>21} {:>21} {:>21} {:>8} {:>8} {:>10}",
        "bindings",
        "start s",
        "restart s",
        "sock attach med/p99",
        "sock detach med/p99",
        "CLI attach med/p99",
        "CLI detach med/p99",
        "RSS MiB",
        "maps MiB",
        "state B"
    );
    let lat = |l: &Latency| format!("{:.2}/{:.2} ms", l.median_ms, l.p99_ms);
    for z in &report.sizes {
        let _ = writeln!(
            s,
            "{:>9} {:>9.3} {:>9.3} {:>21} {:>21} {:>21} {:>21} {:>8.1} {:>8.1} {:>10}",
            z.existing_bindings,
            z.startup_s,
            z.restart_s,
            lat(&z.socket_attach),
            lat(&z.socket_detach),
            lat(&z.cli_attach),
            lat(&z.cli_detach),
            z.rss_mib_after.max(z.rss_mib_idle),
            z.bpf_map_mib,
            z.state_file_bytes
        );
    }
    let _ = writeln!(
        s,
        "{:>9} {:>9} {:>9} {:>21} {:>21} {:>21} {:>21}",
        "", "", "", "(ops/s)", "", "", ""
    );
    for z in &report.sizes {
        let _ = writeln!(
            s,
            "{:>9} {:>9} {:>9} {:>21.0} {:>21.0} {:>21.0} {:>21.0}",
            z.existing_bindings,
            "",
            "",
            z.socket_attach.per_s,
            z.socket_detach.per_s,
            z.cli_attach.per_s,
            z.cli_detach.per_s
        );
    }
    for w in &report.state_write {
        let _ = writeln!(
            s,
            "durable write of the state file alone at {} bindings ({} bytes): median {:.2} ms, \
             max {:.2} ms",
            w.bindings, w.bytes, w.median_ms, w.max_ms
        );
    }
    for n in &report.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
