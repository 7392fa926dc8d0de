//! Before/after pictures of a namespace: links, addresses and routes (`ip -j`) and,
//! optionally, the nftables ruleset.
//!
//! Volatile fields that change without anyone touching the namespace are removed, so that
//! two snapshots of an untouched namespace compare equal: address lifetimes, route expiry,
//! nft counters, and carrier state (`operstate` and the `LOWER_UP`/`NO-CARRIER`/`M-DOWN`/
//! `DORMANT` flags, which the kernel updates asynchronously, up to a second after a port
//! joins a bridge). Bridge timers are not an issue because links are listed without `-d`.
//! IPv6 anycast routes are left out: the kernel derives them from the addresses when
//! `net.ipv6.conf.all.forwarding` is on, and netd rightly leaves forwarding on after a
//! teardown (as netavark does).

use serde_json::Value;

use crate::cmd::Out;
use crate::ns::Netns;

/// What a namespace looked like at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub netns: String,
    /// One compact JSON object per line, sorted: links, then addresses, then routes.
    pub links: Vec<String>,
    pub addrs: Vec<String>,
    pub routes: Vec<String>,
    /// `nft list ruleset`, counters blanked; None when not asked for.
    pub nft: Option<String>,
}

const VOLATILE: &[&str] = &["valid_life_time", "preferred_life_time", "expires", "stats", "stats64", "operstate"];
const CARRIER_FLAGS: &[&str] = &["LOWER_UP", "NO-CARRIER", "M-DOWN", "DORMANT"];

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in VOLATILE {
                m.remove(*k);
            }
            if let Some(Value::Array(flags)) = m.get_mut("flags") {
                flags.retain(|f| !f.as_str().is_some_and(|f| CARRIER_FLAGS.contains(&f)));
            }
            for (_, x) in m.iter_mut() {
                strip(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

fn json_lines(o: &Out, what: &str, ns: &Netns) -> Vec<String> {
    let text = o.expect_ok(&format!("snapshot {what} of {}", ns.name()));
    let text = if text.trim().is_empty() { "[]" } else { text };
    let mut v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("`ip -j` gave invalid JSON for {what}: {e}\n{text}"));
    strip(&mut v);
    let mut lines: Vec<String> = match v {
        Value::Array(a) => a
            .into_iter()
            // IPv6 route cache entries come and go with traffic.
            .filter(|e| {
                e.get("type").and_then(Value::as_str) != Some("anycast")
                    && e.get("cache").is_none()
                    && !e.get("flags").and_then(Value::as_array).is_some_and(|f| f.iter().any(|x| x == "cache"))
            })
            .map(|e| e.to_string())
            .collect(),
        other => vec![other.to_string()],
    };
    lines.sort();
    lines
}

/// `nft list ruleset` with counter values blanked.
pub fn normalize_nft(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let toks: Vec<&str> = line.split(' ').collect();
        let mut norm = Vec::with_capacity(toks.len());
        let mut i = 0;
        while i < toks.len() {
            norm.push(toks[i].to_string());
            if (toks[i] == "packets" || toks[i] == "bytes") && i + 1 < toks.len() {
                norm.push("N".into());
                i += 1;
            }
            i += 1;
        }
        out.push_str(&norm.join(" "));
        out.push('\n');
    }
    out
}

impl Snapshot {
    /// Takes a snapshot of `ns`; with `nft`, also its ruleset.
    pub fn take(ns: &Netns, nft: bool) -> Snapshot {
        let links = json_lines(&ns.ip(&["-j", "link", "show"]), "links", ns);
        let addrs = json_lines(&ns.ip(&["-j", "addr", "show"]), "addresses", ns);
        let mut routes = json_lines(&ns.ip(&["-j", "-4", "route", "show", "table", "all"]), "v4 routes", ns);
        routes.extend(json_lines(&ns.ip(&["-j", "-6", "route", "show", "table", "all"]), "v6 routes", ns));
        routes.sort();
        let nft = nft.then(|| {
            let o = ns.run("nft", &["list", "ruleset"]);
            normalize_nft(o.expect_ok(&format!("nft list ruleset in {}", ns.name())))
        });
        Snapshot { netns: ns.name().to_string(), links, addrs, routes, nft }
    }

    /// None when equal; otherwise what is only in `self` (-) and only in `other` (+).
    pub fn diff(&self, other: &Snapshot) -> Option<String> {
        let mut d = String::new();
        let mut section = |name: &str, a: &[String], b: &[String]| {
            let gone: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
            let new: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
            if gone.is_empty() && new.is_empty() && a.len() == b.len() {
                return;
            }
            d.push_str(&format!("  {name}:\n"));
            for g in gone {
                d.push_str(&format!("    - {g}\n"));
            }
            for n in new {
                d.push_str(&format!("    + {n}\n"));
            }
        };
        section("links", &self.links, &other.links);
        section("addresses", &self.addrs, &other.addrs);
        section("routes", &self.routes, &other.routes);
        if self.nft != other.nft {
            let a: Vec<String> = self.nft.as_deref().unwrap_or("").lines().map(str::to_string).collect();
            let b: Vec<String> = other.nft.as_deref().unwrap_or("").lines().map(str::to_string).collect();
            section("nft ruleset", &a, &b);
            d.push_str(&format!(
                "  nft ruleset before:\n{}\n  nft ruleset after:\n{}\n",
                self.nft.as_deref().unwrap_or("(none)"),
                other.nft.as_deref().unwrap_or("(none)")
            ));
        }
        if d.is_empty() {
            None
        } else {
            Some(d)
        }
    }

    /// Panics with the differences unless `after` equals `self`.
    pub fn assert_same(&self, after: &Snapshot, ctx: &str) {
        if let Some(d) = self.diff(after) {
            panic!("{ctx}: netns {} changed:\n{d}", self.netns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_blanked() {
        assert_eq!(
            normalize_nft("\t\tip saddr 10.0.0.0/24 counter packets 12 bytes 3400 accept"),
            "\t\tip saddr 10.0.0.0/24 counter packets N bytes N accept\n"
        );
    }

    #[test]
    fn volatile_fields_are_removed() {
        let mut v: Value = serde_json::from_str(
            r#"[{"ifname":"x","addr_info":[{"local":"1.2.3.4","valid_life_time":5,"preferred_life_time":4}]}]"#,
        )
        .expect("json");
        strip(&mut v);
        let want: Value = serde_json::from_str(r#"[{"ifname":"x","addr_info":[{"local":"1.2.3.4"}]}]"#).expect("json");
        assert_eq!(v, want);
    }
}
