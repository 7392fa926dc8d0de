//! Container commands: `run`, `create`, `start`, `stop`, `rm`, `ps`, `logs`, `inspect`,
//! `wait`, `port`, and the hidden `__monitor`.

use std::io::Read;

use clap::Args;
use serde_json::{json, Value};

use crate::engine::db::{Container, NetMode, State};
use crate::engine::lifecycle::{self, CreateRequest, Output};
use crate::engine::Engine;
use crate::format::{ago, json_pretty, print, rfc3339, table, template};
use crate::{exit_with, Cli, EXIT_ERROR};

/// Flags shared by `run` and `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables in container
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Set container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Publish a container's port, or a range of ports, to the host
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    pub publish: Vec<String>,
    /// Connect a container to a network (NAME[,NAME], none or host)
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Remove container (and pod if created) after exit
    #[arg(long)]
    pub rm: bool,
    /// Bind mount a volume into the container (HOST-DIR:CONTAINER-DIR[:OPTIONS])
    #[arg(short, long = "volume", value_name = "VOLUME")]
    pub volume: Vec<String>,
    /// Mount a temporary filesystem (tmpfs) into a container (PATH[:OPTIONS])
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Specify a static IPv4 address for the container
    #[arg(long)]
    pub ip: Option<String>,
    /// Container MAC address (e.g. 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Run container in an existing pod
    #[arg(long)]
    pub pod: Option<String>,
    /// Sets the username or UID used and optionally the groupname or GID for the specified command
    #[arg(short, long)]
    pub user: Option<String>,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY for container
    #[arg(short, long)]
    pub tty: bool,
    /// Image
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Command and arguments
    #[arg(value_name = "COMMAND", trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl CreateArgs {
    fn request(&self) -> CreateRequest {
        CreateRequest {
            name: self.name.clone(),
            image: self.image.clone(),
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            hostname: self.hostname.clone(),
            ports: self.publish.clone(),
            network: self.network.clone(),
            aliases: self.network_alias.clone(),
            rm: self.rm,
            volumes: self.volume.clone(),
            tmpfs: self.tmpfs.clone(),
            env_files: self.env_file.clone(),
            dns: self.dns.clone(),
            ip: self.ip.clone(),
            mac: self.mac_address.clone(),
            pod: self.pod.clone(),
            user: self.user.clone(),
            interactive: self.interactive,
            tty: self.tty,
        }
    }
}

/// `rpod run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Container settings.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `rpod create` arguments.
#[derive(Debug, Args)]
pub struct CreateOnlyArgs {
    /// Container settings.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// Arguments naming containers.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Containers (name or ID)
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `rpod stop` arguments.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for stop before killing the container
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Containers (name or ID)
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `rpod rm` arguments.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force removal of a running container
    #[arg(short, long)]
    pub force: bool,
    /// Seconds to wait for stop before killing the container
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Ignore errors when a specified container is missing
    #[arg(short, long)]
    pub ignore: bool,
    /// Remove all containers
    #[arg(short, long)]
    pub all: bool,
    /// Containers (name or ID)
    #[arg(value_name = "CONTAINER", required_unless_present = "all")]
    pub containers: Vec<String>,
}

/// `rpod ps` arguments.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all the containers, default is only running containers
    #[arg(short, long)]
    pub all: bool,
    /// Print only the container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    pub no_trunc: bool,
    /// Pretty-print containers to JSON or using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

/// `rpod kill` arguments.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Containers (name or ID)
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `rpod exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "ENV")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Sets the username or UID used and optionally the groupname or GID for the specified command
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container (name or ID)
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Command and arguments
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `rpod logs` arguments.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Output the specified number of LINES at the end of the logs
    #[arg(long, value_name = "LINES")]
    pub tail: Option<i64>,
    /// Containers (name or ID)
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `rpod inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output with a Go template or `json`
    #[arg(short, long)]
    pub format: Option<String>,
    /// Containers or images (name or ID)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// `rpod port` arguments.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Container (name or ID)
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Only this private port (`80` or `80/tcp`)
    #[arg(value_name = "PORT")]
    pub port: Option<String>,
}

/// `rpod attach` arguments.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long)]
    pub no_stdin: bool,
    /// Container (name or ID)
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

/// `rpod __monitor` arguments.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Descriptors to hold while the container runs
    #[arg(long, value_delimiter = ',')]
    pub keep_fds: Vec<i32>,
    /// Container ID
    pub id: String,
}

