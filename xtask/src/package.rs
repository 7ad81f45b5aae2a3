//! `cargo xtask package`: the Debian package, built by cargo-deb (installed by `cargo xtask
//! setup`). The release binary is built first and run to write the completions and man pages
//! from its own clap definitions (`mat generate`, hidden), which the package metadata in
//! mat-loader/Cargo.toml lists under target/release/generated/; then `cargo deb --no-build`.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, workspace};

/// Builds the package; returns the path of the .deb.
pub fn run() -> Result<PathBuf> {
    crate::setup::run()?;
    cargo(&[
        "build",
        "--release",
        "--package",
        "mat-loader",
        "--bin",
        "mat",
        // The package follows libvirt's interface hotplug (libvirt0 becomes a dependency).
        "--features",
        "libvirt-events",
    ])?;
    let release = target_dir().join("release");
    let mat = release.join("mat");
    let generated = release.join("generated");
    if generated.exists() {
        // No page of a subcommand that no longer exists.
        fs::remove_dir_all(&generated)
            .with_context(|| format!("removing {}", generated.display()))?;
    }
    fs::create_dir_all(&generated)?;
    for (shell, file) in [("bash", "mat.bash"), ("zsh", "_mat"), ("fish", "mat.fish")] {
        let out = Command::new(&mat)
            .args(["generate", "completions", shell])
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", mat.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("mat generate completions {shell} failed: {}", out.status);
        }
        fs::write(generated.join(file), out.stdout)?;
    }
    let man = generated.join("man");
    let ok = Command::new(&mat)
        .args(["generate", "man"])
        .arg(&man)
        .status()
        .with_context(|| format!("running {}", mat.display()))?
        .success();
    if !ok {
        bail!("mat generate man failed");
    }
    // Debian policy: man pages gzipped, without a name or time stamp in the header.
    for page in fs::read_dir(&man)? {
        let page = page?.path();
        let ok = Command::new("gzip")
            .arg("-9n")
            .arg(&page)
            .status()
            .context("running gzip")?
            .success();
        if !ok {
            bail!("gzip {} failed", page.display());
        }
    }
    // cargo-deb prints the path of the package it wrote, last, on stdout.
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo_bin)
        .args(["deb", "--package", "mat-loader", "--no-build"])
        .current_dir(workspace())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo deb")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            std::path::Path::new(l)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("deb"))
        })
        .map(PathBuf::from)
        .context("cargo deb printed no package path")?;
    if !deb.is_file() {
        bail!("cargo deb reported {}, which does not exist", deb.display());
    }
    Ok(deb)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || workspace().join("target"),
            |p| {
                if p.is_absolute() {
                    p
                } else {
                    workspace().join(p)
                }
            },
        )
}
