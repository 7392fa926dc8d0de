use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use netd::cli::{Cli, Command};
use netd::commands::{self, Opts};
use rpod_wire::{ErrorJson, NetworkOptions};

fn read_input(file: Option<&std::path::Path>) -> anyhow::Result<NetworkOptions> {
    let text = match file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read_to_string(p).map_err(netd::error::NetdError::Io).context("failed to load network options")?
        }
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("failed to read network options from stdin")?;
            s
        }
    };
    NetworkOptions::from_json(&text).map_err(|e| anyhow::anyhow!("JSON Decoding error: {e}"))
}

fn opts_or_default(cli: &Cli) -> anyhow::Result<Opts> {
    Ok(Opts {
        config: cli.config.clone().unwrap_or_default(),
        rootless: cli.rootless,
        aardvark: cli
            .aardvark_binary
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(commands::default_aardvark),
        firewall: netd::firewall::driver(cli.firewall_driver.as_deref())?,
        dns_port: commands::dns_port()?,
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let need_config = || {
        cli.config
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--config not specified but required for netd {:?}", cli.command))
    };
    let opts = || -> anyhow::Result<Opts> { Ok(Opts { config: need_config()?, ..opts_or_default(&cli)? }) };
    match &cli.command {
        Command::Setup { netns } => {
            let input = read_input(cli.file.as_deref())?;
            let out = commands::setup(&opts()?, netns, &input)?;
            println!("{}", serde_json::to_string(&out)?);
        }
        Command::Teardown { netns } => {
            let input = read_input(cli.file.as_deref())?;
            commands::teardown(&opts()?, netns, &input)?;
        }
        Command::Update { network, network_dns_servers } => commands::update(&opts()?, network, network_dns_servers)?,
        Command::Version => println!("{}", commands::version()),
        Command::FirewallReload => {
            // Like netavark, reload defaults to podman's rootful run directory.
            let mut o = Opts { config: PathBuf::from("/run/containers/networks"), ..opts_or_default(&cli)? };
            if let Some(c) = &cli.config {
                o.config = c.clone();
            }
            commands::firewall_reload(&o)?
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "netd=warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Err(e) = run(cli) {
        let msg = format!("{e:#}");
        println!(
            "{}",
            serde_json::to_string(&ErrorJson { error: msg }).unwrap_or_else(|_| "{\"error\":\"unknown\"}".into())
        );
        std::process::exit(1);
    }
}
