//! `mat`: MAT's daemon and CLI. `mat daemon` owns a host's outside-MAC pool, the data plane and
//! the state on disk; the other subcommands talk to it over its control socket (see `proto.rs`).

mod alloc;
mod cli;
mod config;
mod core;
mod daemon;
mod garp;
mod libvirt;
mod libvirt_xml;
mod links;
mod mac;
mod plan;
mod proto;
mod state;

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{mac::Mac, proto::Request};

/// Where the CLI and the daemon meet unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mat/mat.sock";

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
        /// An IPv4 address of the VM, announced with gratuitous ARP (repeatable).
        #[arg(long = "ip", value_name = "IPV4")]
        ips: Vec<Ipv4Addr>,
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
    /// libvirt's qemu hook (run by libvirtd; see `mat install libvirt-hook`).
    LibvirtHook(libvirt::HookArgs),
    /// Put an integration in place.
    #[command(subcommand)]
    Install(libvirt::Install),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket;
    let client_socket = || socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into());
    match cli.command {
        Command::Daemon(args) => config::daemon(*args, socket),
        Command::Attach {
            port,
            mac,
            vm,
            ips,
            json,
        } => cli::run(
            &client_socket(),
            Request::Attach {
                port,
                mac: mac.to_string(),
                vm,
                ips,
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
            Request::Detach {
                port,
                mac: mac.map(|m| m.to_string()),
                vm,
            },
            json,
            cli::detach_text,
        ),
        Command::List { json } => {
            cli::run(&client_socket(), Request::List {}, json, cli::list_text)
        }
        Command::Stats { json } => {
            cli::run(&client_socket(), Request::Stats {}, json, cli::stats_text)
        }
        Command::Plan { json } => {
            cli::run(&client_socket(), Request::Plan {}, json, cli::plan_text)
        }
        Command::Routes { json } => {
            cli::run(&client_socket(), Request::Routes {}, json, cli::routes_text)
        }
        Command::LibvirtHook(args) => libvirt::hook(&client_socket(), &args),
        Command::Install(what) => libvirt::install(what, &client_socket()),
    }
}
