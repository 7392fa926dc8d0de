//! The engine's state: one SQLite database at `<root>/rpod.db`.
//!
//! `containers` holds one row a container (its settings as JSON, its state as columns);
//! `ips` holds the IPAM leases (one row an address on a network).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rpod_wire::{PortMapping, StatusBlock};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// How a container is networked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Bridge networks, by name, in order.
    Bridge(Vec<String>),
    /// Only a loopback interface.
    None,
    /// The host's network namespace.
    Host,
    /// A network namespace of its own connected by portfwd (or slirp4netns); the rootless
    /// default.
    Portfwd,
}

/// What a container was created with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The image's ID.
    pub image_id: String,
    /// The image as the user named it (resolved).
    pub image_name: String,
    /// The process arguments.
    pub args: Vec<String>,
    /// The process environment.
    pub env: Vec<String>,
    /// The working directory.
    pub workdir: String,
    /// The hostname.
    pub hostname: String,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Networking.
    pub net: NetMode,
    /// Extra DNS names on every network.
    pub aliases: Vec<String>,
    /// Static IPs, by network.
    pub ips: BTreeMap<String, IpAddr>,
    /// Remove the container when it exits.
    pub rm: bool,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// Bind mounts (`-v HOST:CTR[:ro]`).
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// tmpfs mounts (`--tmpfs PATH[:OPTIONS]`).
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// Name servers (`--dns`).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// A static MAC address for the first network (`--mac-address`).
    #[serde(default)]
    pub mac: Option<String>,
    /// The pod (ID) whose network namespace the container joins.
    #[serde(default)]
    pub pod: Option<String>,
    /// Interface names by network (`eth{index}` when absent).
    #[serde(default)]
    pub interfaces: BTreeMap<String, String>,
    /// `-u USER[:GROUP]` (resolved against the image's `/etc/passwd` at start).
    #[serde(default)]
    pub user: Option<String>,
    /// `-i`: the container's stdin is the caller's (foreground runs).
    #[serde(default)]
    pub interactive: bool,
    /// `-t`: the process gets a terminal.
    #[serde(default)]
    pub tty: bool,
    /// The OCI runtime the container was created with (the engine's when absent).
    #[serde(default)]
    pub runtime: Option<String>,
}

/// What a pod was created with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodConfig {
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Networking.
    pub net: NetMode,
    /// IPs, by network.
    pub ips: BTreeMap<String, IpAddr>,
    /// The hostname of its containers.
    pub hostname: String,
}

/// One row of `pods`.
#[derive(Debug, Clone)]
pub struct Pod {
    /// 64 hex.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// Settings.
    pub config: PodConfig,
    /// netd's answer of the last start.
    pub status: BTreeMap<String, StatusBlock>,
    /// Whether it was ever started.
    pub started: bool,
}

/// A bind mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeMount {
    /// The host path (absolute).
    pub source: String,
    /// The container path (absolute).
    pub destination: String,
    /// Mounted read-only.
    pub readonly: bool,
}

/// A container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, never started (or started and cleaned up before running).
    Created,
    /// The process runs.
    Running,
    /// The process exited.
    Exited,
}

impl State {
    /// The database and podman spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "running" => State::Running,
            "exited" => State::Exited,
            _ => State::Created,
        }
    }
}

/// One row of `containers`.
#[derive(Debug, Clone)]
pub struct Container {
    /// 64 hex.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// Its state.
    pub state: State,
    /// Settings.
    pub config: ContainerConfig,
    /// The container's PID 1 on the host (0 when not running).
    pub pid: i64,
    /// The monitor's PID (0 when none).
    pub monitor_pid: i64,
    /// The container process's start time (clock ticks since boot; 0 when unknown): with
    /// it, a PID reused by another process (after a reboot) is not taken for the container.
    pub pid_start: i64,
    /// The monitor's start time (as `pid_start`).
    pub monitor_start: i64,
    /// The exit code (when exited).
    pub exit_code: i64,
    /// Unix seconds (0 = never).
    pub started_at: i64,
    /// Unix seconds (0 = never).
    pub finished_at: i64,
    /// netd's answer of the last start.
    pub status: BTreeMap<String, StatusBlock>,
}

/// The database connection.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    monitor_pid INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS ips (
    network TEXT NOT NULL,
    ip TEXT NOT NULL,
    container TEXT NOT NULL,
    PRIMARY KEY (network, ip)
);
CREATE TABLE IF NOT EXISTS pods (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    started INTEGER NOT NULL DEFAULT 0
);
";

const COLUMNS: &str =
    "id, name, created, state, config, pid, monitor_pid, exit_code, started_at, finished_at, status, pid_start, monitor_start";

