//! `rpod save`: docker-archive (default) or OCI archive, to a file or a pipe.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::Cli;

/// Archive formats `rpod save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// Docker's `docker save` format (uncompressed layers)
    DockerArchive,
    /// An OCI image layout in a tar
    OciArchive,
}

/// `rpod save` arguments.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to a specified file (default: stdout, which must be redirected)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Save image to docker-archive or oci-archive
    #[arg(long, value_enum, default_value = "docker-archive")]
    pub format: SaveFormat,
    /// Suppress the output
    #[arg(short, long)]
    pub quiet: bool,
    /// Images to save
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

fn write_archive<W: Write>(store: &rpod_storage::Store, a: &SaveArgs, refs: &[String], w: W) -> anyhow::Result<W> {
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let w = BufWriter::with_capacity(1 << 20, w);
    let w = match a.format {
        SaveFormat::DockerArchive => store.save_docker_archive(&refs, w)?,
        SaveFormat::OciArchive => {
            if refs.len() != 1 {
                anyhow::bail!("oci-archive holds one image here: save {} images as docker-archive", refs.len());
            }
            store.save_oci_archive(refs[0], w)?
        }
    };
    w.into_inner().map_err(|e| anyhow::Error::from(e.into_error()))
}

/// Runs `rpod save`.
pub fn run(cli: &Cli, a: &SaveArgs) -> anyhow::Result<()> {
    let store = cli.store()?;
    // Fail on unknown images before creating any file.
    let refs = a.images.iter().map(|i| Ok(super::resolve(&store, i)?.1)).collect::<anyhow::Result<Vec<_>>>()?;
    match &a.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                anyhow::bail!("refusing to save to terminal. Use -o flag or redirect");
            }
            write_archive(&store, a, &refs, stdout.lock())
                .and_then(|mut o| Ok(o.flush()?))
                .context("writing the archive to stdout")?;
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            // A temporary next to the target, renamed over it when complete.
            let tmp = tempfile::Builder::new()
                .prefix(".rpod-save-")
                .tempfile_in(&dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let f = write_archive(&store, a, &refs, tmp.as_file())
                .with_context(|| format!("writing {}", path.display()))?;
            f.sync_all().with_context(|| format!("writing {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
