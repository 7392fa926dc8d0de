//! Pull tests against a real local registry (Debian's `docker-registry`, started per test
//! on a loopback port and killed on drop), with test images built here as OCI layouts and
//! pushed with Debian's `skopeo`. Without those tools (and no way to install them) the
//! tests skip loudly, unless `RPOD_REQUIRE_ROOT=1`, when they fail.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rpod_storage::registry::{self, Credentials, LoginOptions, PullOptions, RegistryError};
use rpod_storage::{Digest, Error, Store};
use sha2::{Digest as _, Sha256};

// ------------------------------------------------------------------ tools

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether docker-registry, skopeo, htpasswd and openssl are there (installing them with
/// apt-get once if not). False means: skip (the reason is printed); with
/// RPOD_REQUIRE_ROOT=1 a missing tool fails the test instead.
fn tools(test: &str) -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let res = OK.get_or_init(|| {
        let missing = |b: &str| if b == "docker-registry" { !Path::new(REGISTRY_BIN).exists() } else { !have(b) };
        let need = ["docker-registry", "skopeo", "htpasswd", "openssl"];
        if need.iter().any(|b| missing(b)) {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-q", "docker-registry", "skopeo", "apache2-utils", "openssl"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let still: Vec<&str> = need.iter().filter(|b| missing(b)).copied().collect();
        if still.is_empty() {
            Ok(())
        } else {
            Err(format!("missing and not installable: {}", still.join(", ")))
        }
    });
    match res {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("RPOD_REQUIRE_ROOT").as_deref() == Ok("1") {
                panic!("{test}: {why} (RPOD_REQUIRE_ROOT=1)");
            }
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------ the registry

enum Auth {
    None,
    /// An htpasswd file.
    Htpasswd(PathBuf),
    /// Token auth: realm URL, service, issuer, root cert bundle.
    Token {
        realm: String,
        cert: PathBuf,
    },
}

const SERVICE: &str = "rpod-test-registry";
const ISSUER: &str = "rpod-test-issuer";

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd(p) => format!("auth:\n  htpasswd:\n    realm: rpod-test\n    path: {}\n", p.display()),
            Auth::Token { realm, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, cfg).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        wait_port(port);
        Registry { child, port, _dir: dir }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ test images

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

/// A layer tar: directories end with '/', other entries are files.
fn layer(ents: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in ents {
        if let Some(d) = p.strip_suffix('/') {
            let mut h = header(tar::EntryType::Directory, 0);
            b.append_data(&mut h, d, &[][..]).unwrap();
        } else {
            let mut h = header(tar::EntryType::Regular, c.len() as u64);
            b.append_data(&mut h, p, *c).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Incompressible bytes (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Comp {
    Gzip,
    Zstd,
}

fn compress(b: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(b, 3).unwrap(),
    }
}

/// Three layers: a base, one whiting out a base file, and a top one with `tag` in it.
fn test_layers(tag: &str) -> Vec<Vec<u8>> {
    vec![
        layer(&[
            ("etc/", b""),
            ("etc/hostname", b"base\n"),
            ("etc/old", b"old\n"),
            ("bin/", b""),
            ("bin/tool", b"#!x\n"),
        ]),
        layer(&[("etc/", b""), ("etc/.wh.old", b""), ("etc/new", b"new\n")]),
        layer(&[("etc/", b""), ("etc/tag", tag.as_bytes())]),
    ]
}

/// The OCI layout the test images are written into.
struct Layout {
    dir: PathBuf,
}

struct Image {
    manifest: serde_json::Value,
    config_digest: String,
    diff_ids: Vec<String>,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_owned() }
    }

    fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        fs::write(self.dir.join("blobs/sha256").join(&d), data).unwrap();
        format!("sha256:{d}")
    }

    /// Writes an image; returns its manifest descriptor (with platform) and facts.
    fn image(&self, layers: &[Vec<u8>], comp: Comp, arch: &str) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha(l))).collect();
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = self.blob(&cfg);
        let mt = match comp {
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        let descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                let b = compress(l, comp);
                serde_json::json!({"mediaType": mt, "digest": self.blob(&b), "size": b.len()})
            })
            .collect();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": cfg.len()},
            "layers": descs,
        }))
        .unwrap();
        let manifest = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.blob(&m), "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"},
        });
        Image { manifest, config_digest, diff_ids }
    }

    /// An image index over `manifests`; returns its descriptor.
    fn index(&self, manifests: &[&Image]) -> serde_json::Value {
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests.iter().map(|i| i.manifest.clone()).collect::<Vec<_>>(),
        }))
        .unwrap();
        serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": self.blob(&idx), "size": idx.len()})
    }

    /// Names `desc` `tag` in index.json (adding to what is there).
    fn tag(&self, tag: &str, desc: &serde_json::Value) {
        let p = self.dir.join("index.json");
        let mut index = fs::read(&p)
            .ok()
            .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
            .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
        let mut d = desc.clone();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        index["manifests"].as_array_mut().unwrap().push(d);
        fs::write(p, serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// `skopeo copy` of `oci:<layout>:<tag>` to `docker://<host>/<repo>:<tag>`.
fn skopeo_push(layout: &Layout, tag: &str, host: &str, repo: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.dir.display()))
        .arg(format!("docker://{host}/{repo}:{tag}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn tmpstore() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("storage")).unwrap();
    (dir, s)
}

fn insecure() -> PullOptions {
    PullOptions {
        tls_verify: false,
        progress: false,
        auth_file: Some(PathBuf::from("/nonexistent/auth.json")),
        ..Default::default()
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Checks the pulled image: its ID, its layers' media types, and the extracted files.
fn check_image(s: &Store, id: &str, img: &Image, mt_suffix: &str, tag: &str) {
    assert_eq!(format!("sha256:{id}"), img.config_digest);
    let rec = s.image(id).unwrap();
    let diff: Vec<String> = rec.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(diff, img.diff_ids);
    for l in &rec.layers {
        assert!(l.media_type.ends_with(mt_suffix), "{}", l.media_type);
        assert!(s.has_blob(&l.blob));
    }
    let d = |i: usize| s.layer_diff(&rec.layers[i].diff_id);
    assert_eq!(fs::read(d(0).join("etc/hostname")).unwrap(), b"base\n");
    // The whiteout of etc/old became an overlay whiteout (a 0/0 char device) as root, or
    // stays a marker file in user-xattr mode; either way the layer records it.
    let wh = fs::symlink_metadata(d(1).join("etc/old")).map(|m| m.file_type().is_char_device()).unwrap_or(false)
        || d(1).join("etc/.wh.old").exists();
    assert!(wh, "whiteout missing in layer 1");
    assert_eq!(fs::read(d(1).join("etc/new")).unwrap(), b"new\n");
    assert_eq!(fs::read(d(2).join("etc/tag")).unwrap(), tag.as_bytes());
    assert!(!s.root().join("blobs/partial").exists() || count(&s.root().join("blobs/partial")) == 0);
}

fn count(p: &Path) -> usize {
    fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

// ------------------------------------------------------------------ tests

#[test]
fn single_platform_gzip_zstd_and_docker_schema2() {
    if !tools("single_platform_gzip_zstd_and_docker_schema2") {
        return;
    }
    let reg = Registry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let lay = Layout::new(&work.path().join("oci"));
    let gz = lay.image(&test_layers("gz"), Comp::Gzip, host_arch());
    let zs = lay.image(&test_layers("zst"), Comp::Zstd, host_arch());
    lay.tag("gz", &gz.manifest);
    lay.tag("zst", &zs.manifest);
    skopeo_push(&lay, "gz", &reg.host(), "test/img", &["--preserve-digests"]);
    skopeo_push(&lay, "zst", &reg.host(), "test/img", &["--preserve-digests"]);
    lay.tag("v2s2", &gz.manifest);
    skopeo_push(&lay, "v2s2", &reg.host(), "test/img", &["--format", "v2s2"]);

    let (_d, s) = tmpstore();
    let id = registry::pull(&s, &format!("{}/test/img:gz", reg.host()), &insecure()).unwrap();
    check_image(&s, &id, &gz, "+gzip", "gz");
    assert_eq!(s.image(&format!("{}/test/img:gz", reg.host())).unwrap().id, id);

    let id2 = registry::pull(&s, &format!("{}/test/img:zst", reg.host()), &insecure()).unwrap();
    check_image(&s, &id2, &zs, "+zstd", "zst");
    // The base layer (same tar) is shared; the compressed blobs differ.
    assert_eq!(s.image(&id).unwrap().layers[0].diff_id, s.image(&id2).unwrap().layers[0].diff_id);

    // Docker schema 2 (converted by skopeo): same config, Docker media types.
    let id3 = registry::pull(&s, &format!("docker://{}/test/img:v2s2", reg.host()), &insecure()).unwrap();
    assert_eq!(id3, id);
    let rec = s.image(&id3).unwrap();
    assert_eq!(rec.manifest_media_type, "application/vnd.docker.distribution.manifest.v2+json");
    assert!(rec.names.contains(&format!("{}/test/img:v2s2", reg.host())), "{:?}", rec.names);

    // Pull by digest, and a second pull of the same image.
    let by_digest = format!("{}/test/img@{}", reg.host(), gz.manifest["digest"].as_str().unwrap());
    assert_eq!(registry::pull(&s, &by_digest, &insecure()).unwrap(), id);
    assert_eq!(registry::pull(&s, &format!("{}/test/img:gz", reg.host()), &insecure()).unwrap(), id);

    // Errors: an unknown tag, a reference that does not parse, TLS verification against
    // a plain-HTTP registry.
    let e = registry::pull(&s, &format!("{}/test/img:nope", reg.host()), &insecure()).unwrap_err();
    assert!(matches!(e, RegistryError::NotFound(_)), "{e}");
    let e = registry::pull(&s, "Bad//Ref:", &insecure()).unwrap_err();
    assert!(e.to_string().starts_with("invalid image reference"), "{e}");
    let strict = PullOptions { tls_verify: true, ..insecure() };
    let e = registry::pull(&s, &format!("{}/test/img:gz", reg.host()), &strict).unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e}");
}

#[test]
fn multi_platform_picks_host_arch() {
    if !tools("multi_platform_picks_host_arch") {
        return;
    }
    let reg = Registry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let lay = Layout::new(&work.path().join("oci"));
    let amd = lay.image(&test_layers("amd64"), Comp::Gzip, "amd64");
    let arm = lay.image(&test_layers("arm64"), Comp::Gzip, "arm64");
    let idx = lay.index(&[&amd, &arm]);
    lay.tag("multi", &idx);
    skopeo_push(&lay, "multi", &reg.host(), "test/multi", &["--all", "--preserve-digests"]);

    let (_d, s) = tmpstore();
    let r = format!("{}/test/multi:multi", reg.host());
    let id = registry::pull(&s, &r, &insecure()).unwrap();
    let (mine, other, other_arch) = if host_arch() == "arm64" { (&arm, &amd, "amd64") } else { (&amd, &arm, "arm64") };
    check_image(&s, &id, mine, "+gzip", host_arch());
    // Another architecture on request.
    let opts = PullOptions { arch: Some(other_arch.to_owned()), ..insecure() };
    let id2 = registry::pull(&s, &r, &opts).unwrap();
    check_image(&s, &id2, other, "+gzip", other_arch);
    let opts = PullOptions { arch: Some("s390x".to_owned()), ..insecure() };
    let e = registry::pull(&s, &r, &opts).unwrap_err();
    assert!(matches!(e, RegistryError::NoMatchingPlatform { .. }), "{e}");
}

fn htpasswd(dir: &Path, user: &str, pass: &str) -> PathBuf {
    let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output().unwrap();
    assert!(out.status.success());
    let p = dir.join("htpasswd");
    fs::write(&p, out.stdout).unwrap();
    p
}

#[test]
fn basic_auth_login_logout() {
    if !tools("basic_auth_login_logout") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start(Auth::Htpasswd(htpasswd(work.path(), "alice", "s3cret")));
    let lay = Layout::new(&work.path().join("oci"));
    let img = lay.image(&test_layers("basic"), Comp::Gzip, host_arch());
    lay.tag("v1", &img.manifest);
    skopeo_push(&lay, "v1", &reg.host(), "test/basic", &["--dest-creds", "alice:s3cret"]);

    let (_d, s) = tmpstore();
    let r = format!("{}/test/basic:v1", reg.host());
    let authfile = work.path().join("auth/auth.json");
    let opts = PullOptions { auth_file: Some(authfile.clone()), ..insecure() };
    // Anonymous: refused.
    let e = registry::pull(&s, &r, &opts).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    // Wrong password: login fails and writes nothing.
    let lo = LoginOptions { tls_verify: false, auth_file: Some(authfile.clone()) };
    let e = registry::login(&reg.host(), "alice", "wrong", &lo).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(!authfile.exists());
    // Login, then pull with the stored credentials.
    assert_eq!(registry::login(&reg.host(), "alice", "s3cret", &lo).unwrap(), authfile);
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&authfile).unwrap()).unwrap();
    assert_eq!(
        v["auths"][reg.host()]["auth"],
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret").as_str()
    );
    let id = registry::pull(&s, &r, &opts).unwrap();
    check_image(&s, &id, &img, "+gzip", "basic");
    // Logout: refused again. Explicit credentials work without the file.
    assert_eq!(registry::logout(Some(&reg.host()), Some(&authfile)).unwrap(), 1);
    s.remove_image(&id, true).unwrap();
    let e = registry::pull(&s, &r, &opts).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let creds = PullOptions { credentials: Some(Credentials::new("alice", "s3cret")), ..opts.clone() };
    assert_eq!(registry::pull(&s, &r, &creds).unwrap(), id);
}

// ------------------------------------------------------------------ a tiny HTTP server

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    raw_head: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut raw_head = Vec::new();
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if line.is_empty() {
        return None;
    }
    raw_head.extend_from_slice(line.as_bytes());
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        raw_head.extend_from_slice(h.as_bytes());
        if h == "\r\n" || h == "\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some(Request { method, path, headers, raw_head })
}

fn respond(mut w: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = w.write_all(out.as_bytes());
    let _ = w.write_all(body);
}

/// Serves `handler` on a loopback port, one request per connection, in threads.
fn serve(handler: impl Fn(Request, TcpStream) + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let h = handler.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                if let Some(req) = read_request(&mut r) {
                    h(req, c);
                }
            });
        }
    });
    port
}