/// Columns added after the first schema: added to older databases when they are opened.
const ADDED: &[&str] = &[
    "ALTER TABLE containers ADD COLUMN pid_start INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE containers ADD COLUMN monitor_start INTEGER NOT NULL DEFAULT 0",
];

fn row_to_container(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Container, String, String)> {
    let config: String = r.get(4)?;
    let status: String = r.get(10)?;
    let state: String = r.get(3)?;
    Ok((
        Container {
            id: r.get(0)?,
            name: r.get(1)?,
            created: r.get(2)?,
            state: State::parse(&state),
            config: ContainerConfig {
                image_id: String::new(),
                image_name: String::new(),
                args: Vec::new(),
                env: Vec::new(),
                workdir: String::new(),
                hostname: String::new(),
                ports: Vec::new(),
                net: NetMode::None,
                aliases: Vec::new(),
                ips: BTreeMap::new(),
                rm: false,
                stop_timeout: 10,
                volumes: Vec::new(),
                tmpfs: Vec::new(),
                dns: Vec::new(),
                mac: None,
                pod: None,
                interfaces: BTreeMap::new(),
                user: None,
                interactive: false,
                tty: false,
                runtime: None,
            },
            pid: r.get(5)?,
            monitor_pid: r.get(6)?,
            pid_start: r.get(11)?,
            monitor_start: r.get(12)?,
            exit_code: r.get(7)?,
            started_at: r.get(8)?,
            finished_at: r.get(9)?,
            status: BTreeMap::new(),
        },
        config,
        status,
    ))
}

fn finish(t: (Container, String, String)) -> anyhow::Result<Container> {
    let (mut c, config, status) = t;
    c.config =
        serde_json::from_str(&config).with_context(|| format!("container {}: bad config in the database", c.id))?;
    c.status = serde_json::from_str(&status).unwrap_or_default();
    Ok(c)
}

