//! The slirp4netns-compatible command line, and the network it describes.
//!
//! Every flag slirp4netns 1.2.0 accepts is accepted here with the same spelling (podman 4.3.1
//! probes `--help` for seven of them and passes them joined (`--mtu=65520`) or split
//! (`-e 3`)). portfwd adds `--publish` (forwards from the start) and `--dns-upstream`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clap::Parser;

use crate::Error;

/// Help text (podman 4.3.1 searches it for `--disable-host-loopback`, `--mtu`,
/// `--enable-sandbox`, `--enable-seccomp`, `--cidr`, `--outbound-addr`, `--enable-ipv6`).
pub const HELP: &str = "\
Usage: portfwd [OPTION]... PID|PATH [TAPNAME]
User-mode networking for unprivileged network namespaces (slirp4netns compatible).

-c, --configure          bring up the interface (address, route, MTU)
-e, --exit-fd=FD         exit when FD polls readable or hung up
-r, --ready-fd=FD        write \"1\" to FD once the network is configured, then close it
-m, --mtu=MTU            MTU of the interface (default=65520, min=68, max=65521)
-6, --enable-ipv6        enable IPv6 (fd00::/64, guest fd00::100, gateway fd00::2)
-a, --api-socket=PATH    serve the slirp4netns JSON API (add_hostfwd, list_hostfwd, remove_hostfwd)
--cidr=CIDR              network address CIDR (default=10.0.2.0/24)
--disable-host-loopback  refuse connections to the gateway address (no access to host 127.0.0.1)
--netns-type=TYPE        network namespace type ([path|pid], default=pid)
--userns-path=PATH       user namespace to join before the network namespace
--enable-sandbox         after setup: private mount namespace with an empty root, drop capabilities
--enable-seccomp         after setup: deny dangerous system calls (mount, setns, ptrace, ...)
--outbound-addr=IPv4     bind outgoing IPv4 connections to this address or interface
--outbound-addr6=IPv6    bind outgoing IPv6 connections to this address or interface
--disable-dns            do not forward DNS at the DNS address (cidr+3)
--macaddress=MAC         MAC address of the interface (with -c)
--target-type=TYPE       target type ([netns], default=netns)
--publish=SPEC           forward a host port from the start (repeatable), SPEC is
                         [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp] (HOSTADDR may be [IPv6])
--dns-upstream=ADDR      DNS server to forward to (IP[:PORT] or [IPv6]:PORT) instead of the
                         nameservers of /etc/resolv.conf
-h, --help               show this help and exit
-v, --version            show version and exit
";

/// Parsed command line (raw strings are validated into [`Config`]).
#[derive(Parser, Debug, Clone)]
#[command(name = "portfwd", disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    #[arg(short = 'c', long)]
    pub configure: bool,
    #[arg(short = 'e', long = "exit-fd")]
    pub exit_fd: Option<i32>,
    #[arg(short = 'r', long = "ready-fd")]
    pub ready_fd: Option<i32>,
    #[arg(short = 'm', long, default_value_t = 65520)]
    pub mtu: u32,
    #[arg(short = '6', long = "enable-ipv6")]
    pub enable_ipv6: bool,
    #[arg(short = 'a', long = "api-socket")]
    pub api_socket: Option<String>,
    #[arg(long)]
    pub cidr: Option<String>,
    #[arg(long = "disable-host-loopback")]
    pub disable_host_loopback: bool,
    #[arg(long = "netns-type", default_value = "pid")]
    pub netns_type: String,
    #[arg(long = "userns-path")]
    pub userns_path: Option<String>,
    #[arg(long = "enable-sandbox")]
    pub enable_sandbox: bool,
    #[arg(long = "enable-seccomp")]
    pub enable_seccomp: bool,
    #[arg(long = "outbound-addr")]
    pub outbound_addr: Option<String>,
    #[arg(long = "outbound-addr6")]
    pub outbound_addr6: Option<String>,
    #[arg(long = "disable-dns")]
    pub disable_dns: bool,
    #[arg(long)]
    pub macaddress: Option<String>,
    #[arg(long = "target-type", default_value = "netns")]
    pub target_type: String,
    #[arg(long)]
    pub publish: Vec<String>,
    #[arg(long = "dns-upstream")]
    pub dns_upstream: Option<String>,
    #[arg(short = 'h', long)]
    pub help: bool,
    #[arg(short = 'v', long)]
    pub version: bool,
    /// PID or namespace path.
    pub target: Option<String>,
    /// TAP device name.
    pub tapname: Option<String>,
}

/// Where the namespace is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(i32),
    Path(String),
}

/// Protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A host port forwarded to a guest port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub host: SocketAddr,
    pub guest: SocketAddr,
}

/// The guest-visible network (slirp4netns layout: every address is network + N).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub guest: Ipv4Addr,
    pub ipv6: bool,
    pub network6: Ipv6Addr,
    pub gateway6: Ipv6Addr,
    pub dns6: Ipv6Addr,
    pub guest6: Ipv6Addr,
    pub router6_ll: Ipv6Addr,
}

