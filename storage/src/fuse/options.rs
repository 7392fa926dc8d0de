//! The fuse-overlayfs command line: `fuse-overlay [-f] [-d] [-o OPT[,OPT]...]... [SOURCE] MOUNTPOINT`.
//!
//! Options are parsed the way fuse-overlayfs parses them, so the program can stand in for it
//! as a containers/storage `mount_program`, under `mount -t fuse.fuse-overlay` (which passes
//! `SOURCE MOUNTPOINT -o rw,...,dev,suid`), and from fstab. Unknown options are reported and
//! ignored; a missing directory is an error before anything is mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptError {
    /// A usage problem, shown as is.
    #[error("{0}")]
    Usage(String),
}

fn usage(s: impl Into<String>) -> OptError {
    OptError::Usage(s.into())
}

/// One `A:B:N` id mapping range: on-disk ids `[disk, disk+len)` appear as `[shown, shown+len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first on-disk id.
    pub disk: u32,
    /// The id it is shown as.
    pub shown: u32,
    /// How many ids.
    pub len: u32,
}

/// An id mapping (empty = identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap(pub Vec<IdRange>);

/// The overflow id shown for on-disk ids outside a mapping.
pub const OVERFLOW_ID: u32 = 65534;

impl IdMap {
    /// Parses `A:B:N[:A:B:N...]`.
    pub fn parse(s: &str) -> Result<IdMap, OptError> {
        let bad = || usage(format!("invalid mapping specified: {s}"));
        let nums: Vec<u32> =
            s.split([':', ',']).map(|p| p.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|_| bad())?;
        if nums.is_empty() || !nums.len().is_multiple_of(3) {
            return Err(bad());
        }
        let ranges: Vec<IdRange> = nums.chunks(3).map(|c| IdRange { disk: c[0], shown: c[1], len: c[2] }).collect();
        // Every id of a range must exist on both sides (ids are 32 bits).
        let fits = |start: u32, len: u32| u64::from(start) + u64::from(len) <= 1 << 32;
        if ranges.iter().any(|r| r.len == 0 || !fits(r.disk, r.len) || !fits(r.shown, r.len)) {
            return Err(bad());
        }
        Ok(IdMap(ranges))
    }

    /// The id shown for an on-disk id.
    pub fn to_shown(&self, id: u32) -> u32 {
        if self.0.is_empty() {
            return id;
        }
        self.0
            .iter()
            .find_map(|r| id.checked_sub(r.disk).filter(|d| *d < r.len).and_then(|d| r.shown.checked_add(d)))
            .unwrap_or(OVERFLOW_ID)
    }

    /// The on-disk id for a shown id (`None` when it is outside the mapping).
    pub fn to_disk(&self, id: u32) -> Option<u32> {
        if self.0.is_empty() {
            return Some(id);
        }
        self.0.iter().find_map(|r| id.checked_sub(r.shown).filter(|d| *d < r.len).and_then(|d| r.disk.checked_add(d)))
    }
}

/// `xino=`: how inode numbers are made when the layers are on several file systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xino {
    /// Node numbers (unique, not stable across mounts).
    Off,
    /// Numbers hashed from file handles when every layer has them (stable across
    /// mounts), else as `Off`.
    Auto,
    /// Stable numbers required: the mount fails when they cannot be had.
    On,
}

