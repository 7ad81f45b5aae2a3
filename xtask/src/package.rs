//! `cargo xtask package`: the Debian package, built by cargo-deb (installed by `cargo xtask
//! setup`). The release binary is built first and run to write the completions and man pages
//! from its own clap definitions (`mat generate`, hidden), which the package metadata in
//! mat-loader/Cargo.toml lists under target/release/generated/; then `cargo deb --no-build`.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, target_dir, workspace};

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

/// The release before this one, which the upgrade test installs first: its version and the
/// commit it was built from (the main branch as it landed). Moved on at each release.
const PREVIOUS_RELEASE: (&str, &str) = ("0.1.0-1", "4bb8dd631b5f17fbce2dc982fb7693fbcce23548");

/// Builds the previous release's package from its commit (`git archive` into
/// target/previous-release/<version>/, its own `cargo xtask package` there), once: later calls
/// return the kept .deb.
pub fn previous() -> Result<PathBuf> {
    let (version, commit) = PREVIOUS_RELEASE;
    let dir = target_dir().join("previous-release").join(version);
    let kept = dir.join(format!("mat_{version}.deb"));
    if kept.is_file() {
        return Ok(kept);
    }
    let src = dir.join("src");
    if src.exists() {
        fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    fs::create_dir_all(&src)?;
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", commit])
        .current_dir(workspace())
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(archive.stdout.take().expect("piped"))
        .status()
        .context("running tar")?;
    if !archive.wait()?.success() || !untar.success() {
        bail!(
            "could not unpack commit {commit} (the previous release) into {}",
            src.display()
        );
    }
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo_bin)
        .args(["run", "--quiet", "--package", "xtask", "--", "package"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .stderr(Stdio::inherit())
        .output()
        .context("running the previous release's cargo xtask package")?;
    if !out.status.success() {
        bail!(
            "the previous release's package did not build: {}",
            out.status
        );
    }
    let built = String::from_utf8_lossy(&out.stdout);
    let built = built.lines().last().context("no package path printed")?;
    // Kept under its final name only once whole.
    let partial = dir.join("partial.deb");
    fs::copy(built, &partial).with_context(|| format!("copying {built}"))?;
    fs::rename(&partial, &kept)?;
    Ok(kept)
}