// ------------------------------------------------------------------ bearer tokens

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn query(path: &str) -> HashMap<String, String> {
    let q = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    if let Ok(x) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                }
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
            (k.to_owned(), String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

/// A token issuer: Basic auth `user:pass` required; JWTs signed RS256 with `key`, carrying
/// `cert` in `x5c`. Counts the tokens it issued.
fn token_server(dir: &Path, user: &'static str, pass: &'static str) -> (u16, PathBuf, Arc<AtomicU64>) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rpod-test-issuer"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap().stdout;
    let x5c = base64::engine::general_purpose::STANDARD.encode(der);
    let issued = Arc::new(AtomicU64::new(0));
    let issued2 = issued.clone();
    let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
    let port = serve(move |req, c| {
        if req.headers.get("authorization") != Some(&want) {
            respond(&c, "401 Unauthorized", &[], br#"{"details":"bad credentials"}"#);
            return;
        }
        let q = query(&req.path);
        let access: Vec<serde_json::Value> = q
            .get("scope")
            .map(|s| {
                s.split(' ')
                    .filter_map(|one| {
                        let mut p = one.splitn(3, ':');
                        let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let hdr = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": user, "aud": q.get("service").cloned().unwrap_or_default(),
            "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("{now}-{}", rand_u64()),
            "access": access,
        });
        let input = format!("{}.{}", b64url(hdr.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let mut sign = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        sign.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let sig = sign.wait_with_output().unwrap().stdout;
        let jwt = format!("{input}.{}", b64url(&sig));
        issued2.fetch_add(1, Ordering::SeqCst);
        // `access_token` (the OAuth2 name) only: the client must accept it too.
        let body = serde_json::json!({"access_token": jwt, "expires_in": 600}).to_string();
        respond(&c, "200 OK", &[("Content-Type", "application/json".to_owned())], body.as_bytes());
    });
    (port, cert, issued)
}

fn rand_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst) ^ u64::from(std::process::id()) << 32
}

#[test]
fn bearer_token_flow() {
    if !tools("bearer_token_flow") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (tport, cert, issued) = token_server(work.path(), "bob", "t0ken");
    let reg = Registry::start(Auth::Token { realm: format!("http://127.0.0.1:{tport}/token"), cert });
    let lay = Layout::new(&work.path().join("oci"));
    let img = lay.image(&test_layers("bearer"), Comp::Zstd, host_arch());
    lay.tag("v1", &img.manifest);
    skopeo_push(&lay, "v1", &reg.host(), "test/bearer", &["--dest-creds", "bob:t0ken", "--preserve-digests"]);

    let (_d, s) = tmpstore();
    let r = format!("{}/test/bearer:v1", reg.host());
    let authfile = work.path().join("auth.json");
    let opts = PullOptions { auth_file: Some(authfile.clone()), ..insecure() };
    let e = registry::pull(&s, &r, &opts).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let lo = LoginOptions { tls_verify: false, auth_file: Some(authfile.clone()) };
    assert!(registry::login(&reg.host(), "bob", "nope", &lo).is_err());
    registry::login(&reg.host(), "bob", "t0ken", &lo).unwrap();
    let before = issued.load(Ordering::SeqCst);
    let id = registry::pull(&s, &r, &opts).unwrap();
    check_image(&s, &id, &img, "+zstd", "bearer");
    // One token for the repository scope, shared by the parallel downloads.
    assert_eq!(issued.load(Ordering::SeqCst) - before, 1);
    assert_eq!(registry::logout(None, Some(&authfile)).unwrap(), 1);
}

// ------------------------------------------------------------------ kill -9 and resume

/// A logging reverse proxy in front of the registry: one request per connection. While
/// `stall` is set, the response for a path containing `stall_path` stops after `limit`
/// bytes (the connection is held open).
/// Request lines and their `Range` headers.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Proxy {
    port: u16,
    log: Log,
    stall: Arc<AtomicBool>,
}

fn proxy(upstream: u16, stall_path: String, limit: usize) -> Proxy {
    let log = Arc::new(Mutex::new(Vec::new()));
    let stall = Arc::new(AtomicBool::new(true));
    let (log2, stall2) = (log.clone(), stall.clone());
    let port = serve(move |req, mut c| {
        log2.lock().unwrap().push((format!("{} {}", req.method, req.path), req.headers.get("range").cloned()));
        let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        let head = String::from_utf8_lossy(&req.raw_head).into_owned();
        let mut out = String::new();
        for line in head.split_inclusive("\r\n") {
            if line.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            if line == "\r\n" {
                out.push_str("Connection: close\r\n");
            }
            out.push_str(line);
        }
        up.write_all(out.as_bytes()).unwrap();
        let stalling = stall2.load(Ordering::SeqCst) && req.path.contains(&stall_path);
        let mut sent = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match up.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = if stalling { n.min(limit.saturating_sub(sent)) } else { n };
            if c.write_all(&buf[..n]).is_err() {
                return;
            }
            sent += n;
            if stalling && sent >= limit {
                // Hold the connection until the client goes away.
                let _ = c.flush();
                let mut one = [0u8; 1];
                let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
                let _ = c.read(&mut one);
                return;
            }
        }
    });
    Proxy { port, log, stall }
}

/// Runs only as the child of `killed_pull_resumes`: pulls the reference in the env var.
#[test]
fn child_pull_helper() {
    let (Some(root), Some(r)) = (std::env::var_os("RPOD_PULL_CHILD_ROOT"), std::env::var("RPOD_PULL_CHILD_REF").ok())
    else {
        return;
    };
    let s = Store::open(root).unwrap();
    registry::pull(&s, &r, &insecure()).unwrap();
}

#[test]
fn killed_pull_resumes() {
    if !tools("killed_pull_resumes") {
        return;
    }
    let reg = Registry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let lay = Layout::new(&work.path().join("oci"));
    let big = noise(6 << 20, 42);
    let mut layers = test_layers("resume");
    layers.insert(1, layer(&[("data/", b""), ("data/big", &big)]));
    let img = lay.image(&layers, Comp::Gzip, host_arch());
    lay.tag("v1", &img.manifest);
    skopeo_push(&lay, "v1", &reg.host(), "test/resume", &["--preserve-digests"]);
    let big_blob = sha(&compress(&layers[1], Comp::Gzip));
    let px = proxy(reg.port, big_blob.clone(), 2 << 20);

    let (_d, s) = tmpstore();
    let root = s.root().to_owned();
    let r = format!("127.0.0.1:{}/test/resume:v1", px.port);
    let partial = root.join("blobs/partial").join(&big_blob);
    let others: Vec<Digest> = s_blobs(&img, &lay).into_iter().filter(|d| d.hex() != big_blob).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pull_helper", "--nocapture"])
        .env("RPOD_PULL_CHILD_ROOT", &root)
        .env("RPOD_PULL_CHILD_REF", &r)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the big blob is half there and every other blob is complete.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if got >= 1 << 20 && others.iter().all(|d| s.has_blob(d)) {
            std::thread::sleep(Duration::from_millis(300));
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the child pull ended early");
        assert!(Instant::now() < deadline, "the child pull never got halfway");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial_len = fs::metadata(&partial).unwrap().len();
    let size = img_layer_size(&lay, &big_blob);
    assert!(partial_len > 0 && partial_len < size, "{partial_len} of {size}");
    assert!(s.images().unwrap().is_empty());

    // Pull again (a new Store::open, as a new process would) without the stall.
    px.stall.store(false, Ordering::SeqCst);
    let n = px.log.lock().unwrap().len();
    let s = Store::open(&root).unwrap();
    let id = registry::pull(&s, &r, &insecure()).unwrap();
    check_image_layers(&s, &id, &img);
    let rec = s.image(&id).unwrap();
    assert_eq!(fs::read(s.layer_diff(&rec.layers[1].diff_id).join("data/big")).unwrap(), big);
    assert!(!partial.exists());
    let log: Vec<(String, Option<String>)> = px.log.lock().unwrap()[n..].to_vec();
    let blob_gets: Vec<&(String, Option<String>)> = log.iter().filter(|(l, _)| l.contains("/blobs/")).collect();
    assert_eq!(blob_gets.len(), 1, "only the unfinished blob is fetched again: {log:?}");
    assert!(blob_gets[0].0.contains(&big_blob));
    assert_eq!(blob_gets[0].1.as_deref(), Some(format!("bytes={partial_len}-").as_str()), "{log:?}");
}

/// The digests of every blob of an image written by `Layout::image` (config and layers).
fn s_blobs(img: &Image, lay: &Layout) -> Vec<Digest> {
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(lay.dir.join("blobs/sha256").join(&img.manifest["digest"].as_str().unwrap()[7..])).unwrap(),
    )
    .unwrap();
    let mut out = vec![Digest::parse(m["config"]["digest"].as_str().unwrap()).unwrap()];
    for l in m["layers"].as_array().unwrap() {
        out.push(Digest::parse(l["digest"].as_str().unwrap()).unwrap());
    }
    out
}

fn img_layer_size(lay: &Layout, hex: &str) -> u64 {
    fs::metadata(lay.dir.join("blobs/sha256").join(hex)).unwrap().len()
}

fn check_image_layers(s: &Store, id: &str, img: &Image) {
    assert_eq!(format!("sha256:{id}"), img.config_digest);
    let rec = s.image(id).unwrap();
    let diff: Vec<String> = rec.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(diff, img.diff_ids);
    for l in &rec.layers {
        assert!(s.has_layer(&l.diff_id));
    }
}

// ------------------------------------------------------------------ a lying registry

#[test]
fn digest_mismatch_imports_nothing() {
    // A fake registry: no external tools needed.
    let layers = test_layers("fake");
    let blobs: Vec<Vec<u8>> = layers.iter().map(|l| compress(l, Comp::Gzip)).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha(l))).collect();
    let cfg = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(), "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let descs: Vec<serde_json::Value> = blobs
        .iter()
        .map(|b| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", sha(b)), "size": b.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha(&cfg)), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let mut content: HashMap<String, Vec<u8>> = HashMap::new();
    content.insert(format!("sha256:{}", sha(&cfg)), cfg.clone());
    for (i, b) in blobs.iter().enumerate() {
        let mut served = b.clone();
        if i == 2 {
            // Same size, one byte flipped.
            let k = served.len() / 2;
            served[k] ^= 0xff;
        }
        content.insert(format!("sha256:{}", sha(b)), served);
    }
    let manifest2 = manifest.clone();
    let port = serve(move |req, c| {
        if req.path == "/v2/" {
            respond(&c, "200 OK", &[], b"{}");
        } else if req.path.starts_with("/v2/test/fake/manifests/") {
            let ct = ("Content-Type", "application/vnd.oci.image.manifest.v1+json".to_owned());
            respond(&c, "200 OK", &[ct], &manifest2);
        } else if let Some(d) = req.path.strip_prefix("/v2/test/fake/blobs/") {
            match content.get(d) {
                Some(b) => respond(&c, "200 OK", &[], b),
                None => respond(&c, "404 Not Found", &[], b"{}"),
            }
        } else {
            respond(&c, "404 Not Found", &[], b"{}");
        }
    });
    let (_d, s) = tmpstore();
    let e = registry::pull(&s, &format!("127.0.0.1:{port}/test/fake:v1"), &insecure()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Store(Error::DigestMismatch { .. })), "{msg}");
    assert!(msg.contains("digest mismatch") && msg.contains(&sha(&blobs[2])), "{msg}");
    assert!(s.images().unwrap().is_empty());
    assert!(s.layers().unwrap().is_empty(), "{:?}", s.layers().unwrap());
    assert_eq!(count(&s.root().join("blobs/sha256")), 0);
    assert_eq!(count(&s.root().join("blobs/partial")), 0);
}

