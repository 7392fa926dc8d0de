//! Container root filesystems: a writable layer over an image's layers, mounted with
//! kernel overlayfs.
//!
//! Lower layers are named by their short `l/<short>` links relative to the store root, and
//! the mount(2) call is made from a helper thread that has unshared its file system context
//! (`unshare(CLONE_FS)`) and `fchdir`ed to the store root. So the options stay short
//! ("l/XXXXXXXXXX:" = 13 bytes a layer: 200 layers fit in the 4096-byte page) without
//! changing the working directory of the rest of the process, as containers/storage does
//! with its re-exec'd mount helper.
//!
//! With [`MountMethod::Program`] the store runs a fuse-overlayfs compatible program the way
//! containers/storage runs its `mount_program`: `<program> -o <options> <merged>` with the
//! store root as working directory; the program returns once the mount is in place and
//! keeps serving it in the background. [`MountMethod::Auto`] tries the kernel first.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{Error, IoContext, Result};
use crate::store::{self, ContainerRecord, MountMethod, Store};

/// The kernel's limit on mount data (one page, including the NUL).
const MOUNT_DATA_MAX: usize = 4095;

impl Store {
    /// Creates a container over an image: `containers/<id>/{diff,work,merged}`.
    pub fn create_container(&self, image: &str) -> Result<String> {
        let _lock = self.lock()?;
        let img = self.image(image)?;
        for l in &img.layers {
            if !self.has_layer(&l.diff_id) {
                return Err(Error::LayerNotFound(l.diff_id.to_string()));
            }
        }
        let id = store::random_hex(32);
        let dir = self.container_dir(&id);
        let tmp = self.root().join("containers").join(format!(".tmp-{}", store::random_hex(8)));
        let res = (|| {
            fs::create_dir(&tmp).ctx(|| "creating container directory".to_owned())?;
            let lock = fs::File::open(&tmp).ctx(|| "opening container directory".to_owned())?;
            let _lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| Error::Io { context: "locking container directory".to_owned(), source: e.into() })?;
            for d in ["diff", "work", "merged"] {
                fs::create_dir_all(tmp.join(d)).ctx(|| format!("creating container {d}"))?;
            }
            let rec = ContainerRecord {
                id: id.clone(),
                image_id: img.id.clone(),
                layers: img.layers.iter().map(|l| l.diff_id.clone()).collect(),
                created: store::now(),
            };
            store::write_atomic(&tmp.join("container.json"), &store::to_json(&rec)?)?;
            fs::rename(&tmp, &dir).ctx(|| format!("creating container {id}"))
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res.map(|()| id)
    }

    /// The `merged` directory of a container.
    pub fn container_rootfs(&self, id: &str) -> Result<PathBuf> {
        self.container(id)?;
        Ok(self.container_dir(id).join("merged"))
    }

    /// Whether the container's rootfs is mounted.
    pub fn is_mounted(&self, id: &str) -> Result<bool> {
        let dir = self.container_dir(id);
        let a = fs::metadata(&dir).ctx(|| format!("stat {}", dir.display()))?;
        let b = fs::metadata(dir.join("merged")).ctx(|| "stat merged".to_owned())?;
        Ok(a.dev() != b.dev())
    }

    /// The overlay mount options for a container (paths relative to the store root).
    pub fn mount_options(&self, id: &str) -> Result<String> {
        let data = self.overlay_data(id, self.rootless())?;
        if data.len() > MOUNT_DATA_MAX {
            let rec = self.container(id)?;
            return Err(Error::Mount(format!(
                "{} layers need {} bytes of mount options, over the kernel's {MOUNT_DATA_MAX}",
                rec.layers.len(),
                data.len()
            )));
        }
        Ok(data)
    }

    fn overlay_data(&self, id: &str, userxattr: bool) -> Result<String> {
        let rec = self.container(id)?;
        let mut lowers = Vec::new();
        for l in rec.layers.iter().rev() {
            lowers.push(format!("l/{}", self.ensure_link(l)?));
        }
        if lowers.is_empty() {
            let empty = self.container_dir(id).join("empty");
            fs::create_dir_all(&empty).ctx(|| "creating empty lower".to_owned())?;
            lowers.push(format!("containers/{id}/empty"));
        }
        let mut data =
            format!("lowerdir={},upperdir=containers/{id}/diff,workdir=containers/{id}/work", lowers.join(":"));
        if userxattr {
            data.push_str(",userxattr");
        }
        Ok(data)
    }

    /// Mounts the container's rootfs (idempotent) and returns the `merged` path.
    pub fn mount(&self, id: &str) -> Result<PathBuf> {
        let merged = self.container_rootfs(id)?;
        if self.is_mounted(id)? {
            return Ok(merged);
        }
        match self.mount_method().clone() {
            MountMethod::Kernel => self.mount_kernel(id, &merged),
            MountMethod::Program(p) => self.mount_program(&p, id, &merged),
            MountMethod::Auto(p) => match self.mount_kernel(id, &merged) {
                Ok(m) => Ok(m),
                Err(e) => {
                    tracing::info!("kernel overlay refused ({e}); using {}", p.display());
                    self.mount_program(&p, id, &merged)
                }
            },
        }
    }

    fn mount_kernel(&self, id: &str, merged: &Path) -> Result<PathBuf> {
        let data = self.mount_options(id)?;
        let root = crate::safefs::open_dir(self.root())?;
        let target = merged.to_path_buf();
        let res = std::thread::scope(|s| {
            s.spawn(|| -> nix::Result<()> {
                // This thread gets its own cwd; the rest of the process keeps theirs.
                unshare(CloneFlags::CLONE_FS)?;
                nix::unistd::fchdir(root.as_fd())?;
                mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(data.as_str()))
            })
            .join()
        });
        match res {
            Ok(Ok(())) => Ok(merged.to_path_buf()),
            Ok(Err(e)) => {
                Err(Error::Mount(format!("overlay on {}: {e} (options: {} bytes)", merged.display(), data.len())))
            }
            Err(_) => Err(Error::Mount("mount thread panicked".to_owned())),
        }
    }

