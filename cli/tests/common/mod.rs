//! Shared by the rpod test binaries: the busybox image they build and run, a command's
//! result, the skip-or-fail rule for tests that need root, and common command lines.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// The host's static busybox (Debian's busybox-static).
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A tar header owned by root.
pub fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// A docker-archive of the image `tag`: busybox, its applet links, /www/index.html (all
/// owned by root) and /home/bob (owned by 1000:1001).
pub fn image_archive(busybox: &Path, tag: &str) -> Vec<u8> {
    let mut l = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "www", "tmp", "proc", "sys", "dev", "home"] {
        l.append_data(&mut header(tar::EntryType::Directory, 0, 0o755), d, &[][..]).unwrap();
    }
    let mut bob = header(tar::EntryType::Directory, 0, 0o755);
    bob.set_uid(1000);
    bob.set_gid(1001);
    l.append_data(&mut bob, "home/bob", &[][..]).unwrap();
    let bin = std::fs::read(busybox).unwrap();
    l.append_data(&mut header(tar::EntryType::Regular, bin.len() as u64, 0o755), "bin/busybox", &bin[..]).unwrap();
    for a in ["sh", "httpd", "wget", "cat", "sleep", "nslookup", "echo", "true", "ls", "hostname", "id", "tty", "stty"]
    {
        l.append_link(&mut header(tar::EntryType::Symlink, 0, 0o777), format!("bin/{a}"), "busybox").unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1001::/tmp:/bin/sh\n";
    l.append_data(&mut header(tar::EntryType::Regular, passwd.len() as u64, 0o644), "etc/passwd", &passwd[..]).unwrap();
    let group = b"root:x:0:\nbobs:x:1001:\nwheel:x:10:bob\n";
    l.append_data(&mut header(tar::EntryType::Regular, group.len() as u64, 0o644), "etc/group", &group[..]).unwrap();
    let page = b"hello-from-rpod\n";
    l.append_data(&mut header(tar::EntryType::Regular, page.len() as u64, 0o644), "www/index.html", &page[..]).unwrap();
    let layer = l.into_inner().unwrap();
    let lid = hex::encode(Sha256::digest(&layer));
    let cfg = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{lid}")]},
    }))
    .unwrap();
    let cid = hex::encode(Sha256::digest(&cfg));
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |p: &str, d: &[u8]| {
        b.append_data(&mut header(tar::EntryType::Regular, d.len() as u64, 0o644), p, d).unwrap();
    };
    add(&format!("{cid}.json"), &cfg);
    add(&format!("{lid}/layer.tar"), &layer);
    let manifest = serde_json::json!([{"Config": format!("{cid}.json"), "RepoTags": [tag], "Layers": [format!("{lid}/layer.tar")]}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

/// The tag the engine tests load their busybox image as.
pub const IMG: &str = "localhost/bb:latest";

/// Whether CI asked for tests to fail instead of skipping (RPOD_REQUIRE_ROOT=1).
pub fn required() -> bool {
    std::env::var("RPOD_REQUIRE_ROOT").as_deref() == Ok("1")
}

/// Whether `tool` is an executable file in a PATH directory.
pub fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// `opts`, then the image and busybox httpd serving /www on port 80 in the foreground.
pub fn httpd<'a>(opts: &[&'a str]) -> Vec<&'a str> {
    let mut v = opts.to_vec();
    v.extend_from_slice(&[IMG, "httpd", "-f", "-p", "80", "-h", "/www"]);
    v
}

/// One command's result.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Starts a private network + mount + PID namespace whose PID 1 runs `setup` (a shell
/// command, e.g. a tmpfs mount), brings `lo` up and then idles. Returns the `unshare`
/// process (kill it to end the namespaces) and the PID of the namespace's first process.
pub fn ns_holder(setup: &str) -> (Child, u32) {
    let script = format!("{setup} && ip link set lo up && echo ready && while :; do sleep 1 & wait; done");
    let mut holder = Command::new("unshare")
        .args(["-n", "-m", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["bash", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 6];
    holder.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", holder.id())).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    (holder, pid)
}

/// Runs `c` (stdin null, output captured), killing it and panicking with `what` after 60 s.
pub fn output_within_60s(c: &mut Command, what: &str) -> Out {
    let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap().into();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("timed out: {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
