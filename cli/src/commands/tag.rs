//! `rpod tag IMAGE NAME...`.

use clap::Args;

use crate::Cli;

/// `rpod tag` arguments.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to name
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// New names (`name[:tag]`; `:latest` when no tag)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Runs `rpod tag`: every name is checked before any is added.
pub fn run(cli: &Cli, a: &TagArgs) -> anyhow::Result<()> {
    for n in &a.names {
        let r = crate::reference::parse(n)?;
        if r.digest.is_some() {
            anyhow::bail!("{n:?}: a tag cannot contain a digest");
        }
    }
    let store = cli.store()?;
    let (_, reference) = super::resolve(&store, &a.image)?;
    for n in &a.names {
        store.tag(&reference, n)?;
    }
    Ok(())
}
