//! The slirp4netns API socket protocol (JSON over a unix stream socket).
//!
//! How this works: a client connects, writes one JSON object and shuts down its write side.
//! The server reads at most 4096 bytes, answers with one compact JSON object (no trailing
//! newline) and closes. Requests are `add_hostfwd`, `list_hostfwd` and `remove_hostfwd`;
//! replies and error texts are those of slirp4netns 1.2.0 (see the reference contract), so
//! podman's client works unchanged. This module only parses requests and formats replies;
//! the event loop applies them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use crate::cli::Proto;

/// Largest request accepted (a request of this size or more is refused).
pub const MAX_REQUEST: usize = 4096;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Add { proto: Proto, host: SocketAddr, guest_addr: Option<Ipv4Addr>, guest_port: u16 },
    List,
    Remove { id: u64 },
}

/// One forward, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub proto: Proto,
    pub host: SocketAddr,
    pub guest: SocketAddr,
}

fn port(v: Option<&Value>) -> Option<u16> {
    let n = v?.as_f64()?;
    if (1.0..=65535.0).contains(&n) && n.fract() == 0.0 {
        Some(n as u16)
    } else {
        None
    }
}

fn ipv4_or_default(v: Option<&Value>) -> Result<Option<Ipv4Addr>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

/// Parses a request; the error is the slirp4netns `desc` text.
pub fn parse(buf: &[u8]) -> Result<Request, &'static str> {
    if buf.len() >= MAX_REQUEST {
        return Err("bad request: too large message");
    }
    let v: Value = serde_json::from_slice(buf).map_err(|_| "bad request: cannot parse JSON")?;
    let o = v.as_object().ok_or("bad request: json_object() failed")?;
    let exec = o.get("execute").and_then(Value::as_str).ok_or("bad request: no execute found")?;
    let args = o.get("arguments").and_then(Value::as_object);
    let arg = |k: &str| args.and_then(|a| a.get(k));
    match exec {
        "add_hostfwd" => {
            let proto = match arg("proto").and_then(Value::as_str) {
                Some("tcp") => Proto::Tcp,
                Some("udp") => Proto::Udp,
                _ => return Err("bad request: add_hostfwd: bad arguments.proto"),
            };
            let host_addr =
                ipv4_or_default(arg("host_addr")).map_err(|_| "bad request: add_hostfwd: bad arguments.host_addr")?;
            let host_port = port(arg("host_port")).ok_or("bad request: add_hostfwd: bad arguments.host_port")?;
            let guest_addr =
                ipv4_or_default(arg("guest_addr")).map_err(|_| "bad request: add_hostfwd: bad arguments.guest_addr")?;
            let guest_port = port(arg("guest_port")).ok_or("bad request: add_hostfwd: bad arguments.guest_port")?;
            Ok(Request::Add {
                proto,
                host: SocketAddr::new(IpAddr::V4(host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED)), host_port),
                guest_addr,
                guest_port,
            })
        }
        "list_hostfwd" => Ok(Request::List),
        "remove_hostfwd" => {
            let id = arg("id").and_then(Value::as_u64).ok_or("bad request: remove_hostfwd: bad arguments.id")?;
            Ok(Request::Remove { id })
        }
        _ => Err("bad request: unknown execute"),
    }
}

/// `{"error":{"desc":...}}` and nothing else (the contract: no other keys). Details such as
/// the OS error belong in the `desc` text.
pub fn error_reply(desc: &str) -> String {
    serde_json::json!({ "error": { "desc": desc } }).to_string()
}

/// `{"return":{"id":N}}`.
pub fn add_reply(id: u64) -> String {
    format!("{{\"return\":{{\"id\":{id}}}}}")
}

/// `{"return":{}}`.
pub fn remove_reply() -> String {
    "{\"return\":{}}".into()
}

/// `{"entries":[...]}` (slirp4netns 1.2.0 replies without a `return` wrapper), keys in
/// slirp4netns order.
pub fn list_reply(entries: &[Entry]) -> String {
    let mut s = String::from("{\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{},\"proto\":\"{}\",\"host_addr\":\"{}\",\"host_port\":{},\"guest_addr\":\"{}\",\"guest_port\":{}}}",
            e.id,
            e.proto.as_str(),
            e.host.ip(),
            e.host.port(),
            e.guest.ip(),
            e.guest.port()
        ));
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = parse(br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"","host_port":8080,"guest_addr":"","guest_port":80}}
"#);
        assert_eq!(
            r,
            Ok(Request::Add {
                proto: Proto::Tcp,
                host: "0.0.0.0:8080".parse().expect("a"),
                guest_addr: None,
                guest_port: 80
            })
        );
        assert_eq!(parse(br#"{"execute":"list_hostfwd"}"#), Ok(Request::List));
        assert_eq!(parse(br#"{"execute":"remove_hostfwd","arguments":{"id":3}}"#), Ok(Request::Remove { id: 3 }));
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "bad request: cannot parse JSON"),
            (b"", "bad request: cannot parse JSON"),
            (b"[1]", "bad request: json_object() failed"),
            (b"{}", "bad request: no execute found"),
            (br#"{"execute":1}"#, "bad request: no execute found"),
            (br#"{"execute":"x"}"#, "bad request: unknown execute"),
            (br#"{"execute":"add_hostfwd"}"#, "bad request: add_hostfwd: bad arguments.proto"),
            (br#"{"execute":"add_hostfwd","arguments":{"proto":"sctp"}}"#, "bad request: add_hostfwd: bad arguments.proto"),
            (br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":1,"guest_port":1}}"#, "bad request: add_hostfwd: bad arguments.host_addr"),
            (br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":0,"guest_port":1}}"#, "bad request: add_hostfwd: bad arguments.host_port"),
            (br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":70000,"guest_port":1}}"#, "bad request: add_hostfwd: bad arguments.host_port"),
            (br#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":1,"guest_addr":"x","guest_port":1}}"#, "bad request: add_hostfwd: bad arguments.guest_addr"),
            (br#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":1}}"#, "bad request: add_hostfwd: bad arguments.guest_port"),
            (br#"{"execute":"remove_hostfwd","arguments":{}}"#, "bad request: remove_hostfwd: bad arguments.id"),
        ];
        for (req, want) in cases {
            assert_eq!(parse(req), Err(*want), "{}", String::from_utf8_lossy(req));
        }
        assert_eq!(parse(&[b' '; 5000]), Err("bad request: too large message"));
    }

    #[test]
    fn replies() {
        assert_eq!(add_reply(1), r#"{"return":{"id":1}}"#);
        assert_eq!(list_reply(&[]), r#"{"entries":[]}"#);
        let e = Entry {
            id: 1,
            proto: Proto::Tcp,
            host: "0.0.0.0:18080".parse().expect("a"),
            guest: "10.0.2.100:80".parse().expect("a"),
        };
        assert_eq!(
            list_reply(&[e]),
            r#"{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":18080,"guest_addr":"10.0.2.100","guest_port":80}]}"#
        );
        assert_eq!(error_reply("bad request: unknown execute"), r#"{"error":{"desc":"bad request: unknown execute"}}"#);
        assert_eq!(error_reply("a \"b\""), r#"{"error":{"desc":"a \"b\""}}"#);
    }
}
