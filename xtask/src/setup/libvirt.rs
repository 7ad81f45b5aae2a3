//! What the libvirt tests need: libvirtd and virsh from Debian, and QEMU from the release's
//! backports suite (QEMU 10, matching the machine's qemu-utils). Each is checked first; the
//! backports suite is enabled from the machine's own Debian source entry, so no mirror address
//! is ever written here.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// Binaries that show the libvirt packages are installed.
const LIBVIRT: &[(&str, &str)] = &[
    ("libvirt-daemon-system", "/usr/sbin/libvirtd"),
    ("libvirt-daemon-system", "/usr/sbin/virtlogd"),
    ("libvirt-clients", "/usr/bin/virsh"),
];

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The oldest QEMU the tests were written against (libvirt 9 with QEMU 10 needs ACPI on).
const QEMU_MAJOR: u32 = 10;

/// The source file this step writes when the backports suite is not enabled yet.
const SOURCES: &str = "/etc/apt/sources.list.d/mat-backports.sources";

pub fn run() -> Result<()> {
    let mut missing: Vec<&str> = LIBVIRT
        .iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    missing.dedup();
    let qemu_ok = qemu_major().is_some_and(|v| v >= QEMU_MAJOR);
    if missing.is_empty() && qemu_ok {
        return Ok(());
    }
    super::status("apt-get", &["update", "-qq"])?;
    if !missing.is_empty() {
        println!("setup: installing {}", missing.join(" "));
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        super::status("apt-get", &args)?;
    }
    if !qemu_ok {
        let codename = codename()?;
        let backports = format!("{codename}-backports");
        if enable_backports(&codename, &backports)? {
            super::status("apt-get", &["update", "-qq"])?;
        }
        // A call of its own: `-t` prefers backports for everything the call resolves (QEMU's
        // firmware and data need backports too), and libvirt is to stay the release's.
        println!("setup: installing qemu-system-x86 from {backports}");
        super::status(
            "apt-get",
            &[
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "-t",
                &backports,
                "qemu-system-x86",
            ],
        )?;
    }
    match qemu_major() {
        Some(v) if v >= QEMU_MAJOR => Ok(()),
        v => {
            bail!("{QEMU} is version {v:?} after the install; the tests need {QEMU_MAJOR} or later")
        }
    }
}

/// The major version `qemu-system-x86_64 --version` prints, if it runs.
fn qemu_major() -> Option<u32> {
    let out = Command::new(QEMU).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}

fn codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME")
}

/// Adds `backports` to apt's sources, copying the machine's own entry for `codename` (deb822 in
/// /etc/apt/sources.list.d/*.sources, or a one-line entry in /etc/apt/sources.list). Returns
/// whether it wrote anything.
fn enable_backports(codename: &str, backports: &str) -> Result<bool> {
    let mut deb822 = Vec::new();
    let mut one_line = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        one_line.push(text);
    }
    for entry in fs::read_dir("/etc/apt/sources.list.d").context("listing apt sources")? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822.push(fs::read_to_string(&path)?),
            Some("list") => one_line.push(fs::read_to_string(&path)?),
            _ => {}
        }
    }
    let enabled =
        deb822.iter().flat_map(|t| stanzas(t)).any(|s| {
            field(&s, "Suites").is_some_and(|v| v.split_whitespace().any(|x| x == backports))
        }) || one_line.iter().flat_map(|t| t.lines()).any(|l| {
            let l = l.trim_start();
            l.starts_with("deb ") && l.split_whitespace().any(|w| w == backports)
        });
    if enabled {
        return Ok(false);
    }
    let stanza = deb822
        .iter()
        .flat_map(|t| stanzas(t))
        .find(|s| {
            field(s, "Suites").is_some_and(|v| v.split_whitespace().any(|x| x == codename))
                && field(s, "Types").is_some_and(|v| v.split_whitespace().any(|x| x == "deb"))
        })
        .map(|s| {
            let mut out = format!(
                "Types: deb\nURIs: {}\nSuites: {backports}\nComponents: {}\n",
                field(&s, "URIs").unwrap_or_default(),
                field(&s, "Components").unwrap_or("main"),
            );
            if let Some(key) = field(&s, "Signed-By") {
                out.push_str(&format!("Signed-By: {key}\n"));
            }
            out
        })
        .or_else(|| {
            one_line.iter().flat_map(|t| t.lines()).find_map(|l| {
                one_line_entry(l, codename).map(|(opts, rest)| {
                    // As deb822, so that one file format is written whatever the machine uses.
                    let mut out = format!(
                        "Types: deb\nURIs: {}\nSuites: {backports}\nComponents: {}\n",
                        rest[0],
                        rest[2..].join(" ")
                    );
                    if let Some(key) = opts.iter().find_map(|o| o.strip_prefix("signed-by=")) {
                        out.push_str(&format!("Signed-By: {key}\n"));
                    }
                    out
                })
            })
        })
        .with_context(|| format!("no Debian source entry for {codename} to copy"))?;
    println!("setup: enabling {backports} from the machine's {codename} entry ({SOURCES})");
    fs::write(
        SOURCES,
        format!("# Written by `cargo xtask setup` for the libvirt tests (QEMU 10).\n{stanza}"),
    )
    .with_context(|| format!("writing {SOURCES}"))?;
    Ok(true)
}

/// A one-line entry `deb [opts] URI codename components...` for `codename`, as (options, words
/// after the options).
fn one_line_entry<'a>(line: &'a str, codename: &str) -> Option<(Vec<&'a str>, Vec<&'a str>)> {
    let rest = line.trim_start().strip_prefix("deb ")?.trim_start();
    let (opts, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (o, r) = r.split_once(']')?;
            (o.split_whitespace().collect(), r)
        }
        None => (Vec::new(), rest),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    (words.len() >= 3 && words[1] == codename).then_some((opts, words))
}

/// The stanzas of a deb822 file, comments dropped.
fn stanzas(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
        .collect()
}

fn field<'a>(stanza: &'a str, name: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
