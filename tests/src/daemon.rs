//! The real `mat` binary for end-to-end tests: a daemon started inside a test's hypervisor
//! namespace with its own socket, state directory and BPF pin directory (so several run side by
//! side), and the CLI to talk to it.
//!
//! Finding the binary: integration tests of this crate cannot use `CARGO_BIN_EXE_mat` (that is
//! only set for tests of the package that owns the binary), so [`mat_binary`] asks cargo to build
//! it (a no-op when it is fresh) and takes the path from cargo's own report; `MAT_BIN` overrides.
//!
//! Every daemon is killed by pid, and its pins and directories removed, when its guard drops,
//! also when the test panics.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use mat_loader::Dataplane;

use crate::{
    frames::Mac,
    netns::{ChildGuard, Netns},
    pins::unique,
    topology::fmt_mac,
};

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// Makes the helpers of this test process use `path` as the `mat` binary (the packaged one, say);
/// panics if they already use another.
pub fn use_mat_binary(path: &Path) {
    let used = BIN.get_or_init(|| path.to_owned());
    assert_eq!(used, path, "the helpers already use another mat binary");
}

/// The `mat` binary, built once per test process.
pub fn mat_binary() -> &'static Path {
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MAT_BIN") {
            return PathBuf::from(p);
        }
        // With libvirt's interface hotplug, as the package builds it.
        cargo_binary("mat-loader", "mat", &["libvirt-events"])
    })
}

/// Builds `bin` of the workspace's `package` (with these cargo features) with the cargo running
/// the tests, and returns its path.
pub fn cargo_binary(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--features", &features.join(",")])
        .args(["--message-format", "json"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo}: {e}"));
    assert!(out.status.success(), "cargo build of {bin} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == bin)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for {bin}"))
}

