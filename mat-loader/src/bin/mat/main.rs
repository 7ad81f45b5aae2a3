//! `mat`: MAT's daemon and CLI. `mat daemon` owns a host's outside-MAC pool, the data plane and
//! the state on disk; the other subcommands talk to it over its control socket. Everything here
//! is argument parsing: the work is in the `mat_loader` library.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, Subcommand};
use mat_loader::{
    DEFAULT_SOCKET, cli, client, config, decode, generate::Generate, libvirt, mac::Mac,
    proto::Request, store,
};

#[derive(Parser)]
#[command(
    name = "mat",
    version,
    about = "MAC Address Translation: daemon and CLI"
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "MAT_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// How long to wait for the daemon, in seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = client::DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: owns the pool, the data plane and the state.
    Daemon(Box<config::DaemonArgs>),
    /// Bind a VM's inside MAC on PORT (attaching the programs if needed); prints the outside MAC.
    Attach {
        port: String,
        /// The VM's own (inside) MAC.
        #[arg(long)]
        mac: Mac,
        /// The VM's name: with the MAC, it identifies the VM port across re-attachments.
        #[arg(long)]
        vm: Option<String>,
        /// An address of the VM, announced with gratuitous ARP (IPv4) or an unsolicited Neighbor
        /// Advertisement (IPv6); repeatable.
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        /// Accept a port that is not a tap or a veth (never a bridge or a managed bridge's uplink).
        #[arg(long)]
        force: bool,
        /// Let this port send from MACs other than the VM's own (a guest that bridges).
        #[arg(long)]
        no_port_security: bool,
        #[arg(long)]
        json: bool,
    },
    /// Release bindings into hold-down: the one on PORT (only MAC's with --mac) or all of a VM's.
    Detach {
        #[arg(required_unless_present = "vm")]
        port: Option<String>,
        #[arg(long, requires = "port")]
        mac: Option<Mac>,
        #[arg(long)]
        vm: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bindings: VM, port, inside and outside MAC, given and learned IPv4s, since when.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The data plane's counters per program and direction, and per port.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The host pool, the rack's MAC route, capacity, and bound, held-down and free MACs.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// The aggregate MAC routes this host's rack needs (per VLAN when VLANs are configured).
    Routes {
        #[arg(long)]
        json: bool,
    },
    /// Check the host's set-up: kernel, daemon, configuration, pins, programs, maps, pool and
    /// libvirt's hook; one line per finding with what to do (exit 1 on an error).
    Doctor(mat_loader::doctor::DoctorArgs),
    /// Follow what the data plane drops and why (spoof, port security, malformed, reflected),
    /// and what the daemon learns and announces, as it happens (Ctrl-C stops).
    Monitor(mat_loader::monitor::MonitorArgs),
    /// Whose is an outside MAC: its rack, host and VM slot, and on this host the VM that holds it
    /// or its hold-down. Without a daemon, decoded from the configuration.
    Decode {
        mac: Mac,
        /// The configuration to decode with when no daemon answers (default /etc/mat/mat.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Ports that carry MAT's programs.
    #[command(subcommand)]
    Port(PortCommand),
    /// The daemon's durable state.
    #[command(subcommand)]
    State(StateCommand),
    /// libvirt's qemu hook (run by libvirtd; see `mat install libvirt-hook`).
    LibvirtHook(libvirt::HookArgs),
    /// Put an integration in place.
    #[command(subcommand)]
    Install(libvirt::Install),
    /// Shell completions and man pages, for packaging.
    #[command(subcommand, hide = true)]
    Generate(Generate),
}

#[derive(Subcommand)]
enum PortCommand {
    /// Take MAT's programs off PORT (refused while it is bound).
    Release {
        port: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Print the whole state as JSON, read from the state directory (the daemon may be running
    /// or not).
    Export {
        /// The daemon's state directory.
        #[arg(long, value_name = "DIR", default_value = config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket;
    let client_socket = || socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into());
    let timeout = Duration::from_secs(cli.timeout);
    match cli.command {
        Command::Daemon(args) => config::daemon(*args, socket),
        Command::Attach {
            port,
            mac,
            vm,
            ips,
            force,
            no_port_security,
            json,
        } => cli::run(
            &client_socket(),
            timeout,
            &Request::Attach {
                port,
                mac: mac.to_string(),
                vm,
                ips,
                force,
                port_security: no_port_security.then_some(false),
            },
            json,
            cli::attach_text,
        ),
        Command::Detach {
            port,
            mac,
            vm,
            json,
        } => cli::run(
            &client_socket(),
            timeout,
            &Request::Detach {
                port,
                mac: mac.map(|m| m.to_string()),
                vm,
            },
            json,
            cli::detach_text,
        ),
        Command::List { json } => cli::run(
            &client_socket(),
            timeout,
            &Request::List {},
            json,
            cli::list_text,
        ),
        Command::Stats { json } => cli::run(
            &client_socket(),
            timeout,
            &Request::Stats {},
            json,
            cli::stats_text,
        ),
        Command::Plan { json } => cli::run(
            &client_socket(),
            timeout,
            &Request::Plan {},
            json,
            cli::plan_text,
        ),
        Command::Routes { json } => cli::run(
            &client_socket(),
            timeout,
            &Request::Routes {},
            json,
            cli::routes_text,
        ),
        Command::Decode { mac, config, json } => {
            decode::run(&client_socket(), timeout, mac, config.as_deref(), json)
        }
        Command::Port(PortCommand::Release { port, json }) => cli::run(
            &client_socket(),
            timeout,
            &Request::ReleasePort { port },
            json,
            cli::release_port_text,
        ),
        Command::State(StateCommand::Export { state_dir }) => match store::export(&state_dir) {
            Ok(state) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&state).expect("the state serializes")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mat: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Doctor(args) => mat_loader::doctor::run(&args, &client_socket(), timeout),
        Command::Monitor(args) => mat_loader::monitor::run(&args, &client_socket(), timeout),
        Command::LibvirtHook(args) => libvirt::hook(&client_socket(), &args),
        Command::Install(what) => libvirt::install(what, &client_socket()),
        Command::Generate(what) => what.run(Cli::command()),
    }
}
