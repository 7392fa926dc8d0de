//! `rpod rmi` (`rpod image rm`): untag or delete images, with podman's exit codes
//! (1: an image did not exist; 2: an image is in use by a container; 125: other errors).

use clap::Args;
use rpod_storage::store::normalize_name;
use rpod_storage::{Error as StoreError, Store};

use crate::format::print;
use crate::{exit_with, Cli, EXIT_ERROR};

/// `rpod rmi` arguments.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove all images
    #[arg(short, long)]
    pub all: bool,
    /// Force removal: also images used by containers, and images with several names by ID
    #[arg(short, long)]
    pub force: bool,
    /// Ignore errors if a specified image does not exist
    #[arg(short, long)]
    pub ignore: bool,
    /// Images to remove (name or ID)
    #[arg(value_name = "IMAGE", required_unless_present = "all")]
    pub images: Vec<String>,
}

/// Exit code when an image did not exist.
pub const EXIT_NOT_FOUND: i32 = 1;
/// Exit code when an image is used by a container.
pub const EXIT_IN_USE: i32 = 2;

/// Removes one image reference; returns the lines to print.
pub fn remove(store: &Store, reference: &str, force: bool) -> anyhow::Result<Vec<String>> {
    let (img, reference) = super::resolve(store, reference)?;
    let reference = reference.as_str();
    let name = normalize_name(reference);
    let by_name = img.names.contains(&name);
    if by_name && img.names.len() > 1 {
        store.remove_image(reference, force)?;
        return Ok(vec![format!("Untagged: {name}")]);
    }
    if !by_name && img.names.len() > 1 && !force {
        anyhow::bail!(
            "unable to delete image {:.12} by ID with more than one tag ({}): please force removal",
            img.id,
            img.names.join(", ")
        );
    }
    let mut lines: Vec<String> = img.names.iter().map(|n| format!("Untagged: {n}")).collect();
    match store.remove_image(&img.id, force)? {
        Some(id) => lines.push(format!("Deleted: {id}")),
        None => anyhow::bail!("image {} changed while it was being removed", img.id),
    }
    Ok(lines)
}

fn code_of(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<StoreError>() {
        Some(StoreError::ImageNotFound(_)) => EXIT_NOT_FOUND,
        Some(StoreError::ImageInUse { .. }) => EXIT_IN_USE,
        _ => EXIT_ERROR,
    }
}

/// Runs `rpod rmi`: every image is tried; errors are reported at the end.
pub fn run(cli: &Cli, a: &RmiArgs) -> anyhow::Result<()> {
    let store = cli.store()?;
    let refs: Vec<String> = if a.all { store.images()?.into_iter().map(|i| i.id).collect() } else { a.images.clone() };
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for r in &refs {
        match remove(&store, r, a.force) {
            Ok(lines) => print(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())?,
            Err(e) if a.ignore && code_of(&e) == EXIT_NOT_FOUND => {}
            Err(e) => errors.push(e),
        }
    }
    let Some(last) = errors.pop() else { return Ok(()) };
    let mut code = code_of(&last);
    for e in &errors {
        eprintln!("Error: {e:#}");
        code = match (code, code_of(e)) {
            (EXIT_ERROR, _) | (_, EXIT_ERROR) => EXIT_ERROR,
            (a, b) => a.max(b),
        };
    }
    Err(exit_with(code, format!("{last:#}")))
}