/// The packets a data-plane counter counted, from `mat stats --json` (`hook`, `outcome`).
pub fn counter(stats: &serde_json::Value, hook: &str, outcome: &str) -> u64 {
    stats["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .find(|c| c["hook"] == hook && c["outcome"] == outcome)
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {hook}/{outcome}"))
}

/// A binding map entry: (ifindex, key MAC, value MAC).
pub type MapEntry = (u32, Mac, Mac);

/// The outside pool every test daemon uses unless told otherwise.
pub const POOL: &str = "02:00:5e:00:00:00/24";

/// A `mat daemon` in a namespace, with everything it owns.
pub struct Daemon {
    netns: String,
    /// Holds the socket, the state directory and the daemon's log.
    dir: PathBuf,
    pin_dir: PathBuf,
    /// A command the daemon runs under, inside the namespace (e.g. `prlimit --nofile=N:N --`).
    wrapper: Vec<String>,
    args: Vec<String>,
    /// The `mat` binary of this daemon and its CLI, when not the process's ([`mat_binary`]).
    bin: Option<PathBuf>,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl Daemon {
    /// Starts a daemon in `ns` with the plan and options in `args` (e.g. `--pool`, `--rack`,
    /// `--host`, `--hold-down`), and waits until it answers.
    pub fn start(ns: &Netns, args: &[&str]) -> Daemon {
        let mut d = Daemon::prepare(ns, args);
        d.spawn();
        d.wait_ready();
        d
    }

    /// Like [`Daemon::start`], with the daemon run by `wrapper` (a command prefix such as
    /// `["prlimit", "--nofile=256:256", "--"]`, which must exec the daemon so that its pid is
    /// the daemon's), on this and every later start.
    pub fn start_wrapped(ns: &Netns, wrapper: &[&str], args: &[&str]) -> Daemon {
        let mut d = Daemon::prepare(ns, args);
        d.wrapper = wrapper
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        d.spawn();
        d.wait_ready();
        d
    }

    /// A daemon with its own (empty) directories, not started yet: a test can put what an
    /// earlier release left there first (see [`Daemon::state_dir`], [`Daemon::pin_dir`]).
    pub fn prepare(ns: &Netns, args: &[&str]) -> Daemon {
        let id = unique("mat-cp-");
        let dir = std::env::temp_dir().join(&id);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Daemon {
            netns: ns.name().to_owned(),
            dir,
            pin_dir: Path::new("/sys/fs/bpf").join(&id),
            wrapper: Vec::new(),
            args: args.iter().map(std::string::ToString::to_string).collect(),
            bin: None,
            child: None,
            starts: 0,
        }
    }

    /// Runs this daemon and its CLI from `bin` from the next start on (another release's, say).
    pub fn use_binary(&mut self, bin: &Path) {
        self.bin = Some(bin.to_owned());
    }

    fn binary(&self) -> &Path {
        self.bin.as_deref().unwrap_or_else(|| mat_binary())
    }

    /// Replaces the options of the next start (the directories stay): a restart with another
    /// configuration.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(std::string::ToString::to_string).collect();
    }

    /// More arguments for the next starts (e.g. a URI known only once the daemon's socket is).
    pub fn push_args(&mut self, args: &[&str]) {
        self.args
            .extend(args.iter().map(std::string::ToString::to_string));
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mat.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Everything the daemon (all its runs) wrote to stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (without waiting for it to answer).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the daemon log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .args(&self.wrapper)
            .arg(self.binary())
            .arg("daemon")
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("MAT_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting mat daemon");
        self.child = Some(child);
        self.starts += 1;
    }

    /// Waits (10 s at most) until the daemon answers a request; panics with its log if it died.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("mat daemon exited with {status}:\n{}", self.log());
            }
            if self.try_request(r#"{"op":"list"}"#).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mat daemon not answering on {}:\n{}",
                self.socket().display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, by pid, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, by pid, and wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("waiting for the daemon")
    }

    /// SIGKILL by pid and, without waiting for the old process to exit, a new daemon on the same
    /// socket, state and pins (an operator's `kill -9` and restart); waits until it answers,
    /// then reaps the old one.
    pub fn kill9_and_restart(&mut self) {
        let old = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(old.id() as i32, libc::SIGKILL) };
        let _old = ChildGuard(old);
        self.spawn();
        self.wait_ready();
    }

    /// Starts it again (same socket, state and pins) and waits until it answers.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready();
    }

    /// `mat --socket SOCKET args...`, run from the test's own namespace (the socket is a path).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(self.binary())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("MAT_SOCKET")
            .output()
            .expect("running mat")
    }

    /// Like [`Daemon::cli`], and panics unless it succeeded; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "mat {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Like [`Daemon::cli`], and panics unless the daemon refused it with `code` (exit 1, the
    /// CLI's `mat: refused (CODE): ...` line).
    pub fn cli_refused(&self, args: &[&str], code: &str) {
        let out = self.cli(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "mat {args:?} should be refused: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("mat: refused ({code}):")),
            "mat {args:?}: expected {code}, got {}",
            stderr(&out)
        );
    }

    /// `mat ... --json` parsed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.cli_ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {text:?}: {e}"))
    }

    /// One raw request line (a newline is added) and the reply line, parsed.
    pub fn try_request(&self, line: &str) -> std::io::Result<serde_json::Value> {
        self.raw(format!("{line}\n").as_bytes())
    }

    /// Writes `bytes` as they are and reads one reply line.
    pub fn raw(&self, bytes: &[u8]) -> std::io::Result<serde_json::Value> {
        let mut s = UnixStream::connect(self.socket())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(bytes)?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        serde_json::from_str(&line).map_err(|e| std::io::Error::other(format!("{line:?}: {e}")))
    }

    pub fn request(&self, line: &str) -> serde_json::Value {
        self.try_request(line)
            .unwrap_or_else(|e| panic!("request {line}: {e}"))
    }

    /// The state on disk as `mat state export` prints it (empty before the first start).
    pub fn state_file(&self) -> Vec<u8> {
        mat_loader::store::export(&self.state_dir())
            .map(|s| serde_json::to_vec_pretty(&s).expect("the state serializes"))
            .unwrap_or_default()
    }

    /// The pinned maps as the kernel has them: (ifindex, inside, outside) from the from-VM map,
    /// and (ifindex, outside, inside) from the to-VM map.
    pub fn maps(&self) -> (Vec<MapEntry>, Vec<MapEntry>) {
        pinned_maps(&self.pin_dir)
    }
}

/// The binding maps pinned under `pin_dir`: (ifindex, inside, outside) from the from-VM map, and
/// (ifindex, outside, inside) from the to-VM map, sorted.
pub fn pinned_maps(pin_dir: &Path) -> (Vec<MapEntry>, Vec<MapEntry>) {
    let dp = Dataplane::open(pin_dir).expect("opening the pinned maps");
    let mut from: Vec<_> = dp
        .bindings()
        .expect("reading bindings")
        .into_iter()
        .map(|(k, v)| (k.ifindex, k.mac, v.mac))
        .collect();
    let mut to: Vec<_> = dp
        .reverse_bindings()
        .expect("reading bindings")
        .into_iter()
        .map(|(k, v)| (k.ifindex, k.mac, v.mac))
        .collect();
    from.sort_unstable();
    to.sort_unstable();
    (from, to)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- log of the mat daemon ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        if self.pin_dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.pin_dir)
        {
            eprintln!("removing {}: {e}", self.pin_dir.display());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A binding as `mat list --json` shows it: (port, inside, outside).
pub fn bindings(list: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = list["bindings"]
        .as_array()
        .expect("bindings array")
        .iter()
        .map(|b| {
            (
                b["port"].as_str().unwrap().to_owned(),
                b["inside"].as_str().unwrap().to_owned(),
                b["outside"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `aa:bb:...` of a MAC, as the daemon prints it.
pub fn mac_str(mac: &Mac) -> String {
    fmt_mac(mac)
}

/// A command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The code of a protocol error reply; panics on anything else.
pub fn error_code(reply: &serde_json::Value) -> &str {
    reply["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {reply}"))
}
