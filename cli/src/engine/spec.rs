//! The OCI runtime config (`config.json`), generated with the `oci-spec` crate.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::db::ContainerConfig;

/// Podman's default capabilities.
fn default_caps() -> Capabilities {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fowner,
        Capability::Fsetid,
        Capability::Kill,
        Capability::NetBindService,
        Capability::Setfcap,
        Capability::Setgid,
        Capability::Setpcap,
        Capability::Setuid,
        Capability::SysChroot,
    ]
    .into_iter()
    .collect()
}

/// The caller's RLIMIT_NOFILE hard limit: the runtime cannot go above it.
fn nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(|(_, h)| h).unwrap_or(1024)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> anyhow::Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .build()?)
}

fn bind(dest: &str, source: &Path) -> anyhow::Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_owned(), "rprivate".to_owned()])
        .build()?)
}

/// Looks a name up in a passwd- or group-format file: the entry's fields.
fn lookup_entry(path: &Path, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>()).find(|f| f.len() >= 3 && f[0] == name)
}

/// Resolves `USER[:GROUP]` (names or numbers) against the image's `/etc/passwd` and
/// `/etc/group`: the UID, GID and supplementary GIDs.
pub fn resolve_user(rootfs: &Path, spec: &str) -> anyhow::Result<(u32, u32, Vec<u32>)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group == Some("") {
        anyhow::bail!("invalid user {spec:?}: invalid argument");
    }
    let passwd = rootfs.join("etc/passwd");
    let group_file = rootfs.join("etc/group");
    let (uid, name, passwd_gid) = match user.parse::<u32>() {
        Ok(uid) => {
            // A numeric user may still have an entry, giving its primary group.
            let text = std::fs::read_to_string(&passwd).unwrap_or_default();
            let entry = text
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid));
            (uid, entry.as_ref().map(|f| f[0].to_owned()), entry.and_then(|f| f[3].parse::<u32>().ok()))
        }
        Err(_) => {
            let f = lookup_entry(&passwd, user)
                .filter(|f| f.len() >= 4)
                .ok_or_else(|| anyhow::anyhow!("unable to find user {user}: no matching entries in passwd file"))?;
            let uid = f[2].parse::<u32>().map_err(|_| anyhow::anyhow!("bad passwd entry for user {user}"))?;
            (uid, Some(user.to_owned()), f[3].parse::<u32>().ok())
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_entry(&group_file, g)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| anyhow::anyhow!("unable to find group {g}: no matching entries in group file"))?,
        },
        None => passwd_gid.unwrap_or(0),
    };
    let mut extra = Vec::new();
    if let (Some(n), None) = (&name, group) {
        let text = std::fs::read_to_string(&group_file).unwrap_or_default();
        for l in text.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == n) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !extra.contains(&g) {
                        extra.push(g);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

/// Whether `gid` exists in this process's user namespace.
fn gid_mapped(gid: u32) -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/gid_map") else { return true };
    map.lines().any(|l| {
        let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        f.len() == 3 && u64::from(gid) >= f[0] && u64::from(gid) < f[0] + f[2]
    })
}

