//! `portfwd`: a userspace TCP/IP stack (smoltcp) that gives a rootless container's network
//! namespace its connectivity, and forwards host ports into it: a drop-in for slirp4netns
//! (same command line and API socket), with a splice(2) fast path for published ports.
//!
//! Layout: [`cli`] (command line, network layout), [`helper`] (the child inside the
//! namespaces: TAP creation, socket factory), [`engine`] (the event loop and NAT),
//! `fwd` (host port forwards and the API socket), [`api`] (the JSON protocol),
//! [`sandbox`] (mount namespace, capabilities, seccomp), [`sys`] (system calls).

pub mod api;
pub mod cli;
pub mod engine;
mod fwd;
pub mod helper;
pub mod reasm;
pub mod sandbox;
mod slab;
pub mod sys;

use std::os::fd::AsRawFd;

pub use cli::{Args, Config};

/// The helper's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What can go wrong before the loop runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn signal_ready(fd: i32) {
    let _ = sys::write_all_fd(fd, b"1");
    // SAFETY: the ready fd was handed to us to write once and close.
    unsafe { libc::close(fd) };
}

/// Sets everything up, signals readiness and runs until told to stop.
/// Must be called while the process is single-threaded (it forks the namespace helper).
pub fn run(cfg: Config) -> Result<engine::Exit, Error> {
    raise_nofile();
    let (tap, helper) = helper::start(&cfg)?;
    eprintln!("received tapfd={}", tap.as_raw_fd());
    let n = &cfg.net;
    println!("Starting slirp");
    println!("* MTU:             {}", cfg.mtu);
    println!("* Network:         {}", n.network);
    println!("* Netmask:         {}", std::net::Ipv4Addr::from(u32::MAX << (32 - n.prefix)));
    println!("* Gateway:         {}", n.gateway);
    println!("* DNS:             {}", n.dns);
    println!("* Recommended IP:  {}", n.guest);
    let api = match &cfg.api_socket {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            let l = std::os::unix::net::UnixListener::bind(p)
                .map_err(|e| Error::Setup(format!("cannot bind API socket {p}: {e}")))?;
            println!("* API Socket:      {p}");
            Some(l)
        }
        None => None,
    };
    let forwards = cfg.forwards.clone();
    let api_path = cfg.api_socket.clone();
    let (sandbox, seccomp, ready) = (cfg.sandbox, cfg.seccomp, cfg.ready_fd);
    let mut eng = engine::Engine::new(cfg, tap, helper, api)?;
    for f in forwards {
        eng.add_forward(f.proto, f.host, f.guest).map_err(Error::Setup)?;
    }
    if sandbox {
        sandbox::enter_sandbox().map_err(|e| Error::Setup(format!("--enable-sandbox: {e}")))?;
    }
    if seccomp {
        sandbox::enable_seccomp().map_err(|e| Error::Setup(format!("--enable-seccomp: {e}")))?;
    }
    if let Some(fd) = ready {
        signal_ready(fd);
    }
    let exit = eng.run()?;
    eng.shutdown();
    if !sandbox {
        if let Some(p) = api_path {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(exit)
}
