//! `rpod images` (`rpod image ls`): podman's columns REPOSITORY TAG IMAGE ID CREATED SIZE.

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::{all_images, ImageInfo};
use crate::format::{ago, json_pretty, print, rfc3339, table, template};
use crate::reference::split_name;
use crate::Cli;

/// `rpod images` arguments.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images (there are no intermediate images: the same as without)
    #[arg(short, long)]
    pub all: bool,
    /// Display only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not print column headings
    #[arg(short, long = "noheading")]
    pub noheading: bool,
    /// Pretty-print images: `json`, `table`, or a Go template such as `{{.ID}} {{.Repository}}`
    #[arg(long)]
    pub format: Option<String>,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
}

/// One image in `--format json` (podman's field names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonImage {
    id: String,
    parent_id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    size: u64,
    shared_size: u64,
    virtual_size: u64,
    labels: Value,
    containers: usize,
    names: Vec<String>,
    digest: String,
    created: i64,
    created_at: String,
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        format!("sha256:{id}")
    } else {
        id.chars().take(12).collect()
    }
}

/// One table row (per name; `<none>` for an unnamed image).
fn rows(img: &ImageInfo, no_trunc: bool) -> Vec<Value> {
    let names: Vec<(String, String)> = if img.record.names.is_empty() {
        vec![("<none>".to_owned(), "<none>".to_owned())]
    } else {
        img.record.names.iter().map(|n| split_name(n)).collect()
    };
    names
        .into_iter()
        .map(|(repo, tag)| {
            serde_json::json!({
                "ID": short_id(&img.record.id, no_trunc),
                "Id": img.record.id,
                "Repository": repo,
                "Tag": tag,
                "Digest": img.record.manifest_digest.to_string(),
                "Created": ago(img.created),
                "CreatedSince": ago(img.created),
                "CreatedAt": rfc3339(img.created),
                "Size": crate::format::human_size(img.size),
                "Labels": img.labels(),
            })
        })
        .collect()
}

/// Runs `rpod images`.
pub fn run(cli: &Cli, a: &ImagesArgs) -> anyhow::Result<()> {
    let store = cli.store()?;
    let images = all_images(&store)?;
    if a.quiet {
        let mut out = String::new();
        let mut seen = std::collections::HashSet::new();
        for i in &images {
            if seen.insert(i.record.id.clone()) {
                out.push_str(&short_id(&i.record.id, a.no_trunc));
                out.push('\n');
            }
        }
        return print(&out);
    }
    match a.format.as_deref() {
        Some("json") => {
            let containers = store.containers()?;
            let v: Vec<JsonImage> = images
                .iter()
                .map(|i| JsonImage {
                    id: i.record.id.clone(),
                    parent_id: String::new(),
                    repo_tags: i.record.names.clone(),
                    repo_digests: i.repo_digests(),
                    size: i.size,
                    shared_size: 0,
                    virtual_size: i.size,
                    labels: i.labels(),
                    containers: containers.iter().filter(|c| c.image_id == i.record.id).count(),
                    names: i.record.names.clone(),
                    digest: i.record.manifest_digest.to_string(),
                    created: i.created,
                    created_at: rfc3339(i.created),
                })
                .collect();
            print(&json_pretty(&v)?)
        }
        None | Some("table") => {
            let mut t = Vec::new();
            if !a.noheading {
                let mut h = vec!["REPOSITORY", "TAG"];
                if a.digests {
                    h.push("DIGEST");
                }
                h.extend(["IMAGE ID", "CREATED", "SIZE"]);
                t.push(h.into_iter().map(str::to_owned).collect());
            }
            for i in &images {
                for r in rows(i, a.no_trunc) {
                    let f = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                    let mut row = vec![f("Repository"), f("Tag")];
                    if a.digests {
                        row.push(f("Digest"));
                    }
                    row.extend([f("ID"), f("Created"), f("Size")]);
                    t.push(row);
                }
            }
            print(&table(&t))
        }
        Some(tpl) => {
            let mut out = String::new();
            for i in &images {
                for r in rows(i, a.no_trunc) {
                    out.push_str(&template(tpl, &r)?);
                    out.push('\n');
                }
            }
            print(&out)
        }
    }
}
