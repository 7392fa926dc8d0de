//! `rpod image inspect`: a JSON array in podman's shape.

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::ImageInfo;
use crate::format::{json_pretty, print, rfc3339, template};
use crate::Cli;

/// `rpod image inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output with a Go template (`{{.Id}}`) or `json`
    #[arg(short, long)]
    pub format: Option<String>,
    /// Images to inspect (name or ID)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    name: String,
    data: Value,
}

/// One image as `podman image inspect` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    id: String,
    digest: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    config: Value,
    version: String,
    author: String,
    architecture: String,
    os: String,
    size: u64,
    virtual_size: u64,
    graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    labels: Value,
    annotations: Value,
    manifest_type: String,
    user: String,
    history: Value,
    names_history: Vec<String>,
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Builds the inspect document of an image.
pub fn inspect(store: &rpod_storage::Store, info: &ImageInfo) -> Inspect {
    let r = &info.record;
    let c = &info.config;
    let cfg = c.get("config").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    let lowers: Vec<String> =
        r.layers.iter().rev().map(|l| store.layer_diff(&l.diff_id).display().to_string()).collect();
    let mut gd = serde_json::Map::new();
    if let Some((upper, rest)) = lowers.split_first() {
        gd.insert("UpperDir".to_owned(), Value::String(upper.clone()));
        if !rest.is_empty() {
            gd.insert("LowerDir".to_owned(), Value::String(rest.join(":")));
        }
    }
    Inspect {
        id: r.id.clone(),
        digest: r.manifest_digest.to_string(),
        repo_tags: r.names.clone(),
        repo_digests: info.repo_digests(),
        parent: String::new(),
        comment: str_field(c, "comment"),
        created: c.get("created").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| rfc3339(info.created)),
        user: str_field(&cfg, "User"),
        labels: cfg.get("Labels").cloned().unwrap_or(Value::Null),
        config: cfg,
        version: str_field(c, "docker_version"),
        author: str_field(c, "author"),
        architecture: str_field(c, "architecture"),
        os: str_field(c, "os"),
        size: info.size,
        virtual_size: info.size,
        graph_driver: GraphDriver { name: "overlay".to_owned(), data: Value::Object(gd) },
        root_fs: RootFs { kind: "layers".to_owned(), layers: r.layers.iter().map(|l| l.diff_id.to_string()).collect() },
        annotations: Value::Object(Default::default()),
        manifest_type: r.manifest_media_type.clone(),
        history: c.get("history").cloned().unwrap_or_else(|| Value::Array(Vec::new())),
        names_history: r.names.clone(),
    }
}

/// Runs `rpod image inspect`: prints what was found, then fails if anything was not.
pub fn run(cli: &Cli, a: &InspectArgs) -> anyhow::Result<()> {
    let store = cli.store()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.images {
        match super::resolve(&store, name) {
            Ok((rec, _)) => found.push(inspect(&store, &ImageInfo::read(&store, rec)?)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    match a.format.as_deref() {
        None | Some("json") => {
            print(&json_pretty(&found)?)?;
        }
        Some(tpl) => {
            let mut out = String::new();
            for i in &found {
                out.push_str(&template(tpl, &serde_json::to_value(i)?)?);
                out.push('\n');
            }
            print(&out)?;
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}", errors.join("; ")))
    }
}
