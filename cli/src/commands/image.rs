//! `rpod image ...`: the image command group (aliases of the top-level commands).

use clap::Subcommand;

use super::{images, inspect, load, prune, pull, rmi, save, tag};
use crate::Cli;

/// `rpod image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Display the configuration of one or more images
    Inspect(inspect::InspectArgs),
    /// List images in local storage
    #[command(visible_alias = "list")]
    Ls(images::ImagesArgs),
    /// Remove unused images and layers
    Prune(prune::PruneArgs),
    /// Remove one or more images from local storage
    Rm(rmi::RmiArgs),
    /// Add an additional name to a local image
    Tag(tag::TagArgs),
    /// Save image(s) to an archive
    Save(save::SaveArgs),
    /// Load image(s) from a tar archive or an OCI layout directory
    Load(load::LoadArgs),
    /// Check whether an image exists in local storage (exit 0 if so, 1 if not)
    Exists(ExistsArgs),
    /// Pull an image from a registry
    Pull(pull::PullArgs),
}

/// `rpod image exists` arguments.
#[derive(Debug, clap::Args)]
pub struct ExistsArgs {
    /// The image (name or ID)
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// Runs an `rpod image` subcommand.
pub fn run(cli: &Cli, c: &ImageCommand) -> anyhow::Result<()> {
    match c {
        ImageCommand::Inspect(a) => inspect::run(cli, a),
        ImageCommand::Ls(a) => images::run(cli, a),
        ImageCommand::Prune(a) => prune::run(cli, a),
        ImageCommand::Rm(a) => rmi::run(cli, a),
        ImageCommand::Tag(a) => tag::run(cli, a),
        ImageCommand::Save(a) => save::run(cli, a),
        ImageCommand::Load(a) => load::run(cli, a),
        ImageCommand::Pull(a) => pull::pull(cli, a),
        ImageCommand::Exists(a) => {
            match super::resolve(&cli.store()?, &a.image).map_err(|e| e.downcast::<rpod_storage::Error>()) {
                Ok(_) => Ok(()),
                Err(Ok(rpod_storage::Error::ImageNotFound(_))) => Err(crate::exit_with(1, "")),
                Err(Ok(e)) => Err(e.into()),
                Err(Err(e)) => Err(e),
            }
        }
    }
}
