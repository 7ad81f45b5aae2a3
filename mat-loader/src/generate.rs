//! `mat generate` (hidden): shell completions and man pages generated from the CLI's own clap
//! definitions, so they cannot drift from it. `cargo xtask package` runs the binary it packages
//! to write them. The command definition stays in `src/bin/mat/main.rs` and is handed in.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::Subcommand;
use clap_complete::Shell;

#[derive(Subcommand, Debug)]
pub enum Generate {
    /// Print the completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write a man page for `mat` and each of its subcommands (mat.1, mat-daemon.1, ...) into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl Generate {
    /// Writes what was asked for about `cmd` (the `mat` command).
    pub fn run(self, mut cmd: clap::Command) -> ExitCode {
        let name = cmd.get_name().to_owned();
        let result = match self {
            Generate::Completions { shell } => {
                // Into memory first: clap_complete panics on a failed write.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, name, &mut script);
                io::stdout()
                    .write_all(&script)
                    .map_err(|e| format!("writing the {shell} completions: {e}"))
            }
            Generate::Man { dir } => std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(cmd, &dir))
                .map_err(|e| format!("writing man pages into {}: {e}", dir.display())),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mat generate: {e}");
                ExitCode::from(1)
            }
        }
    }
}