/// Builds the spec for a container.
///
/// `netns` is the network namespace to join (`None`: the host's); `files` holds the
/// `hosts`, `resolv.conf` and `hostname` files to bind-mount into `/etc`.
pub fn build(cfg: &ContainerConfig, rootfs: &Path, netns: Option<&Path>, files: &Path) -> anyhow::Result<Spec> {
    let caps = default_caps();
    let hard = nofile_hard();
    let (uid, gid, extra) = match &cfg.user {
        Some(u) => resolve_user(rootfs, u)?,
        None => (0, 0, Vec::new()),
    };
    let process = ProcessBuilder::default()
        .terminal(cfg.tty)
        .user(UserBuilder::default().uid(uid).gid(gid).additional_gids(extra).build()?)
        .args(cfg.args.clone())
        .env(cfg.env.clone())
        .cwd(if cfg.workdir.is_empty() { "/".to_owned() } else { cfg.workdir.clone() })
        .no_new_privileges(false)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(hard)
            .soft(hard)
            .build()?])
        .build()?;
    let mut namespaces = Vec::new();
    for t in [LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts, LinuxNamespaceType::Mount] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(t).build()?);
    }
    if let Some(p) = netns {
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(p).build()?);
    }
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        if gid_mapped(5) {
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            )?
        } else {
            // A user namespace with only the user's own ID mapped (no subordinate IDs).
            mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"])?
        },
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        if crate::rootless::is_rootless() && netns.is_none() {
            // sysfs can only be mounted by the owner of the network namespace: with the
            // host's, a rootless container gets the host's /sys bound read-only.
            mount("/sys", "bind", "/sys", &["rbind", "nosuid", "noexec", "nodev", "ro"])?
        } else {
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?
        },
    ];
    for f in ["hosts", "resolv.conf", "hostname"] {
        mounts.push(bind(&format!("/etc/{f}"), &files.join(f))?);
    }
    for t in &cfg.tmpfs {
        let (dest, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let mut o: Vec<&str> = vec!["rw", "noexec", "nosuid", "nodev"];
        o.extend(opts.split(',').filter(|x| !x.is_empty()));
        mounts.push(mount(dest, "tmpfs", "tmpfs", &o)?);
    }
    for v in &cfg.volumes {
        let mut o = vec!["rbind".to_owned(), "rprivate".to_owned()];
        if v.readonly {
            o.push("ro".to_owned());
        }
        mounts.push(
            MountBuilder::default().destination(&v.destination).typ("bind").source(&v.source).options(o).build()?,
        );
    }
    let defaults = oci_spec::runtime::Linux::default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .build()?;
    let spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(RootBuilder::default().path(PathBuf::from(rootfs)).readonly(false).build()?)
        .hostname(cfg.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(d.path().join("etc")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nbobs:x:1001:\nwheel:x:10:bob\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let r = |s: &str| resolve_user(d.path(), s).map_err(|e| e.to_string());
        assert_eq!(r("bob"), Ok((1000, 1001, vec![10])));
        assert_eq!(r("bob:wheel"), Ok((1000, 10, vec![])));
        assert_eq!(r("1000"), Ok((1000, 1001, vec![10])));
        assert_eq!(r("42:43"), Ok((42, 43, vec![])));
        assert_eq!(r("42"), Ok((42, 0, vec![])));
        assert!(r("nobody").is_err());
        assert!(r("bob:nogroup").is_err());
    }

    #[test]
    fn no_rlimit_above_the_hard_limit() {
        let cfg = ContainerConfig {
            image_id: "x".into(),
            image_name: "x".into(),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            workdir: String::new(),
            hostname: "h".into(),
            ports: vec![],
            net: super::super::db::NetMode::None,
            aliases: vec![],
            ips: Default::default(),
            rm: false,
            stop_timeout: 10,
            volumes: vec![],
            tmpfs: vec![],
            dns: vec![],
            mac: None,
            pod: None,
            interfaces: Default::default(),
            user: None,
            interactive: false,
            tty: false,
            runtime: None,
        };
        let s =
            build(&cfg, Path::new("/r"), Some(Path::new("/run/x")), Path::new("/f")).unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::to_value(&s).unwrap_or_default();
        let hard = nofile_hard();
        for r in v.pointer("/process/rlimits").and_then(|r| r.as_array()).cloned().unwrap_or_default() {
            assert!(r["hard"].as_u64().unwrap_or(u64::MAX) <= hard, "{r}");
        }
        assert_eq!(v.pointer("/root/readonly"), Some(&serde_json::json!(false)));
        let ns = v.pointer("/linux/namespaces").cloned().unwrap_or_default();
        assert!(ns.to_string().contains("/run/x"), "{ns}");
    }
}
