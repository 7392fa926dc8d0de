//! `rpod info` and `rpod system reset`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::engine::db::State;
use crate::engine::{lifecycle, network, pod, Engine};
use crate::format::{json_pretty, print, template};
use crate::Cli;

/// `rpod info` arguments.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// `json`, or a Go template such as `{{.Host.NetworkBackend}}`
    #[arg(short, long)]
    pub format: Option<String>,
}

/// `rpod system` subcommands.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Reset rpod storage: remove all containers, pods, networks and images
    Reset(ResetArgs),
    /// Display rpod system information
    Info(InfoArgs),
}

/// `rpod system reset` arguments.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(prog)).find(|p| p.is_file()))
}

fn first_line(prog: &str, arg: &str) -> String {
    std::process::Command::new(prog)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn meminfo(key: &str) -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start_matches(':').split_whitespace().next()))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn os_release(key: &str) -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_owned()))
        .unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The `info` document (podman's keys).
pub fn info(cli: &Cli) -> anyhow::Result<Value> {
    let e = Engine::open(cli)?;
    lifecycle::reconcile(&e)?;
    let ctrs = e.db.containers()?;
    let running = ctrs.iter().filter(|c| c.state == State::Running).count();
    let images = e.store.images()?.len();
    let rt_path = which(&e.runtime).map(|p| p.display().to_string()).unwrap_or_else(|| e.runtime.clone());
    let netd = Engine::netd_bin().map(|p| p.display().to_string()).unwrap_or_default();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let hostname = uname.as_ref().map(|u| u.nodename().to_string_lossy().into_owned()).unwrap_or_default();
    let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let uptime = read("/proc/uptime").split('.').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Ok(json!({
        "host": {
            "arch": arch(),
            "cgroupManager": "cgroupfs",
            "cgroupVersion": if cgroup_v2 { "v2" } else { "v1" },
            "conmon": {"package": "rpod", "path": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(), "version": format!("rpod monitor {}", env!("CARGO_PKG_VERSION"))},
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "distribution": {"distribution": os_release("ID"), "version": os_release("VERSION_ID"), "codename": os_release("VERSION_CODENAME")},
            "hostname": hostname,
            "kernel": kernel,
            "memFree": meminfo("MemFree"),
            "memTotal": meminfo("MemTotal"),
            "networkBackend": "netavark",
            "networkBackendInfo": {"backend": "netavark", "package": "rpod-netd", "path": netd, "dns": {"package": "rpod-dnsd", "path": Engine::netd_bin().map(|p| p.with_file_name("dnsd").display().to_string()).unwrap_or_default()}},
            "ociRuntime": {"name": std::path::Path::new(&rt_path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), "package": "", "path": rt_path, "version": first_line(&e.runtime, "--version")},
            "os": std::env::consts::OS,
            "rootless": crate::rootless::is_rootless(),
            "idMappings": {"uidmap": id_map("/proc/self/uid_map"), "gidmap": id_map("/proc/self/gid_map")},
            "uptime": crate::format::human_duration(uptime),
        },
        "plugins": {"network": ["bridge", "macvlan"], "log": ["k8s-file"], "volume": ["local"]},
        "store": {
            "configFile": "",
            "containerStore": {"number": ctrs.len(), "paused": 0, "running": running, "stopped": ctrs.len() - running},
            "graphDriverName": "overlay",
            "graphRoot": e.root.display().to_string(),
            "imageStore": {"number": images},
            "runRoot": crate::engine::runtime_root().display().to_string(),
            "networkConfigDir": e.root.join("networks").display().to_string(),
            "podStore": {"number": e.db.pods()?.len()},
        },
        "version": {
            "APIVersion": env!("CARGO_PKG_VERSION"),
            "Version": env!("CARGO_PKG_VERSION"),
            "Os": std::env::consts::OS,
            "OsArch": format!("{}/{}", std::env::consts::OS, arch()),
        },
    }))
}

/// A `uid_map`/`gid_map` as podman's `idMappings` list (empty for root outside a user
/// namespace).
fn id_map(path: &str) -> Value {
    if !crate::rootless::is_rootless() {
        return Value::Array(vec![]);
    }
    let text = read(path);
    Value::Array(
        text.lines()
            .filter_map(|l| {
                let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                (f.len() == 3).then(|| json!({"container_id": f[0], "host_id": f[1], "size": f[2]}))
            })
            .collect(),
    )
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.ends_with(':')
                && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`".contains(c))
                && s.parse::<f64>().is_err()
                && !matches!(s.as_str(), "true" | "false" | "null" | "yes" | "no" | "~");
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// Renders a JSON value as YAML (block style), as podman prints `info`.
pub fn yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::Object(o) if !o.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        yaml(x, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        yaml(x, indent, out);
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{k}: {{}}\n")),
                    Value::Array(_) => out.push_str(&format!("{pad}{k}: []\n")),
                    _ => out.push_str(&format!("{pad}{k}: {}\n", yaml_scalar(x))),
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                match x {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}- \n"));
                        yaml(x, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", yaml_scalar(x))),
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", yaml_scalar(v))),
    }
}

/// Runs `rpod info`.
pub fn run_info(cli: &Cli, a: &InfoArgs) -> anyhow::Result<()> {
    let v = info(cli)?;
    match a.format.as_deref() {
        None => {
            let mut s = String::new();
            yaml(&v, 0, &mut s);
            print(&s)
        }
        Some("json") => print(&format!("{}\n", json_pretty(&v)?)),
        Some(t) => {
            // Podman's templates use Go field names (`.Host.NetworkBackend`).
            print(&(template(t, &go_keys(&v))? + "\n"))
        }
    }
}

/// `host` -> `Host`, `networkBackend` -> `NetworkBackend`.
fn go_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let mut c = k.chars();
                    let k = c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default();
                    (k, go_keys(x))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(go_keys).collect()),
        other => other.clone(),
    }
}

/// Runs `rpod system ...`.
pub fn run(cli: &Cli, c: &SystemCommand) -> anyhow::Result<()> {
    match c {
        SystemCommand::Info(a) => run_info(cli, a),
        SystemCommand::Reset(a) => reset(cli, a),
    }
}

/// Runs `rpod system reset`: stops and removes every container and pod, every network but
/// the default one, and every image.
pub fn reset(cli: &Cli, a: &ResetArgs) -> anyhow::Result<()> {
    if !a.force {
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "WARNING! This will remove:\n        - all containers\n        - all pods\n        - all images\n        - all networks\nAre you sure you want to continue? [y/N] "
        );
        let _ = err.flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes" | "Yes") {
            return Ok(());
        }
    }
    let e = Engine::open(cli)?;
    lifecycle::reconcile(&e)?;
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for p in e.db.pods()? {
        if let Err(err) = pod::remove(&e, &p, true, 0) {
            errors.push(err);
        }
    }
    for c in e.db.containers()? {
        let r = lifecycle::stop(&e, &c, 0).and_then(|()| match e.db.get(&c.id)? {
            Some(c) => lifecycle::remove_stopped(&e, &c),
            None => Ok(()),
        });
        if let Err(err) = r {
            errors.push(err);
        }
    }
    {
        let _lock = e.lock()?;
        for n in network::list(&e.root)? {
            if n.name != network::DEFAULT_NETWORK {
                if let Err(err) = network::remove(&e.root, &n.name) {
                    errors.push(err);
                }
            }
        }
    }
    for img in e.store.images()? {
        match e.store.remove_image(&img.id, true) {
            Ok(_) | Err(rpod_storage::Error::ImageNotFound(_)) => {}
            Err(err) => errors.push(err.into()),
        }
    }
    if let Err(err) = e.store.prune() {
        errors.push(err.into());
    }
    if let Some(r) = crate::rootless::mode() {
        // Rootless: the shared network namespace, then the user namespace's pause process
        // (the next command makes new ones).
        crate::engine::rootless_net::destroy();
        crate::rootless::kill_pid_file(&crate::rootless::pause_pid_file(&r.run_dir), std::time::Duration::from_secs(2));
    }
    let Some(last) = errors.pop() else { return Ok(()) };
    for err in &errors {
        eprintln!("Error: {err:#}");
    }
    Err(last)
}

/// `rpod unshare` arguments.
#[derive(Debug, Args)]
pub struct UnshareArgs {
    /// Also join the rootless network namespace (where bridge networks live)
    #[arg(long)]
    pub rootless_netns: bool,
    /// The command and its arguments (default: $SHELL, else /bin/sh)
    #[arg(value_name = "COMMAND", trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs `rpod unshare`: a command inside the user's namespaces (with its ID mapping), and
/// with `--rootless-netns` inside the shared rootless network namespace too. Exits with the
/// command's code.
pub fn unshare(cli: &Cli, a: &UnshareArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let Some(r) = crate::rootless::mode() else {
        anyhow::bail!("please use unshare with rootless");
    };
    let argv: Vec<String> = if a.command.is_empty() {
        vec![std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".to_owned())]
    } else {
        a.command.clone()
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.env("CONTAINERS_GRAPHROOT", cli.root()).env("CONTAINERS_RUNROOT", &r.run_dir);
    if a.rootless_netns {
        let e = Engine::open(cli)?;
        let ns = crate::engine::rootless_net::ensure(&e)?;
        let f = std::fs::File::open(&ns)
            .map_err(|err| anyhow::anyhow!("rootless netns: opening {}: {err}", ns.display()))?;
        nix::sched::setns(std::os::fd::AsFd::as_fd(&f), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|err| anyhow::anyhow!("rootless netns: joining it: {err}"))?;
    }
    let err = cmd.exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
    Err(crate::exit_with(code, format!("running {}: {err}", argv[0])))
}
