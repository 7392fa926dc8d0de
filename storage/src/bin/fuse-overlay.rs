//! `fuse-overlay`: a FUSE overlay file system with the command line of fuse-overlayfs.

use std::process::ExitCode;

use rpod_storage::fuse::{parse, run, Command, USAGE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let cmd = match parse(&args, &cwd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fuse-overlay: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = match cmd {
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("fuse-overlay: version {}", rpod_storage::VERSION);
            println!("fuse-overlayfs compatible; FUSE kernel interface 7.40 (fuser)");
            return ExitCode::SUCCESS;
        }
        Command::Mount(o) => *o,
    };
    let level = if opts.debug { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FUSE_OVERLAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuse-overlay: {:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
    }
}
