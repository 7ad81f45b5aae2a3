//! `mat libvirt-hook`: libvirt's qemu hook, and `mat install libvirt-hook` that puts it in place.
//!
//! libvirtd runs each executable in `/etc/libvirt/hooks/qemu.d/` (and `hooks/qemu`) with four
//! arguments, the domain name, the operation, the sub-operation and an extra argument, and the
//! full domain XML on stdin. It waits for the hook, and a non-zero exit aborts `prepare`,
//! `start`, `started`, `migrate` and `restore` (and kills the domain on `reconnect`). For
//! `migrate` and `restore` whatever the hook prints replaces the domain XML; printing nothing
//! leaves it unchanged. So the hook:
//!
//! - at `start begin` (also on a migration's destination and after `restore`) binds every
//!   translated interface's tap, keyed by (domain UUID, guest MAC), in one `attach_vm` request;
//!   the data plane announces the VM when its first frame shows it runs. If the daemon cannot
//!   be reached or refuses, it exits 1 with the reason on stderr, and the domain does not start:
//!   a VM never runs untranslated.
//! - at `reconnect begin` (libvirtd restarted) sends the same request: bindings that exist are
//!   kept unchanged. It always exits 0, since a non-zero exit would kill a running guest whose
//!   translation the pinned data plane still carries.
//! - at `release end` releases the domain's bindings into hold-down (`detach` by VM); nothing
//!   bound is fine (idempotent).
//! - does nothing for every other operation, and never writes to stdout.
//!
//! It reads stdin to the end whatever the operation, makes at most one connection to the daemon,
//! gives up after [`TIMEOUT`], never calls back into libvirt (libvirtd waits for the hook: that
//! would deadlock) and starts no child process.
//!
//! Interfaces hotplugged into a running domain fire no hook: the daemon binds them from
//! libvirt's device events (`mat daemon --libvirt URI`, see [`crate::libvirt_events`]), by the
//! same rule ([`attach_request`]). Without it, `mat attach TAP --mac GUEST-MAC --vm UUID` binds
//! one by hand, and the next `reconnect` or migration keeps it (same VM and MAC).

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::{
    client::{self, Client},
    libvirt_xml::{self, Domain},
    proto::{Request, VmPort},
    refusal::Code,
    views::{AttachVmView, DetachView},
};

/// How long the hook waits for the daemon before giving up (libvirtd waits for the hook).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How long a domain's start waits for a daemon that is restarting (a package upgrade restarts
/// it in under a second), so that a domain starting just then still starts, translated. Only
/// start waits: libvirtd runs `reconnect` for every domain as it starts, and a stop needs no
/// daemon (it releases a port that vanished).
pub const RESTART_WAIT: Duration = Duration::from_secs(5);

/// One request of the hook, on a connection of its own.
fn call<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
    restart_wait: Duration,
) -> Result<T, client::Error> {
    Client::connect_waiting(socket, TIMEOUT, restart_wait)?.call(req)
}
/// libvirt's hooks directory.
pub const HOOKS_DIR: &str = "/etc/libvirt/hooks";

/// The line that marks a hook script as MAT's own.
const MARKER: &str = "# MAT's libvirt qemu hook, written by `mat install libvirt-hook`.";

#[derive(Args, Debug)]
pub struct HookArgs {
    /// The domain's name.
    pub domain: String,
    /// prepare, start, started, stopped, release, migrate, restore, reconnect, attach.
    pub operation: String,
    /// begin or end.
    pub sub_operation: String,
    /// Extra argument (`-` when there is none).
    pub extra: String,
    /// Translate only interfaces in these bridges (repeatable; default: every bridge).
    #[arg(long = "bridge", value_name = "BRIDGE")]
    pub bridges: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Install {
    /// Write the qemu hook script (HOOKS_DIR/qemu.d/mat) that runs `mat libvirt-hook`. libvirtd
    /// reads its hooks when it starts: restart it afterwards.
    LibvirtHook {
        /// libvirt's hooks directory.
        #[arg(long, default_value = HOOKS_DIR, value_name = "DIR")]
        hooks_dir: PathBuf,
        /// The mat binary the hook runs (default: this one).
        #[arg(long, value_name = "PATH")]
        mat: Option<PathBuf>,
        /// Translate only interfaces in these bridges (repeatable; default: every bridge).
        #[arg(long = "bridge", value_name = "BRIDGE")]
        bridges: Vec<String>,
    },
}

/// What the hook does for an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Attach,
    Resync,
    Release,
    Nothing,
}

fn action(operation: &str, sub_operation: &str) -> Action {
    match (operation, sub_operation) {
        ("start", "begin") => Action::Attach,
        ("reconnect", "begin") => Action::Resync,
        ("release", "end") => Action::Release,
        _ => Action::Nothing,
    }
}

