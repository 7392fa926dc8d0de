//! One test's private world: a "host" namespace standing in for the machine, an "upstream"
//! namespace standing in for the outside world, container namespaces, a config directory
//! for netd, and the background processes the test started.
//!
//! ```text
//!   upstream ns  <PFX>lan 198.18.0.1/24 fd00:198::1/64
//!        |  veth
//!   host ns      <PFX>wan 198.18.0.2/24 fd00:198::2/64, default routes via upstream
//!        |  (bridges, veths, nft table made by netd)
//!   container namespaces /run/netns/<PFX><name>
//! ```
//!
//! Invariants: every name the Env creates starts with its random prefix (`r` + 5
//! characters), so tests can run in parallel threads; nothing outside these namespaces and
//! `$TMPDIR/rpod-it-<PFX>` is touched; Drop (which also runs on panic) kills every process it
//! started and every process still living in one of its namespaces (aardvark-dns included),
//! then deletes the namespaces and the directory. Set `RPOD_KEEP_ON_FAILURE=1` to keep the
//! namespaces and directory of a failed test for inspection (its servers are still killed).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{self, have_tool, Out};
use crate::netd::{self, NetdOut};
use crate::netopts::{hex_id, Opts};
use crate::ns::{self, Netns};
use crate::proc::{Proc, Procs};
use crate::snapshot::Snapshot;

/// The host's address on its upstream link (what masquerade turns container sources into).
pub const HOST_IP4: &str = "198.18.0.2";
/// The outside world's address.
pub const UPSTREAM_IP4: &str = "198.18.0.1";
pub const HOST_IP6: &str = "fd00:198::2";
pub const UPSTREAM_IP6: &str = "fd00:198::1";

/// How long an expected-to-work check keeps retrying (slow first ARP/ND, DAD, a server
/// that is still starting).
pub const SUCCESS_DEADLINE: Duration = Duration::from_secs(6);
/// How long an expected-to-fail check waits before it calls the path blocked.
pub const BLOCKED_TIMEOUT_MS: u64 = 1000;

/// `ip:port`, with brackets for IPv6.
pub fn sock(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// True when RPOD_REQUIRE_ROOT=1: missing root (or a missing basic tool) fails instead of
/// skipping. CI sets it.
pub fn require_root() -> bool {
    std::env::var("RPOD_REQUIRE_ROOT").is_ok_and(|v| v == "1")
}

/// Prints the loud skip line. It is written to the process's stderr directly, not through
/// `eprintln!`, so that the test harness's output capture does not swallow it.
pub fn print_skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n!!!!!!!! SKIP {test}: {reason} !!!!!!!!\n");
}

/// A fresh `r` + 5 random characters prefix (for names a test makes).
pub fn random_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    let mut v = h.finish();
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::from("r");
    for _ in 0..5 {
        s.push(alphabet[(v % 36) as usize] as char);
        v /= 36;
    }
    s
}

/// A container: a network namespace with `lo` up, a name and a podman-like id.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub id: String,
    pub ns: Netns,
}

impl Container {
    /// `/run/netns/<prefix><name>`, what netd's setup/teardown gets.
    pub fn path(&self) -> PathBuf {
        self.ns.path()
    }

    pub fn path_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }
}

/// What `rpod-probe` servers answer: who answered, on which address, and whom they saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub name: String,
    /// `ip:port` the server accepted on (after any DNAT).
    pub local: String,
    /// `ip:port` the server saw the client as (after any masquerade).
    pub peer: String,
}

impl Reply {
    pub fn parse(line: &str) -> Option<Reply> {
        let mut name = None;
        let mut local = None;
        let mut peer = None;
        for tok in line.split_whitespace() {
            if let Some(v) = tok.strip_prefix("name=") {
                name = Some(v.to_string());
            } else if let Some(v) = tok.strip_prefix("local=") {
                local = Some(v.to_string());
            } else if let Some(v) = tok.strip_prefix("peer=") {
                peer = Some(v.to_string());
            }
        }
        Some(Reply { name: name?, local: local?, peer: peer? })
    }

    /// The peer's IP without the port (and without brackets).
    pub fn peer_ip(&self) -> String {
        strip_port(&self.peer)
    }

    /// The local port.
    pub fn local_port(&self) -> u16 {
        self.local.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }
}

fn strip_port(s: &str) -> String {
    match s.rsplit_once(':') {
        Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => s.to_string(),
    }
}