#[test]
fn concurrent_pulls_of_shared_layers() {
    if !tools("concurrent_pulls_of_shared_layers") {
        return;
    }
    let reg = Registry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let lay = Layout::new(&work.path().join("oci"));
    // Two images sharing the base and whiteout layers (same compressed blobs).
    let a = lay.image(&test_layers("a"), Comp::Gzip, host_arch());
    let b = lay.image(&test_layers("b"), Comp::Gzip, host_arch());
    lay.tag("a", &a.manifest);
    lay.tag("b", &b.manifest);
    skopeo_push(&lay, "a", &reg.host(), "test/conc", &["--preserve-digests"]);
    skopeo_push(&lay, "b", &reg.host(), "test/conc", &["--preserve-digests"]);
    let (_d, s) = tmpstore();
    let root = s.root().to_owned();
    let ids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = ["a", "a", "b", "b"]
            .iter()
            .map(|t| {
                let (root, host) = (root.clone(), reg.host());
                // A store handle per thread, as separate processes would have.
                sc.spawn(move || {
                    let s = Store::open(&root).unwrap();
                    registry::pull(&s, &format!("{host}/test/conc:{t}"), &insecure()).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    check_image(&s, &ids[0], &a, "+gzip", "a");
    check_image(&s, &ids[2], &b, "+gzip", "b");
    assert_eq!(s.images().unwrap().len(), 2);
    assert_eq!(s.layers().unwrap().len(), 4);
}
