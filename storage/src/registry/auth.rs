//! Credentials in podman's `auth.json` format:
//! `{"auths": {"host:port": {"auth": base64("user:pass")}}}`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::RegistryError;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or token).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl Credentials {
    /// Builds credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials { username: username.into(), password: password.into() }
    }

    /// Parses `user:pass` (podman's `--creds`).
    pub fn parse(s: &str) -> Option<Self> {
        s.split_once(':').map(|(u, p)| Credentials::new(u, p))
    }

    /// `base64(user:pass)`, as in auth.json and the Basic scheme.
    pub fn encoded(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.username, self.password))
    }

    fn decode(s: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?;
        Credentials::parse(&String::from_utf8(raw).ok()?)
    }
}

/// The auth file podman uses: `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, else `/run/containers/<uid>/auth.json` for
/// root, else `~/.config/containers/auth.json`.
pub fn default_auth_file() -> PathBuf {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|p| p.is_absolute()) {
        return x.join("containers/auth.json");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from(format!("/run/containers/{uid}/auth.json"));
    }
    config_auth_file()
}

fn config_auth_file() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"))
        .join("containers/auth.json")
}

/// The key an auths entry is for: scheme and path stripped, Docker Hub aliases folded.
fn normalize_key(k: &str) -> String {
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        h => h.to_owned(),
    }
}

fn auth_err(path: &Path, message: impl Into<String>) -> RegistryError {
    RegistryError::AuthFile { path: path.to_owned(), message: message.into() }
}

fn read_file(path: &Path) -> Result<Option<serde_json::Value>, RegistryError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(auth_err(path, e.to_string())),
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| auth_err(path, e.to_string()))?;
    if !v.is_object() {
        return Err(auth_err(path, "not a JSON object"));
    }
    Ok(Some(v))
}

fn lookup_in(path: &Path, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let Some(v) = read_file(path)? else { return Ok(None) };
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else { return Ok(None) };
    let want = normalize_key(registry);
    // An exact key first, then any alias of it.
    let entry = auths.get(registry).or_else(|| auths.iter().find(|(k, _)| normalize_key(k) == want).map(|(_, v)| v));
    let Some(entry) = entry else { return Ok(None) };
    let Some(a) = entry.get("auth").and_then(|a| a.as_str()) else { return Ok(None) };
    Credentials::decode(a)
        .map(Some)
        .ok_or_else(|| auth_err(path, format!("the entry for {registry} is not base64(user:password)")))
}

/// The stored credentials for `registry` (`host[:port]`) from `auth_file`, or from the
/// default file (falling back to `~/.config/containers/auth.json`, as podman does).
pub fn lookup_credentials(auth_file: Option<&Path>, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    match auth_file {
        Some(p) => lookup_in(p, registry),
        None => {
            let primary = default_auth_file();
            if let Some(c) = lookup_in(&primary, registry)? {
                return Ok(Some(c));
            }
            let fallback = config_auth_file();
            if fallback != primary {
                return lookup_in(&fallback, registry);
            }
            Ok(None)
        }
    }
}

fn write_file(path: &Path, v: &serde_json::Value) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| auth_err(path, e.to_string()))?;
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| auth_err(path, e.to_string()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", crate::store::random_hex(6)));
    let res = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(|e| auth_err(path, e.to_string()))
}

/// Stores credentials for `registry` in `path` (other entries are kept).
pub fn store_credentials(path: &Path, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
    let mut v = read_file(path)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = v.as_object_mut().ok_or_else(|| auth_err(path, "not a JSON object"))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| auth_err(path, "\"auths\" is not an object"))?;
    auths.insert(registry.to_owned(), serde_json::json!({ "auth": creds.encoded() }));
    write_file(path, &v)
}

/// Removes the entries for `registry` (every entry when None) from `path`. Returns how many
/// were removed.
pub fn remove_credentials(path: &Path, registry: Option<&str>) -> Result<usize, RegistryError> {
    let Some(mut v) = read_file(path)? else { return Ok(0) };
    let Some(auths) = v.get_mut("auths").and_then(|a| a.as_object_mut()) else { return Ok(0) };
    let before = auths.len();
    match registry {
        Some(r) => {
            let want = normalize_key(r);
            auths.retain(|k, _| k != r && normalize_key(k) != want);
        }
        None => auths.clear(),
    }
    let removed = before - auths.len();
    if removed > 0 {
        write_file(path, &v)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/auth.json");
        assert_eq!(lookup_credentials(Some(&p), "r:5000").unwrap(), None);
        store_credentials(&p, "r:5000", &Credentials::new("u", "p:w")).unwrap();
        store_credentials(&p, "docker.io", &Credentials::new("a", "b")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["auths"]["r:5000"]["auth"], "dTpwOnc=");
        assert_eq!(lookup_credentials(Some(&p), "r:5000").unwrap(), Some(Credentials::new("u", "p:w")));
        assert_eq!(lookup_credentials(Some(&p), "index.docker.io").unwrap(), Some(Credentials::new("a", "b")));
        assert_eq!(remove_credentials(&p, Some("r:5000")).unwrap(), 1);
        assert_eq!(lookup_credentials(Some(&p), "r:5000").unwrap(), None);
        assert_eq!(remove_credentials(&p, None).unwrap(), 1);
        fs::write(&p, "[1]").unwrap();
        assert!(lookup_credentials(Some(&p), "r").is_err());
    }
}
