//! `rpod network create|ls|inspect|rm|reload`: podman-format network files under
//! `<root>/networks/`.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::engine::db::State;
use crate::engine::{lifecycle, network, Engine};
use crate::format::{json_pretty, print, table, template};
use crate::Cli;

/// `rpod network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display the network configuration for one or more networks
    Inspect(InspectArgs),
    /// Remove networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Reload firewall rules for one or more containers
    Reload(ReloadArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
}

/// `rpod network connect` arguments.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Network scoped alias for the container
    #[arg(long)]
    pub alias: Vec<String>,
    /// Network
    pub network: String,
    /// Container (name or ID)
    pub container: String,
}

/// `rpod network disconnect` arguments.
#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Accepted for compatibility
    #[arg(short, long)]
    pub force: bool,
    /// Network
    pub network: String,
    /// Container (name or ID)
    pub container: String,
}

/// `rpod network prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

/// `rpod network reload` arguments.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Reload network configuration of all containers
    #[arg(short, long)]
    pub all: bool,
    /// Containers (name or ID)
    #[arg(value_name = "CONTAINER", required_unless_present = "all", conflicts_with = "all")]
    pub containers: Vec<String>,
}

/// `rpod network create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the network
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format
    #[arg(long)]
    pub subnet: Option<String>,
    /// IPv4 or IPv6 gateway for the subnet
    #[arg(long)]
    pub gateway: Option<String>,
    /// Restrict external access from this network
    #[arg(long)]
    pub internal: bool,
    /// Disable DNS plugin
    #[arg(long)]
    pub disable_dns: bool,
    /// Set driver specific options (KEY=VALUE)
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// Network name
    pub name: Option<String>,
}

/// `rpod network ls` arguments.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Pretty-print networks to JSON or using a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Display only the network names
    #[arg(short, long)]
    pub quiet: bool,
}

/// `rpod network inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Pretty-print network to JSON or using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Networks
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

/// `rpod network rm` arguments.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove any containers using the network
    #[arg(short, long)]
    pub force: bool,
    /// Networks
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

/// Runs `rpod network ...`.
pub fn run(cli: &Cli, c: &NetworkCommand) -> anyhow::Result<()> {
    let e = Engine::open(cli)?;
    match c {
        NetworkCommand::Create(a) => {
            let mut options = BTreeMap::new();
            for o in &a.opt {
                let (k, v) = o.split_once('=').ok_or_else(|| anyhow::anyhow!("invalid option {o:?}: KEY=VALUE"))?;
                options.insert(k.to_owned(), v.to_owned());
            }
            let subnet = match &a.subnet {
                Some(s) => Some(s.parse().with_context(|| format!("invalid subnet {s:?}"))?),
                None => None,
            };
            let gateway = match &a.gateway {
                Some(g) => Some(g.parse().with_context(|| format!("invalid gateway {g:?}"))?),
                None => None,
            };
            if gateway.is_some() && subnet.is_none() {
                anyhow::bail!("cannot set gateway without subnet");
            }
            let _lock = e.lock()?;
            let n = network::create(
                &e.root,
                &network::CreateOptions {
                    name: a.name.clone(),
                    driver: a.driver.clone(),
                    subnet,
                    gateway,
                    internal: a.internal,
                    disable_dns: a.disable_dns,
                    options,
                },
            )?;
            print(&format!("{}\n", n.name))
        }
        NetworkCommand::Ls(a) => {
            let all = network::list(&e.root)?;
            if a.quiet {
                return print(&all.iter().map(|n| format!("{}\n", n.name)).collect::<String>());
            }
            match a.format.as_deref() {
                Some("json") => print(&format!("{}\n", json_pretty(&all)?)),
                Some(tpl) => {
                    let mut out = String::new();
                    for n in &all {
                        let mut v = serde_json::to_value(n)?;
                        if let Value::Object(m) = &mut v {
                            m.insert("Name".into(), json!(n.name));
                            m.insert("ID".into(), json!(&n.id[..12.min(n.id.len())]));
                            m.insert("Driver".into(), json!(n.driver));
                        }
                        out.push_str(&template(tpl, &v)?);
                        out.push('\n');
                    }
                    print(&out)
                }
                None => {
                    let mut rows = vec![vec!["NETWORK ID".to_owned(), "NAME".to_owned(), "DRIVER".to_owned()]];
                    for n in &all {
                        rows.push(vec![n.id[..12.min(n.id.len())].to_owned(), n.name.clone(), n.driver.clone()]);
                    }
                    print(&table(&rows))
                }
            }
        }
        NetworkCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.networks {
                out.push(network::get(&e.root, n)?);
            }
            match a.format.as_deref() {
                None | Some("json") => print(&format!("{}\n", json_pretty(&out)?)),
                Some(tpl) => {
                    let mut s = String::new();
                    for n in &out {
                        s.push_str(&template(tpl, &serde_json::to_value(n)?)?);
                        s.push('\n');
                    }
                    print(&s)
                }
            }
        }
        NetworkCommand::Reload(a) => {
            lifecycle::reconcile(&e)?;
            let ids: Vec<String> = if a.all {
                e.db.containers()?.into_iter().filter(|c| c.state == State::Running).map(|c| c.id).collect()
            } else {
                let mut v = Vec::new();
                for n in &a.containers {
                    let c = e.db.lookup(n)?;
                    if c.state != State::Running {
                        anyhow::bail!("container {} is not running: container state improper", c.id);
                    }
                    v.push(c.id);
                }
                v
            };
            e.netd_firewall_reload()?;
            print(&ids.iter().map(|i| format!("{i}\n")).collect::<String>())
        }
        NetworkCommand::Connect(a) => {
            lifecycle::reconcile(&e)?;
            lifecycle::connect(&e, &a.network, &a.container, &a.alias)
        }
        NetworkCommand::Disconnect(a) => {
            lifecycle::reconcile(&e)?;
            lifecycle::disconnect(&e, &a.network, &a.container)
        }
        NetworkCommand::Prune(_) => {
            let _lock = e.lock()?;
            let mut out = String::new();
            for n in prune(&e)? {
                out.push_str(&format!("{n}\n"));
            }
            print(&out)
        }
        NetworkCommand::Rm(a) => {
            for name in &a.networks {
                let n = network::get(&e.root, name)?;
                if a.force {
                    for id in e.db.network_users(&n.name)? {
                        if let Some(p) = e.db.pods()?.into_iter().find(|p| p.id == id) {
                            crate::engine::pod::remove(&e, &p, true, 0)?;
                            continue;
                        }
                        if let Some(c) = e.db.get(&id)? {
                            lifecycle::stop(&e, &c, 0)?;
                            if let Some(c) = e.db.get(&id)? {
                                lifecycle::remove_stopped(&e, &c)?;
                            }
                        }
                    }
                }
                let _lock = e.lock()?;
                let users = e.db.network_users(&n.name)?;
                if !users.is_empty() {
                    anyhow::bail!(
                        "\"{}\" has associated containers with it. Use -f to forcibly delete containers and pods: network is being used",
                        n.name
                    );
                }
                network::remove(&e.root, &n.name)?;
                print(&format!("{}\n", n.name))?;
            }
            Ok(())
        }
    }
}

/// Removes every network but the default one that no container or pod uses (the caller
/// holds the engine lock); returns their names.
pub fn prune(e: &Engine) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for n in network::list(&e.root)? {
        if n.name == network::DEFAULT_NETWORK || !e.db.network_users(&n.name)?.is_empty() {
            continue;
        }
        network::remove(&e.root, &n.name)?;
        out.push(n.name);
    }
    Ok(out)
}