fn engine(cli: &Cli) -> anyhow::Result<Engine> {
    let e = Engine::open(cli)?;
    lifecycle::reconcile(&e)?;
    Ok(e)
}

/// Runs `rpod create`.
pub fn create(cli: &Cli, a: &CreateOnlyArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let id = lifecycle::create(&e, &a.create.request())?;
    print(&format!("{id}\n"))
}

/// Runs `rpod run`.
pub fn run(cli: &Cli, a: &RunArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let id = lifecycle::create(&e, &a.create.request())?;
    let c = e.db.get(&id)?.ok_or_else(|| anyhow::anyhow!("container {id} vanished"))?;
    let remove = |err: anyhow::Error| -> anyhow::Error {
        if let Ok(Some(c)) = e.db.get(&id) {
            let _ = lifecycle::remove_stopped(&e, &c);
        }
        err
    };
    if a.detach {
        lifecycle::start_detached(&e, &c, &e.root).map_err(remove)?;
        return print(&format!("{id}\n"));
    }
    // Orphans of helpers started now (portfwd's) come to us to be reaped.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    lifecycle::prepare(&e, &c).map_err(remove)?;
    lifecycle::proxy_signals();
    let code = lifecycle::supervise(&e, &c, Output::Inherit, |_| {}).map_err(remove)?;
    if code != 0 {
        return Err(exit_with(code, ""));
    }
    Ok(())
}

/// Runs `rpod start`.
pub fn start(cli: &Cli, a: &NamesArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    super::each(&a.containers, |n| {
        let c = e.db.lookup(n)?;
        // Two concurrent starts of one container: the second sees it running.
        let _lock = e.lock()?;
        let c = e.db.get(&c.id)?.ok_or_else(|| anyhow::anyhow!("container {} was removed", c.id))?;
        if c.state != State::Running {
            lifecycle::start_detached(&e, &c, &e.root)?;
        }
        print(&format!("{n}\n"))
    })
}

/// Runs `rpod stop`.
pub fn stop(cli: &Cli, a: &StopArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    super::each(&a.containers, |n| {
        e.db.lookup(n).and_then(|c| lifecycle::stop(&e, &c, a.time)).and_then(|()| print(&format!("{n}\n")))
    })
}

/// Runs `rpod kill`.
pub fn kill(cli: &Cli, a: &KillArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let sig = lifecycle::parse_signal(&a.signal)?;
    super::each(&a.containers, |n| {
        e.db.lookup(n).and_then(|c| lifecycle::kill(&e, &c, &sig)).and_then(|()| print(&format!("{n}\n")))
    })
}

/// Runs `rpod restart`.
pub fn restart(cli: &Cli, a: &StopArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    super::each(&a.containers, |n| {
        let c = e.db.lookup(n)?;
        lifecycle::stop(&e, &c, a.time)?;
        let _lock = e.lock()?;
        let c = e.db.get(&c.id)?.ok_or_else(|| anyhow::anyhow!("container {} was removed", c.id))?;
        if c.state != State::Running {
            lifecycle::start_detached(&e, &c, &e.root)?;
        }
        print(&format!("{n}\n"))
    })
}

/// Runs `rpod exec`: the runtime's `exec`; exits with the command's code.
pub fn exec(cli: &Cli, a: &ExecArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let c = e.db.lookup(&a.container)?;
    let code = lifecycle::exec(
        &e,
        &c,
        &lifecycle::ExecRequest {
            interactive: a.interactive,
            tty: a.tty,
            env: a.env.clone(),
            workdir: a.workdir.clone(),
            user: a.user.clone(),
            command: a.command.clone(),
        },
    )?;
    if code != 0 {
        return Err(exit_with(code, ""));
    }
    Ok(())
}

/// Runs `rpod rm`.
pub fn rm(cli: &Cli, a: &RmArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let names: Vec<String> =
        if a.all { e.db.containers()?.into_iter().map(|c| c.id).collect() } else { a.containers.clone() };
    super::each(&names, |n| {
        let c = match e.db.lookup(n) {
            Ok(c) => c,
            Err(_) if a.ignore => return Ok(()),
            Err(err) => return Err(err),
        };
        if c.state == State::Running {
            if !a.force {
                anyhow::bail!(
                    "cannot remove container {} as it is running - running or paused containers cannot be removed without force: container state improper",
                    c.id
                );
            }
            lifecycle::stop(&e, &c, a.time)?;
        }
        if let Some(c) = e.db.get(&c.id)? {
            lifecycle::remove_stopped(&e, &c)?;
        }
        print(&format!("{}\n", c.id))
    })
}

