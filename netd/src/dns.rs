//! Managing the DNS helper (aardvark-dns or dnsd) exactly as netavark does: per-network config
//! files under `<config>/aardvark-dns/`, written under the `<config>/aardvark.lock` flock,
//! then SIGHUP to the running helper (pid file) or a start of a new one, which forks and whose
//! parent exits once the child listens.

use std::fs::{self, File, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rpod_wire::dnsconfig::{self, Entry, NetworkConfig};

use crate::error::{msg, Context, Result};

pub struct Dns {
    pub dir: PathBuf,
    lock_path: PathBuf,
    pub binary: PathBuf,
    pub port: u16,
}

pub struct DnsLock {
    _f: Flock<File>,
}

impl Dns {
    /// DNS management, or None when the helper binary does not exist (DNS is then skipped,
    /// as netavark does).
    pub fn new(config: &Path, binary: &Path, port: u16) -> Option<Dns> {
        if !binary.is_file() {
            tracing::info!("dns disabled because aardvark-dns path does not exists ({})", binary.display());
            return None;
        }
        Some(Dns {
            dir: config.join("aardvark-dns"),
            lock_path: config.join("aardvark.lock"),
            binary: binary.into(),
            port,
        })
    }

    pub fn lock(&self) -> Result<DnsLock> {
        fs::create_dir_all(&self.dir).with_ctx(|| format!("create {}", self.dir.display()))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .ctx("open aardvark lock")?;
        let f = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e).ctx("aardvark lock")?;
        Ok(DnsLock { _f: f })
    }

    fn path(&self, network: &str, internal: bool) -> PathBuf {
        self.dir.join(dnsconfig::file_name(network, internal))
    }

    fn read(&self, p: &Path) -> Result<Option<NetworkConfig>> {
        match fs::read_to_string(p) {
            Ok(t) => Ok(Some(NetworkConfig::parse(&t).map_err(|e| msg(format!("{}: {e}", p.display())))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_ctx(|| format!("read {}", p.display())),
        }
    }

    fn write(&self, p: &Path, c: &NetworkConfig) -> Result<()> {
        let tmp = p.with_file_name(format!(".{}.tmp", std::process::id()));
        fs::write(&tmp, c.render()).with_ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, p).with_ctx(|| format!("rename {}", p.display()))
    }

    /// Adds a container's entry to a network's file (replacing an older one of it).
    pub fn add(&self, network: &str, internal: bool, bind: &[IpAddr], servers: &[IpAddr], e: Entry) -> Result<()> {
        let p = self.path(network, internal);
        let mut c = self.read(&p)?.unwrap_or_default();
        c.bind_ips = bind.to_vec();
        c.network_dns_servers = servers.to_vec();
        c.remove_container(&e.container_id);
        c.entries.push(e);
        self.write(&p, &c)
    }

    /// Removes a container from a network's file; the file goes when no container is left.
    pub fn remove(&self, network: &str, internal: bool, container_id: &str) -> Result<()> {
        let p = self.path(network, internal);
        let Some(mut c) = self.read(&p)? else { return Ok(()) };
        c.remove_container(container_id);
        if c.entries.is_empty() {
            fs::remove_file(&p).with_ctx(|| format!("remove {}", p.display()))
        } else {
            self.write(&p, &c)
        }
    }

    /// Rewrites line 1's DNS servers (`netd update`).
    pub fn update_servers(&self, network: &str, servers: &[IpAddr]) -> Result<()> {
        for internal in [false, true] {
            let p = self.path(network, internal);
            if let Some(mut c) = self.read(&p)? {
                c.network_dns_servers = servers.to_vec();
                return self.write(&p, &c);
            }
        }
        Err(msg(format!("network {network} has no DNS configuration")))
    }

    fn running_pid(&self) -> Option<Pid> {
        let t = fs::read_to_string(self.dir.join(dnsconfig::PID_FILE)).ok()?;
        let pid = Pid::from_raw(t.trim().parse().ok()?);
        kill(pid, None).ok().map(|_| pid)
    }

    fn any_config(&self) -> bool {
        fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()).any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n != dnsconfig::PID_FILE && !n.starts_with('.')
                })
            })
            .unwrap_or(false)
    }

    /// Tells the helper to reload, starting it when it is not running and there is config.
    pub fn notify(&self) -> Result<()> {
        if let Some(pid) = self.running_pid() {
            return kill(pid, Signal::SIGHUP).ctx("signal aardvark-dns");
        }
        if !self.any_config() {
            return Ok(());
        }
        let errfile = tempfile_in(&self.dir)?;
        let level = std::env::var("RUST_LOG")
            .ok()
            .and_then(|l| l.rsplit('=').next().map(str::to_string))
            .unwrap_or_else(|| "info".into());
        let status = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("run")
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(errfile.try_clone().ctx("dup")?)
            .stderr(errfile.try_clone().ctx("dup")?)
            .status()
            .with_ctx(|| format!("start {}", self.binary.display()))?;
        if !status.success() {
            let out = read_all(errfile);
            let out: Vec<&str> = out.lines().filter(|l| !l.contains("failed to connect to syslog")).collect();
            return Err(msg(format!("aardvark-dns failed to start: {}", out.join(" ").trim())));
        }
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> Result<File> {
    let p = dir.join(format!(".start-{}.log", std::process::id()));
    let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&p).ctx("create temp file")?;
    let _ = fs::remove_file(&p);
    Ok(f)
}

fn read_all(mut f: File) -> String {
    use std::io::{Read, Seek};
    let mut s = String::new();
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s
}
