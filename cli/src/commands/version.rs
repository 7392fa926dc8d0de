//! `rpod version`.

use clap::Args;
use serde::Serialize;

use crate::format::{json_pretty, print};

/// `rpod version` arguments.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// `json`, or a Go template such as `{{.Client.Version}}`
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Client {
    version: String,
    #[serde(rename = "OsArch")]
    os_arch: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Version {
    client: Client,
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Runs `rpod version`.
pub fn run(a: &VersionArgs) -> anyhow::Result<()> {
    let v = Version {
        client: Client {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os_arch: format!("{}/{}", std::env::consts::OS, arch()),
        },
    };
    match a.format.as_deref() {
        None => print(&format!("Version:      {}\nOS/Arch:      {}\n", v.client.version, v.client.os_arch)),
        Some("json") => print(&json_pretty(&v)?),
        Some(t) => print(&(crate::format::template(t, &serde_json::to_value(&v)?)? + "\n")),
    }
}