fn status_text(c: &Container) -> String {
    match c.state {
        State::Created => "Created".to_owned(),
        State::Running => {
            format!("Up {}", crate::format::human_duration((crate::format::now() - c.started_at).max(0) as u64))
        }
        State::Exited => format!("Exited ({}) {}", c.exit_code, ago(c.finished_at)),
    }
}

fn ports_text(c: &Container) -> String {
    c.config
        .ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip };
            if p.range > 1 {
                format!(
                    "{ip}:{}-{}->{}-{}/{}",
                    p.host_port,
                    p.host_port + p.range - 1,
                    p.container_port,
                    p.container_port + p.range - 1,
                    p.protocol
                )
            } else {
                format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn networks(c: &Container) -> Vec<String> {
    match &c.config.net {
        NetMode::Bridge(n) => n.clone(),
        NetMode::None => vec![],
        NetMode::Host => vec!["host".to_owned()],
        NetMode::Portfwd => vec!["slirp4netns".to_owned()],
    }
}

fn ps_json(c: &Container, pods: &std::collections::HashMap<String, String>) -> Value {
    json!({
        "AutoRemove": c.config.rm,
        "Command": c.config.args,
        "Created": c.created,
        "CreatedAt": rfc3339(c.created),
        "Exited": c.state == State::Exited,
        "ExitedAt": if c.finished_at > 0 { c.finished_at } else { -62135596800i64 },
        "ExitCode": c.exit_code,
        "Id": c.id,
        "Image": c.config.image_name,
        "ImageID": c.config.image_id,
        "IsInfra": false,
        "Labels": null,
        "Mounts": c.config.volumes.iter().map(|v| v.destination.clone()).collect::<Vec<_>>(),
        "Names": [c.name],
        "Namespaces": {},
        "Networks": networks(c),
        "Pid": c.pid,
        "Pod": c.config.pod.clone().unwrap_or_default(),
        "PodName": c.config.pod.as_ref().and_then(|p| pods.get(p)).cloned().unwrap_or_default(),
        "Ports": if c.config.ports.is_empty() { Value::Null } else { serde_json::to_value(&c.config.ports).unwrap_or(Value::Null) },
        "Size": null,
        "StartedAt": c.started_at,
        "State": c.state.as_str(),
        "Status": status_text(c),
    })
}

/// Runs `rpod ps`.
pub fn ps(cli: &Cli, a: &PsArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let mut list: Vec<Container> =
        e.db.containers()?.into_iter().filter(|c| a.all || c.state == State::Running).collect();
    list.reverse();
    let pods: std::collections::HashMap<String, String> = e.db.pods()?.into_iter().map(|p| (p.id, p.name)).collect();
    if a.quiet {
        let n = if a.no_trunc { 64 } else { 12 };
        return print(&list.iter().map(|c| format!("{}\n", &c.id[..n])).collect::<String>());
    }
    match a.format.as_deref() {
        Some("json") => {
            let v: Vec<Value> = list.iter().map(|c| ps_json(c, &pods)).collect();
            print(&format!("{}\n", json_pretty(&v)?))
        }
        Some(tpl) => {
            let mut out = String::new();
            for c in &list {
                out.push_str(&template(tpl, &ps_json(c, &pods))?);
                out.push('\n');
            }
            print(&out)
        }
        None => {
            let mut rows = vec![["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>()];
            for c in &list {
                let mut cmd = c.config.args.join(" ");
                if !a.no_trunc && cmd.chars().count() > 20 {
                    cmd = format!("{}...", cmd.chars().take(17).collect::<String>());
                }
                rows.push(vec![
                    if a.no_trunc { c.id.clone() } else { c.id[..12].to_owned() },
                    c.config.image_name.clone(),
                    cmd,
                    ago(c.created),
                    status_text(c),
                    ports_text(c),
                    c.name.clone(),
                ]);
            }
            print(&table(&rows))
        }
    }
}

/// Runs `rpod logs`.
pub fn logs(cli: &Cli, a: &LogsArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    for n in &a.containers {
        let c = e.db.lookup(n)?;
        let mut text = Vec::new();
        let mut file = std::fs::File::open(e.run_dir(&c.id).join("ctr.log")).ok();
        if let Some(f) = &mut file {
            f.read_to_end(&mut text)?;
        }
        let text = String::from_utf8_lossy(&text);
        let out = match a.tail {
            Some(n) if n >= 0 => {
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                lines[lines.len().saturating_sub(n as usize)..].concat()
            }
            _ => text.into_owned(),
        };
        print(&out)?;
        if let (true, Some(mut f)) = (a.follow, file) {
            follow(&e, &c.id, &mut f)?;
        }
    }
    Ok(())
}

/// Runs `rpod attach`: our stdin to the container's input (when it was started with `-i`),
/// its output (appended to the log from now on) to our stdout, until it exits; exits with
/// its code.
pub fn attach(cli: &Cli, a: &AttachArgs) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom};
    let e = engine(cli)?;
    let c = e.db.lookup(&a.container)?;
    if c.state != State::Running {
        anyhow::bail!("you can only attach to running containers: container state improper");
    }
    let mut f = std::fs::File::open(e.run_dir(&c.id).join("ctr.log"))?;
    f.seek(SeekFrom::End(0))?;
    let mut raw = None;
    if !a.no_stdin && c.config.interactive {
        let sock = Engine::attach_socket(&c.id);
        let mut conn = std::os::unix::net::UnixStream::connect(&sock)
            .map_err(|err| anyhow::anyhow!("attaching to the input of container {}: {err}", c.id))?;
        if c.config.tty {
            raw = crate::engine::tty::RawMode::enter(0);
        }
        // Never joined: a read of our stdin may block until we exit.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut conn);
        });
    }
    follow(&e, &c.id, &mut f)?;
    drop(raw);
    let code = e.db.get(&c.id)?.map(|x| x.exit_code).unwrap_or(0);
    if code != 0 {
        return Err(exit_with(i32::try_from(code).unwrap_or(EXIT_ERROR), ""));
    }
    Ok(())
}

