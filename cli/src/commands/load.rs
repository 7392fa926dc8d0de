//! `rpod load`: docker-archive or OCI archive from a file or stdin (gzip or zstd
//! compressed too), or an OCI image-layout directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::format::print;
use crate::Cli;

/// `rpod load` arguments.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from the specified archive file or OCI layout directory (default: stdin)
    #[arg(short, long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Suppress the progress output
    #[arg(short, long)]
    pub quiet: bool,
}

/// Wraps a stream in a decompressor when it starts with a gzip or zstd magic number.
fn decompressed<'a>(r: impl Read + 'a) -> anyhow::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let head = r.fill_buf().context("reading the archive")?;
    if head.starts_with(&[0x1f, 0x8b]) {
        tracing::debug!("archive is gzip-compressed");
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        tracing::debug!("archive is zstd-compressed");
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r).context("reading the zstd archive")?))
    } else {
        Ok(Box::new(r))
    }
}

/// Checks that a stream starts with a tar header (so garbage gets a clear message rather
/// than the tar parser's), and returns a reader that still yields the whole stream.
fn tar_checked<'a>(mut r: Box<dyn Read + 'a>) -> anyhow::Result<Box<dyn Read + 'a>> {
    let mut head = Vec::with_capacity(512);
    (&mut r).take(512).read_to_end(&mut head).context("reading the archive")?;
    if head.is_empty() {
        anyhow::bail!("the archive is empty");
    }
    if head.len() < 512 || !tar_checksum_ok(&head) {
        anyhow::bail!("not a tar archive (docker-archive or oci-archive, optionally gzip- or zstd-compressed)");
    }
    Ok(Box::new(std::io::Cursor::new(head).chain(r)))
}

/// Whether a 512-byte block is a tar header: its checksum field matches, or it is all
/// zeros (an empty archive's end marker, which the store reports itself).
fn tar_checksum_ok(h: &[u8]) -> bool {
    if h.iter().all(|&b| b == 0) {
        return true;
    }
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(want) = u64::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8) else {
        return false;
    };
    let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
    sum == want
}

fn load_stream(store: &rpod_storage::Store, r: impl Read) -> anyhow::Result<Vec<String>> {
    Ok(store.load_archive(tar_checked(decompressed(r)?)?)?)
}

/// Runs `rpod load`.
pub fn run(cli: &Cli, a: &LoadArgs) -> anyhow::Result<()> {
    let store = cli.store()?;
    let before: HashMap<String, Vec<String>> = store.images()?.into_iter().map(|i| (i.id, i.names)).collect();
    let ids = match &a.input {
        Some(p) if p.is_dir() => {
            store.load_oci_dir(p).with_context(|| format!("loading OCI layout {}", p.display()))?
        }
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            load_stream(&store, f).with_context(|| format!("loading {}", p.display()))?
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                anyhow::bail!("cannot read from terminal, use command-line redirection or the --input flag");
            }
            load_stream(&store, stdin.lock()).context("loading from stdin")?
        }
    };
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id.clone()) {
            continue;
        }
        let img = store.image(&id)?;
        let old = before.get(&id).cloned().unwrap_or_default();
        let new: Vec<&String> = img.names.iter().filter(|n| !old.contains(n)).collect();
        let shown: Vec<&String> = if new.is_empty() { img.names.iter().collect() } else { new };
        if shown.is_empty() {
            out.push_str(&format!("Loaded image: sha256:{id}\n"));
        }
        for n in shown {
            out.push_str(&format!("Loaded image: {n}\n"));
        }
    }
    print(&out)
}
