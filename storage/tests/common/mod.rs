//! What the fuse-overlay test files share: the binary, mount checks, and the guard of a
//! foreground daemon (unmounted and killed on drop, also on failure). Each test file adds
//! its own constructors (`impl Daemon` in that file) over [`Daemon::spawn`].

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_fuse-overlay");

pub fn mounted(p: &Path) -> bool {
    match (fs::symlink_metadata(p), fs::symlink_metadata(p.parent().unwrap())) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

pub fn lazy_unmount(p: &Path) {
    if mounted(p) && nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH).is_err() {
        let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(p).stderr(Stdio::null()).status();
    }
}

/// A running fuse-overlay (foreground child); unmounted and killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub mnt: PathBuf,
    /// Where its stderr goes; `None`: a pipe, read only if it exits before mounting.
    pub log: Option<PathBuf>,
}

impl Daemon {
    /// Spawns `cmd` (the daemon with its arguments, in the foreground) with stdin and stdout
    /// closed and stderr into `log` (or a pipe), and waits until `mnt` is mounted; panics with
    /// the daemon's stderr if it exits first.
    pub fn spawn(mut cmd: Command, mnt: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Daemon {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        match log {
            Some(l) => cmd.stderr(fs::File::create(l).unwrap()),
            None => cmd.stderr(Stdio::piped()),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut d = Daemon { child: Some(child), mnt: mnt.to_owned(), log: log.map(Path::to_owned) };
        let t0 = Instant::now();
        while !mounted(mnt) {
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                let e = match &d.log {
                    Some(l) => fs::read_to_string(l).unwrap_or_default(),
                    None => {
                        let mut e = String::new();
                        d.child.as_mut().unwrap().stderr.take().unwrap().read_to_string(&mut e).unwrap();
                        e
                    }
                };
                panic!("fuse-overlay exited with {st}: {e}");
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "not mounted after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Unmounts and waits for the daemon to exit; returns whether it exited successfully.
    /// A mount namespace created meanwhile (by a concurrent test's `unshare -m`) holds a copy
    /// of the mount and keeps the connection alive; then SIGTERM ends it, as an engine would.
    pub fn stop(mut self) -> bool {
        lazy_unmount(&self.mnt);
        let mut c = self.child.take().unwrap();
        let t0 = Instant::now();
        let mut termed = false;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.success();
            }
            if !termed && t0.elapsed() > Duration::from_secs(3) {
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                termed = true;
            }
            if t0.elapsed() > Duration::from_secs(8) {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    /// Unmounts, resumes the daemon if a test stopped it (SIGSTOP), and kills it.
    fn drop(&mut self) {
        lazy_unmount(&self.mnt);
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
