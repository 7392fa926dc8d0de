//! Background processes (servers) that a test starts in a namespace and the [`crate::Env`]
//! kills when it goes away.
//!
//! stdout is read line by line by a thread and kept, so a test can look at what a server
//! logged (for example which source address a connection came from) and can wait for a
//! readiness line instead of sleeping.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cmd::cmdline;

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// A running background process. Dropping the handle does not stop it; the Env does.
#[derive(Debug, Clone)]
pub struct Proc {
    pid: u32,
    cmdline: String,
    out: Arc<(Mutex<Lines>, Condvar)>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.out.0.lock().unwrap_or_else(|e| e.into_inner()).lines.clone()
    }

    /// Waits until a stdout line satisfies `pred`; returns it, or None at the deadline or
    /// when the process closed its stdout first.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.out;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(l) = g.lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if g.closed {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
}

/// The Env's side: the children to kill, with their stderr collected for messages.
#[derive(Debug, Default)]
pub(crate) struct Procs {
    children: Mutex<Vec<(Child, Proc)>>,
}

impl Procs {
    pub(crate) fn spawn(&self, mut cmd: Command) -> std::io::Result<Proc> {
        let line = cmdline(&cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let out = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        if let Some(stdout) = child.stdout.take() {
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                for l in BufReader::new(stdout).lines() {
                    let Ok(l) = l else { break };
                    let (m, cv) = &*out;
                    m.lock().unwrap_or_else(|e| e.into_inner()).lines.push(l);
                    cv.notify_all();
                }
                let (m, cv) = &*out;
                m.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
                cv.notify_all();
            });
        }
        let p = Proc { pid: child.id(), cmdline: line, out };
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push((child, p.clone()));
        Ok(p)
    }

    /// Kills one tracked process now (SIGKILL) and reaps it.
    pub(crate) fn kill(&self, pid: u32) {
        let mut g = self.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = g.iter().position(|(c, _)| c.id() == pid) {
            let (mut c, _) = g.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and reaps every tracked process.
    pub(crate) fn kill_all(&self) {
        let mut g = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for (c, _) in g.iter_mut() {
            let _ = c.kill();
        }
        for (mut c, _) in g.drain(..) {
            let _ = c.wait();
        }
    }
}
