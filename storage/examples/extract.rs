//! Extracts one layer file through the library, for timing (see `storage/bench/`).
//!
//! ```text
//! extract LAYER DEST          extract_layer() into the empty directory DEST (like tar -x)
//! extract --store ROOT LAYER  Store::extract_new_layer(): temp dir, diff ID check, rename
//! ```
//! The layer may be a plain, gzip or zstd tar. Prints the diff ID and the time taken.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use rpod_storage::extract::{extract_layer, ExtractOptions, OpaqueXattr, OverlayWhiteouts};
use rpod_storage::Store;

fn run(args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    let root = nix::unistd::geteuid().is_root();
    match args {
        [flag, store, layer] if flag == "--store" => {
            let s = Store::open(store)?;
            let (d, fresh) = s.extract_new_layer(File::open(layer)?, None)?;
            Ok(format!("{d} (new: {fresh})"))
        }
        [layer, dest] => {
            let dest = Path::new(dest);
            std::fs::create_dir_all(dest)?;
            let mut wh = OverlayWhiteouts {
                opaque_xattr: if root { OpaqueXattr::Trusted } else { OpaqueXattr::User },
                chown: root,
            };
            let ex = extract_layer(File::open(layer)?, dest, &ExtractOptions { chown: root }, &mut wh)?;
            Ok(format!("{} ({} bytes, {:?})", ex.diff_id, ex.diff_size, ex.compression))
        }
        _ => Err("usage: extract LAYER DEST | extract --store ROOT LAYER".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    match run(&args) {
        Ok(msg) => {
            println!("{msg} in {:.3}s", t.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("extract: {e}");
            ExitCode::FAILURE
        }
    }
}
