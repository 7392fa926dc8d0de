//! `rpod pod create|ps|inspect|start|stop|rm`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::engine::db::{Pod, State};
use crate::engine::{lifecycle, pod, Engine};
use crate::format::{ago, json_pretty, print, rfc3339, table, template};
use crate::Cli;

/// `rpod pod` subcommands.
#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Create a new empty pod
    Create(CreateArgs),
    /// List pods
    #[command(visible_aliases = ["ls", "list"])]
    Ps(PsArgs),
    /// Display a pod configuration
    Inspect(InspectArgs),
    /// Start one or more pods
    Start(NamesArgs),
    /// Stop one or more pods
    Stop(StopArgs),
    /// Remove one or more stopped pods and containers
    Rm(RmArgs),
}

/// `rpod pod create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Assign a name to the pod
    #[arg(short, long)]
    pub name: Option<String>,
    /// Publish a container's port, or a range of ports, to the host
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    pub publish: Vec<String>,
    /// Connect the pod to a network (NAME[,NAME] or none)
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Set the pod's hostname
    #[arg(long)]
    pub hostname: Option<String>,
}

/// `rpod pod ps` arguments.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print only the pod IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    pub no_trunc: bool,
    /// Pretty-print pods to JSON or using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

/// `rpod pod inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output with a Go template or `json`
    #[arg(short, long)]
    pub format: Option<String>,
    /// Pods (name or ID)
    #[arg(required = true, value_name = "POD")]
    pub pods: Vec<String>,
}

/// Arguments naming pods.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Pods (name or ID)
    #[arg(required = true, value_name = "POD")]
    pub pods: Vec<String>,
}

/// `rpod pod stop` arguments.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for stop before killing the containers
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Pods (name or ID)
    #[arg(required = true, value_name = "POD")]
    pub pods: Vec<String>,
}

/// `rpod pod rm` arguments.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop and remove running containers too
    #[arg(short, long)]
    pub force: bool,
    /// Seconds to wait for stop before killing the containers
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Pods (name or ID)
    #[arg(required = true, value_name = "POD")]
    pub pods: Vec<String>,
}

fn ports_json(p: &Pod) -> Value {
    let mut ports = serde_json::Map::new();
    for m in &p.config.ports {
        for i in 0..m.range.max(1) {
            ports.insert(
                format!("{}/{}", m.container_port + i, m.protocol),
                json!([{"HostIp": m.host_ip, "HostPort": (m.host_port + i).to_string()}]),
            );
        }
    }
    Value::Object(ports)
}

fn networks(p: &Pod) -> Vec<String> {
    match &p.config.net {
        crate::engine::db::NetMode::Bridge(n) => n.clone(),
        _ => vec![],
    }
}

fn ps_json(e: &Engine, p: &Pod) -> anyhow::Result<Value> {
    let ms = pod::members(e, p)?;
    Ok(json!({
        "Id": p.id,
        "Name": p.name,
        "Status": pod::status(p, &ms),
        "Created": rfc3339(p.created),
        "InfraId": "",
        "Namespace": "",
        "Networks": networks(p),
        "Labels": {},
        "Cgroup": "",
        "Containers": ms.iter().map(|c| json!({"Id": c.id, "Names": c.name, "Status": c.state.as_str()})).collect::<Vec<_>>(),
    }))
}

fn inspect_json(e: &Engine, p: &Pod) -> anyhow::Result<Value> {
    let ms = pod::members(e, p)?;
    Ok(json!({
        "Id": p.id,
        "Name": p.name,
        "Created": rfc3339(p.created),
        "State": pod::status(p, &ms),
        "Hostname": p.config.hostname,
        "CreateInfra": false,
        "SharedNamespaces": ["net"],
        "NumContainers": ms.len(),
        "NetworkNamespace": pod::is_up(p).then(|| Engine::netns_path(&p.id).display().to_string()),
        "InfraConfig": {
            "PortBindings": ports_json(p),
            "Networks": networks(p),
            "StaticIP": p.config.ips.values().next().map(|i| i.to_string()).unwrap_or_default(),
            "NetworkOptions": null,
        },
        "Containers": ms.iter().map(|c| json!({"Id": c.id, "Name": c.name, "State": c.state.as_str()})).collect::<Vec<_>>(),
    }))
}

/// Runs `rpod pod ...`.
pub fn run(cli: &Cli, c: &PodCommand) -> anyhow::Result<()> {
    let e = Engine::open(cli)?;
    lifecycle::reconcile(&e)?;
    match c {
        PodCommand::Create(a) => {
            let id = pod::create(
                &e,
                &pod::PodRequest {
                    name: a.name.clone(),
                    ports: a.publish.clone(),
                    network: a.network.clone(),
                    hostname: a.hostname.clone(),
                },
            )?;
            print(&format!("{id}\n"))
        }
        PodCommand::Ps(a) => {
            let mut pods = e.db.pods()?;
            pods.reverse();
            if a.quiet {
                let n = if a.no_trunc { 64 } else { 12 };
                return print(&pods.iter().map(|p| format!("{}\n", &p.id[..n])).collect::<String>());
            }
            match a.format.as_deref() {
                Some("json") => {
                    let v = pods.iter().map(|p| ps_json(&e, p)).collect::<anyhow::Result<Vec<_>>>()?;
                    print(&format!("{}\n", json_pretty(&v)?))
                }
                Some(tpl) => {
                    let mut out = String::new();
                    for p in &pods {
                        out.push_str(&template(tpl, &ps_json(&e, p)?)?);
                        out.push('\n');
                    }
                    print(&out)
                }
                None => {
                    let mut rows = vec![["POD ID", "NAME", "STATUS", "CREATED", "INFRA ID", "# OF CONTAINERS"]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect::<Vec<_>>()];
                    for p in &pods {
                        let ms = pod::members(&e, p)?;
                        rows.push(vec![
                            if a.no_trunc { p.id.clone() } else { p.id[..12].to_owned() },
                            p.name.clone(),
                            pod::status(p, &ms).to_owned(),
                            ago(p.created),
                            String::new(),
                            ms.len().to_string(),
                        ]);
                    }
                    print(&table(&rows))
                }
            }
        }
        PodCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.pods {
                out.push(inspect_json(&e, &e.db.pod_lookup(n)?)?);
            }
            match a.format.as_deref() {
                None | Some("json") => {
                    let v = if out.len() == 1 { out.remove(0) } else { Value::Array(out) };
                    print(&format!("{}\n", json_pretty(&v)?))
                }
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
        PodCommand::Start(a) => super::each(&a.pods, |n| {
            let p = e.db.pod_lookup(n)?;
            pod::up(&e, &p.id)?;
            let _lock = e.lock()?;
            for c in pod::members(&e, &p)? {
                if c.state != State::Running {
                    lifecycle::start_detached(&e, &c, &e.root)?;
                }
            }
            print(&format!("{}\n", p.id))
        }),
        PodCommand::Stop(a) => super::each(&a.pods, |n| {
            let p = e.db.pod_lookup(n)?;
            pod::stop(&e, &p, a.time)?;
            print(&format!("{}\n", p.id))
        }),
        PodCommand::Rm(a) => super::each(&a.pods, |n| {
            let p = e.db.pod_lookup(n)?;
            pod::remove(&e, &p, a.force, a.time)?;
            print(&format!("{}\n", p.id))
        }),
    }
}