/// Copies what is appended to the log until the container is no longer running.
fn follow(e: &Engine, id: &str, f: &mut std::fs::File) -> anyhow::Result<()> {
    use std::io::Write;
    loop {
        // The state is read before the file, so the last lines are not missed.
        let running = matches!(e.db.get(id)?, Some(x) if x.state == State::Running);
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if !buf.is_empty() {
            let mut o = std::io::stdout().lock();
            match o.write_all(&buf).and_then(|()| o.flush()) {
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r?,
            }
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn inspect_json(e: &Engine, c: &Container) -> Value {
    let mut nets = serde_json::Map::new();
    for (name, s) in &c.status {
        for i in s.interfaces.values() {
            if let Some(a) = i.subnets.first() {
                nets.insert(
                    name.clone(),
                    json!({
                        "IPAddress": a.ipnet.addr().to_string(),
                        "IPPrefixLen": a.ipnet.prefix_len(),
                        "Gateway": a.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        "MacAddress": i.mac_address,
                        "Aliases": [&c.id[..12]],
                        "NetworkID": name,
                    }),
                );
            }
        }
    }
    let mut ports = serde_json::Map::new();
    for p in &c.config.ports {
        for i in 0..p.range.max(1) {
            ports.insert(
                format!("{}/{}", p.container_port + i, p.protocol),
                json!([{"HostIp": p.host_ip, "HostPort": (p.host_port + i).to_string()}]),
            );
        }
    }
    let run = e.run_dir(&c.id);
    json!({
        "Id": c.id,
        "Created": rfc3339(c.created),
        "Path": c.config.args.first(),
        "Args": c.config.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": c.state.as_str(),
            "Running": c.state == State::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": c.pid,
            "ConmonPid": c.monitor_pid,
            "ExitCode": c.exit_code,
            "StartedAt": if c.started_at > 0 { rfc3339(c.started_at) } else { String::new() },
            "FinishedAt": if c.finished_at > 0 { rfc3339(c.finished_at) } else { String::new() },
        },
        "Image": c.config.image_id,
        "ImageName": c.config.image_name,
        "Rootfs": "",
        "ResolvConfPath": run.join("resolv.conf"),
        "HostnamePath": run.join("hostname"),
        "HostsPath": run.join("hosts"),
        "LogPath": run.join("ctr.log"),
        "Name": c.name,
        "RestartCount": 0,
        "Driver": "overlay",
        "OCIRuntime": e.runtime_of(c),
        "Config": {
            "Hostname": c.config.hostname,
            "Env": c.config.env,
            "Cmd": c.config.args,
            "WorkingDir": c.config.workdir,
            "Image": c.config.image_name,
            "StopSignal": "SIGTERM",
            "StopTimeout": c.config.stop_timeout,
        },
        "Mounts": c.config.volumes.iter().map(|v| json!({
            "Type": "bind",
            "Source": v.source,
            "Destination": v.destination,
            "RW": !v.readonly,
            "Options": ["rbind"],
            "Propagation": "rprivate",
        })).collect::<Vec<_>>(),
        "HostConfig": {
            "Binds": c.config.volumes.iter().map(|v| format!("{}:{}:{}", v.source, v.destination, if v.readonly { "ro" } else { "rw" })).collect::<Vec<_>>(),
            "Tmpfs": c.config.tmpfs.iter().map(|t| {
                let (p, o) = t.split_once(':').unwrap_or((t.as_str(), ""));
                (p.to_owned(), json!(o))
            }).collect::<serde_json::Map<String, Value>>(),
            "Dns": c.config.dns,
            "AutoRemove": c.config.rm,
            "NetworkMode": match &c.config.net { NetMode::Bridge(_) => "bridge", NetMode::None => "none", NetMode::Host => "host", NetMode::Portfwd => "slirp4netns" },
            "PortBindings": ports.clone(),
        },
        "NetworkSettings": {
            "Ports": ports,
            "Networks": nets,
            "SandboxKey": match (&c.config.pod, &c.config.net) {
                (Some(p), _) => Engine::netns_path(p).display().to_string(),
                (None, NetMode::Host) => String::new(),
                (None, _) => Engine::netns_path(&c.id).display().to_string(),
            },
        },
    })
}

/// Runs `rpod inspect`: containers, falling back to images.
pub fn inspect(cli: &Cli, a: &InspectArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let mut out = Vec::new();
    for n in &a.names {
        match e.db.lookup(n) {
            Ok(c) => out.push(inspect_json(&e, &c)),
            Err(_) => {
                return super::inspect::run(
                    cli,
                    &super::inspect::InspectArgs { format: a.format.clone(), images: a.names.clone() },
                )
                .map_err(|err| exit_with(EXIT_ERROR, format!("no such object: \"{n}\" ({err:#})")));
            }
        }
    }
    match a.format.as_deref() {
        None | Some("json") => print(&format!("{}\n", json_pretty(&out)?)),
        Some(tpl) => {
            let mut s = String::new();
            for v in &out {
                s.push_str(&template(tpl, v)?);
                s.push('\n');
            }
            print(&s)
        }
    }
}

/// Runs `rpod wait`: prints each container's exit code once it exited.
pub fn wait(cli: &Cli, a: &NamesArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    for n in &a.containers {
        let c = e.db.lookup(n)?;
        loop {
            match e.db.get(&c.id)? {
                Some(x) if x.state == State::Running => {}
                Some(x) => {
                    print(&format!("{}\n", x.exit_code))?;
                    break;
                }
                None => anyhow::bail!("no container with ID {} found: container was removed", c.id),
            }
            lifecycle::reconcile(&e)?;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Runs `rpod port`.
pub fn port(cli: &Cli, a: &PortArgs) -> anyhow::Result<()> {
    let e = engine(cli)?;
    let c = e.db.lookup(&a.container)?;
    let mut out = String::new();
    for p in &c.config.ports {
        for i in 0..p.range.max(1) {
            let key = format!("{}/{}", p.container_port + i, p.protocol);
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip };
            match &a.port {
                None => out.push_str(&format!("{key} -> {ip}:{}\n", p.host_port + i)),
                Some(want) if *want == key || *want == (p.container_port + i).to_string() => {
                    out.push_str(&format!("{ip}:{}\n", p.host_port + i));
                }
                Some(_) => {}
            }
        }
    }
    if out.is_empty() {
        if let Some(want) = &a.port {
            anyhow::bail!("failed to find published port {want:?}");
        }
    }
    print(&out)
}

/// Runs the hidden `__monitor`.
pub fn monitor(cli: &Cli, a: &MonitorArgs) -> anyhow::Result<()> {
    let e = Engine::open(cli)?;
    lifecycle::monitor(&e, &a.id, &a.keep_fds)
}