impl Net {
    /// Derives the layout from a CIDR such as `10.0.2.0/24`.
    pub fn from_cidr(cidr: &str, ipv6: bool) -> Result<Net, Error> {
        let bad = || {
            Error::Usage(format!(
                "invalid --cidr {cidr:?}: expected an IPv4 network such as 10.0.2.0/24 (prefix 1..=25)"
            ))
        };
        let (a, p) = cidr.split_once('/').ok_or_else(bad)?;
        let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let p: u8 = p.parse().map_err(|_| bad())?;
        if p == 0 || p > 25 {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - p);
        let n = u32::from(a) & mask;
        let at = |k: u32| Ipv4Addr::from(n + k);
        Ok(Net {
            network: Ipv4Addr::from(n),
            prefix: p,
            gateway: at(2),
            dns: at(3),
            guest: at(100),
            ipv6,
            network6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
            gateway6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            dns6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3),
            guest6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100),
            router6_ll: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
        })
    }

    /// Whether `a` lies in the guest IPv4 network.
    pub fn contains4(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(a) & mask == u32::from(self.network)
    }
}

/// Everything the process needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub configure: bool,
    pub exit_fd: Option<i32>,
    pub ready_fd: Option<i32>,
    pub mtu: u32,
    pub api_socket: Option<String>,
    pub net: Net,
    pub host_loopback: bool,
    pub target: Target,
    pub userns_path: Option<String>,
    pub sandbox: bool,
    pub seccomp: bool,
    pub outbound4: Option<IpAddr>,
    pub outbound6: Option<IpAddr>,
    pub dns: bool,
    pub dns_upstream: Option<SocketAddr>,
    pub mac: Option<[u8; 6]>,
    pub tap: String,
    pub forwards: Vec<Forward>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    for (d, p) in m.iter_mut().zip(parts) {
        *d = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

fn parse_outbound(s: &str, v6: bool) -> Result<IpAddr, Error> {
    if let Ok(a) = s.parse::<IpAddr>() {
        if a.is_ipv6() != v6 {
            return Err(Error::Usage(format!(
                "--outbound-addr{}: {s} is not an IPv{} address",
                if v6 { "6" } else { "" },
                if v6 { 6 } else { 4 }
            )));
        }
        return Ok(a);
    }
    crate::sys::iface_addr(s, v6)
        .ok_or_else(|| Error::Usage(format!("outbound address {s:?}: not an address nor an interface with one")))
}

/// Parses `IP`, `IP:PORT`, `[IPv6]:PORT` (default port 53).
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>().ok().map(|a| SocketAddr::new(a, 53))
}

/// Parses a `--publish` spec: `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]`.
pub fn parse_publish(spec: &str, net: &Net) -> Result<Forward, Error> {
    let bad = |why: &str| {
        Error::Usage(format!("invalid --publish {spec:?}: {why}; expected [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]"))
    };
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Proto::Tcp),
        Some((b, "udp")) => (b, Proto::Udp),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (spec, Proto::Tcp),
    };
    let (rest, gport) = body.rsplit_once(':').ok_or_else(|| bad("missing guest port"))?;
    let gport: u16 = gport.parse().ok().filter(|p| *p != 0).ok_or_else(|| bad("bad guest port"))?;
    let (haddr, hport) = match rest.rsplit_once(':') {
        Some((a, p)) => {
            let a = a.trim_start_matches('[').trim_end_matches(']');
            (a.parse::<IpAddr>().map_err(|_| bad("bad host address"))?, p)
        }
        None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), rest),
    };
    let hport: u16 = hport.parse().ok().filter(|p| *p != 0).ok_or_else(|| bad("bad host port"))?;
    let guest = if haddr.is_ipv6() && net.ipv6 { IpAddr::V6(net.guest6) } else { IpAddr::V4(net.guest) };
    Ok(Forward { proto, host: SocketAddr::new(haddr, hport), guest: SocketAddr::new(guest, gport) })
}

