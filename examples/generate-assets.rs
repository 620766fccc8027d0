//! Writes the manual pages and the bash, zsh and fish completions, generated from the command
//! line definition (and the configuration keys' page from the parser's key table), below a
//! folder: `cargo run --example generate-assets -- DIR` gives `DIR/man/cephbackup*.8`,
//! `DIR/man/cephbackup.conf.5` and `DIR/completions/{cephbackup,_cephbackup,cephbackup.fish}`.
//! `scripts/package` runs it before building the Debian package.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: generate-assets DIR");
        return ExitCode::from(2);
    };
    match cephbackup::bin::write_to(&PathBuf::from(dir)) {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
