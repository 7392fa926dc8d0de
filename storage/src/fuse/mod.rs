//! `fuse-overlay`: an overlay file system in user space, a drop-in for fuse-overlayfs.
//!
//! [`options`] parses the fuse-overlayfs command line, [`fs`] is the file system (its module
//! comment explains how it works), and [`run`] mounts it (mount(2) on `/dev/fuse` when
//! allowed, as root or inside a user+mount namespace, else through `fusermount3`), goes to
//! the background once the mount is usable, and serves requests on several threads until
//! it is unmounted or gets SIGTERM/SIGINT/SIGHUP (which unmount it).

pub mod fs;
pub mod options;
mod run;
mod sys;

pub use fs::{Overlay, Override, Stats};
pub use options::{parse, Command, IdMap, OptError, Options, Xino, USAGE};
pub use run::{run, RunError};
