//! Where MAT keeps its files unless told otherwise: the one place for the default paths, shared
//! by the code and by the systemd unit that creates the directories (`debian/mat.service`, packaged
//! by `cargo xtask package`). The unit names the directories the way systemd wants them
//! (`RuntimeDirectory=mat`, `StateDirectory=mat`, `ReadWritePaths=/sys/fs/bpf`); the tests below
//! check that those are the parents of the paths here, so neither can change alone.

/// The daemon's configuration file (a conffile of the package), read when it exists.
pub const CONFIG: &str = "/etc/mat/mat.toml";

/// Where the CLI and the daemon meet: in systemd's `RuntimeDirectory=mat` (`/run/mat`).
pub const SOCKET: &str = "/run/mat/mat.sock";

/// The durable state (`state.db`): systemd's `StateDirectory=mat`, mode 0700.
pub const STATE_DIR: &str = "/var/lib/mat";

/// Where the data plane pins its maps and links: on the BPF filesystem systemd mounts at
/// `/sys/fs/bpf` (`ReadWritePaths=/sys/fs/bpf` in the unit), created by the daemon.
pub const PIN_DIR: &str = "/sys/fs/bpf/mat";

/// The packaged binary, as the unit's `ExecStart=` runs it.
pub const BINARY: &str = "/usr/bin/mat";

/// The systemd unit of the package, as installed.
pub const UNIT: &str = include_str!("../debian/mat.service");

/// `systemd-analyze verify` checks the unit's syntax; these check that it agrees with the paths
/// above.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The values of `key=` lines in the unit (a key may repeat).
    fn values(key: &str) -> Vec<&'static str> {
        UNIT.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    fn one(key: &str) -> &'static str {
        match values(key)[..] {
            [v] => v,
            ref v => panic!("{key}= should appear once in mat.service, found {v:?}"),
        }
    }

    /// `path` is the directory systemd makes for the unit's `key=` (relative to `root`), or
    /// directly in it.
    fn made_by(path: &str, root: &str, key: &str) {
        let dir = Path::new(root).join(one(key));
        let path = Path::new(path);
        assert!(
            path == dir || path.parent() == Some(&dir),
            "{} must be {key}= of mat.service ({})",
            path.display(),
            dir.display()
        );
    }

    #[test]
    fn the_unit_creates_the_default_directories() {
        made_by(SOCKET, "/run", "RuntimeDirectory");
        made_by(STATE_DIR, "/var/lib", "StateDirectory");
        assert_eq!(one("StateDirectoryMode"), "0700");
        let pin_root = Path::new(PIN_DIR).parent().unwrap().to_str().unwrap();
        assert!(
            values("ReadWritePaths")
                .iter()
                .any(|v| v.split_whitespace().any(|p| p == pin_root)),
            "ReadWritePaths= of mat.service must include {pin_root}"
        );
        assert_eq!(one("ProtectSystem"), "strict");
    }

    #[test]
    fn the_unit_runs_the_daemon_with_the_default_config() {
        // No path flags: the daemon's defaults are this module's constants.
        assert_eq!(one("ExecStart"), format!("{BINARY} daemon"));
        assert_eq!(one("Type"), "notify");
        // A configuration error (exit 2) is not retried.
        assert_eq!(one("RestartPreventExitStatus"), "2");
        assert_eq!(crate::config::DEFAULT_CONFIG, CONFIG);
        assert!(
            CONFIG.starts_with("/etc/"),
            "ProtectSystem=strict keeps /etc readable"
        );
    }
}
