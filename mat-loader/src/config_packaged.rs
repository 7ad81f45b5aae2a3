//! The package's conffile (`debian/mat.toml`, installed as /etc/mat/mat.toml) against the keys
//! this module reads: every key is there, commented, at its default; as shipped it configures
//! nothing but libvirtd's URI, so the daemon says what is missing.

use std::path::{Path, PathBuf};

use super::*;

const CONFFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/debian/mat.toml");

fn conffile() -> String {
    std::fs::read_to_string(CONFFILE).expect("reading debian/mat.toml")
}

/// The conffile with every `# key = value` line uncommented (and the keys it sets).
fn uncommented() -> String {
    conffile()
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("# ").unwrap_or(l);
            let (key, _) = l.split_once(" = ")?;
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| format!("{l}\n"))
        })
        .collect()
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("mat-conffile-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn as_shipped_it_sets_only_libvirt() {
    let file: File = toml::from_str(&conffile()).expect("the conffile parses");
    let only_libvirt = File {
        libvirt: Some("qemu:///system".into()),
        ..File::default()
    };
    assert_eq!(format!("{file:?}"), format!("{only_libvirt:?}"));
}

#[test]
fn every_key_is_listed_at_its_default() {
    let text = uncommented();
    let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // No `..`: a key added to `File` does not compile here until it is in the conffile.
    let File {
        pool,
        rack_bits,
        host_bits,
        rack,
        host,
        allow_universal,
        vlans,
        hold_down,
        socket,
        state_dir,
        pin_dir,
        bridges,
        vm_ports,
        port_security,
        dhcp_chaddr,
        uplink,
        uplink_xdp,
        watch,
        log_format,
        libvirt,
        metrics,
    } = file;
    // The plan has no default: an example.
    assert!(pool.is_some() && rack.is_some() && host.is_some());
    assert!(vm_ports.is_some(), "an example glob");
    assert!(metrics.is_some(), "an example address (off by default)");
    assert_eq!(rack_bits, Some(DEFAULT_RACK_BITS));
    assert_eq!(host_bits, Some(DEFAULT_HOST_BITS));
    assert_eq!(allow_universal, Some(false));
    assert_eq!(vlans, Some(vec![]));
    assert_eq!(parse_duration(&hold_down.unwrap()), Ok(DEFAULT_HOLD_DOWN));
    assert_eq!(bridges, Some(vec![]));
    assert_eq!(port_security, Some(Switch::On));
    assert_eq!(dhcp_chaddr, Some(DhcpChaddr::Keep));
    assert_eq!(log_format, Some(LogFormat::Text));
    assert!(uplink.is_some(), "an example uplink");
    assert_eq!(uplink_xdp, Some(XdpMode::Native));
    assert_eq!(watch, Some(vec![]));
    assert_eq!(libvirt.as_deref(), Some("qemu:///system"));
    assert_eq!(socket.as_deref(), Some(Path::new(crate::paths::SOCKET)));
    assert_eq!(
        state_dir.as_deref(),
        Some(Path::new(crate::paths::STATE_DIR))
    );
    assert_eq!(pin_dir.as_deref(), Some(Path::new(crate::paths::PIN_DIR)));

    // The examples make a valid configuration.
    let path = scratch("all.toml", &text);
    let resolved = resolve(
        DaemonArgs {
            config: Some(path.clone()),
            ..DaemonArgs::default()
        },
        None,
    );
    std::fs::remove_file(&path).unwrap();
    resolved.expect("the uncommented conffile resolves");
}

#[test]
fn unconfigured_names_every_missing_key_in_one_line() {
    let err = |args: DaemonArgs| match resolve(args, None) {
        Ok(_) => panic!("configured"),
        Err(e) => format!("{e:#}"),
    };
    let shipped = DaemonArgs {
        config: Some(CONFFILE.into()),
        ..DaemonArgs::default()
    };
    assert_eq!(
        err(shipped),
        format!("not configured: set pool, rack, host in {CONFFILE} (or --pool, --rack, --host)")
    );
    let partial = DaemonArgs {
        config: Some(CONFFILE.into()),
        rack: Some(1),
        ..DaemonArgs::default()
    };
    assert_eq!(
        err(partial),
        format!("not configured: set pool, host in {CONFFILE} (or --pool, --host)")
    );
    assert_eq!(
        not_configured(["host"].into_iter(), None),
        "not configured: set host in /etc/mat/mat.toml (or --host)"
    );
}
