//! Running a command to completion with captured output and a deadline.
//!
//! Every command the harness runs goes through [`run`]: a hung helper (a netd that
//! deadlocks, a probe that never times out) fails the test after its deadline instead of
//! hanging the whole suite.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Out {
    /// The exit code; `None` when it was killed by a signal (including our deadline).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// True when the deadline passed and the harness killed it.
    pub timed_out: bool,
    /// The command line, for messages.
    pub cmdline: String,
}

impl Out {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole story unless the command succeeded; returns stdout.
    pub fn expect_ok(&self, what: &str) -> &str {
        if !self.ok() {
            panic!("{what}: `{}` failed\n{self}", self.cmdline);
        }
        &self.stdout
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  command: {}\n  exit: {}{}\n  stdout: {}\n  stderr: {}",
            self.cmdline,
            self.code.map(|c| c.to_string()).unwrap_or_else(|| "signal".into()),
            if self.timed_out { " (killed at the deadline)" } else { "" },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// A printable form of a command line.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with `stdin` (or /dev/null), captures stdout and stderr, and kills it at
/// `timeout`. A command that cannot be started gives exit code 127 and the reason on stderr.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    let line = cmdline(&cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out {
                code: Some(127),
                stdout: String::new(),
                stderr: format!("cannot start: {e}"),
                timed_out: false,
                cmdline: line,
            }
        }
    };
    let pid = child.id();
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // Writing in a thread: a child that does not read its stdin must not block us.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    // Readers send what they got through channels, so that a grandchild that inherited a
    // pipe and lives on (a daemon that forgot to close stdio) cannot block us forever.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            let _ = tx.send(v);
        });
        rx
    };
    let out_rx = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_rx = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send(());
        st
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet
        // (the waiter thread is still blocked in wait), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let status = waiter.join().ok().and_then(|r| r.ok());
    if let Some(w) = writer {
        let _ = w.join();
    }
    let grace = Duration::from_secs(2);
    let mut note = String::new();
    let mut collect = |rx: mpsc::Receiver<Vec<u8>>, which: &str| match rx.recv_timeout(grace) {
        Ok(v) => String::from_utf8_lossy(&v).into_owned(),
        Err(_) => {
            note.push_str(&format!("\n[harness: {which} still open 2 s after exit: a descendant kept the pipe]"));
            String::new()
        }
    };
    let stdout = collect(out_rx, "stdout");
    let mut stderr = collect(err_rx, "stderr");
    stderr.push_str(&note);
    Out { code: status.and_then(|s| s.code()), stdout, stderr, timed_out, cmdline: line }
}

/// True when `program` can be found on PATH (or is an existing path).
pub fn have_tool(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}