impl Config {
    /// Validates parsed arguments.
    pub fn from_args(a: &Args) -> Result<Config, Error> {
        let target = a.target.as_deref().ok_or_else(|| Error::Usage("missing PID|PATH argument".into()))?;
        let target = match a.netns_type.as_str() {
            "pid" => Target::Pid(
                target
                    .parse()
                    .ok()
                    .filter(|p: &i32| *p > 0)
                    .ok_or_else(|| Error::Usage(format!("invalid PID {target:?}")))?,
            ),
            "path" => Target::Path(target.to_string()),
            t => return Err(Error::Usage(format!("invalid --netns-type {t:?}: expected path or pid"))),
        };
        if a.target_type != "netns" {
            return Err(Error::Usage(format!("unsupported --target-type {:?}: only netns", a.target_type)));
        }
        if !(68..=65521).contains(&a.mtu) {
            return Err(Error::Usage(format!("invalid --mtu {}: must be 68..=65521", a.mtu)));
        }
        let net = Net::from_cidr(a.cidr.as_deref().unwrap_or("10.0.2.0/24"), a.enable_ipv6)?;
        if let Some(p) = &a.api_socket {
            if p.len() >= 108 {
                return Err(Error::Usage("the specified API socket path is too long (>= 108)".into()));
            }
        }
        if a.outbound_addr6.is_some() && !a.enable_ipv6 {
            return Err(Error::Usage("--outbound-addr6 requires --enable-ipv6".into()));
        }
        let mac = match &a.macaddress {
            Some(m) => Some(parse_mac(m).ok_or_else(|| Error::Usage(format!("invalid --macaddress {m:?}")))?),
            None => None,
        };
        let dns_upstream = match &a.dns_upstream {
            Some(s) => Some(parse_upstream(s).ok_or_else(|| Error::Usage(format!("invalid --dns-upstream {s:?}")))?),
            None => None,
        };
        let forwards = a.publish.iter().map(|p| parse_publish(p, &net)).collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            configure: a.configure,
            exit_fd: a.exit_fd,
            ready_fd: a.ready_fd,
            mtu: a.mtu,
            api_socket: a.api_socket.clone(),
            net,
            host_loopback: !a.disable_host_loopback,
            target,
            userns_path: a.userns_path.clone(),
            sandbox: a.enable_sandbox,
            seccomp: a.enable_seccomp,
            outbound4: a.outbound_addr.as_deref().map(|s| parse_outbound(s, false)).transpose()?,
            outbound6: a.outbound_addr6.as_deref().map(|s| parse_outbound(s, true)).transpose()?,
            dns: !a.disable_dns,
            dns_upstream,
            mac,
            tap: a.tapname.clone().unwrap_or_else(|| "tap0".into()),
            forwards,
        })
    }
}

/// Nameservers of a resolv.conf text, in order.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "nameserver" {
                return None;
            }
            let a = w.next()?;
            let a = a.split('%').next()?;
            a.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("portfwd").chain(v.iter().copied())).expect("parse")
    }

    #[test]
    fn podman_command_line() {
        let a = args(&[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-e",
            "3",
            "-r",
            "4",
            "--api-socket",
            "/tmp/x.net",
            "--netns-type=path",
            "/run/user/1/netns/n",
            "tap0",
        ]);
        let c = Config::from_args(&a).expect("config");
        assert_eq!(c.target, Target::Path("/run/user/1/netns/n".into()));
        assert_eq!((c.exit_fd, c.ready_fd, c.mtu), (Some(3), Some(4), 65520));
        assert!(!c.host_loopback && c.sandbox && c.seccomp && c.net.ipv6 && c.configure);
        assert_eq!(c.net.guest, Ipv4Addr::new(10, 0, 2, 100));
        let c = Config::from_args(&args(&["-c", "1234"])).expect("pid");
        assert_eq!(c.target, Target::Pid(1234));
        assert_eq!(c.tap, "tap0");
    }

    #[test]
    fn help_has_probed_flags() {
        for f in [
            "--disable-host-loopback",
            "--mtu",
            "--enable-sandbox",
            "--enable-seccomp",
            "--cidr",
            "--outbound-addr",
            "--enable-ipv6",
        ] {
            assert!(HELP.contains(f), "{f}");
        }
    }

    #[test]
    fn cidr_layout() {
        let n = Net::from_cidr("10.10.0.0/16", false).expect("cidr");
        assert_eq!(
            (n.gateway, n.dns, n.guest),
            ("10.10.0.2".parse().expect("a"), "10.10.0.3".parse().expect("a"), "10.10.0.100".parse().expect("a"))
        );
        assert!(Net::from_cidr("10.0.2.0/26", false).is_err());
        assert!(Net::from_cidr("nonsense", false).is_err());
    }

    #[test]
    fn publish_specs() {
        let n = Net::from_cidr("10.0.2.0/24", true).expect("cidr");
        let f = parse_publish("8080:80", &n).expect("p");
        assert_eq!((f.proto, f.host.port(), f.guest.to_string()), (Proto::Tcp, 8080, "10.0.2.100:80".into()));
        let f = parse_publish("127.0.0.1:53:53/udp", &n).expect("p");
        assert_eq!((f.proto, f.host.to_string()), (Proto::Udp, "127.0.0.1:53".into()));
        let f = parse_publish("[::1]:8080:80", &n).expect("p");
        assert_eq!(f.guest.to_string(), "[fd00::100]:80");
        assert!(parse_publish("0:80", &n).is_err());
        assert!(parse_publish("80/sctp", &n).is_err());
    }

    #[test]
    fn resolv_conf() {
        let v = parse_resolv_conf("# x\nnameserver 127.0.0.53\nsearch a\nnameserver fe80::1%eth0\nnameserver bogus\n");
        assert_eq!(v.len(), 2);
    }
}