/// One test's namespaces, directory and processes. See the module docs.
pub struct Env {
    pub test: String,
    pub prefix: String,
    pub host: Netns,
    pub upstream: Netns,
    dir: PathBuf,
    netns: Mutex<Vec<Netns>>,
    procs: Procs,
    netd_bin: PathBuf,
    probe_bin: PathBuf,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("test", &self.test).field("prefix", &self.prefix).finish()
    }
}

impl Env {
    /// Builds the world for `test`. `Err(reason)` means skip (not root, a tool missing);
    /// with RPOD_REQUIRE_ROOT=1 those panic instead. A broken harness step panics.
    pub fn new(test: &str) -> Result<Env, String> {
        let missing = |reason: String| -> Result<Env, String> {
            if require_root() {
                panic!("RPOD_REQUIRE_ROOT=1 and {test} cannot run: {reason}");
            }
            Err(reason)
        };
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return missing("not running as root (network namespaces need it)".into());
        }
        for tool in ["ip", "nft", "busybox"] {
            if !have_tool(tool) {
                return missing(format!("`{tool}` is not installed"));
            }
        }
        let netd_bin = netd::netd_bin().unwrap_or_else(|e| panic!("{test}: {e}"));
        let probe_bin = netd::probe_bin().unwrap_or_else(|e| panic!("{test}: {e}"));

