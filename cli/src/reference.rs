//! Image reference syntax (the distribution grammar): `[host[:port]/]path[:tag][@digest]`.

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The repository, with its registry host if any (`localhost:5000/a/b`).
    pub repository: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// The digest, if given (`sha256:<hex>`).
    pub digest: Option<String>,
}

fn is_domain_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_domain(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    host.split('.').all(is_domain_component)
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Parses a reference, with podman's messages for the common mistakes.
pub fn parse(s: &str) -> anyhow::Result<Reference> {
    let bad = |why: &str| anyhow::anyhow!("invalid reference format {s:?}: {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("digest must be sha256:<64 hex>"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Err(bad("digest must be sha256:<64 hex>"));
            }
            (r, Some(d.to_owned()))
        }
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repository, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return Err(bad("invalid tag"));
        }
    }
    if repository.len() > 255 {
        return Err(bad("repository name must not be more than 255 characters"));
    }
    let mut parts: Vec<&str> = repository.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase())
        {
            if !is_domain(first) {
                return Err(bad("invalid registry host"));
            }
            parts.remove(0);
        }
    }
    for p in &parts {
        if p.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !is_path_component(p) {
            return Err(bad("invalid repository name"));
        }
    }
    Ok(Reference { repository: repository.to_owned(), tag: tag.map(str::to_owned), digest })
}

/// Splits a stored `name:tag` into repository and tag (`<none>` when absent).
pub fn split_name(name: &str) -> (String, String) {
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[last_slash..].rfind(':') {
        Some(i) => (name[..last_slash + i].to_owned(), name[last_slash + i + 1..].to_owned()),
        None => (name.to_owned(), "<none>".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        let r = parse("localhost:5000/a/b-c:v1.2").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("localhost:5000/a/b-c", Some("v1.2")));
        assert_eq!(parse("busybox").unwrap().tag, None);
        assert!(parse("docker.io/library/a__b").is_ok());
        let d = format!("a@sha256:{}", "0".repeat(64));
        assert!(parse(&d).unwrap().digest.is_some());
    }

    #[test]
    fn bad() {
        for s in ["", "Upper", "a:", "a:-x", "-a", "a//b", "a/", "a@sha256:12", "a b", "a/B"] {
            assert!(parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn split() {
        assert_eq!(split_name("localhost:5000/a:1"), ("localhost:5000/a".to_owned(), "1".to_owned()));
        assert_eq!(split_name("localhost:5000/a"), ("localhost:5000/a".to_owned(), "<none>".to_owned()));
    }
}