/// Everything the command line sets.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lower layers, top first, resolved to absolute paths.
    pub lowerdirs: Vec<PathBuf>,
    /// The writable layer.
    pub upperdir: Option<PathBuf>,
    /// The work directory (on the upper's file system).
    pub workdir: Option<PathBuf>,
    /// The mount point.
    pub mountpoint: PathBuf,
    /// `uidmapping=`.
    pub uid_map: IdMap,
    /// `gidmapping=`.
    pub gid_map: IdMap,
    /// `squash_to_root`.
    pub squash_to_root: bool,
    /// `squash_to_uid=`.
    pub squash_uid: Option<u32>,
    /// `squash_to_gid=`.
    pub squash_gid: Option<u32>,
    /// `static_nlink`: directories report one link.
    pub static_nlink: bool,
    /// `noxattrs=1`.
    pub noxattrs: bool,
    /// `xattr_permissions=0|1|2`.
    pub xattr_permissions: u8,
    /// `xino=off|auto|on`.
    pub xino: Xino,
    /// `noacl`: no POSIX ACL support (the kernel then neither asks for nor enforces ACLs).
    pub noacl: bool,
    /// `ino32_t`: inode numbers fit in 32 bits.
    pub ino32: bool,
    /// `fsync=0` / `volatile` clear it.
    pub fsync: bool,
    /// `writeback=0|1`.
    pub writeback: bool,
    /// `timeout=SECS`: entry and attribute cache lifetime.
    pub timeout: Duration,
    /// `-f`: stay in the foreground.
    pub foreground: bool,
    /// `-d`/`debug`: log every request (implies foreground).
    pub debug: bool,
    /// Mount flags and FUSE options passed on to the kernel (`ro`, `nodev`, `allow_other`...).
    pub kernel: Vec<String>,
    /// Options that were ignored, for a warning each.
    pub ignored: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `-h`.
    Help,
    /// `-V`.
    Version,
    /// Mount.
    Mount(Box<Options>),
}

/// The usage text.
pub const USAGE: &str =
    "usage: fuse-overlay [-f] [-d] -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTS] [SOURCE] MOUNTPOINT
options: lowerdir upperdir workdir uidmapping gidmapping squash_to_root squash_to_uid squash_to_gid
         static_nlink noxattrs=1 xattr_permissions=0|1|2 fsync=0 volatile writeback=0|1 timeout=SECS
         xino=off|auto|on ino32_t noacl
         and the usual mount flags (ro rw nodev dev nosuid suid noexec exec noatime allow_other ...)";

/// Options passed to the kernel or ignored silently (as fuse-overlayfs does).
const PASSTHROUGH_OPTS: &[&str] = &[
    "allow_root",
    "default_permissions",
    "allow_other",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "strictatime",
    "splice_write",
    "splice_read",
    "splice_move",
    "kernel_cache",
    "ro",
    "rw",
    "sync",
    "async",
    "dirsync",
    "threaded",
    "fast_ino",
    "fast_ino_check",
    "plugins",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "max_write",
    "fsname",
    "subtype",
    "redirect_dir",
    "userxattr",
    "metacopy",
    "lazytime",
    "nofail",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
];

/// Splits `a,b=c,d` on commas that are not escaped with a backslash.
fn split_commas(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n != ',' {
                        cur.push('\\');
                    }
                    cur.push(n);
                }
            }
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Splits a `lowerdir` value on `:`, where `\:` is a literal colon and `\\` a backslash.
pub fn split_lowerdirs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn parse_bool(k: &str, v: Option<&str>) -> Result<bool, OptError> {
    match v {
        None | Some("1") | Some("true") | Some("yes") => Ok(true),
        Some("0") | Some("false") | Some("no") => Ok(false),
        Some(x) => Err(usage(format!("invalid value for {k}: {x}"))),
    }
}

