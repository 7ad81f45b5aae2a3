//! Builds the switch's kernel program (mat-switch-ebpf) with the nightly toolchain and
//! bpf-linker, into OUT_DIR, where `lib.rs` embeds the object. `cargo xtask setup` installs what
//! this needs.

fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ebpf = dir.join("../mat-switch-ebpf");
    // The kernel crate's own changes are covered by aya-build; the shared types live elsewhere.
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("../mat-common").display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mat-switch-ebpf",
            root_dir: ebpf.to_str().expect("UTF-8 path"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