impl Db {
    /// Opens (creating) the database.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        // Every command is a short process: no checkpoint (two fsyncs) and no WAL file to
        // remove and recreate at each close; SQLite checkpoints as the WAL grows.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        // A WAL of at most 1 MiB: every process that opens the database first reads all of
        // it (~1 ms), and each checkpoint costs two fsyncs (tens of ms on a busy disk).
        conn.execute_batch("PRAGMA wal_autocheckpoint=256;")?;
        conn.execute_batch(SCHEMA).context("creating the database schema")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            for sql in ADDED {
                match conn.execute_batch(sql) {
                    Ok(()) => {}
                    // Added already (by a concurrent command).
                    Err(e) if e.to_string().contains("duplicate column") => {}
                    Err(e) => return Err(e).context("updating the database schema"),
                }
            }
            conn.execute_batch("PRAGMA user_version = 1;")?;
        }
        Ok(Db { conn })
    }

    /// Every container, oldest first.
    pub fn containers(&self) -> anyhow::Result<Vec<Container>> {
        let mut st = self.conn.prepare(&format!("SELECT {COLUMNS} FROM containers ORDER BY created, id"))?;
        let rows = st.query_map([], row_to_container)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(finish).collect()
    }

    /// A container by ID.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<Container>> {
        let t = self
            .conn
            .query_row(&format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"), [id], row_to_container)
            .optional()?;
        t.map(finish).transpose()
    }

    /// Finds a container by name, full ID or unique ID prefix.
    pub fn lookup(&self, name_or_id: &str) -> anyhow::Result<Container> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == name_or_id || c.id == name_or_id) {
            return Ok(c.clone());
        }
        let hex = !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_hexdigit());
        let found: Vec<&Container> =
            if hex { all.iter().filter(|c| c.id.starts_with(name_or_id)).collect() } else { vec![] };
        match found.len() {
            1 => Ok(found[0].clone()),
            0 => Err(crate::exit_with(
                crate::EXIT_ERROR,
                format!("no container with name or ID \"{name_or_id}\" found: no such container"),
            )),
            _ => anyhow::bail!("more than one result for container \"{name_or_id}\": use a longer ID"),
        }
    }

    /// Whether a name is taken.
    pub fn name_taken(&self, name: &str) -> anyhow::Result<bool> {
        let n: i64 = self.conn.query_row("SELECT COUNT(*) FROM containers WHERE name = ?1", [name], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// Inserts a new container (state `created`).
    pub fn insert(&self, id: &str, name: &str, created: i64, config: &ContainerConfig) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO containers (id, name, created, state, config) VALUES (?1, ?2, ?3, 'created', ?4)",
            params![id, name, created, serde_json::to_string(config)?],
        )?;
        Ok(())
    }

    /// Removes a container and its leases.
    pub fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.conn.execute("DELETE FROM ips WHERE container = ?1", [id])?;
        self.conn.execute("DELETE FROM containers WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records a start: the container's and the monitor's PIDs with their start times.
    pub fn set_running(&self, id: &str, pid: (i64, i64), monitor: (i64, i64), started: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE containers SET state = 'running', pid = ?2, pid_start = ?3, monitor_pid = ?4, monitor_start = ?5, started_at = ?6, exit_code = 0 WHERE id = ?1",
            params![id, pid.0, pid.1, monitor.0, monitor.1, started],
        )?;
        Ok(())
    }

    /// Records an exit.
    pub fn set_exited(&self, id: &str, code: i64, finished: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE containers SET state = 'exited', pid = 0, monitor_pid = 0, pid_start = 0, monitor_start = 0, exit_code = ?2, finished_at = ?3 WHERE id = ?1",
            params![id, code, finished],
        )?;
        Ok(())
    }

    /// Records netd's status of the last start.
    pub fn set_status(&self, id: &str, status: &BTreeMap<String, StatusBlock>) -> anyhow::Result<()> {
        self.conn
            .execute("UPDATE containers SET status = ?2 WHERE id = ?1", params![id, serde_json::to_string(status)?])?;
        Ok(())
    }

    /// The addresses leased on a network.
    pub fn leased(&self, network: &str) -> anyhow::Result<Vec<IpAddr>> {
        let mut st = self.conn.prepare("SELECT ip FROM ips WHERE network = ?1")?;
        let v = st.query_map([network], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Leases an address.
    pub fn lease(&self, network: &str, ip: IpAddr, container: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO ips (network, ip, container) VALUES (?1, ?2, ?3)",
            params![network, ip.to_string(), container],
        )?;
        Ok(())
    }

    /// How many containers use a network.
    pub fn network_users(&self, network: &str) -> anyhow::Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT DISTINCT container FROM ips WHERE network = ?1")?;
        let v = st.query_map([network], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Releases a container's (or pod's) lease on one network.
    pub fn release(&self, network: &str, container: &str) -> anyhow::Result<()> {
        self.conn.execute("DELETE FROM ips WHERE network = ?1 AND container = ?2", params![network, container])?;
        Ok(())
    }

    /// Replaces a container's settings.
    pub fn set_config(&self, id: &str, config: &ContainerConfig) -> anyhow::Result<()> {
        self.conn
            .execute("UPDATE containers SET config = ?2 WHERE id = ?1", params![id, serde_json::to_string(config)?])?;
        Ok(())
    }

    /// Every pod, oldest first.
    pub fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let mut st =
            self.conn.prepare("SELECT id, name, created, config, status, started FROM pods ORDER BY created, id")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, name, created, config, status, started)| {
                Ok(Pod {
                    config: serde_json::from_str(&config)
                        .with_context(|| format!("pod {id}: bad config in the database"))?,
                    status: serde_json::from_str(&status).unwrap_or_default(),
                    id,
                    name,
                    created,
                    started: started != 0,
                })
            })
            .collect()
    }

    /// Finds a pod by name, full ID or unique ID prefix.
    pub fn pod_lookup(&self, name_or_id: &str) -> anyhow::Result<Pod> {
        let all = self.pods()?;
        if let Some(p) = all.iter().find(|p| p.name == name_or_id || p.id == name_or_id) {
            return Ok(p.clone());
        }
        let hex = !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_hexdigit());
        let found: Vec<&Pod> = if hex { all.iter().filter(|p| p.id.starts_with(name_or_id)).collect() } else { vec![] };
        match found.len() {
            1 => Ok(found[0].clone()),
            0 => Err(crate::exit_with(
                crate::EXIT_ERROR,
                format!("no pod with name or ID {name_or_id} found: no such pod"),
            )),
            _ => anyhow::bail!("more than one result for pod \"{name_or_id}\": use a longer ID"),
        }
    }

    /// Inserts a new pod.
    pub fn insert_pod(&self, id: &str, name: &str, created: i64, config: &PodConfig) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO pods (id, name, created, config) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, created, serde_json::to_string(config)?],
        )?;
        Ok(())
    }

    /// Removes a pod and its leases.
    pub fn delete_pod(&self, id: &str) -> anyhow::Result<()> {
        self.conn.execute("DELETE FROM ips WHERE container = ?1", [id])?;
        self.conn.execute("DELETE FROM pods WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records netd's status of a pod's start.
    pub fn set_pod_status(&self, id: &str, status: &BTreeMap<String, StatusBlock>) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE pods SET status = ?2, started = 1 WHERE id = ?1",
            params![id, serde_json::to_string(status)?],
        )?;
        Ok(())
    }

    /// Begins an immediate (write-locked) transaction.
    pub fn begin(&self) -> anyhow::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits.
    pub fn commit(&self) -> anyhow::Result<()> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }
}