        let mut prefix = random_prefix();
        while Path::new("/run/netns").join(format!("{prefix}_host")).exists() {
            prefix = random_prefix();
        }
        let dir = std::env::temp_dir().join(format!("rpod-it-{prefix}"));
        let env = Env {
            test: test.to_string(),
            host: Netns::named(&format!("{prefix}_host")),
            upstream: Netns::named(&format!("{prefix}_upstream")),
            prefix,
            dir,
            netns: Mutex::new(Vec::new()),
            procs: Procs::default(),
            netd_bin,
            probe_bin,
        };
        std::fs::create_dir_all(env.config_dir())
            .unwrap_or_else(|e| panic!("create {}: {e}", env.config_dir().display()));
        // From here on, a panic drops `env`, which deletes whatever was made.
        let host = env.add_netns(env.host.name());
        let up = env.add_netns(env.upstream.name());
        for ns in [&host, &up] {
            // No DAD in the two infrastructure namespaces: addresses are usable at once and
            // snapshots do not catch a `tentative` flag in passing.
            ns.run(
                "sh",
                &[
                    "-c",
                    "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
                     echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
                ],
            )
            .expect_ok("disable DAD");
            ns.ip_ok(&["link", "set", "lo", "up"]);
        }
        let wan = env.wan();
        let lan = env.name("lan");
        host.ip_ok(&["link", "add", &wan, "type", "veth", "peer", "name", &lan, "netns", up.name()]);
        host.ip_ok(&["addr", "add", &format!("{HOST_IP4}/24"), "dev", &wan]);
        host.ip_ok(&["addr", "add", &format!("{HOST_IP6}/64"), "dev", &wan, "nodad"]);
        host.ip_ok(&["link", "set", &wan, "up"]);
        up.ip_ok(&["addr", "add", &format!("{UPSTREAM_IP4}/24"), "dev", &lan]);
        up.ip_ok(&["addr", "add", &format!("{UPSTREAM_IP6}/64"), "dev", &lan, "nodad"]);
        up.ip_ok(&["link", "set", &lan, "up"]);
        host.ip_ok(&["route", "add", "default", "via", UPSTREAM_IP4]);
        host.ip_ok(&["-6", "route", "add", "default", "via", UPSTREAM_IP6]);
        Ok(env)
    }

    fn add_netns(&self, name: &str) -> Netns {
        let ns = ns::add(name);
        self.netns.lock().unwrap_or_else(|e| e.into_inner()).push(ns.clone());
        ns
    }

    /// `<prefix><suffix>`, checked to fit a link name (15 characters).
    pub fn name(&self, suffix: &str) -> String {
        let n = format!("{}{suffix}", self.prefix);
        assert!(n.len() <= 15, "link name {n} is longer than 15 characters");
        n
    }

    /// The host's upstream-facing link (its default-route interface).
    pub fn wan(&self) -> String {
        self.name("wan")
    }

    /// The per-test directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What netd gets as `--config`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    pub fn netd_bin(&self) -> &Path {
        &self.netd_bin
    }

    pub fn probe_bin(&self) -> &Path {
        &self.probe_bin
    }

    /// A new container namespace `/run/netns/<prefix><name>` with `lo` up. `name` is also
    /// the container name netd gets (and so its DNS name).
    pub fn container(&self, name: &str) -> Container {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "container names are [A-Za-z0-9-]: {name}"
        );
        let ns = self.add_netns(&format!("{}{name}", self.prefix));
        ns.ip_ok(&["link", "set", "lo", "up"]);
        Container { name: name.to_string(), id: hex_id(&format!("container {} {name}", self.prefix)), ns }
    }

    // ---- netd ----

    /// `netd --config DIR ARGS` in the host namespace.
    pub fn netd(&self, args: &[&str], stdin: Option<&Value>) -> NetdOut {
        netd::netd(self, args, stdin)
    }

    /// `netd setup <container>` with `opts`; whatever happened.
    pub fn try_setup(&self, c: &Container, opts: &Opts) -> NetdOut {
        self.try_setup_args(c, opts, &[])
    }

    /// Same, with extra global options before the subcommand.
    pub fn try_setup_args(&self, c: &Container, opts: &Opts, extra: &[&str]) -> NetdOut {
        let path = c.path_str();
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["setup", path.as_str()]);
        self.netd(&args, Some(&opts.to_json()))
    }

    /// `netd setup`, which must succeed; returns the parsed StatusBlocks, checked to hold
    /// one entry per network.
    pub fn setup(&self, c: &Container, opts: &Opts) -> BTreeMap<String, rpod_wire::StatusBlock> {
        self.setup_args(c, opts, &[])
    }

    pub fn setup_args(&self, c: &Container, opts: &Opts, extra: &[&str]) -> BTreeMap<String, rpod_wire::StatusBlock> {
        let o = self.try_setup_args(c, opts, extra);
        o.expect_ok(&format!("setup of container {}", c.name));
        let st = o.status();
        let want: Vec<&String> = opts.networks.iter().map(|(n, _)| &n.name).collect();
        let got: Vec<&String> = st.keys().collect();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "setup of {}: one StatusBlock per network\n{o}", c.name);
        st
    }

    pub fn try_teardown(&self, c: &Container, opts: &Opts) -> NetdOut {
        self.try_teardown_args(c, opts, &[])
    }

    pub fn try_teardown_args(&self, c: &Container, opts: &Opts, extra: &[&str]) -> NetdOut {
        let path = c.path_str();
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["teardown", path.as_str()]);
        self.netd(&args, Some(&opts.to_json()))
    }

    /// `netd teardown`, which must succeed (and print nothing on stdout).
    pub fn teardown(&self, c: &Container, opts: &Opts) {
        self.teardown_args(c, opts, &[])
    }

    pub fn teardown_args(&self, c: &Container, opts: &Opts, extra: &[&str]) {
        let o = self.try_teardown_args(c, opts, extra);
        o.expect_ok(&format!("teardown of container {}", c.name));
        assert!(o.stdout.trim().is_empty(), "teardown must print nothing on stdout\n{o}");
    }

    // ---- processes ----

    /// Starts `program args` in `ns` in the background; killed when the Env goes.
    pub fn spawn(&self, ns: &Netns, program: &str, args: &[&str]) -> Proc {
        let mut c = ns.command(program);
        c.args(args);
        self.procs.spawn(c).unwrap_or_else(|e| panic!("start {program} in {}: {e}", ns.name()))
    }

    /// Kills one background process now.
    pub fn kill(&self, p: &Proc) {
        self.procs.kill(p.pid());
    }

    /// An `rpod-probe` server in `ns` answering as `name` on `ports` (`"tcp:8000"`,
    /// `"udp:5300"`), listening on all addresses; returns once it is listening.
    pub fn serve(&self, ns: &Netns, name: &str, ports: &[&str]) -> Proc {
        let probe = self.probe_bin.to_string_lossy().into_owned();
        let mut args = vec!["serve", name];
        args.extend_from_slice(ports);
        let p = self.spawn(ns, &probe, &args);
        if p.wait_line(Duration::from_secs(10), |l| l == "READY").is_none() {
            panic!("probe server {name} in {} did not become ready: {:?}", ns.name(), p.lines());
        }
        p
    }

    /// busybox httpd in `ns` on `port`, serving `index.html` = `body`.
    pub fn httpd(&self, ns: &Netns, port: u16, body: &str) -> Proc {
        let root = self.dir.join(format!("www-{}-{port}", ns.name()));
        std::fs::create_dir_all(&root).expect("create httpd root");
        std::fs::write(root.join("index.html"), body).expect("write index.html");
        let root = root.to_string_lossy().into_owned();
        self.spawn(ns, "busybox", &["httpd", "-f", "-p", &port.to_string(), "-h", &root])
    }

    // ---- traffic ----

    fn probe(&self, ns: &Netns, proto: &str, addr: &str, timeout_ms: u64) -> Result<String, String> {
        let mut c = ns.command(&self.probe_bin);
        c.args([proto, addr, &timeout_ms.to_string()]);
        let o = cmd::run(c, None, Duration::from_millis(timeout_ms + 5000));
        if o.ok() {
            Ok(o.stdout)
        } else {
            Err(format!("{} {}", o.stderr.trim(), if o.timed_out { "(killed)" } else { "" }))
        }
    }

    /// One TCP attempt from `ns` to `addr` (`ip:port`); the server's reply or the error.
    pub fn tcp(&self, ns: &Netns, addr: &str, timeout_ms: u64) -> Result<Reply, String> {
        let out = self.probe(ns, "tcp", addr, timeout_ms)?;
        Reply::parse(&out).ok_or_else(|| format!("unexpected answer {out:?}"))
    }

    /// One UDP exchange from `ns` to `addr`.
    pub fn udp(&self, ns: &Netns, addr: &str, timeout_ms: u64) -> Result<Reply, String> {
        let out = self.probe(ns, "udp", addr, timeout_ms)?;
        Reply::parse(&out).ok_or_else(|| format!("unexpected answer {out:?}"))
    }

    fn retry<T>(&self, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + SUCCESS_DEADLINE;
        let mut tries = 0;
        loop {
            tries += 1;
            match f() {
                Ok(v) => return v,
                Err(e) if Instant::now() >= deadline => {
                    panic!("{}: {what}: still failing after {tries} tries: {e}", self.test)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// TCP from `ns` to `addr` must work (retried for a few seconds); the reply.
    pub fn expect_tcp(&self, ns: &Netns, addr: &str) -> Reply {
        self.retry(&format!("tcp from {} to {addr}", ns.name()), || self.tcp(ns, addr, 1000))
    }

    /// TCP from `ns` to `addr` must fail (one attempt, [`BLOCKED_TIMEOUT_MS`]).
    pub fn expect_no_tcp(&self, ns: &Netns, addr: &str) {
        if let Ok(r) = self.tcp(ns, addr, BLOCKED_TIMEOUT_MS) {
            panic!("{}: tcp from {} to {addr} should fail, but {r:?} answered", self.test, ns.name());
        }
    }

    /// UDP from `ns` to `addr` must work; the reply.
    pub fn expect_udp(&self, ns: &Netns, addr: &str) -> Reply {
        self.retry(&format!("udp from {} to {addr}", ns.name()), || self.udp(ns, addr, 1000))
    }

    /// UDP from `ns` to `addr` must get no answer.
    pub fn expect_no_udp(&self, ns: &Netns, addr: &str) {
        if let Ok(r) = self.udp(ns, addr, BLOCKED_TIMEOUT_MS) {
            panic!("{}: udp from {} to {addr} should fail, but {r:?} answered", self.test, ns.name());
        }
    }

    /// One `ping -c1 -W1` from `ns`.
    pub fn ping(&self, ns: &Netns, ip: &str) -> Result<(), String> {
        let o = ns.run("busybox", &["ping", "-c1", "-W1", ip]);
        if o.ok() {
            Ok(())
        } else {
            Err(format!("{}{}", o.stdout.trim(), o.stderr.trim()))
        }
    }

    /// Ping from `ns` to `ip` must work (retried).
    pub fn expect_ping(&self, ns: &Netns, ip: &str) {
        self.retry(&format!("ping from {} to {ip}", ns.name()), || self.ping(ns, ip))
    }

    /// `busybox wget -qO- http://addr/` from `ns` must work (retried); the body.
    pub fn expect_wget(&self, ns: &Netns, addr: &str) -> String {
        let url = format!("http://{addr}/");
        self.retry(&format!("wget {url} from {}", ns.name()), || {
            // No `-T`: busybox 1.35's wget segfaults with it; `run`'s deadline bounds it instead.
            let o = ns.run("busybox", &["wget", "-q", "-O", "-", &url]);
            if o.ok() {
                Ok(o.stdout)
            } else {
                Err(o.stderr)
            }
        })
    }

    /// Runs `program args` in `ns` to completion (10 s deadline).
    pub fn run(&self, ns: &Netns, program: &str, args: &[&str]) -> Out {
        ns.run(program, args)
    }

    // ---- inspection ----

    /// Links, addresses and routes of `ns`.
    pub fn snapshot(&self, ns: &Netns) -> Snapshot {
        Snapshot::take(ns, false)
    }

    /// Links, addresses, routes and nft ruleset of the host namespace.
    pub fn host_snapshot(&self) -> Snapshot {
        Snapshot::take(&self.host, true)
    }

    /// Names of the links in `ns`, optionally only those of one kind (`bridge`, `veth`,
    /// `macvlan`...).
    pub fn links(&self, ns: &Netns, kind: Option<&str>) -> Vec<String> {
        let mut args = vec!["-j", "link", "show"];
        if let Some(k) = kind {
            args.extend(["type", k]);
        }
        let text = ns.ip_ok(&args);
        let v: Value =
            serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text }).expect("ip -j link gives JSON");
        v.as_array()
            .map(|a| a.iter().filter_map(|l| l.get("ifname").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// `ip -j -d link show dev NAME` in `ns`, if it exists.
    pub fn link_details(&self, ns: &Netns, name: &str) -> Option<Value> {
        let o = ns.ip(&["-j", "-d", "link", "show", "dev", name]);
        if !o.ok() {
            return None;
        }
        let v: Value = serde_json::from_str(&o.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// True when the host namespace has netd's `table inet netd`.
    pub fn nft_table_exists(&self) -> bool {
        self.host.run("nft", &["list", "table", "inet", "netd"]).ok()
    }

    /// `nft list ruleset` in the host namespace.
    pub fn nft_ruleset(&self) -> String {
        self.host.run("nft", &["list", "ruleset"]).expect_ok("nft list ruleset").to_string()
    }

    /// The pid in `<config>/aardvark-dns/aardvark.pid`, if any.
    pub fn aardvark_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.config_dir().join("aardvark-dns/aardvark.pid")).ok()?;
        text.trim().parse().ok()
    }

    // ---- cleanup ----

    fn kill_aardvark(&self) {
        let Some(pid) = self.aardvark_pid() else { return };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.contains("aardvark") && !comm.contains("dnsd") {
            return; // already gone, and the pid may belong to someone else now
        }
        kill_and_wait(pid);
    }

    /// Kills every process whose network namespace is one of ours (a DNS daemon netd
    /// started, anything a crashed netd left behind).
    fn kill_namespace_dwellers(&self) {
        let inodes: Vec<(u64, u64)> = self
            .netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|n| std::fs::metadata(n.path()).ok().map(|m| (m.dev(), m.ino())))
            .collect();
        if inodes.is_empty() {
            return;
        }
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        let me = std::process::id() as i32;
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else { continue };
            if inodes.iter().any(|&(dev, ino)| dev == m.dev() && ino == m.ino()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                eprintln!(
                    "[harness] {}: killing leftover process {pid} ({}) in a test namespace",
                    self.test,
                    comm.trim()
                );
                kill_and_wait(pid);
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM, up to 2 s of grace, then SIGKILL; reaps it if it is our child.
fn kill_and_wait(pid: i32) {
    let signal = |sig| {
        // SAFETY: kill(2) with a pid read from /proc or a pid file; at worst it signals a
        // process that no longer exists (ESRCH), which is ignored.
        unsafe {
            libc::kill(pid, sig);
        }
    };
    let reap = || {
        let mut st = 0;
        // SAFETY: waitpid on one pid with WNOHANG; ECHILD (not our child) is ignored.
        unsafe {
            libc::waitpid(pid, &mut st, libc::WNOHANG);
        }
    };
    signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        reap();
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < deadline {
            reap();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    reap();
}

impl Drop for Env {
    fn drop(&mut self) {
        self.procs.kill_all();
        if std::thread::panicking() && std::env::var("RPOD_KEEP_ON_FAILURE").is_ok_and(|v| v == "1") {
            eprintln!(
                "[harness] {} failed; RPOD_KEEP_ON_FAILURE=1 keeps netns {:?} and {}",
                self.test,
                self.netns.lock().unwrap_or_else(|e| e.into_inner()).iter().map(Netns::name).collect::<Vec<_>>(),
                self.dir.display()
            );
            return;
        }
        self.kill_aardvark();
        self.kill_namespace_dwellers();
        let all: Vec<Netns> = self.netns.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for n in all.iter().rev() {
            ns::del(n);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("[harness] could not remove {}: {e}", self.dir.display());
            }
        }
    }
}