/// Parses the arguments (without the program name). `cwd` resolves relative directories.
pub fn parse(args: &[String], cwd: &Path) -> Result<Command, OptError> {
    let mut raw_opts: Vec<String> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut foreground = false;
    let mut debug = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-f" => foreground = true,
            "-d" | "--debug" => debug = true,
            "-s" => {}
            "-o" => {
                i += 1;
                let v = args.get(i).ok_or_else(|| usage("-o needs an argument"))?;
                raw_opts.extend(split_commas(v));
            }
            s if s.starts_with("-o") => raw_opts.extend(split_commas(&s[2..])),
            "--" => {
                positional.extend(args[i + 1..].iter().cloned());
                break;
            }
            s if s.starts_with('-') && s.len() > 1 => return Err(usage(format!("unknown option {s}\n{USAGE}"))),
            s => positional.push(s.to_owned()),
        }
        i += 1;
    }
    let mountpoint = positional.pop().ok_or_else(|| usage(format!("no mountpoint specified\n{USAGE}")))?;

    let mut o = Options {
        lowerdirs: Vec::new(),
        upperdir: None,
        workdir: None,
        mountpoint: PathBuf::new(),
        uid_map: IdMap::default(),
        gid_map: IdMap::default(),
        squash_to_root: false,
        squash_uid: None,
        squash_gid: None,
        static_nlink: false,
        noxattrs: false,
        xattr_permissions: 0,
        xino: Xino::Off,
        noacl: false,
        ino32: false,
        fsync: true,
        writeback: true,
        timeout: Duration::from_secs(1_000_000_000),
        foreground: foreground || debug,
        debug,
        kernel: Vec::new(),
        ignored: Vec::new(),
    };
    let mut lower: Option<String> = None;
    for opt in raw_opts {
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let need = |v: Option<&str>| v.map(str::to_owned).ok_or_else(|| usage(format!("option {k} needs a value")));
        let num = |v: Option<&str>| -> Result<u32, OptError> {
            need(v)?.parse::<u32>().map_err(|_| usage(format!("invalid value for {k}")))
        };
        match k {
            "lowerdir" => lower = Some(need(v)?),
            "upperdir" => o.upperdir = Some(PathBuf::from(need(v)?)),
            "workdir" => o.workdir = Some(PathBuf::from(need(v)?)),
            "uidmapping" => o.uid_map = IdMap::parse(&need(v)?)?,
            "gidmapping" => o.gid_map = IdMap::parse(&need(v)?)?,
            "squash_to_root" => o.squash_to_root = true,
            "squash_to_uid" => o.squash_uid = Some(num(v)?),
            "squash_to_gid" => o.squash_gid = Some(num(v)?),
            "static_nlink" => o.static_nlink = true,
            "noxattrs" => o.noxattrs = parse_bool(k, v)?,
            "xattr_permissions" => {
                o.xattr_permissions = match v {
                    Some("0") => 0,
                    Some("1") => 1,
                    Some("2") => 2,
                    _ => return Err(usage("invalid value for xattr_permissions")),
                }
            }
            "xino" => {
                o.xino = match v {
                    Some("off") => Xino::Off,
                    Some("auto") => Xino::Auto,
                    Some("on") => Xino::On,
                    _ => return Err(usage("invalid value for xino (off, auto or on)")),
                }
            }
            "ino32_t" => o.ino32 = parse_bool(k, v)?,
            "noacl" => o.noacl = true,
            "acl" => o.noacl = false,
            "fsync" => o.fsync = parse_bool(k, v)?,
            "volatile" => o.fsync = false,
            "writeback" => o.writeback = parse_bool(k, v)?,
            "timeout" => {
                let secs = need(v)?.parse::<f64>().map_err(|_| usage("invalid value for timeout"))?;
                o.timeout = Duration::try_from_secs_f64(secs).map_err(|_| usage("invalid value for timeout"))?;
            }
            "debug" => {
                o.debug = true;
                o.foreground = true;
            }
            "redirect_dir" if v != Some("off") => return Err(usage("fuse-overlay only supports redirect_dir=off")),
            "ro" | "rw" | "nodev" | "dev" | "nosuid" | "suid" | "noexec" | "exec" | "noatime" | "atime"
            | "allow_other" | "allow_root" | "sync" | "dirsync" => o.kernel.push(k.to_owned()),
            k if PASSTHROUGH_OPTS.contains(&k) => {}
            _ => o.ignored.push(opt.clone()),
        }
    }
    let lower = lower.ok_or_else(|| usage("no lowerdir specified"))?;
    let resolve = |what: &str, p: &Path| -> Result<PathBuf, OptError> {
        let abs = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
        let real =
            std::fs::canonicalize(&abs).map_err(|e| usage(format!("cannot access {what} {}: {e}", p.display())))?;
        if !real.is_dir() {
            return Err(usage(format!("{what} {} is not a directory", p.display())));
        }
        Ok(real)
    };
    for l in split_lowerdirs(&lower) {
        if l.starts_with("//") {
            return Err(usage(format!("plugin layers are not supported: {l}")));
        }
        o.lowerdirs.push(resolve("lowerdir", Path::new(&l))?);
    }
    if o.lowerdirs.is_empty() {
        return Err(usage("no lowerdir specified"));
    }
    match (&o.upperdir, &o.workdir) {
        (Some(u), Some(w)) => {
            let u = resolve("upperdir", u)?;
            let w = resolve("workdir", w)?;
            use std::os::unix::fs::MetadataExt;
            let (du, dw) = (std::fs::metadata(&u).map(|m| m.dev()), std::fs::metadata(&w).map(|m| m.dev()));
            if let (Ok(a), Ok(b)) = (du, dw) {
                if a != b {
                    return Err(usage(format!(
                        "workdir {} is not on the file system of upperdir {}",
                        w.display(),
                        u.display()
                    )));
                }
            }
            o.upperdir = Some(u);
            o.workdir = Some(w);
        }
        (Some(_), None) => return Err(usage("workdir not specified")),
        (None, Some(w)) => {
            let _ = resolve("workdir", w)?;
            o.workdir = None;
        }
        (None, None) => {}
    }
    let mp = Path::new(&mountpoint);
    o.mountpoint = resolve("mountpoint", mp)?;
    Ok(Command::Mount(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn lowerdir_escapes() {
        assert_eq!(split_lowerdirs("a:b\\:c:d"), vec!["a", "b:c", "d"]);
        assert_eq!(split_lowerdirs("a\\\\:b"), vec!["a\\", "b"]);
        assert_eq!(split_commas("a,b\\,c,,d"), vec!["a", "b,c", "d"]);
    }

    #[test]
    fn id_maps() {
        let m = IdMap::parse("0:1000:1:1:100000:65536").unwrap();
        assert_eq!(m.to_shown(0), 1000);
        assert_eq!(m.to_shown(5), 100004);
        assert_eq!(m.to_shown(70000), OVERFLOW_ID);
        assert_eq!(m.to_disk(100004), Some(5));
        assert_eq!(m.to_disk(7), None);
        assert!(IdMap::parse("0:1").is_err());
        assert!(IdMap::parse("a:b:c").is_err());
        // Ranges past the last id are refused at parse time; the last id itself works.
        for bad in ["0:4294967295:10", "4294967295:0:2", "0:0:0", "0:0:4294967296"] {
            assert!(IdMap::parse(bad).is_err(), "{bad}");
        }
        let m = IdMap::parse("0:4294967295:1:4294967295:0:1").unwrap();
        assert_eq!((m.to_shown(0), m.to_shown(4294967295), m.to_shown(7)), (4294967295, 0, OVERFLOW_ID));
        assert_eq!((m.to_disk(0), m.to_disk(4294967295), m.to_disk(1)), (Some(4294967295), Some(0), None));
    }

    #[test]
    fn command_lines() {
        let t = tempfile::tempdir().unwrap();
        for d in ["l1", "l:2", "u", "w", "m"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        // mount.fuse3 style: SOURCE MOUNTPOINT -o rw,...,dev,suid
        let c = parse(
            &args(&["src", "m", "-o", "rw,lowerdir=l1:l\\:2,upperdir=u,workdir=w,dev,suid,bogus=1", "-f"]),
            t.path(),
        )
        .unwrap();
        let Command::Mount(o) = c else { panic!() };
        assert_eq!(o.lowerdirs.len(), 2);
        assert!(o.lowerdirs[1].ends_with("l:2"));
        assert!(o.foreground);
        assert_eq!(o.ignored, vec!["bogus=1"]);
        assert!(o.kernel.contains(&"dev".to_owned()));
        let e = parse(&args(&["-o", "lowerdir=l1,upperdir=u", "m"]), t.path()).unwrap_err();
        assert_eq!(e.to_string(), "workdir not specified");
        let e = parse(&args(&["-o", "lowerdir=nope", "m"]), t.path()).unwrap_err();
        assert!(e.to_string().starts_with("cannot access lowerdir nope"), "{e}");
        assert!(parse(&args(&["-o", "lowerdir=l1,xattr_permissions=3", "m"]), t.path()).is_err());
        assert!(parse(&args(&["-o", "lowerdir=l1,timeout=1e400", "m"]), t.path()).is_err());
        assert!(parse(&args(&["-o", "lowerdir=l1,timeout=-1", "m"]), t.path()).is_err());
        let Command::Mount(o) =
            parse(&args(&["-o", "lowerdir=l1", "-o", "squash_to_uid=5,volatile,static_nlink", "m"]), t.path()).unwrap()
        else {
            panic!()
        };
        assert_eq!(o.squash_uid, Some(5));
        assert!(!o.fsync && o.static_nlink && o.upperdir.is_none());
    }
}
