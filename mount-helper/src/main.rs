//! `mount.titorrent SOURCE DIR [-sfnv] [-o OPTIONS]`: what mount(8) runs
//! for `-t titorrent` and fstab lines of type `titorrent`. Installed as
//! /sbin/mount.titorrent; the work is in the library.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = mount_titorrent::parse_args(&args).and_then(|inv| match inv {
        None => {
            println!("{}", mount_titorrent::USAGE);
            Ok(())
        }
        Some(inv) => {
            let verbose = inv.verbose;
            let started = mount_titorrent::run(&inv)?;
            if let (true, Some((pid, log))) = (verbose, started) {
                eprintln!("mount.titorrent: {} mounted (titorrent pid {pid}, log {})", inv.dir.display(), log.display());
            }
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mount.titorrent: {}", f.message);
            ExitCode::from(f.code as u8)
        }
    }
}
