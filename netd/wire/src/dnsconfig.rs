//! The DNS helper's per-network config file (aardvark-dns format), reader and writer.
//!
//! One file per network under `<config>/aardvark-dns/`, named after the network, with a
//! `%int` suffix when the network is internal. Line 1 is the bind addresses (the gateways),
//! comma separated, optionally followed by a space and the network's DNS servers. Every other
//! non-empty line is one container:
//!
//! ```text
//! <container id> <ipv4,...> <ipv6,...> <name,alias,...>[ <dns server,...>]
//! ```
//!
//! An empty list is an empty field (two spaces in a row). Names are stored lower-cased by the
//! reader, as aardvark-dns does.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// File-name suffix that marks an internal network.
pub const INTERNAL_SUFFIX: &str = "%int";
/// The pid file the DNS helper writes in the same directory.
pub const PID_FILE: &str = "aardvark.pid";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    pub bind_ips: Vec<IpAddr>,
    pub network_dns_servers: Vec<IpAddr>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub container_id: String,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    pub names: Vec<String>,
    pub dns_servers: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("empty config file (no bind address line)")]
    Empty,
}

/// Splits a file name into (network name, internal).
pub fn split_file_name(file: &str) -> (&str, bool) {
    match file.strip_suffix(INTERNAL_SUFFIX) {
        Some(n) => (n, true),
        None => (file, false),
    }
}

/// The file name for a network.
pub fn file_name(network: &str, internal: bool) -> String {
    if internal {
        format!("{network}{INTERNAL_SUFFIX}")
    } else {
        network.to_string()
    }
}

/// True when a name can be written to the file (no separators in it).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains([' ', ',', '\n', '\t', '\r'])
}

fn list<T: std::fmt::Display>(out: &mut String, items: &[T]) {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
}

fn parse_list<T: std::str::FromStr>(field: &str, line: usize, what: &str) -> Result<Vec<T>, ParseError> {
    if field.is_empty() {
        return Ok(Vec::new());
    }
    field
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| ParseError::Line { line, msg: format!("invalid {what} {s:?}") }))
        .collect()
}

impl Entry {
    /// Renders the container line (without a newline). Names that cannot be written are
    /// dropped.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(128);
        s.push_str(&self.container_id);
        s.push(' ');
        list(&mut s, &self.v4);
        s.push(' ');
        list(&mut s, &self.v6);
        s.push(' ');
        let names: Vec<&str> = self.names.iter().map(String::as_str).filter(|n| valid_name(n)).collect();
        list(&mut s, &names);
        if !self.dns_servers.is_empty() {
            s.push(' ');
            list(&mut s, &self.dns_servers);
        }
        s
    }
}

impl NetworkConfig {
    /// Renders line 1.
    pub fn header(&self) -> String {
        let mut s = String::new();
        list(&mut s, &self.bind_ips);
        if !self.network_dns_servers.is_empty() {
            s.push(' ');
            list(&mut s, &self.network_dns_servers);
        }
        s
    }

    /// Renders the whole file.
    pub fn render(&self) -> String {
        let mut s = self.header();
        s.push('\n');
        for e in &self.entries {
            s.push_str(&e.render());
            s.push('\n');
        }
        s
    }

    /// Parses a whole file.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (n, head) = lines.next().ok_or(ParseError::Empty)?;
        let mut parts = head.split_whitespace();
        let bind_ips = parse_list(parts.next().unwrap_or(""), n + 1, "bind address")?;
        if bind_ips.is_empty() {
            return Err(ParseError::Line { line: n + 1, msg: "no bind address".into() });
        }
        let network_dns_servers = parse_list(parts.next().unwrap_or(""), n + 1, "dns server")?;
        let mut entries = Vec::new();
        for (n, l) in lines {
            let line = n + 1;
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 4 {
                return Err(ParseError::Line { line, msg: format!("expected at least 4 fields, got {}", f.len()) });
            }
            if f.len() > 5 {
                return Err(ParseError::Line { line, msg: format!("expected at most 5 fields, got {}", f.len()) });
            }
            if f[0].is_empty() {
                return Err(ParseError::Line { line, msg: "empty container id".into() });
            }
            let names: Vec<String> = f[3].split(',').filter(|s| !s.is_empty()).map(str::to_lowercase).collect();
            if names.is_empty() {
                return Err(ParseError::Line { line, msg: "no names".into() });
            }
            entries.push(Entry {
                container_id: f[0].to_string(),
                v4: parse_list(f[1], line, "ipv4 address")?,
                v6: parse_list(f[2], line, "ipv6 address")?,
                names,
                dns_servers: parse_list(f.get(4).copied().unwrap_or(""), line, "dns server")?,
            });
        }
        Ok(NetworkConfig { bind_ips, network_dns_servers, entries })
    }

    /// Removes every entry of a container; true if something was removed.
    pub fn remove_container(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.container_id != id);
        before != self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_reference_example() {
        let text = "10.89.3.1,fd10:88:a::1 127.0.0.1,3.3.3.3\nf031bf325 10.89.3.2 fd10:88:a::2 somename 8.8.8.8,1.1.1.1\nabc 10.89.3.3  web,Alias\n";
        let c = NetworkConfig::parse(text).unwrap();
        assert_eq!(c.bind_ips.len(), 2);
        assert_eq!(c.network_dns_servers.len(), 2);
        assert!(c.entries[1].v6.is_empty());
        assert_eq!(c.entries[1].names, vec!["web", "alias"]);
        assert_eq!(c.entries[0].dns_servers.len(), 2);
        let again = NetworkConfig::parse(&c.render()).unwrap();
        assert_eq!(again, c);
        assert_eq!(c.render(), text.replace("web,Alias", "web,alias"));
    }

    #[test]
    fn short_line_is_an_error() {
        let e = NetworkConfig::parse("10.0.0.1\nabc 10.0.0.2\n").unwrap_err();
        assert!(matches!(e, ParseError::Line { line: 2, .. }), "{e}");
    }

    #[test]
    fn bad_ip_is_an_error() {
        assert!(NetworkConfig::parse("10.0.0.300\n").is_err());
        assert!(NetworkConfig::parse("10.0.0.1\nabc 10.0.0.x  n\n").is_err());
        assert_eq!(NetworkConfig::parse("\n\n").unwrap_err(), ParseError::Empty);
    }

    #[test]
    fn writer_drops_unwritable_names() {
        let e = Entry {
            container_id: "id".into(),
            v4: vec!["10.0.0.2".parse().unwrap()],
            v6: vec![],
            names: vec!["ok".into(), "bad name".into(), "a,b".into()],
            dns_servers: vec![],
        };
        assert_eq!(e.render(), "id 10.0.0.2  ok");
    }

    #[test]
    fn internal_suffix() {
        assert_eq!(split_file_name("net%int"), ("net", true));
        assert_eq!(file_name("net", false), "net");
    }
}
