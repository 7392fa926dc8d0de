//! A blocking client for the OCI distribution API: scheme discovery, Basic and Bearer auth.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use super::auth::Credentials;
use super::RegistryError;

/// How the registry wants requests authenticated (learned from `GET /v2/`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// One registry's API endpoint.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// `https://host` or `http://host`.
    base: String,
    /// For messages.
    registry: String,
    creds: Option<Credentials>,
    scheme: Mutex<Scheme>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
}

fn agent(tls_verify: bool) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder().disable_verification(!tls_verify).build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent(format!("rpod/{}", crate::VERSION))
        .max_redirects(10)
        .build()
        .new_agent()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `WWW-Authenticate: Bearer realm="..",service="..",scope=".."` (or `Basic ...`).
fn parse_challenge(h: &str) -> Option<(Scheme, Option<String>)> {
    let h = h.trim();
    let (kind, rest) = h.split_once(' ').unwrap_or((h, ""));
    if kind.eq_ignore_ascii_case("basic") {
        return Some((Scheme::Basic, None));
    }
    if !kind.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_owned(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim().to_owned(), &v[end..])
        };
        params.insert(k, val);
        s = after.trim_start().trim_start_matches(',').trim_start();
    }
    let realm = params.remove("realm")?;
    Some((Scheme::Bearer { realm, service: params.remove("service") }, params.remove("scope")))
}

pub(crate) fn transport(url: &str, e: ureq::Error) -> RegistryError {
    RegistryError::Transport { url: url.to_owned(), message: e.to_string() }
}

/// A short error message from an error response body (`{"errors":[{"message":..}]}`).
pub(crate) fn error_message(mut resp: Response<Body>) -> String {
    let body = resp.body_mut().with_config().limit(64 * 1024).read_to_vec().unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let msgs: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    format!("{code}: {msg}").trim_matches([' ', ':']).to_owned()
                })
                .collect();
            if !msgs.is_empty() {
                return msgs.join("; ");
            }
        }
        if let Some(d) = v.get("details").and_then(|d| d.as_str()) {
            return d.to_owned();
        }
    }
    String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned()
}

impl Client {
    /// Connects to `registry` (`host[:port]` of its API): `GET /v2/` over https, and, when
    /// `tls_verify` is false, over https without verification and then plain http.
    pub(crate) fn connect(
        registry: &str,
        api_host: &str,
        tls_verify: bool,
        creds: Option<Credentials>,
    ) -> Result<Client, RegistryError> {
        let agent = agent(tls_verify);
        let mut last = None;
        let schemes: &[&str] = if tls_verify { &["https"] } else { &["https", "http"] };
        for sch in schemes {
            let base = format!("{sch}://{api_host}");
            let url = format!("{base}/v2/");
            match agent.get(&url).call() {
                Ok(resp) => {
                    let c = Client {
                        agent,
                        base,
                        registry: registry.to_owned(),
                        creds,
                        scheme: Mutex::new(Scheme::None),
                        tokens: Mutex::new(HashMap::new()),
                    };
                    c.learn(resp, &url)?;
                    return Ok(c);
                }
                Err(e) => last = Some(transport(&url, e)),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Transport {
            url: format!("{api_host}/v2/"),
            message: "no scheme tried".to_owned(),
        }))
    }

