//! Integration tests of the `rpod` binary's image commands: each test runs the built binary
//! with its own temporary `--root`, on archives the test builds with the `tar` crate.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

mod common;

// ------------------------------------------------------------------ image builders

enum Ent<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    /// An OCI whiteout marker `.wh.NAME` for the given path.
    Wh(&'a str),
    /// An opaque marker in the given directory.
    Opq(&'a str),
    Sym(&'a str, &'a str),
}

/// A root-owned header: directories 0755, the rest 0644.
fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    common::header(kind, size, if kind == tar::EntryType::Directory { 0o755 } else { 0o644 })
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
                let mut h = header(tar::EntryType::Regular, 0);
                b.append_data(&mut h, p.parent().unwrap().join(name), &[][..]).unwrap();
            }
            Ent::Opq(d) => {
                let mut h = header(tar::EntryType::Regular, 0);
                b.append_data(&mut h, Path::new(d).join(".wh..wh..opq"), &[][..]).unwrap();
            }
            Ent::Sym(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn config(layers: &[Vec<u8>], label: &str) -> Vec<u8> {
    let ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha(l))).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Labels": {"test": label}, "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "test"}],
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

/// The files of an OCI layout holding one image with gzip layers.
fn oci_files(name: &str, layers: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let cfg = config(layers, name);
    let mut files = vec![(format!("blobs/sha256/{}", sha(&cfg)), cfg.clone())];
    let mut descs = Vec::new();
    for l in layers {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(l).unwrap();
        let blob = e.finish().unwrap();
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                      "digest": format!("sha256:{}", sha(&blob)), "size": blob.len()}));
        files.push((format!("blobs/sha256/{}", sha(&blob)), blob));
    }
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": mt, "digest": format!("sha256:{}", sha(&m)), "size": m.len(),
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    }))
    .unwrap();
    files.push((format!("blobs/sha256/{}", sha(&m)), m));
    files.push(("index.json".to_owned(), index));
    files.push(("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
    files
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

/// A 3-layer image (a whiteout and an opaque directory in the middle one).
fn image(name: &str, top_tag: &str) -> Vec<u8> {
    docker_archive(&[(name, &[base(), mid(), top(top_tag)])])
}

// ------------------------------------------------------------------ running rpod

struct Rpod {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    raw: Vec<u8>,
}

impl Rpod {
    fn new() -> Rpod {
        Rpod { dir: tempfile::tempdir().unwrap() }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, data).unwrap();
        p
    }

    fn run_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rpod"));
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(data) = stdin {
            let mut w = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        let o: Output = child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            raw: o.stdout,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_in(args, None)
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.code, 0, "rpod {args:?} failed: {}", o.stderr);
        o.stdout
    }

    /// Runs and requires failure with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(o.code, code, "rpod {args:?}: stdout {:?} stderr {:?}", o.stdout, o.stderr);
        assert!(o.stderr.starts_with("Error: "), "rpod {args:?}: stderr {:?}", o.stderr);
        o.stderr
    }

    fn load(&self, archive: &[u8]) -> String {
        let p = self.file("in.tar", archive);
        self.ok(&["load", "-i", p.to_str().unwrap()])
    }

    fn images_json(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["images", "--format", "json"])).unwrap().as_array().unwrap().clone()
    }

    fn inspect(&self, names: &[&str]) -> Vec<Value> {
        let mut args = vec!["image", "inspect"];
        args.extend(names);
        serde_json::from_str::<Value>(&self.ok(&args)).unwrap().as_array().unwrap().clone()
    }

    fn id(&self, name: &str) -> String {
        self.ok(&["image", "inspect", "--format", "{{.Id}}", name]).trim().to_owned()
    }

    fn count(&self, sub: &str) -> usize {
        fs::read_dir(self.root().join(sub))
            .map(|r| r.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-")).count())
            .unwrap_or(0)
    }

    /// The store holds nothing: no image, layer, blob or temporary.
    fn assert_empty(&self) {
        assert!(self.images_json().is_empty());
        assert_eq!(self.count("images"), 0, "image records left");
        assert_eq!(self.count("layers"), 0, "layers left");
        assert_eq!(self.count("blobs/sha256"), 0, "blobs left");
        assert_eq!(fs::read_dir(self.root().join("blobs")).unwrap().count(), 1, "temporary blobs left");
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn load_file_and_list() {
    let r = Rpod::new();
    assert_eq!(r.load(&image("one", "1")), "Loaded image: one:latest\n");
    let id = r.id("one");
    assert_eq!(id.len(), 64);

    // Table: podman's columns; the config's creation time, the uncompressed size.
    let t = r.ok(&["images"]);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2, "{t}");
    let cols: Vec<&str> = lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cols, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], "{t}");
    assert!(lines[1].starts_with("one "), "{t}");
    assert!(lines[1].contains(" latest "), "{t}");
    assert!(lines[1].contains(&format!(" {} ", &id[..12])), "{t}");
    assert!(lines[1].contains(" ago "), "{t}");
    assert!(lines[1].ends_with(" kB"), "{t}");
    // The IMAGE ID column lines up with its header.
    assert_eq!(lines[0].find("IMAGE ID"), lines[1].find(&id[..12]), "{t}");

    assert_eq!(r.ok(&["images", "-q"]), format!("{}\n", &id[..12]));
    assert_eq!(r.ok(&["images", "-q", "--no-trunc"]), format!("sha256:{id}\n"));
    assert_eq!(
        r.ok(&["images", "--noheading", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
        format!("one:latest {}\n", &id[..12])
    );
    assert_eq!(r.ok(&["image", "ls", "-q"]), r.ok(&["images", "-q"]));

    let j = r.images_json();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0]["Id"], id.as_str());
    assert_eq!(j[0]["RepoTags"], serde_json::json!(["one:latest"]));
    assert_eq!(j[0]["Names"], serde_json::json!(["one:latest"]));
    assert_eq!(j[0]["Created"], 1_700_000_000);
    assert_eq!(j[0]["Labels"]["test"], "one");
    assert!(j[0]["Digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(j[0]["Size"].as_u64().unwrap() > 3 * 1024, "{}", j[0]);
    assert_eq!(j[0]["Containers"], 0);

    // Loading the same archive again changes nothing.
    assert_eq!(r.load(&image("one", "1")), "Loaded image: one:latest\n");
    assert_eq!(r.images_json().len(), 1);
    assert_eq!(r.count("layers"), 3);
}

#[test]
fn load_stdin_compressed_and_oci() {
    let r = Rpod::new();
    let o = r.run_in(&["load"], Some(&image("plain", "p")));
    assert_eq!((o.code, o.stdout.as_str()), (0, "Loaded image: plain:latest\n"), "{}", o.stderr);

    // A gzip-compressed docker-archive on stdin (podman loads those too).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&image("gz:v1", "g")).unwrap();
    let o = r.run_in(&["image", "load"], Some(&e.finish().unwrap()));
    assert_eq!((o.code, o.stdout.as_str()), (0, "Loaded image: gz:v1\n"), "{}", o.stderr);

    // An OCI archive file and an OCI layout directory.
    let files = oci_files("oci:1", &[base(), mid()]);
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in &files {
        add(&mut b, p, d);
    }
    assert_eq!(r.load(&b.into_inner().unwrap()), "Loaded image: oci:1\n");
    let r2 = Rpod::new();
    let dir = r2.dir.path().join("layout");
    for (p, d) in &files {
        fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
        fs::write(dir.join(p), d).unwrap();
    }
    assert_eq!(r2.ok(&["load", "-i", dir.to_str().unwrap()]), "Loaded image: oci:1\n");
    assert_eq!(r2.id("oci:1"), r.id("oci:1"));

    let mut names: Vec<String> = r.images_json().iter().map(|i| i["Names"][0].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["gz:v1", "oci:1", "plain:latest"]);
    // 3 shared layers + the two top layers.
    assert_eq!(r.count("layers"), 4);
}

#[test]
fn tag_and_inspect() {
    let r = Rpod::new();
    r.load(&image("one", "1"));
    let id = r.id("one");
    assert_eq!(r.ok(&["tag", "one", "alias:v1", "localhost:5000/x/y"]), "");
    assert_eq!(r.ok(&["image", "tag", &id[..6], "other"]), "");
    assert_eq!(r.id("alias:v1"), id);
    assert_eq!(r.id("localhost:5000/x/y:latest"), id);

    let v = r.inspect(&["alias:v1", "one"]);
    assert_eq!(v.len(), 2);
    let i = &v[0];
    assert_eq!(i["Id"], id.as_str());
    assert_eq!(i, &v[1]);
    assert_eq!(
        i["RepoTags"],
        serde_json::json!(["one:latest", "alias:v1", "localhost:5000/x/y:latest", "other:latest"])
    );
    let digest = i["Digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert!(i["RepoDigests"].as_array().unwrap().contains(&Value::String(format!("alias@{digest}"))));
    assert_eq!(i["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(i["Architecture"], "amd64");
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(i["Config"]["Labels"]["test"], "one");
    assert_eq!(i["RootFS"]["Type"], "layers");
    let want: Vec<String> = [base(), mid(), top("1")].iter().map(|l| format!("sha256:{}", sha(l))).collect();
    assert_eq!(i["RootFS"]["Layers"], serde_json::json!(want));
    assert!(i["Size"].as_u64().unwrap() > 3 * 1024);
    // podman's 5-space indentation
    assert!(r.ok(&["image", "inspect", "one"]).starts_with("[\n     {\n          \"Id\": "));

    // Bad names and unknown images: exit 125, nothing changes.
    let e = r.fails(&["tag", "one", "Bad/Name"], 125);
    assert!(e.contains("invalid reference format"), "{e}");
    let e = r.fails(&["tag", "nope", "x"], 125);
    assert!(e.contains("image not known"), "{e}");
    let o = r.run(&["image", "inspect", "one", "nope"]);
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("nope") && o.stderr.contains("image not known"), "{}", o.stderr);
    assert_eq!(serde_json::from_str::<Value>(&o.stdout).unwrap().as_array().unwrap().len(), 1);
    assert_eq!(r.images_json()[0]["Names"].as_array().unwrap().len(), 4);

    // Short names find fully qualified ones, as in podman; two matches are ambiguous.
    r.ok(&["tag", "one", "docker.io/library/demo:1.0"]);
    assert_eq!(r.id("demo:1.0"), id);
    r.ok(&["tag", "one", "localhost/solo"]);
    assert_eq!(r.ok(&["image", "inspect", "--format", "{{.Os}}", "solo"]), "linux\n");
    assert_eq!(r.ok(&["rmi", "demo:1.0"]), "Untagged: docker.io/library/demo:1.0\n");
    r.load(&image("quay.io/x/solo", "2"));
    let e = r.fails(&["image", "inspect", "solo"], 125);
    assert!(e.contains("matches several images"), "{e}");
    assert_eq!(r.id("localhost/solo"), id);

    assert_eq!(r.run(&["image", "exists", "alias:v1"]).code, 0);
    assert_eq!(r.run(&["image", "exists", "alias:v2"]).code, 1);
}

#[test]
fn save_load_round_trip() {
    let r = Rpod::new();
    r.load(&docker_archive(&[("a", &[base(), mid(), top("a")]), ("b:2", &[base(), top("b")])]));
    let (ida, idb) = (r.id("a"), r.id("b:2"));
    let want_a = r.inspect(&["a"]);

    // docker-archive to a file, both images.
    let out = r.dir.path().join("out.tar");
    assert_eq!(r.ok(&["save", "-o", out.to_str().unwrap(), "a", "b:2"]), "");
    // oci-archive to a pipe.
    let o = r.run(&["image", "save", "--format", "oci-archive", "a"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let oci = o.raw;
    // docker-archive to a pipe.
    let o = r.run(&["save", "b:2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let docker_b = o.raw;

    let r2 = Rpod::new();
    let f = r2.file("out.tar", &fs::read(&out).unwrap());
    let loaded = r2.ok(&["load", "-i", f.to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: a:latest\nLoaded image: b:2\n");
    assert_eq!((r2.id("a"), r2.id("b:2")), (ida.clone(), idb.clone()));
    let got = r2.inspect(&["a"]);
    assert_eq!(got[0]["RootFS"], want_a[0]["RootFS"]);
    assert_eq!(got[0]["Config"], want_a[0]["Config"]);
    assert_eq!(got[0]["Size"], want_a[0]["Size"]);
    // The extracted layers hold the files (the whiteout hides a/gone in the image view).
    let mid_dir = r2.root().join("layers").join(sha(&mid())).join("diff");
    assert_eq!(fs::read_to_string(mid_dir.join("c/new")).unwrap(), "new");

    let r3 = Rpod::new();
    assert_eq!(r3.run_in(&["load"], Some(&oci)).stdout, "Loaded image: a:latest\n");
    assert_eq!(r3.id("a"), ida);
    assert_eq!(r3.inspect(&["a"])[0]["Digest"], want_a[0]["Digest"]);
    assert_eq!(r3.run_in(&["load"], Some(&docker_b)).stdout, "Loaded image: b:2\n");
    assert_eq!(r3.id("b:2"), idb);

    // Unknown image: an error, and no file is left behind.
    let none = r.dir.path().join("none.tar");
    let e = r.fails(&["save", "-o", none.to_str().unwrap(), "a", "nope"], 125);
    assert!(e.contains("image not known"), "{e}");
    assert!(!none.exists());
    let leftovers: Vec<_> = fs::read_dir(r.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // An OCI archive holds one image.
    r.fails(&["save", "--format", "oci-archive", "-o", none.to_str().unwrap(), "a", "b:2"], 125);
    assert!(!none.exists());
}

#[test]
fn rmi_untag_delete_and_in_use() {
    let r = Rpod::new();
    r.load(&image("a", "a"));
    r.load(&image("b", "b"));
    let (ida, idb) = (r.id("a"), r.id("b"));
    assert_eq!(r.count("layers"), 4);
    r.ok(&["tag", "a", "alias:v1"]);

    // One of several names: only untagged.
    assert_eq!(r.ok(&["rmi", "alias:v1"]), "Untagged: alias:v1\n");
    assert_eq!(r.id("a"), ida);
    // By ID with several names: refused without -f.
    r.ok(&["tag", "a", "alias:v1"]);
    let e = r.fails(&["rmi", &ida[..12]], 125);
    assert!(e.contains("more than one tag"), "{e}");
    assert_eq!(r.ok(&["rmi", "-f", &ida[..12]]), format!("Untagged: a:latest\nUntagged: alias:v1\nDeleted: {ida}\n"));
    // Its own top layer went; the shared ones stay.
    assert_eq!(r.count("layers"), 3);

    // In use by a container: refused (podman's exit code 2) unless forced.
    let store = rpod_storage::Store::open(r.root()).unwrap();
    let ctr = store.create_container("b").unwrap();
    let e = r.fails(&["rmi", "b"], 2);
    assert!(e.contains("in use by container") && e.contains(&ctr), "{e}");
    assert_eq!(r.id("b"), idb);
    assert_eq!(r.images_json()[0]["Containers"], 1);
    assert_eq!(r.ok(&["image", "rm", "-f", "b"]), format!("Untagged: b:latest\nDeleted: {idb}\n"));
    assert!(r.images_json().is_empty());
    // The container keeps its layers.
    assert_eq!(r.count("layers"), 3);
    store.delete_container(&ctr).unwrap();

    // Unknown images: exit 1 (podman), or ignored with -i.
    let e = r.fails(&["rmi", "nope"], 1);
    assert!(e.contains("image not known"), "{e}");
    assert_eq!(r.ok(&["rmi", "-i", "nope"]), "");

    // Layers only a removed container used go with a prune.
    assert_eq!(r.ok(&["image", "prune", "-f"]), "");
    r.assert_empty();
}

#[test]
fn prune_dangling_and_all() {
    let r = Rpod::new();
    r.load(&image("x", "1"));
    let old = r.id("x");
    // Loading another image under the same name leaves the first one dangling.
    r.load(&image("x", "2"));
    let new = r.id("x");
    assert_ne!(old, new);
    let t = r.ok(&["images"]);
    assert!(t.lines().any(|l| l.starts_with("<none>") && l.contains(&old[..12])), "{t}");
    r.load(&image("kept", "3"));

    // Prune without -f asks, and "no" (or EOF) keeps everything.
    let o = r.run_in(&["image", "prune"], Some(b"n\n"));
    assert_eq!((o.code, o.stdout.as_str()), (0, ""));
    assert!(o.stderr.contains("Are you sure"), "{}", o.stderr);
    assert_eq!(r.images_json().len(), 3);

    let o = r.run_in(&["image", "prune"], Some(b"y\n"));
    assert_eq!((o.code, o.stdout.as_str()), (0, format!("{old}\n").as_str()), "{}", o.stderr);
    assert_eq!(r.images_json().len(), 2);
    assert_eq!(r.count("layers"), 4);

    // -a: every image no container uses.
    let store = rpod_storage::Store::open(r.root()).unwrap();
    let ctr = store.create_container("kept").unwrap();
    let kept = r.id("kept");
    assert_eq!(r.ok(&["image", "prune", "-a", "-f"]), format!("{new}\n"));
    assert_eq!(r.ok(&["images", "-q", "--no-trunc"]), format!("sha256:{kept}\n"));
    assert_eq!(r.count("layers"), 3);
    store.delete_container(&ctr).unwrap();
    assert_eq!(r.ok(&["rmi", "-a"]), format!("Untagged: kept:latest\nDeleted: {kept}\n"));
    r.assert_empty();
}

#[test]
fn bad_input_imports_nothing() {
    let r = Rpod::new();
    let good = image("one", "1");

    // Truncated in the middle of a layer.
    let e = r.fails(&["load", "-i", r.file("trunc.tar", &good[..good.len() / 2]).to_str().unwrap()], 125);
    assert!(e.contains("trunc.tar"), "{e}");
    r.assert_empty();

    // Not a tar at all, on stdin.
    let o = r.run_in(&["load"], Some(&b"this is not an archive\n".repeat(100)));
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert_eq!(o.stderr.lines().collect::<Vec<_>>(), ["Error: loading from stdin: not a tar archive (docker-archive or oci-archive, optionally gzip- or zstd-compressed)"]);
    assert_eq!(o.stdout, "");
    r.assert_empty();

    // A layer whose content does not match the config's diff ID.
    let cfg = config(&[base(), top("x")], "lie");
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "c.json", &cfg);
    add(&mut b, "l1/layer.tar", &base());
    add(&mut b, "l2/layer.tar", &top("y"));
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(
            &serde_json::json!([{"Config": "c.json", "RepoTags": ["lie"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}]),
        )
        .unwrap(),
    );
    let e = r.fails(&["load", "-i", r.file("lie.tar", &b.into_inner().unwrap()).to_str().unwrap()], 125);
    assert!(e.contains("digest mismatch"), "{e}");
    r.assert_empty();

    // Random bytes; gzip of garbage.
    let junk: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let e = r.fails(&["load", "-i", r.file("junk.tar", &junk).to_str().unwrap()], 125);
    assert!(e.contains("junk.tar: not a tar archive"), "{e}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&junk).unwrap();
    let e = r.fails(&["load", "-i", r.file("junk.tar.gz", &gz.finish().unwrap()).to_str().unwrap()], 125);
    assert!(e.contains("not a tar archive"), "{e}");
    let e = r.fails(&["load", "-i", r.file("empty.tar", b"").to_str().unwrap()], 125);
    assert!(e.contains("empty"), "{e}");
    r.assert_empty();

    // A tar that is neither format; a missing file; a missing image to save.
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "hello.txt", b"hi");
    let e = r.fails(&["load", "-i", r.file("other.tar", &b.into_inner().unwrap()).to_str().unwrap()], 125);
    assert!(e.contains("neither manifest.json"), "{e}");
    let e = r.fails(&["load", "-i", "/nonexistent/x.tar"], 125);
    assert!(e.contains("/nonexistent/x.tar"), "{e}");
    r.assert_empty();

    // The good archive still loads after all that.
    assert_eq!(r.load(&good), "Loaded image: one:latest\n");
}

#[test]
fn registry_pull_as_a_user_would() {
    // A reference that does not parse never reaches the network.
    let r = Rpod::new();
    let e = r.fails(&["pull", "Not/Valid"], 125);
    assert!(e.contains("invalid reference format"), "{e}");
    let e = r.fails(&["logout", "localhost:1"], 125);
    assert!(e.contains("not logged into"), "{e}");

    let Some(reg) = Registry::start(r.dir.path()) else { return };
    // Save an image, push it with skopeo, pull it into a fresh store: same image.
    r.load(&image("one", "1"));
    let id = r.id("one");
    let archive = r.dir.path().join("one.tar");
    r.ok(&["save", "--format", "oci-archive", "-o", archive.to_str().unwrap(), "one"]);
    let dest = format!("docker://127.0.0.1:{}/test/one:v1", reg.port);
    let src = format!("oci-archive:{}", archive.display());
    let o = Command::new("skopeo").args(["copy", "--dest-tls-verify=false", &src, &dest]).output().unwrap();
    assert!(o.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&o.stderr));

    let fresh = Rpod::new();
    let name = format!("127.0.0.1:{}/test/one:v1", reg.port);
    let e = fresh.fails(&["pull", &name], 125);
    assert!(!e.is_empty(), "a plain-HTTP registry needs --tls-verify=false");
    let out = fresh.ok(&["pull", "--tls-verify=false", "-q", &name]);
    assert_eq!(out.trim(), id, "pulled image has the saved image's ID");
    assert!(fresh.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).contains(&name));
    // Pulling again is a no-op that prints the same ID.
    assert_eq!(fresh.ok(&["pull", "--tls-verify=false", "-q", &name]).trim(), id);
}

/// Debian's docker-registry on a free loopback port, killed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Registry {
    fn start(dir: &std::path::Path) -> Option<Registry> {
        let require = common::required();
        for tool in ["/usr/bin/docker-registry", "/usr/bin/skopeo"] {
            if !std::path::Path::new(tool).exists() {
                assert!(!require, "{tool} is missing (scripts/setup.sh installs it)");
                eprintln!("!!!!!!!! SKIP registry_pull_as_a_user_would: {tool} is missing !!!!!!!!");
                return None;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.join("registry.yml");
        let data = dir.join("registry-data");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reg = Registry { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(reg);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not start on port {port}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn version_and_usage_errors() {
    let r = Rpod::new();
    let v = r.ok(&["version"]);
    assert!(v.starts_with(&format!("Version:      {}\n", env!("CARGO_PKG_VERSION"))), "{v}");
    let j: Value = serde_json::from_str(&r.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(j["Client"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r.ok(&["version", "--format", "{{.Client.Version}}"]).trim(), env!("CARGO_PKG_VERSION"));
    // An unknown command or flag is exit 125, like podman.
    assert_eq!(r.run(&["frobnicate"]).code, 125);
    assert_eq!(r.run(&["images", "--bogus"]).code, 125);
    assert_eq!(r.run(&["--log-level", "loud", "images"]).code, 125);
    assert_eq!(r.run(&["save", "--format", "tgz", "x"]).code, 125);
    // --log-level debug logs to stderr only.
    let o = r.run(&["--log-level", "debug", "images", "-q"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""));
    assert!(o.stderr.contains("opening store"), "{}", o.stderr);
}