    fn mount_program(&self, program: &Path, id: &str, merged: &Path) -> Result<PathBuf> {
        let data = self.overlay_data(id, false)?;
        let out = Command::new(program)
            .arg("-o")
            .arg(&data)
            .arg(merged)
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::Mount(format!("using mount program {}: {e}", program.display())))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if stderr.is_empty() { "<stderr empty>".to_owned() } else { stderr };
        if !out.status.success() {
            return Err(Error::Mount(format!("using mount program {}: {stderr}: {}", program.display(), out.status)));
        }
        if !self.is_mounted(id)? {
            return Err(Error::Mount(format!(
                "using mount program {}: {stderr}: it exited without mounting",
                program.display()
            )));
        }
        Ok(merged.to_path_buf())
    }

    /// Unmounts the container's rootfs (a no-op if it is not mounted): umount2 where
    /// permitted, else `fusermount3 -u` for a FUSE mount.
    pub fn unmount(&self, id: &str) -> Result<()> {
        let merged = self.container_rootfs(id)?;
        if !self.is_mounted(id)? {
            return Ok(());
        }
        match umount2(&merged, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL) => Ok(()),
            Err(Errno::EBUSY) => {
                umount2(&merged, MntFlags::MNT_DETACH).ctx(|| format!("unmounting {}", merged.display()))
            }
            Err(Errno::EPERM) => fusermount_u(&merged),
            Err(e) => Err(e).ctx(|| format!("unmounting {}", merged.display())),
        }
    }

    /// Unmounts and removes a container and its writable layer.
    pub fn delete_container(&self, id: &str) -> Result<()> {
        self.unmount(id)?;
        let _lock = self.lock()?;
        let dir = self.container_dir(id);
        let tmp = self.root().join("containers").join(format!(".tmp-{}", store::random_hex(8)));
        fs::rename(&dir, &tmp).ctx(|| format!("removing container {id}"))?;
        fs::remove_dir_all(&tmp).ctx(|| format!("removing container {id}"))
    }
}

/// `fusermount3 -u` (then `fusermount -u`) of a FUSE mount the caller may not umount2.
fn fusermount_u(path: &Path) -> Result<()> {
    let mut last = String::new();
    for prog in ["fusermount3", "fusermount"] {
        match Command::new(prog).arg("-u").arg(path).stdin(Stdio::null()).stdout(Stdio::null()).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => last = format!("{prog}: {e}"),
        }
    }
    Err(Error::Mount(format!("unmounting {}: {last}", path.display())))
}

/// Whether kernel overlayfs can be mounted here by this process (`userxattr` when
/// rootless): a throwaway mount in a temporary directory under `scratch`.
pub fn kernel_overlay_works(scratch: &Path, rootless: bool) -> bool {
    let Ok(t) = tempfile_dir(scratch) else { return false };
    let ok = (|| -> std::io::Result<bool> {
        for d in ["l", "u", "w", "m"] {
            fs::create_dir(t.join(d))?;
        }
        let mut data = format!(
            "lowerdir={},upperdir={},workdir={}",
            t.join("l").display(),
            t.join("u").display(),
            t.join("w").display()
        );
        if rootless {
            data.push_str(",userxattr");
        }
        let m = t.join("m");
        if mount(Some("overlay"), &m, Some("overlay"), MsFlags::empty(), Some(data.as_str())).is_err() {
            return Ok(false);
        }
        let _ = umount2(&m, MntFlags::MNT_DETACH);
        Ok(true)
    })()
    .unwrap_or(false);
    let _ = fs::remove_dir_all(&t);
    ok
}

fn tempfile_dir(scratch: &Path) -> std::io::Result<PathBuf> {
    let p = scratch.join(format!(".overlay-probe-{}", store::random_hex(6)));
    fs::create_dir_all(&p)?;
    Ok(p)
}