    /// Records the auth scheme from the `/v2/` answer.
    fn learn(&self, resp: Response<Body>, url: &str) -> Result<(), RegistryError> {
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            401 => {
                let ch = resp.headers().get("www-authenticate").and_then(|h| h.to_str().ok()).and_then(parse_challenge);
                match ch {
                    Some((s, _)) => {
                        *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = s;
                        Ok(())
                    }
                    None => Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        message: "401 without a usable WWW-Authenticate challenge".to_owned(),
                    }),
                }
            }
            _ => Err(RegistryError::Http { url: url.to_owned(), status, message: error_message(resp) }),
        }
    }

    fn scheme(&self) -> Scheme {
        self.scheme.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The base URL (`scheme://host`).
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Fetches a Bearer token for `scope` (None: no scope, as for a login check).
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: Option<&str>) -> Result<String, RegistryError> {
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", enc(s)));
            sep = '&';
        }
        if let Some(s) = scope {
            url.push_str(&format!("{sep}scope={}", enc(s)));
        }
        let mut req = self.agent.get(&url);
        if let Some(c) = &self.creds {
            req = req.header("Authorization", format!("Basic {}", c.encoded()));
        }
        let resp = req.call().map_err(|e| transport(&url, e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                message: format!(
                    "the token service refused {}: {}",
                    if self.creds.is_some() { "the credentials" } else { "anonymous access" },
                    error_message(resp)
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(RegistryError::Http { url, status, message: error_message(resp) });
        }
        let body = Client::read_small(resp, &url, 1 << 20)?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Transport { url: url.clone(), message: format!("token response: {e}") })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Transport { url, message: "token response has no token".to_owned() })
    }

    /// The Authorization header for a request needing `scope`, if any.
    fn authorization(&self, scope: Option<&str>) -> Result<Option<String>, RegistryError> {
        match self.scheme() {
            Scheme::None => Ok(None),
            Scheme::Basic => match &self.creds {
                Some(c) => Ok(Some(format!("Basic {}", c.encoded()))),
                None => Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    message: "the registry requires credentials (rpod login)".to_owned(),
                }),
            },
            Scheme::Bearer { realm, service } => {
                let key = scope.unwrap_or("").to_owned();
                if let Some(t) = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.fetch_token(&realm, service.as_deref(), scope)?;
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(key, t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// `GET base+path` with auth for `scope` and extra headers. A 401 with a new challenge
    /// (another scope, an expired token) is retried once with a fresh token. Any status
    /// other than 401 is returned to the caller.
    pub(crate) fn get(
        &self,
        path: &str,
        scope: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>, RegistryError> {
        let url = format!("{}{path}", self.base);
        let mut scope = scope.map(str::to_owned);
        for attempt in 0..2 {
            let mut req = self.agent.get(&url);
            if let Some(a) = self.authorization(scope.as_deref())? {
                req = req.header("Authorization", a);
            }
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let resp = req.call().map_err(|e| transport(&url, e))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let ch = resp.headers().get("www-authenticate").and_then(|h| h.to_str().ok()).and_then(parse_challenge);
            if attempt == 0 {
                if let Some((s, sc)) = ch {
                    let key = scope.clone().unwrap_or_default();
                    self.tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    let changed = s != self.scheme();
                    *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = s;
                    if sc.is_some() && sc != scope {
                        scope = sc;
                        continue;
                    }
                    if changed || matches!(self.scheme(), Scheme::Bearer { .. }) {
                        continue;
                    }
                }
            }
            let who = if self.creds.is_some() { "the credentials were refused" } else { "authentication required" };
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                message: format!("{who}: {}", error_message(resp)),
            });
        }
        Err(RegistryError::Unauthorized {
            registry: self.registry.clone(),
            message: "authentication failed".to_owned(),
        })
    }

    /// Checks that the credentials are accepted (`GET /v2/`, with a token for no scope
    /// under the Bearer scheme).
    pub(crate) fn check_login(&self) -> Result<(), RegistryError> {
        if self.creds.is_none() {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                message: "no credentials".to_owned(),
            });
        }
        let resp = self.get("/v2/", None, &[])?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(RegistryError::Http { url: format!("{}/v2/", self.base), status, message: error_message(resp) })
        }
    }

    /// Reads a small response body (manifests), at most `limit` bytes.
    pub(crate) fn read_small(resp: Response<Body>, url: &str, limit: u64) -> Result<Vec<u8>, RegistryError> {
        let mut v = Vec::new();
        let mut r = resp.into_body().into_with_config().limit(limit).reader();
        r.read_to_end(&mut v).map_err(|e| RegistryError::Transport { url: url.to_owned(), message: e.to_string() })?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn challenges() {
        let (s, scope) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(
            s,
            Scheme::Bearer {
                realm: "https://auth.docker.io/token".to_owned(),
                service: Some("registry.docker.io".to_owned())
            }
        );
        assert_eq!(scope.as_deref(), Some("repository:library/alpine:pull"));
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#).unwrap().0, Scheme::Basic);
        assert!(parse_challenge("Negotiate").is_none());
        assert_eq!(enc("repository:a/b:pull,push x"), "repository:a/b:pull%2Cpush%20x");
    }
}
