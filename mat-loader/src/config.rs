//! The daemon's configuration: a TOML file (optional) overridden by flags, then defaults.
//!
//! ```toml
//! pool = "02:00:5e:00:00:00/24"
//! rack_bits = 8
//! host_bits = 8
//! rack = 1
//! host = 3
//! # allow_universal = false
//! # vlans = [10, 20]
//! # hold_down = "300s"
//! # socket = "/run/mat/mat.sock"
//! # state_dir = "/var/lib/mat"
//! # pin_dir = "/sys/fs/bpf/mat"
//! # log_format = "text"
//! # metrics = "127.0.0.1:9417"
//! ```

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::{
    DEFAULT_SOCKET, daemon,
    mac::MacPrefix,
    plan::{Plan, PlanError},
    uplink::{Uplink, XdpMode},
};

pub const DEFAULT_CONFIG: &str = crate::paths::CONFIG;
pub const DEFAULT_STATE_DIR: &str = crate::paths::STATE_DIR;
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_mins(5);
pub const DEFAULT_RACK_BITS: u8 = 8;
pub const DEFAULT_HOST_BITS: u8 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Default)]
pub struct DaemonArgs {
    /// Configuration file (TOML); flags override it. Default: /etc/mat/mat.toml if it exists.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Durable state (default /var/lib/mat).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// BPF pin directory for maps and links (default /sys/fs/bpf/mat).
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Outside pool prefix shared by all racks, e.g. 02:00:5e:00:00:00/24.
    #[arg(long, value_name = "MAC/LEN")]
    pool: Option<MacPrefix>,
    /// Bits for the rack id (default 8).
    #[arg(long)]
    rack_bits: Option<u8>,
    /// Bits for the host id (default 8); the VM bits are what is left of 48.
    #[arg(long)]
    host_bits: Option<u8>,
    /// This host's rack id.
    #[arg(long)]
    rack: Option<u64>,
    /// This host's id within its rack.
    #[arg(long)]
    host: Option<u64>,
    /// Accept a universally administered pool (an OUI you own).
    #[arg(long)]
    allow_universal: bool,
    /// A VLAN the rack's MAC routes are needed in (repeatable).
    #[arg(long = "vlan", value_name = "ID")]
    vlans: Vec<u16>,
    /// How long a released MAC is held before reuse, e.g. 300s, 5m, 1500ms (default 300s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    hold_down: Option<Duration>,
    /// A bridge whose VM ports get MAT's programs as soon as they appear (repeatable); its
    /// other ports (the uplink) are refused.
    #[arg(long = "bridge", value_name = "BRIDGE")]
    bridges: Vec<String>,
    /// A glob naming VM ports that are not taps, for veth-based set-ups (e.g. 'vm-*').
    #[arg(long, value_name = "GLOB")]
    vm_ports: Option<String>,
    /// Port security for bindings that do not say otherwise (default on): a bound port may
    /// only claim its VM's own MAC.
    #[arg(long, value_enum, value_name = "on|off")]
    port_security: Option<Switch>,
    /// DHCPv4 chaddr: keep the VM's MAC and set the broadcast flag (default), or translate it
    /// (for DHCP snooping that checks Ethernet source == chaddr).
    #[arg(long, value_enum)]
    dhcp_chaddr: Option<DhcpChaddr>,
    /// Uplink mode: translate on this bridge port towards the network (TC egress, XDP in),
    /// keyed by MAC only, instead of on each VM port.
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// How the uplink's XDP program is attached: native (default) or generic, where the
    /// driver has no native XDP.
    #[arg(long, value_enum)]
    uplink_xdp: Option<XdpMode>,
    /// An interface to watch for frames from this host's outside MACs that came from the
    /// network (repeatable; default: the uplink, or the managed bridges' other ports).
    #[arg(long = "watch", value_name = "IFACE")]
    watch: Vec<String>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Bind interfaces hotplugged into running domains, from libvirtd's events at this URI
    /// (e.g. qemu:///system; `off`: do not connect). The daemon runs without libvirtd: it
    /// retries, and resyncs when it reconnects.
    #[arg(long, value_name = "URI")]
    libvirt: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9417 (default: off).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpChaddr {
    Keep,
    Translate,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// The configuration file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    pool: Option<MacPrefix>,
    rack_bits: Option<u8>,
    host_bits: Option<u8>,
    rack: Option<u64>,
    host: Option<u64>,
    allow_universal: Option<bool>,
    vlans: Option<Vec<u16>>,
    hold_down: Option<String>,
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    bridges: Option<Vec<String>>,
    vm_ports: Option<String>,
    port_security: Option<Switch>,
    dhcp_chaddr: Option<DhcpChaddr>,
    uplink: Option<String>,
    uplink_xdp: Option<XdpMode>,
    watch: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    libvirt: Option<String>,
    metrics: Option<std::net::SocketAddr>,
}

fn read_file(explicit: Option<&Path>) -> Result<File> {
    let path = match explicit {
        Some(p) => p,
        None if Path::new(DEFAULT_CONFIG).exists() => Path::new(DEFAULT_CONFIG),
        None => return Ok(File::default()),
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One line naming every missing key of the address plan, where to set it and the flags:
/// `not configured: set pool, rack, host in /etc/mat/mat.toml (or --pool, --rack, --host)`.
fn not_configured<'a>(missing: impl Iterator<Item = &'a str>, config: Option<&Path>) -> String {
    let missing: Vec<&str> = missing.collect();
    let flags: Vec<String> = missing.iter().map(|k| format!("--{k}")).collect();
    format!(
        "not configured: set {} in {} (or {})",
        missing.join(", "),
        config.unwrap_or(Path::new(DEFAULT_CONFIG)).display(),
        flags.join(", ")
    )
}

/// Everything the daemon runs with, resolved.
struct Resolved {
    options: daemon::Options,
    log_format: LogFormat,
}

fn resolve(args: DaemonArgs, socket: Option<PathBuf>) -> Result<Resolved> {
    let file = read_file(args.config.as_deref())?;
    let (pool, rack, host) = (
        args.pool.or(file.pool),
        args.rack.or(file.rack),
        args.host.or(file.host),
    );
    let (Some(pool), Some(rack), Some(host)) = (pool, rack, host) else {
        let missing = [
            ("pool", pool.is_none()),
            ("rack", rack.is_none()),
            ("host", host.is_none()),
        ];
        bail!(not_configured(
            missing.iter().filter(|m| m.1).map(|m| m.0),
            args.config.as_deref()
        ));
    };
    let vlans = if args.vlans.is_empty() {
        file.vlans.unwrap_or_default()
    } else {
        args.vlans
    };
    let plan = Plan::new(
        pool,
        args.rack_bits
            .or(file.rack_bits)
            .unwrap_or(DEFAULT_RACK_BITS),
        args.host_bits
            .or(file.host_bits)
            .unwrap_or(DEFAULT_HOST_BITS),
        rack,
        host,
        args.allow_universal || file.allow_universal.unwrap_or(false),
        vlans,
    )
    .map_err(|e: PlanError| anyhow::anyhow!("invalid address plan: {e}"))?;
    let hold_down = match (args.hold_down, file.hold_down) {
        (Some(d), _) => d,
        (None, Some(s)) => {
            parse_duration(&s).map_err(|e| anyhow::anyhow!("hold_down {s:?} in the config: {e}"))?
        }
        (None, None) => DEFAULT_HOLD_DOWN,
    };
    let bridges = if args.bridges.is_empty() {
        file.bridges.unwrap_or_default()
    } else {
        args.bridges
    };
    let uplink = args.uplink.or(file.uplink).map(|name| Uplink {
        name,
        xdp: args.uplink_xdp.or(file.uplink_xdp).unwrap_or_default(),
    });
    let watch = if args.watch.is_empty() {
        file.watch.unwrap_or_default()
    } else {
        args.watch
    };
    let vm_ports = args
        .vm_ports
        .or(file.vm_ports)
        .map(|p| {
            glob::Pattern::new(&p).map_err(|e| anyhow::anyhow!("vm_ports {p:?} is not a glob: {e}"))
        })
        .transpose()?;
    Ok(Resolved {
        options: daemon::Options {
            socket: socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            state_dir: args
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            pin_dir: args
                .pin_dir
                .or(file.pin_dir)
                .unwrap_or_else(|| crate::DEFAULT_PIN_DIR.into()),
            plan,
            hold_down,
            bridges,
            vm_ports,
            port_security: args.port_security.or(file.port_security) != Some(Switch::Off),
            dhcp_translate: args.dhcp_chaddr.or(file.dhcp_chaddr) == Some(DhcpChaddr::Translate),
            uplink,
            watch,
            libvirt: args.libvirt.or(file.libvirt).filter(|u| u != "off"),
            metrics: args.metrics.or(file.metrics),
        },
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
    })
}

/// The configuration file (`path`, or the default one) as `mat daemon` reads it without flags.
fn from_file(path: Option<&Path>) -> Result<Resolved> {
    let args = DaemonArgs {
        config: path.map(Path::to_owned),
        ..DaemonArgs::default()
    };
    resolve(args, None)
}

/// Checks the configuration file (`path`, else the default one when it exists) as `mat daemon`
/// reads it without flags; returns the pin directory it configures. `None` when there is no
/// file to check (the daemon may run on flags).
pub fn check(path: Option<&Path>) -> Option<Result<PathBuf>> {
    if path.is_none() && !Path::new(DEFAULT_CONFIG).exists() {
        return None;
    }
    Some(from_file(path).map(|r| r.options.pin_dir))
}

/// The address plan of the configuration file (`config`, or the default one), as the daemon
/// would run with it: for decoding MACs when no daemon answers.
pub fn plan(config: Option<&Path>) -> Result<Plan> {
    Ok(from_file(config)?.options.plan)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `mat daemon`: exit 2 for a configuration that cannot work, 1 when running fails.
pub fn daemon(args: DaemonArgs, socket: Option<PathBuf>) -> ExitCode {
    let resolved = match resolve(args, socket) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mat daemon: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logs(resolved.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the runtime");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(daemon::run(resolved.options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "mat daemon failed");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
#[path = "config_packaged.rs"]
mod packaged;
