//! Integration tests of the store: one test binary. Each test builds its own images (tar
//! files generated here), uses its own temporary store, and unmounts on drop.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rpod_storage::{Digest, Error, Store};
use sha2::{Digest as _, Sha256};

// ------------------------------------------------------------------ image builders

enum Ent<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    /// An OCI whiteout marker `.wh.NAME` for the given path.
    Wh(&'a str),
    /// An opaque marker in the given directory.
    Opq(&'a str),
    Sym(&'a str, &'a str),
    /// A raw entry name (bypasses the tar crate's path checks).
    Raw(&'a str, tar::EntryType, &'a str),
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn layer(ents: &[Ent]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in ents {
        match e {
            Ent::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Ent::File(p, c) => {
                let mut h = header(tar::EntryType::Regular, c.len() as u64);
                b.append_data(&mut h, p, c.as_bytes()).unwrap();
            }
            Ent::Wh(p) => {
                let p = Path::new(p);
                let name = format!(".wh.{}", p.file_name().unwrap().to_str().unwrap());
                let full = p.parent().unwrap().join(name);
                let mut h = header(tar::EntryType::Regular, 0);
                b.append_data(&mut h, full, &[][..]).unwrap();
            }
            Ent::Opq(d) => {
                let mut h = header(tar::EntryType::Regular, 0);
                b.append_data(&mut h, Path::new(d).join(".wh..wh..opq"), &[][..]).unwrap();
            }
            Ent::Sym(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            Ent::Raw(p, kind, link) => {
                let mut h = header(*kind, 0);
                let g = h.as_gnu_mut().unwrap();
                g.name[..p.len()].copy_from_slice(p.as_bytes());
                g.linkname[..link.len()].copy_from_slice(link.as_bytes());
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[derive(Clone, Copy, PartialEq)]
enum Comp {
    None,
    Gzip,
    Zstd,
}

fn compress(b: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => b.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(b, 3).unwrap(),
    }
}

fn config(layers: &[Vec<u8>], label: &str) -> Vec<u8> {
    let ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha(l))).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// A docker-archive with one image per (name, layers).
fn docker_archive(images: &[(&str, &[Vec<u8>])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let mut done = std::collections::HashSet::new();
    for (name, layers) in images {
        let cfg = config(layers, name);
        let cfg_name = format!("{}.json", sha(&cfg));
        add(&mut b, &cfg_name, &cfg);
        let mut paths = Vec::new();
        for l in *layers {
            let p = format!("{}/layer.tar", sha(l));
            if done.insert(p.clone()) {
                add(&mut b, &p, l);
            }
            paths.push(p);
        }
        manifest.push(serde_json::json!({"Config": cfg_name, "RepoTags": [name], "Layers": paths}));
    }
    add(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The files of an OCI layout holding one image, layers compressed as asked.
fn oci_files(name: &str, layers: &[(Vec<u8>, Comp)], layer_mt: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let raw: Vec<Vec<u8>> = layers.iter().map(|(l, _)| l.clone()).collect();
    let cfg = config(&raw, name);
    let mut files = vec![(format!("blobs/sha256/{}", sha(&cfg)), cfg.clone())];
    let mut descs = Vec::new();
    for (l, c) in layers {
        let blob = compress(l, *c);
        let mt = layer_mt.map(str::to_owned).unwrap_or_else(|| {
            match c {
                Comp::None => "application/vnd.oci.image.layer.v1.tar",
                Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            }
            .to_owned()
        });
        descs
            .push(serde_json::json!({"mediaType": mt, "digest": format!("sha256:{}", sha(&blob)), "size": blob.len()}));
        files.push((format!("blobs/sha256/{}", sha(&blob)), blob));
    }
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", sha(&m)), "size": m.len(),
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    }))
    .unwrap();
    files.push((format!("blobs/sha256/{}", sha(&m)), m));
    files.push(("index.json".to_owned(), index));
    files.push(("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
    files
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in files {
        add(&mut b, p, d);
    }
    b.into_inner().unwrap()
}

struct TestStore {
    _dir: tempfile::TempDir,
    store: Store,
}

fn store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("storage")).unwrap();
    TestStore { _dir: dir, store }
}

fn count(p: &Path) -> usize {
    fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

/// The store holds no image, layer or blob, and no temporary.
fn assert_empty(s: &Store) {
    assert!(s.images().unwrap().is_empty(), "images left");
    assert_eq!(count(&s.root().join("layers")), 0, "layers left");
    assert_eq!(count(&s.root().join("blobs/sha256")), 0, "blobs left");
    assert_eq!(count(&s.root().join("blobs")), 1, "temporary blobs left");
    assert_eq!(count(&s.root().join("l")), 0, "links left");
}

fn base() -> Vec<u8> {
    layer(&[
        Ent::Dir("etc/"),
        Ent::File("etc/os-release", "ID=test\n"),
        Ent::Dir("a/"),
        Ent::File("a/gone", "lower"),
        Ent::File("a/stays", "lower"),
        Ent::Dir("c/"),
        Ent::File("c/old", "old"),
        Ent::Sym("etc/link", "os-release"),
    ])
}

fn mid() -> Vec<u8> {
    layer(&[Ent::Dir("a/"), Ent::Wh("a/gone"), Ent::Dir("c/"), Ent::Opq("c"), Ent::File("c/new", "new")])
}

fn top(tag: &str) -> Vec<u8> {
    layer(&[Ent::File("top", tag)])
}

// ------------------------------------------------------------------ tests

#[test]
fn docker_archive_load_and_layer_sharing() {
    let t = store();
    let s = &t.store;
    let (b, m) = (base(), mid());
    let ids1 = s.load_archive(&docker_archive(&[("one", &[b.clone(), m.clone(), top("1")])])[..]).unwrap();
    let ids2 = s.load_archive(&docker_archive(&[("two:v2", &[b.clone(), m.clone(), top("2")])])[..]).unwrap();
    assert_ne!(ids1, ids2);
    // base and mid are shared: 4 layers, not 6.
    assert_eq!(s.layers().unwrap().len(), 4);
    let one = s.image("one").unwrap();
    assert_eq!(one.names, vec!["one:latest"]);
    assert_eq!(s.image("two:v2").unwrap().id, ids2[0]);
    assert_eq!(s.image(&ids1[0][..12]).unwrap().id, ids1[0]);
    let bd = Digest::parse(&format!("sha256:{}", sha(&b))).unwrap();
    let diff = s.layer_diff(&bd);
    assert_eq!(fs::read_to_string(diff.join("etc/os-release")).unwrap(), "ID=test\n");
    assert_eq!(fs::read_link(diff.join("etc/link")).unwrap(), Path::new("os-release"));
    // Short links resolve to the layer.
    let short = s.layer(&bd).unwrap().short;
    assert!(s.root().join("l").join(short).join("etc/os-release").is_file());
    // Loading again changes nothing.
    s.load_archive(&docker_archive(&[("one", &[b, m, top("1")])])[..]).unwrap();
    assert_eq!(s.images().unwrap().len(), 2);
}

#[test]
fn whiteouts_become_overlay_format() {
    let t = store();
    let s = &t.store;
    s.load_archive(&docker_archive(&[("img", &[base(), mid()])])[..]).unwrap();
    let md = Digest::parse(&format!("sha256:{}", sha(&mid()))).unwrap();
    let diff = s.layer_diff(&md);
    assert!(!diff.join("a/.wh.gone").exists());
    assert!(!diff.join("c/.wh..wh..opq").exists());
    let meta = fs::symlink_metadata(diff.join("a/gone")).unwrap();
    if s.rootless() {
        eprintln!("rootless: whiteout device and trusted xattr not checked");
        return;
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    let dir = rpod_storage::safefs::open_dir(&diff.join("c")).unwrap();
    use std::os::fd::AsFd;
    assert_eq!(rpod_storage::safefs::fgetxattr(dir.as_fd(), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));
}

#[test]
fn oci_archive_and_layout_gzip_zstd() {
    for (i, comp) in [Comp::Gzip, Comp::Zstd, Comp::None].into_iter().enumerate() {
        let files = oci_files("oci:tag", &[(base(), comp), (mid(), Comp::Gzip), (top("t"), Comp::Zstd)], None);
        let t = store();
        let s = &t.store;
        let ids = s.load_archive(&tar_of(&files)[..]).unwrap();
        let img = s.image("oci:tag").unwrap();
        assert_eq!(img.id, ids[0]);
        assert_eq!(img.layers.len(), 3);
        let top_l = &img.layers[2];
        assert_eq!(fs::read_to_string(s.layer_diff(&top_l.diff_id).join("top")).unwrap(), "t", "case {i}");
        // The same image from a layout directory, into a fresh store.
        let t2 = store();
        let dir = t2._dir.path().join("layout");
        for (p, d) in &files {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, d).unwrap();
        }
        let ids2 = t2.store.load_oci_dir(&dir).unwrap();
        assert_eq!(ids, ids2);
    }
}

#[test]
fn save_load_round_trip() {
    let t = store();
    let s = &t.store;
    let files = oci_files("rt", &[(base(), Comp::Gzip), (mid(), Comp::Zstd)], None);
    let id = s.load_archive(&tar_of(&files)[..]).unwrap().remove(0);
    let img = s.image(&id).unwrap();

    let docker = s.save_docker_archive(&["rt"], Vec::new()).unwrap();
    let t2 = store();
    let id2 = t2.store.load_archive(&docker[..]).unwrap().remove(0);
    assert_eq!(id, id2, "same config, same image ID");
    let img2 = t2.store.image("rt:latest").unwrap();
    let d1: Vec<_> = img.layers.iter().map(|l| &l.diff_id).collect();
    let d2: Vec<_> = img2.layers.iter().map(|l| &l.diff_id).collect();
    assert_eq!(d1, d2);

    let oci = s.save_oci_archive("rt", Vec::new()).unwrap();
    let t3 = store();
    let id3 = t3.store.load_archive(&oci[..]).unwrap().remove(0);
    assert_eq!(id, id3);
    assert_eq!(t3.store.image(&id3).unwrap().layers, img.layers, "blobs kept as is");
}

#[test]
fn tag_rmi_prune() {
    let t = store();
    let s = &t.store;
    let ida = s.load_archive(&docker_archive(&[("a", &[base(), top("a")])])[..]).unwrap().remove(0);
    let idb = s.load_archive(&docker_archive(&[("b", &[base(), top("b")])])[..]).unwrap().remove(0);
    assert_eq!(s.layers().unwrap().len(), 3);
    s.tag("a", "alias:1").unwrap();
    assert_eq!(s.image("alias:1").unwrap().id, ida);
    // Removing one of two names only untags.
    assert_eq!(s.remove_image("alias:1", false).unwrap(), None);
    assert!(s.image("alias:1").is_err());
    // rmi a: its own top layer goes, the shared base stays.
    assert_eq!(s.remove_image("a", false).unwrap(), Some(ida));
    assert_eq!(s.layers().unwrap().len(), 2);
    // In use by a container: refused unless forced; the container keeps its layers.
    let c = s.create_container("b").unwrap();
    let e = s.remove_image("b", false).unwrap_err();
    assert!(matches!(e, Error::ImageInUse { .. }), "{e}");
    assert_eq!(s.remove_image(&idb, true).unwrap(), Some(idb));
    assert_eq!(s.layers().unwrap().len(), 2);
    s.delete_container(&c).unwrap();
    assert_eq!(s.prune().unwrap().len(), 2);
    assert_empty(s);
}

#[test]
fn concurrent_loads_sharing_a_layer() {
    let t = store();
    let root = t.store.root().to_owned();
    let big: Vec<(String, String)> = (0..300).map(|i| (format!("f{i}"), "x".repeat(1000))).collect();
    let ents: Vec<Ent> = big.iter().map(|(p, c)| Ent::File(p, c)).collect();
    let shared = layer(&ents);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let root = root.clone();
            let ar = docker_archive(&[(&format!("c{i}"), &[shared.clone(), top(&i.to_string())])]);
            std::thread::spawn(move || {
                let s = Store::open(&root).unwrap();
                s.load_archive(&ar[..]).unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(t.store.images().unwrap().len(), 4);
    assert_eq!(t.store.layers().unwrap().len(), 5);
    assert_eq!(count(&root.join("l")), 5);
    let tmp: Vec<_> = fs::read_dir(root.join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "no temporaries left");
}

// ------------------------------------------------------------------ bad inputs

#[test]
fn bad_digest_leaves_nothing() {
    let t = store();
    let s = &t.store;
    let mut files = oci_files("bad", &[(base(), Comp::Gzip), (mid(), Comp::Gzip)], None);
    // Corrupt the second layer blob (its name still claims the old digest).
    let i =
        files.iter().position(|(p, _)| p == &format!("blobs/sha256/{}", sha(&compress(&mid(), Comp::Gzip)))).unwrap();
    files[i].1 = compress(&top("evil"), Comp::Gzip);
    let e = s.load_archive(&tar_of(&files)[..]).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_empty(s);
}

#[test]
fn bad_diff_id_leaves_nothing() {
    let t = store();
    let s = &t.store;
    let (b, m) = (base(), mid());
    let mut ar = tar::Builder::new(Vec::new());
    // The config claims mid's diff ID for base's tar.
    let cfg = config(std::slice::from_ref(&m), "x");
    add(&mut ar, "c.json", &cfg);
    add(&mut ar, "l/layer.tar", &b);
    add(&mut ar, "manifest.json", br#"[{"Config":"c.json","RepoTags":["x"],"Layers":["l/layer.tar"]}]"#);
    let e = s.load_archive(&ar.into_inner().unwrap()[..]).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_empty(s);
}

#[test]
fn truncated_archives_leave_nothing() {
    let big: Vec<(String, String)> = (0..50).map(|i| (format!("f{i}"), "y".repeat(2000))).collect();
    let ents: Vec<Ent> = big.iter().map(|(p, c)| Ent::File(p, c)).collect();
    let l = layer(&ents);
    let full = docker_archive(&[("t", &[l.clone(), top("t")])]);
    let oci = tar_of(&oci_files("t", &[(l, Comp::Gzip)], None));
    for ar in [full, oci] {
        for cut in [ar.len() / 3, ar.len() / 2, ar.len() - 1100] {
            let t = store();
            let e = t.store.load_archive(&ar[..cut]).unwrap_err();
            eprintln!("cut at {cut}: {e}");
            assert_empty(&t.store);
        }
    }
}

#[test]
fn unknown_media_type_is_refused() {
    let t = store();
    let files = oci_files("m", &[(base(), Comp::Gzip)], Some("application/x-foo"));
    let e = t.store.load_archive(&tar_of(&files)[..]).unwrap_err();
    assert!(matches!(e, Error::UnknownMediaType(ref m) if m == "application/x-foo"), "{e}");
    assert_empty(&t.store);
    let e = t.store.load_archive(&b"not a tar at all"[..]).unwrap_err();
    eprintln!("{e}");
    assert_empty(&t.store);
}

#[test]
fn path_traversal_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap().to_owned();
    let cases = vec![
        layer(&[Ent::Raw("../escape", tar::EntryType::Regular, "")]),
        layer(&[Ent::Raw("a/../../escape", tar::EntryType::Regular, "")]),
        layer(&[Ent::Raw(&format!("{out}/escape"), tar::EntryType::Regular, "")]),
        layer(&[Ent::Sym("link", &out), Ent::Raw("link/escape", tar::EntryType::Regular, "")]),
        layer(&[Ent::Raw("hl", tar::EntryType::Link, "../../../../etc/passwd")]),
        layer(&[Ent::Raw("hl", tar::EntryType::Link, "/etc/passwd")]),
    ];
    for (i, l) in cases.into_iter().enumerate() {
        let t = store();
        let e = t.store.load_archive(&docker_archive(&[("evil", &[l])])[..]).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "case {i}: {e}");
        assert!(!outside.path().join("escape").exists(), "case {i}");
        assert!(!t._dir.path().join("escape").exists(), "case {i}");
        assert_empty(&t.store);
    }
}

// ------------------------------------------------------------------ mounts (root)

fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("RPOD_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("{test}: needs root (RPOD_REQUIRE_ROOT=1)");
    }
    eprintln!("SKIPPED {test}: kernel overlay mounts need root (set RPOD_REQUIRE_ROOT=1 to fail instead)");
    false
}

/// Unmounts the container when dropped, also on panic.
struct Mounted<'a> {
    store: &'a Store,
    id: String,
    merged: PathBuf,
}

impl<'a> Mounted<'a> {
    fn new(store: &'a Store, id: &str) -> Self {
        let merged = store.mount(id).unwrap();
        Mounted { store, id: id.to_owned(), merged }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.unmount(&self.id) {
            eprintln!("unmount {}: {e}", self.id);
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn mount_three_layers() {
    if !require_root("mount_three_layers") {
        return;
    }
    let t = store();
    let s = &t.store;
    s.load_archive(&docker_archive(&[("three", &[base(), mid(), top("3")])])[..]).unwrap();
    let id = s.create_container("three").unwrap();
    {
        let m = Mounted::new(s, &id);
        assert!(s.is_mounted(&id).unwrap());
        let r = &m.merged;
        assert_eq!(fs::read_to_string(r.join("etc/os-release")).unwrap(), "ID=test\n");
        assert_eq!(fs::read_to_string(r.join("etc/link")).unwrap(), "ID=test\n");
        assert_eq!(names(&r.join("a")), vec!["stays"], "whiteout hides a/gone");
        assert_eq!(names(&r.join("c")), vec!["new"], "opaque dir hides c/old");
        assert_eq!(fs::read_to_string(r.join("top")).unwrap(), "3");
        fs::write(r.join("upper.txt"), "written").unwrap();
        fs::remove_file(r.join("a/stays")).unwrap();
        // Mount is idempotent.
        assert_eq!(s.mount(&id).unwrap(), m.merged);
    }
    assert!(!s.is_mounted(&id).unwrap());
    {
        let m = Mounted::new(s, &id);
        assert_eq!(fs::read_to_string(m.merged.join("upper.txt")).unwrap(), "written");
        assert!(names(&m.merged.join("a")).is_empty());
    }
    s.delete_container(&id).unwrap();
    assert!(s.containers().unwrap().is_empty());
}

/// Container root filesystems through `fuse-overlay` as the mount program, with whiteouts
/// and opaque dirs from the image layers.
#[cfg(feature = "fuse")]
#[test]
fn mount_with_fuse_overlay_program() {
    if !require_root("mount_with_fuse_overlay_program") {
        return;
    }
    use rpod_storage::MountMethod;
    let dir = tempfile::tempdir().unwrap();
    let prog = PathBuf::from(env!("CARGO_BIN_EXE_fuse-overlay"));
    let s = Store::open(dir.path().join("storage")).unwrap().with_mount_method(MountMethod::Program(prog.clone()));
    assert_eq!(s.mount_method(), &MountMethod::Program(prog));
    s.load_archive(&docker_archive(&[("three", &[base(), mid(), top("3")])])[..]).unwrap();
    let id = s.create_container("three").unwrap();
    {
        let m = Mounted::new(&s, &id);
        assert!(s.is_mounted(&id).unwrap());
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(mounts.lines().any(|l| l.contains(m.merged.to_str().unwrap()) && l.contains(" fuse.fuse-overlay ")));
        let r = &m.merged;
        assert_eq!(fs::read_to_string(r.join("etc/os-release")).unwrap(), "ID=test\n");
        assert_eq!(fs::read_to_string(r.join("etc/link")).unwrap(), "ID=test\n");
        assert_eq!(names(&r.join("a")), vec!["stays"], "whiteout hides a/gone");
        assert_eq!(names(&r.join("c")), vec!["new"], "opaque dir hides c/old");
        fs::write(r.join("upper.txt"), "written").unwrap();
        fs::remove_file(r.join("a/stays")).unwrap();
        assert_eq!(s.mount(&id).unwrap(), m.merged);
    }
    assert!(!s.is_mounted(&id).unwrap());
    // The same container through kernel overlay sees what fuse-overlay wrote.
    let k = Store::open(dir.path().join("storage")).unwrap();
    {
        let m = Mounted::new(&k, &id);
        assert_eq!(fs::read_to_string(m.merged.join("upper.txt")).unwrap(), "written");
        assert!(names(&m.merged.join("a")).is_empty());
    }
    let auto =
        Store::open(dir.path().join("storage")).unwrap().with_mount_method(MountMethod::Auto("/nonexistent".into()));
    {
        let m = Mounted::new(&auto, &id);
        assert!(m.merged.join("upper.txt").exists(), "Auto uses the kernel when it can");
    }
    assert!(rpod_storage::kernel_overlay_works(dir.path(), false));
    let bad =
        Store::open(dir.path().join("storage")).unwrap().with_mount_method(MountMethod::Program("/bin/false".into()));
    let e = bad.mount(&id).unwrap_err();
    assert!(e.to_string().contains("using mount program /bin/false"), "{e}");
    s.delete_container(&id).unwrap();
}

#[test]
fn mount_two_hundred_layers() {
    if !require_root("mount_two_hundred_layers") {
        return;
    }
    let t = store();
    let s = &t.store;
    let mut layers = Vec::new();
    for i in 0..199 {
        let name = format!("d/f{i:03}");
        layers.push(layer(&[Ent::Dir("d/"), Ent::File(&name, &i.to_string())]));
    }
    layers.push(layer(&[Ent::Dir("d/"), Ent::Wh("d/f000")]));
    s.load_archive(&docker_archive(&[("many", &layers)])[..]).unwrap();
    let id = s.create_container("many").unwrap();
    let opts = s.mount_options(&id).unwrap();
    assert!(opts.len() < 4096, "{}", opts.len());
    let m = Mounted::new(s, &id);
    let n = names(&m.merged.join("d"));
    assert_eq!(n.len(), 198);
    assert!(!n.contains(&"f000".to_owned()));
    assert_eq!(fs::read_to_string(m.merged.join("d/f198")).unwrap(), "198");
    fs::write(m.merged.join("d/new"), "x").unwrap();
    drop(m);
    let m = Mounted::new(s, &id);
    assert_eq!(fs::read_to_string(m.merged.join("d/new")).unwrap(), "x");
}

#[test]
fn rootless_store_uses_user_opaque_xattr() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path().join("storage"), true).unwrap();
    assert!(s.rootless());
    s.load_archive(&docker_archive(&[("img", &[base(), mid()])])[..]).unwrap();
    let md = Digest::parse(&format!("sha256:{}", sha(&mid()))).unwrap();
    let c = rpod_storage::safefs::open_dir(&s.layer_diff(&md).join("c")).unwrap();
    use std::os::fd::AsFd;
    assert_eq!(rpod_storage::safefs::fgetxattr(c.as_fd(), "user.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    assert_eq!(rpod_storage::safefs::fgetxattr(c.as_fd(), "trusted.overlay.opaque").unwrap(), None);
    let id = s.create_container("img").unwrap();
    assert!(s.mount_options(&id).unwrap().ends_with(",userxattr"));
}

// ------------------------------------------------------------------ kill -9

/// Runs only as the child of `kill_during_load`: loads the archive named by the env var.
#[test]
fn kill_child_helper() {
    let (Some(root), Some(ar)) =
        (std::env::var_os("RPOD_KILL_CHILD_ROOT"), std::env::var_os("RPOD_KILL_CHILD_ARCHIVE"))
    else {
        return;
    };
    let s = Store::open(root).unwrap();
    s.load_archive(fs::File::open(ar).unwrap()).unwrap();
}

#[test]
fn kill_during_load() {
    let t = store();
    let root = t.store.root().to_owned();
    let big: Vec<(String, String)> = (0..3000).map(|i| (format!("d{}/f{i}", i % 30), "z".repeat(4000))).collect();
    let ents: Vec<Ent> = big.iter().map(|(p, c)| Ent::File(p, c)).collect();
    let l = layer(&ents);
    let ar_path = t._dir.path().join("big.tar");
    fs::write(&ar_path, docker_archive(&[("big", &[l, top("k")])])).unwrap();
    let mut killed_mid_layer = false;
    for _attempt in 0..5 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill_child_helper", "--nocapture"])
            .env("RPOD_KILL_CHILD_ROOT", &root)
            .env("RPOD_KILL_CHILD_ARCHIVE", &ar_path)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let tmp = fs::read_dir(root.join("layers"))
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"));
            if tmp || std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                killed_mid_layer = tmp;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if killed_mid_layer {
            break;
        }
        // The child finished first: start over.
        t.store.remove_image("big", true).ok();
    }
    assert!(killed_mid_layer, "never caught the child mid-extraction");
    // Nothing half-extracted is visible; reopening cleans up and a new load completes.
    let s = Store::open(&root).unwrap();
    for d in s.layers().unwrap() {
        assert!(s.layer(&d).is_ok());
    }
    let leftovers: Vec<_> = fs::read_dir(root.join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "stale temporaries were cleaned on open");
    assert!(s.image("big").is_err());
    s.load_archive(fs::File::open(&ar_path).unwrap()).unwrap();
    assert_eq!(s.image("big").unwrap().layers.len(), 2);
}

#[test]
fn full_disk_gives_clear_error_and_leaves_nothing() {
    if !require_root("full_disk_gives_clear_error_and_leaves_nothing") {
        return;
    }
    /// Unmounts the tmpfs when dropped, also on panic.
    struct Tmpfs(PathBuf);
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            if let Err(e) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("unmount {}: {e}", self.0.display());
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    nix::mount::mount(Some("tmpfs"), &mnt, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=4m,mode=0700"))
        .unwrap();
    let _unmount = Tmpfs(mnt.clone());
    let s = Store::open(mnt.join("storage")).unwrap();
    let free = || {
        let v = nix::sys::statvfs::statvfs(&mnt).unwrap();
        v.blocks_available() as u64 * v.fragment_size() as u64
    };
    let free_before = free();

    // (a) The blob fits (8 MiB of text gzips to a few KiB) but its extraction does not.
    let text: String = (0..8 << 20).map(|i: u32| char::from(b'a' + (i % 23) as u8)).collect();
    let big_text = layer(&[Ent::Dir("data/"), Ent::File("data/big.txt", &text)]);
    let files = oci_files("full:text", &[(big_text, Comp::Gzip)], None);
    // (b) The blob itself does not fit: 8 MiB that do not compress, in a docker-archive.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'!' + (x % 90) as u8
        })
        .collect();
    let big_noise = layer(&[Ent::File("noise.bin", std::str::from_utf8(&noise).unwrap())]);

    for (what, archive) in
        [("extraction", tar_of(&files)), ("blob", docker_archive(&[("full:noise", &[base(), big_noise])]))]
    {
        let e = s.load_archive(&archive[..]).unwrap_err();
        let msg = e.to_string();
        eprintln!("{what}: {msg}");
        assert!(matches!(e, Error::Io { .. }), "{what}: an I/O error, not {e:?}");
        assert!(msg.contains("No space left on device"), "{what}: the error says the disk is full: {msg}");
        assert!(!msg.contains("bad archive"), "{what}: not blamed on the archive: {msg}");
        // Nothing half-done: no layer (complete or temporary), blob, link, image or temp file.
        assert_empty(&s);
        assert_eq!(count(&s.root().join("images")), 0, "{what}: image temp files left");
        assert!(s.image("full:text").is_err() && s.image("full:noise").is_err());
        // The space is given back.
        assert!(free() + (256 << 10) >= free_before, "{what}: {} of {} bytes free again", free(), free_before);
    }

    // A reopened store finds nothing to clean, and a small image still loads.
    let s = Store::open(mnt.join("storage")).unwrap();
    assert_empty(&s);
    let id = s.load_archive(&docker_archive(&[("small", &[base(), mid(), top("s")])])[..]).unwrap().remove(0);
    assert_eq!(s.image("small").unwrap().id, id);
    assert_eq!(s.layers().unwrap().len(), 3);
}
