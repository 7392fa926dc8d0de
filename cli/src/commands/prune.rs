//! `rpod image prune`: removes dangling images (all unused ones with `-a`) and every layer
//! and blob no image or container uses.

use std::io::{BufRead, Write};

use clap::Args;

use crate::format::print;
use crate::Cli;

/// `rpod image prune` arguments.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images not used by containers, not only dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

fn confirm(all: bool) -> anyhow::Result<bool> {
    let what = if all { "all images not used by containers" } else { "all dangling images" };
    eprint!("WARNING! This command removes {what}.\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Runs `rpod image prune`.
pub fn run(cli: &Cli, a: &PruneArgs) -> anyhow::Result<()> {
    if !a.force && !confirm(a.all)? {
        return Ok(());
    }
    let store = cli.store()?;
    let used: std::collections::HashSet<String> = store.containers()?.into_iter().map(|c| c.image_id).collect();
    let mut out = String::new();
    for img in store.images()? {
        if used.contains(&img.id) || (!a.all && !img.names.is_empty()) {
            continue;
        }
        match store.remove_image(&img.id, false) {
            Ok(Some(id)) => out.push_str(&format!("{id}\n")),
            Ok(None) => {}
            // Raced with another command: not ours to remove any more.
            Err(rpod_storage::Error::ImageNotFound(_) | rpod_storage::Error::ImageInUse { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let layers = store.prune()?;
    tracing::info!(layers = layers.len(), "pruned unused layers");
    print(&out)
}
