//! Image references: `[registry[:port]/]repository[:tag][@digest]`, with the Docker Hub
//! defaults (`docker.io`, `library/`, `latest`).

use std::fmt;

use crate::digest::Digest;

use super::RegistryError;

/// The registry a reference without one names.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that serves the API of `docker.io`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` (`docker.io` by default).
    pub registry: String,
    /// The repository path (`library/alpine`).
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// The manifest digest, if pinned.
    pub digest: Option<Digest>,
}

fn bad(reference: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::InvalidReference { reference: reference.to_owned(), reason: reason.into() }
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or dashes.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut sep = String::new();
    for ch in c.chars() {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            if !(sep.is_empty() || sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-')) {
                return false;
            }
            sep.clear();
        } else if matches!(ch, '.' | '_' | '-') {
            sep.push(ch);
        } else {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

impl Reference {
    /// Parses a reference (an optional `docker://` prefix is accepted). Anything that does
    /// not parse is an [`RegistryError::InvalidReference`] saying why.
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let input = s;
        let s = s.strip_prefix("docker://").unwrap_or(s);
        if s.is_empty() {
            return Err(bad(input, "empty reference"));
        }
        if s.len() > 4096 {
            return Err(bad(input, "too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let d = Digest::parse(d).map_err(|_| bad(input, format!("invalid digest {d:?}")))?;
                (r, Some(d))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(bad(input, format!("invalid tag {t:?}")));
                }
                (&rest[..last_slash + i], Some(t.to_owned()))
            }
            None => (rest, None),
        };
        let (registry, repo) = match name.split_once('/') {
            Some((first, repo)) if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') => {
                if !valid_host(first) {
                    return Err(bad(input, format!("invalid registry host {first:?}")));
                }
                (first.to_owned(), repo.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
            _ => registry,
        };
        if repo.is_empty() {
            return Err(bad(input, "no repository name"));
        }
        for c in repo.split('/') {
            if !valid_component(c) {
                return Err(bad(
                    input,
                    format!("invalid repository name component {c:?} (lowercase letters, digits and . _ - only)"),
                ));
            }
        }
        let repository =
            if registry == DEFAULT_REGISTRY && !repo.contains('/') { format!("library/{repo}") } else { repo };
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_owned()) } else { tag };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The host (and port) whose API serves this registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What `/v2/<repo>/manifests/<here>` takes: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The name the pulled image gets in the store: `registry/repo:tag`, or
    /// `registry/repo@digest` when pinned by digest only.
    pub fn store_name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}/{}:{t}", self.registry, self.repository),
            (None, Some(d)) => format!("{}/{}@{d}", self.registry, self.repository),
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults() {
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.store_name(), "docker.io/library/alpine:latest");
        let r = Reference::parse("user/app:1.0").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("docker.io", "user/app"));
        assert_eq!(r.tag.as_deref(), Some("1.0"));
    }

    #[test]
    fn hosts_ports_digests() {
        let r = Reference::parse("127.0.0.1:5000/test/img:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "test/img");
        assert_eq!(r.manifest_ref(), "v1");
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("localhost/a/b@{d}")).unwrap();
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d.to_string());
        assert_eq!(r.store_name(), format!("localhost/a/b@{d}"));
        let r = Reference::parse(&format!("docker://quay.io/x/y:t@{d}")).unwrap();
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.to_string(), format!("quay.io/x/y:t@{d}"));
        assert_eq!(Reference::parse("[::1]:5000/a").unwrap().registry, "[::1]:5000");
    }

    #[test]
    fn invalid() {
        for s in ["", "UPPER", "a/b:", "a:b:c", "a@sha256:zz", "host:99999999/a", "a//b", "-a", "a/b:-x", "a b", ":tag"]
        {
            let e = Reference::parse(s).unwrap_err();
            assert!(matches!(e, RegistryError::InvalidReference { .. }), "{s}: {e}");
            assert!(e.to_string().contains("invalid image reference"), "{e}");
        }
    }
}