/// Runs the hook: exit 0 when libvirt may go on, 1 when it must not.
pub fn hook(socket: &Path, args: &HookArgs) -> ExitCode {
    // Read the whole XML whatever the operation: libvirtd writes it all before it waits.
    let mut xml = String::new();
    let read = std::io::stdin().read_to_string(&mut xml);
    let act = action(&args.operation, &args.sub_operation);
    let what = format!(
        "mat libvirt-hook: {} {} of domain {}",
        args.operation, args.sub_operation, args.domain
    );
    if let Err(e) = read {
        if act == Action::Nothing {
            return ExitCode::SUCCESS;
        }
        eprintln!("{what}: reading the domain XML on stdin: {e}");
        return ExitCode::from(1);
    }
    let result = match act {
        Action::Nothing => return ExitCode::SUCCESS,
        Action::Attach => attach(socket, &xml, &args.bridges, RESTART_WAIT),
        Action::Resync => attach(socket, &xml, &args.bridges, Duration::ZERO),
        Action::Release => release(socket, &xml),
    };
    match (result, act) {
        (Ok(()), _) => ExitCode::SUCCESS,
        (Err(e), Action::Resync) => {
            // A failure here would make libvirtd kill the guest; its translation stays pinned.
            eprintln!("{what}: {e:#} (the domain keeps running; its pinned bindings still work)");
            ExitCode::SUCCESS
        }
        (Err(e), Action::Attach) => {
            eprintln!("{what}: {e:#}; the domain does not start untranslated");
            ExitCode::from(1)
        }
        (Err(e), _) => {
            eprintln!("{what}: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The `attach_vm` request for a domain: every translated interface (in `bridges`, when given)
/// with its tap. `None` when there is nothing to translate.
pub(crate) fn attach_request(dom: &Domain, bridges: &[String]) -> Result<Option<Request>> {
    let mut ports = Vec::new();
    for i in dom.interfaces.iter().filter(|i| i.translated()) {
        if !bridges.is_empty() && !i.bridge.as_ref().is_some_and(|b| bridges.contains(b)) {
            continue;
        }
        let Some(tap) = &i.tap else {
            bail!(
                "interface {} ({}) has no <target dev>: is this the XML of a running domain?",
                i.mac,
                i.alias.as_deref().unwrap_or("no alias")
            );
        };
        ports.push(VmPort {
            port: tap.clone(),
            mac: i.mac.to_string(),
            ips: i.ips.clone(),
        });
    }
    Ok((!ports.is_empty()).then(|| Request::AttachVm {
        vm: dom.uuid.clone(),
        ports,
    }))
}

fn attach(socket: &Path, xml: &str, bridges: &[String], restart_wait: Duration) -> Result<()> {
    let dom = libvirt_xml::parse(xml)?;
    match attach_request(&dom, bridges)? {
        Some(req) => Ok(call::<AttachVmView>(socket, &req, restart_wait).map(drop)?),
        None => Ok(()),
    }
}

fn release(socket: &Path, xml: &str) -> Result<()> {
    let (_, uuid) = libvirt_xml::identity(xml)?;
    let req = Request::Detach {
        port: None,
        mac: None,
        vm: Some(uuid),
    };
    match call::<DetachView>(socket, &req, Duration::ZERO) {
        Ok(_) => Ok(()),
        Err(client::Error::Refused(r)) if r.code == Code::NotBound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `mat install ...`.
pub fn install(what: Install, socket: &Path) -> ExitCode {
    let Install::LibvirtHook {
        hooks_dir,
        mat,
        bridges,
    } = what;
    let run = || -> Result<PathBuf> {
        let mat = match mat {
            Some(m) => m,
            None => std::env::current_exe().context("finding this mat binary")?,
        };
        install_hook(&hooks_dir, &mat, socket, &bridges)
    };
    match run() {
        Ok(path) => {
            println!(
                "installed {}; restart libvirtd so that it runs the hook",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mat: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What is wrong with MAT's hook in `hooks_dir` for the daemon on `socket` (see
/// [`install_hook`]); `None` when it is in place, or when there is no hooks directory (no
/// libvirt on this host).
pub fn hook_status(hooks_dir: &Path, socket: &Path) -> Option<HookStatus> {
    if !hooks_dir.is_dir() {
        return None;
    }
    let path = hook_path(hooks_dir);
    let Ok(script) = fs::read_to_string(&path) else {
        return Some(HookStatus::Missing(path));
    };
    if !script.contains(MARKER) {
        return Some(HookStatus::Missing(path));
    }
    if fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o111 == 0) {
        return Some(HookStatus::NotExecutable(path));
    }
    let wanted = quote(&socket.to_string_lossy()).map(|s| format!(" --socket {s} "));
    if !wanted.is_ok_and(|w| script.contains(&w)) {
        return Some(HookStatus::OtherSocket(path));
    }
    None
}

/// A hook that is not as `mat install libvirt-hook` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookStatus {
    /// Absent, or another program's.
    Missing(PathBuf),
    NotExecutable(PathBuf),
    /// It talks to another socket.
    OtherSocket(PathBuf),
}

fn hook_path(hooks_dir: &Path) -> PathBuf {
    hooks_dir.join("qemu.d").join("mat")
}

/// Writes `hooks_dir/qemu.d/mat` (atomically, mode 0755): a script that runs
/// `mat --socket SOCKET libvirt-hook [--bridge B]... "$@"` in its own place (exec: no shell stays
/// behind holding libvirtd's pipes). libvirtd passes hooks only LC_ALL, PATH and HOME, so the
/// socket is written into the script. Returns the script's path.
pub fn install_hook(
    hooks_dir: &Path,
    mat: &Path,
    socket: &Path,
    bridges: &[String],
) -> Result<PathBuf> {
    let path = hook_path(hooks_dir);
    let dir = path.parent().expect("the hook is in qemu.d");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Ok(old) = fs::read_to_string(&path)
        && !old.contains(MARKER)
    {
        bail!(
            "{} exists and is not MAT's hook: move it away first",
            path.display()
        );
    }
    let mut cmd = vec![
        quote(&mat.to_string_lossy())?,
        "--socket".into(),
        quote(&socket.to_string_lossy())?,
        "libvirt-hook".into(),
    ];
    for b in bridges {
        cmd.push("--bridge".into());
        cmd.push(quote(b)?);
    }
    let script = format!(
        "#!/bin/sh\n{MARKER}\n# libvirtd runs it with: DOMAIN OPERATION SUB-OPERATION EXTRA, the \
         domain XML on stdin.\nexec {} \"$@\"\n",
        cmd.join(" ")
    );
    let tmp = dir.join(".mat.tmp");
    fs::write(&tmp, script).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(path)
}

/// A word for sh in single quotes.
fn quote(s: &str) -> Result<String> {
    if s.contains('\'') || s.contains('\n') {
        bail!("{s:?}: a path or name with a quote or a newline cannot go into the hook script");
    }
    Ok(format!("'{s}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/libvirt");

    fn domain(name: &str) -> Domain {
        let xml = fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
        libvirt_xml::parse(&xml).unwrap()
    }

    #[test]
    fn actions() {
        assert_eq!(action("start", "begin"), Action::Attach);
        assert_eq!(action("reconnect", "begin"), Action::Resync);
        assert_eq!(action("release", "end"), Action::Release);
        for (op, sub) in [
            ("prepare", "begin"),
            ("started", "begin"),
            ("stopped", "end"),
            ("migrate", "begin"),
            ("restore", "begin"),
            ("attach", "begin"),
            ("start", "end"),
            ("something-new", "begin"),
        ] {
            assert_eq!(action(op, sub), Action::Nothing, "{op} {sub}");
        }
    }

    #[test]
    fn requests_from_live_xml() {
        let d = domain("two-nics.start.xml");
        let Some(Request::AttachVm { vm, ports }) = attach_request(&d, &[]).unwrap() else {
            panic!("expected attach_vm");
        };
        assert_eq!(vm, "1a1a2041-d18d-483e-a1b9-5f57ceffe17d");
        let ports: Vec<_> = ports
            .iter()
            .map(|p| (p.port.as_str(), p.mac.as_str()))
            .collect();
        assert_eq!(
            ports,
            [
                ("vnet0", "52:54:00:aa:00:01"),
                ("vnet1", "52:54:00:aa:00:02")
            ]
        );
        // Only the listed bridges.
        let Some(Request::AttachVm { ports, .. }) = attach_request(&d, &["mxbrB".into()]).unwrap()
        else {
            panic!("expected attach_vm");
        };
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, "vnet1");
        assert!(attach_request(&d, &["other".into()]).unwrap().is_none());
        // Inactive XML at start would be a bug in the caller: a clear error, not a silent skip.
        assert!(attach_request(&domain("two-nics.prepare.xml"), &[]).is_err());
    }

    #[test]
    fn installed_script() {
        let dir = std::env::temp_dir().join(format!("mat-hook-test-{}", std::process::id()));
        let path = install_hook(
            &dir,
            Path::new("/usr/local/bin/mat"),
            Path::new("/run/mat/mat.sock"),
            &["br0".into()],
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains(
            "exec '/usr/local/bin/mat' --socket '/run/mat/mat.sock' libvirt-hook --bridge 'br0' \"$@\""
        ));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // Again: replaced in place. Someone else's script: refused.
        install_hook(&dir, Path::new("/m"), Path::new("/s"), &[]).unwrap();
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        assert!(install_hook(&dir, Path::new("/m"), Path::new("/s"), &[]).is_err());
        assert!(install_hook(&dir, Path::new("/it's"), Path::new("/s"), &[]).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
