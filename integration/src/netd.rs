//! Finding and running the binaries under test (`netd`) and the harness's own probe.
//!
//! netd runs inside the test's host namespace through `ip netns exec`, with
//! `--config <per-test dir>`, so its bridges, nft table, state files and DNS helper all
//! belong to the test and vanish with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cmd;
use crate::env::Env;

/// `target/<profile>` of the running test executable: the directory that holds the
/// workspace's binaries (`target/debug/deps/netd-<hash>` -> `target/debug`).
pub fn target_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?.to_path_buf();
    }
    Some(dir)
}

/// A workspace binary: `$ENV_VAR` when set, else `name` in this build's `target/<profile>`
/// (built by `cargo build --workspace`); `Err` names what is missing and `hint`.
pub fn workspace_bin(env_var: &str, name: &str, hint: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("{env_var}={} is not a file", p.display())) };
    }
    let dir = target_profile_dir().ok_or("cannot find the test executable's directory")?;
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} not found ({hint}, or set {env_var})", p.display()))
    }
}

/// The netd binary: `$NETD_BIN`, or `netd` in this build's `target/<profile>`. `cargo test`
/// does not rebuild that binary, so a loud warning is printed (once) when a source file of
/// the netd crate is newer than it.
pub fn netd_bin() -> Result<PathBuf, String> {
    let p = workspace_bin("NETD_BIN", "netd", "build it with `cargo build -p netd`")?;
    if std::env::var_os("NETD_BIN").is_none() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| warn_if_stale(&p, "netd", "netd"));
    }
    Ok(p)
}

fn newest_source(dir: &Path, newest: &mut Option<(std::time::SystemTime, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            if path.file_name().is_some_and(|n| n != "target" && n != "bench") {
                newest_source(&path, newest);
            }
        } else if path.extension().is_some_and(|x| x == "rs" || x == "toml") {
            if let Ok(t) = md.modified() {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    *newest = Some((t, path));
                }
            }
        }
    }
}

/// Prints a loud warning when a source file under the workspace folder `crate_dir` is newer
/// than `bin` (`cargo test` does not rebuild other packages' binaries).
pub fn warn_if_stale(bin: &Path, crate_dir: &str, package: &str) {
    let Some(src) = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|w| w.join(crate_dir)) else {
        return;
    };
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return };
    let mut newest = None;
    newest_source(&src, &mut newest);
    if let Some((t, path)) = newest {
        if t > built {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n!!!!!!!! WARNING: {} is older than {}: run `cargo build -p {package}` !!!!!!!!\n",
                bin.display(),
                path.display()
            );
        }
    }
}

/// The probe binary: `$RPOD_PROBE_BIN`, or `rpod-probe` in `target/<profile>`.
pub fn probe_bin() -> Result<PathBuf, String> {
    workspace_bin("RPOD_PROBE_BIN", "rpod-probe", "it is built with `cargo test -p rpod-integration`")
}

/// What one netd run did.
#[derive(Debug, Clone)]
pub struct NetdOut {
    /// Exit code; -1 when killed by a signal (or by the harness's deadline).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub cmdline: String,
}

impl std::fmt::Display for NetdOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  netd: {}\n  exit: {}\n  stdout: {}\n  stderr: {}",
            self.cmdline,
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

impl NetdOut {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics with everything netd said unless it exited 0.
    pub fn expect_ok(&self, what: &str) -> &Self {
        if !self.success() {
            panic!("{what}: netd failed\n{self}");
        }
        self
    }

    /// The setup result: one StatusBlock per network name. Panics if stdout is not
    /// exactly that.
    pub fn status(&self) -> BTreeMap<String, rpod_wire::StatusBlock> {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("setup stdout is not a map of StatusBlocks: {e}\n{self}"))
    }

    /// Checks the error contract: exit code 1 and stdout exactly one JSON object whose only
    /// key is `error`, holding a non-empty string. Returns the message.
    pub fn expect_error(&self, ctx: &str) -> String {
        assert_eq!(self.code, 1, "{ctx}: netd should exit 1\n{self}");
        let mut it = serde_json::Deserializer::from_str(&self.stdout).into_iter::<Value>();
        let first = match it.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("{ctx}: stdout is not JSON ({e})\n{self}"),
            None => panic!("{ctx}: stdout is empty, want {{\"error\": ...}}\n{self}"),
        };
        assert!(it.next().is_none(), "{ctx}: stdout holds more than one JSON value\n{self}");
        let obj = first.as_object().unwrap_or_else(|| panic!("{ctx}: stdout is not a JSON object\n{self}"));
        let keys: Vec<&String> = obj.keys().collect();
        assert_eq!(keys, vec!["error"], "{ctx}: the error object must have the single key \"error\"\n{self}");
        let msg =
            obj["error"].as_str().unwrap_or_else(|| panic!("{ctx}: \"error\" is not a string\n{self}")).to_string();
        assert!(!msg.trim().is_empty(), "{ctx}: empty error message\n{self}");
        msg
    }
}

/// The longest a single netd run may take before the harness kills it.
pub const NETD_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `netd --config <env config> ARGS` in the host namespace with `stdin` (or no stdin).
pub fn netd_raw(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> NetdOut {
    run_netd(env.netd_bin(), env, args, stdin)
}

/// [`netd_raw`] with a JSON document on stdin.
pub fn netd(env: &Env, args: &[&str], stdin: Option<&Value>) -> NetdOut {
    let bytes = stdin.map(|v| v.to_string().into_bytes());
    netd_raw(env, args, bytes.as_deref())
}

/// [`netd`] with extra environment variables (`NETAVARK_DNS_PORT`, `NETAVARK_FW`, ...).
pub fn netd_with_env(env: &Env, vars: &[(&str, &str)], args: &[&str], stdin: Option<&Value>) -> NetdOut {
    let bytes = stdin.map(|v| v.to_string().into_bytes());
    run_netd_env(env.netd_bin(), env, vars, args, bytes.as_deref())
}

fn run_netd(bin: &Path, env: &Env, args: &[&str], stdin: Option<&[u8]>) -> NetdOut {
    run_netd_env(bin, env, &[], args, stdin)
}

fn run_netd_env(bin: &Path, env: &Env, vars: &[(&str, &str)], args: &[&str], stdin: Option<&[u8]>) -> NetdOut {
    let mut c = Command::new("ip");
    c.envs(vars.iter().copied());
    c.args(["netns", "exec", env.host.name()]).arg(bin).arg("--config").arg(env.config_dir()).args(args);
    let o = cmd::run(c, stdin, NETD_TIMEOUT);
    NetdOut {
        code: o.code.unwrap_or(-1),
        stdout: o.stdout,
        stderr: if o.timed_out {
            format!("{}\n[harness: killed after {:?}]", o.stderr, NETD_TIMEOUT)
        } else {
            o.stderr
        },
        cmdline: o.cmdline,
    }
}
