//! `dnsd [-c|--config DIR] [-p|--port PORT] [--ttl N] run|version`

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dnsd::handler::Settings;
use dnsd::server::Daemon;
use nix::unistd::{fork, pipe, setsid, ForkResult};
use rpod_wire::dnsconfig::PID_FILE;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(name = "dnsd", version = dnsd::VERSION, about = "container name server (aardvark-dns compatible)")]
struct Cli {
    /// The config directory (one file per network).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// The port to listen on.
    #[arg(short = 'p', long = "port", default_value_t = 5533)]
    port: u16,
    /// The TTL of answers for container names.
    #[arg(long = "ttl", env = "DNSD_TTL", default_value_t = 0)]
    ttl: u32,
    /// Accepted for aardvark-dns compatibility; the search domain is always `dns.podman`.
    #[arg(short = 'f', long = "filter-search-domain", hide = true)]
    filter_search_domain: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the name server (forks into the background once it listens).
    Run,
    /// Print the version.
    Version,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => println!("{{\"version\": \"{}\"}}", dnsd::VERSION),
        Cmd::Run => {
            close_inherited_fds();
            init_logging();
            let code = match run(&cli) {
                Ok(code) => code,
                Err(e) => {
                    report(&format!("{e:#}"));
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Closes every inherited descriptor above stderr (as aardvark-dns HEAD does), so that a
/// lock or pipe of the caller is not held by the daemon.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; none above 2 is owned by anything in this
    // process yet (nothing has been opened), so no Rust object is left with a closed fd.
    let _ = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Prints a startup error where both aardvark-dns generations put it (1.4: stdout; netavark
/// HEAD captures stderr), once when both go to the same file (netd captures both into one).
fn report(msg: &str) {
    println!("dnsd: {msg}");
    if !same_file(libc::STDOUT_FILENO, libc::STDERR_FILENO) {
        eprintln!("dnsd: {msg}");
    }
}

/// True when two descriptors refer to the same file (device and inode).
fn same_file(a: libc::c_int, b: libc::c_int) -> bool {
    let stat = |fd| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat(2) writes a `stat` into the buffer on success; it is read only then.
        (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| {
            // SAFETY: fstat returned 0, so the struct is initialised.
            let st = unsafe { st.assume_init() };
            (st.st_dev, st.st_ino)
        })
    };
    matches!((stat(a), stat(b)), (Some(x), Some(y)) if x == y)
}

fn run(cli: &Cli) -> Result<i32> {
    let dir = cli.config.clone().context("no config directory given (--config DIR)")?;
    if !dir.is_dir() {
        anyhow::bail!("config directory {} does not exist", dir.display());
    }
    let settings = Settings { ttl: cli.ttl, ..Settings::default() };
    let (rd, wr) = pipe().context("pipe")?;
    // SAFETY: the process is single-threaded here (no runtime has been built yet), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            drop(wr);
            let mut msg = String::new();
            let mut f = std::fs::File::from(rd);
            let _ = f.read_to_string(&mut msg);
            if msg == "OK" {
                return Ok(0);
            }
            if msg.is_empty() {
                msg = "the server exited before it was ready".into();
            }
            report(msg.trim_start_matches("ERR ").trim_end());
            Ok(1)
        }
        ForkResult::Child => {
            drop(rd);
            Ok(child(&dir, cli.port, settings, wr))
        }
    }
}

fn child(dir: &Path, port: u16, settings: Settings, ready: OwnedFd) -> i32 {
    let mut ready = std::fs::File::from(ready);
    let fail = |ready: &mut std::fs::File, msg: String| {
        let _ = ready.write_all(format!("ERR {msg}").as_bytes());
        1
    };
    if let Err(e) = setsid() {
        return fail(&mut ready, format!("setsid: {e}"));
    }
    let pid_file = dir.join(PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
        return fail(&mut ready, format!("writing {}: {e}", pid_file.display()));
    }
    // One thread: a DNS helper per host answers small packets; a single-threaded runtime
    // avoids waking worker threads for every request and keeps the memory small.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = std::fs::remove_file(&pid_file);
            return fail(&mut ready, format!("tokio runtime: {e}"));
        }
    };
    let code = rt.block_on(async move {
        let mut daemon = match Daemon::start(dir, port, settings) {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&pid_file);
                return fail(&mut ready, format!("{e:#}"));
            }
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&pid_file);
                return fail(&mut ready, format!("SIGHUP handler: {e}"));
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        detach_stdio();
        let _ = ready.write_all(b"OK");
        drop(ready);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reload = tokio::select! {
                _ = hup.recv() => true,
                _ = tick.tick() => daemon.inputs_changed(),
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    info!("terminating");
                    daemon.shutdown().await;
                    break;
                }
            };
            if !reload {
                continue;
            }
            match daemon.reload().await {
                Ok(true) => {}
                Ok(false) => {
                    info!("no network left, exiting");
                    daemon.shutdown().await;
                    break;
                }
                Err(e) => warn!("reload: {e:#}"),
            }
        }
        let _ = std::fs::remove_file(&pid_file);
        0
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    code
}

/// Points stdin and stdout at /dev/null, and stderr too unless `DNSD_LOG` names a log file,
/// so that the caller waiting for our output sees EOF once the parent exits.
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let log =
        std::env::var_os("DNSD_LOG").and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    match log {
        Some(f) => {
            let _ = nix::unistd::dup2_stderr(&f);
        }
        None => {
            let _ = nix::unistd::dup2_stderr(&null);
        }
    }
}
