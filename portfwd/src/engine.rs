//! The event loop and the NAT between the guest's TAP device and host sockets.
//!
//! How this works (theory of operation):
//! * One thread, one `mio` poll. Each turn reads up to [`BATCH`] frames from the TAP device
//!   into preallocated buffers and classifies them. UDP datagrams and ICMP echo requests are
//!   handled here directly (a host UDP / ICMP datagram socket per flow, replies written as
//!   frames built in place); ARP, NDP and TCP go to smoltcp.
//! * TCP: smoltcp has no "accept anything" socket, so a new SYN (guest to any address) first
//!   starts a non-blocking host connection to the mapped destination, then gets its own smoltcp
//!   socket listening on exactly (destination address, port) with the SYN-ACK paused. When the
//!   host connection completes the SYN-ACK is released; if it fails the socket aborts, which
//!   answers the guest with a reset (connection refused). Data moves between the smoltcp
//!   buffers and the host socket with one read or write per direction per turn, straight
//!   into/out of smoltcp's ring buffers. FIN and reset pass through both ways.
//! * Address mapping: the gateway address (cidr+2, fd00::2) is the host's loopback unless
//!   `--disable-host-loopback` (then the guest gets a reset / no answer); the DNS address
//!   (cidr+3, fd00::3) port 53 goes to the upstream resolver (resolv.conf or
//!   `--dns-upstream`); other addresses of the guest network are refused; everything else is
//!   connected as is, from `--outbound-addr(6)` when given.
//! * IPv6 router solicitations get a router advertisement (fd00::/64 for SLAAC, router
//!   fe80::2, MTU, RDNSS fd00::3); other neighbour discovery is smoltcp's.
//! * ICMP echo to the gateway/DNS addresses is answered locally; to other addresses it goes
//!   through an unprivileged ICMP datagram socket when `net.ipv4.ping_group_range` allows it,
//!   and is dropped otherwise (logged once).
//! * IPv4 fragments from the guest are reassembled first (see `reasm.rs`); the whole datagram
//!   then takes the usual path. Datagrams towards the guest are never fragmented: a reply
//!   larger than the MTU is cut to it.
//! * Bounds: at most [`MAX_TCP`] TCP and [`MAX_UDP`] UDP/ICMP flows (the oldest idle UDP
//!   flow is evicted; excess TCP SYNs are reset); TCP buffers are 4 MiB for the first
//!   [`HUGE_BUF_FLOWS`] flows, 1 MiB up to [`BIG_BUF_FLOWS`] and 64 KiB beyond, so memory
//!   stays bounded (at most about 0.6 GiB of buffers plus 128 KiB per further flow).
//! * Host port forwards and the API socket are served by the same loop (see `fwd.rs`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use smoltcp::iface::{Config as IfConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol,
    Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

use crate::cli::Config;
use crate::fwd::Forwards;
use crate::helper::Helper;
use crate::slab::Slab;
use crate::sys;

/// Frames read from the TAP device per loop turn.
pub const BATCH: usize = 32;
/// Largest frame (IP MTU 65521 + Ethernet header fits).
pub const FRAME: usize = 65536;
/// Most concurrent TCP flows from the guest.
pub const MAX_TCP: usize = 8192;
/// Most concurrent UDP and ICMP flows from the guest.
pub const MAX_UDP: usize = 4096;
/// Flows that get the largest (4 MiB) TCP buffers.
pub const HUGE_BUF_FLOWS: usize = 16;
/// Flows that get large (1 MiB) TCP buffers.
pub const BIG_BUF_FLOWS: usize = 256;
/// Finished TCP sockets kept for reuse.
const SPARE_SOCKETS: usize = 64;
/// Delayed ACK towards the guest, in microseconds (env PORTFWD_ACK_DELAY_US overrides).
static ACK_DELAY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
const UDP_IDLE: Duration = Duration::from_secs(60);
const DNS_IDLE: Duration = Duration::from_secs(10);

/// Idle timeouts of (UDP, DNS) flows; env PORTFWD_UDP_TIMEOUT_MS overrides both (tests).
pub(crate) fn udp_idle() -> (Duration, Duration) {
    static T: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let t = *T.get_or_init(|| {
        std::env::var("PORTFWD_UDP_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
    });
    match t {
        Some(t) => (t, t),
        None => (UDP_IDLE, DNS_IDLE),
    }
}

/// How often idle flows are swept: every second, or more often with a short UDP timeout.
fn sweep_every() -> Duration {
    let (u, d) = udp_idle();
    u.min(d).min(Duration::from_secs(1))
}

/// Token kinds (high 32 bits of a token).
pub const K_TAP: usize = 1;
pub const K_API: usize = 2;
pub const K_EXIT: usize = 3;
pub const K_PIDFD: usize = 4;
pub const K_HELPER: usize = 5;
pub const K_TCP: usize = 6;
pub const K_UDP: usize = 7;
pub const K_FWD_LISTEN: usize = 8;
pub const K_FWD_CONN_A: usize = 10;
pub const K_FWD_CONN_B: usize = 11;
pub const K_FWD_UDPNS: usize = 12;
pub const K_API_CONN: usize = 13;

pub fn tok(kind: usize, idx: usize) -> Token {
    Token((kind << 32) | idx)
}

/// The TAP device as a smoltcp `Device`: a batch of received frames, and direct writes.
pub struct Tap {
    pub fd: RawFd,
    rx: Vec<Box<[u8]>>,
    rx_len: [usize; BATCH],
    rx_keep: [bool; BATCH],
    rx_next: usize,
    rx_n: usize,
    tx: Box<[u8]>,
    mtu: usize,
    pub tx_drops: u64,
}

pub struct RxTok<'a>(&'a [u8]);
pub struct TxTok<'a> {
    fd: RawFd,
    buf: &'a mut [u8],
    drops: &'a mut u64,
}

impl smoltcp::phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let r = f(&mut self.buf[..len]);
        if sys::write(self.fd, &self.buf[..len]).is_err() {
            *self.drops += 1;
        }
        r
    }
}

impl Device for Tap {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        while self.rx_next < self.rx_n && !self.rx_keep[self.rx_next] {
            self.rx_next += 1;
        }
        if self.rx_next >= self.rx_n {
            return None;
        }
        let i = self.rx_next;
        self.rx_next += 1;
        let Tap { rx, rx_len, tx, fd, tx_drops, .. } = self;
        Some((RxTok(&rx[i][..rx_len[i]]), TxTok { fd: *fd, buf: &mut tx[..], drops: tx_drops }))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<TxTok<'_>> {
        Some(TxTok { fd: self.fd, buf: &mut self.tx[..], drops: &mut self.tx_drops })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14;
        c.max_burst_size = None;
        // Frames come from the local kernel: verifying their checksums buys nothing.
        let mut ck = ChecksumCapabilities::default();
        ck.ipv4 = Checksum::Tx;
        ck.tcp = Checksum::Tx;
        ck.udp = Checksum::Tx;
        ck.icmpv4 = Checksum::Tx;
        ck.icmpv6 = Checksum::Both;
        c.checksum = ck;
        c
    }
}

/// A TCP flow: a smoltcp socket facing the guest and a host socket.
struct TcpFlow {
    handle: SocketHandle,
    host: TcpStream,
    /// (guest endpoint, destination the guest used)
    tuple: (IpEndpoint, IpEndpoint),
    connected: bool,
    readable: bool,
    writable: bool,
    host_eof: bool,
    host_shut: bool,
    fresh: bool,
    dead: bool,
    /// sequence number of the guest's SYN (quoted in ICMP errors)
    syn_seq: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum UdpKind {
    Udp,
    Icmp4,
    Icmp6,
}

/// A UDP (or ICMP echo) flow: a connected host datagram socket.
struct UdpFlow {
    kind: UdpKind,
    sock: UdpSocket,
    guest: SocketAddr,
    /// the address the guest sent to (replies come from it)
    dst: SocketAddr,
    last: Instant,
    idle: Duration,
    /// ICMP: the guest's echo identifier
    ident: u16,
}

type UdpKey = (UdpKind, SocketAddr, SocketAddr);

/// An ICMP destination-unreachable reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unreach {
    Net,
    Host,
    Port,
}

impl Unreach {
    /// The ICMP report for a host socket error (None: answer with a reset or nothing).
    fn from_error(e: &io::Error) -> Option<Unreach> {
        match e.raw_os_error()? {
            libc::ENETUNREACH => Some(Unreach::Net),
            libc::EHOSTUNREACH | libc::ETIMEDOUT => Some(Unreach::Host),
            libc::ECONNREFUSED => Some(Unreach::Port),
            _ => None,
        }
    }
}

/// Why the loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    ExitFd,
    TargetGone,
    TapGone,
    HelperGone,
}

pub struct Engine {
    pub cfg: Config,
    pub poll: Poll,
    pub tap: Tap,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: Slab<TcpFlow>,
    tcp_by_tuple: HashMap<(IpEndpoint, IpEndpoint), usize>,
    /// finished smoltcp sockets kept for reuse (no buffer allocation per connection)
    spare: Vec<SocketHandle>,
    udp: Slab<UdpFlow>,
    udp_by_key: HashMap<UdpKey, usize>,
    our_mac: EthernetAddress,
    guest_mac: EthernetAddress,
    out: Box<[u8]>,
    dns_upstream: Option<SocketAddr>,
    pub helper: Helper,
    pub fwd: Forwards,
    pub api: Option<std::os::unix::net::UnixListener>,
    tap_readable: bool,
    /// the frame being built is neighbour discovery (hop limit 255)
    ndp_hop: bool,
    icmp_denied_logged: bool,
    /// IPv4 fragments from the guest being reassembled
    reasm: crate::reasm::Reassembler,
    start: Instant,
    last_sweep: Instant,
    exit: Option<Exit>,
    exit_fd: Option<RawFd>,
    pidfd: Option<OwnedFd>,
}

fn ep(a: SocketAddr) -> IpEndpoint {
    IpEndpoint::from(a)
}

impl Engine {
    pub fn new(
        cfg: Config,
        tap_fd: OwnedFd,
        helper: Helper,
        api: Option<std::os::unix::net::UnixListener>,
    ) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let fd = tap_fd.into_raw_fd();
        let mut tap = Tap {
            fd,
            rx: (0..BATCH).map(|_| vec![0u8; FRAME].into_boxed_slice()).collect(),
            rx_len: [0; BATCH],
            rx_keep: [false; BATCH],
            rx_next: 0,
            rx_n: 0,
            tx: vec![0u8; FRAME].into_boxed_slice(),
            mtu: cfg.mtu as usize,
            tx_drops: 0,
        };
        let g = cfg.net.gateway.octets();
        let our_mac = EthernetAddress([0x52, 0x55, g[0], g[1], g[2], g[3]]);
        let mut ic = IfConfig::new(HardwareAddress::Ethernet(our_mac));
        ic.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let start = Instant::now();
        let mut iface = Interface::new(ic, &mut tap, smoltcp::time::Instant::from_millis(0));
        let n = cfg.net.clone();
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(n.gateway), n.prefix));
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(n.dns), n.prefix));
            if n.ipv6 {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(n.gateway6), 64));
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(n.dns6), 64));
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(n.router6_ll), 64));
            }
        });
        iface.set_any_ip(true);
        poll.registry().register(&mut SourceFd(&fd), tok(K_TAP, 0), Interest::READABLE)?;
        poll.registry().register(&mut SourceFd(&helper.fd()), tok(K_HELPER, 0), Interest::READABLE)?;
        if let Some(l) = api.as_ref() {
            l.set_nonblocking(true)?;
            poll.registry().register(&mut SourceFd(&l.as_raw_fd()), tok(K_API, 0), Interest::READABLE)?;
        }
        let exit_fd = cfg.exit_fd;
        if let Some(e) = exit_fd {
            poll.registry().register(&mut SourceFd(&e), tok(K_EXIT, 0), Interest::READABLE)?;
        }
        let pidfd = match cfg.target {
            crate::cli::Target::Pid(p) => match sys::pidfd_open(p) {
                Ok(f) => {
                    poll.registry().register(&mut SourceFd(&f.as_raw_fd()), tok(K_PIDFD, 0), Interest::READABLE)?;
                    Some(f)
                }
                Err(e) => {
                    tracing::warn!("pidfd_open({p}): {e}; will not notice the target exiting");
                    None
                }
            },
            _ => None,
        };
        let dns_upstream = if !cfg.dns {
            None
        } else if let Some(u) = cfg.dns_upstream {
            Some(u)
        } else {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            crate::cli::parse_resolv_conf(&text).first().map(|a| SocketAddr::new(*a, 53))
        };
        Ok(Engine {
            cfg,
            poll,
            tap,
            iface,
            sockets: SocketSet::new(vec![]),
            tcp: Slab::new(),
            tcp_by_tuple: HashMap::new(),
            spare: Vec::new(),
            udp: Slab::new(),
            udp_by_key: HashMap::new(),
            our_mac,
            guest_mac: EthernetAddress::BROADCAST,
            out: vec![0u8; FRAME].into_boxed_slice(),
            dns_upstream,
            helper,
            fwd: Forwards::default(),
            api,
            tap_readable: true,
            ndp_hop: false,
            icmp_denied_logged: false,
            reasm: Default::default(),
            start,
            last_sweep: start,
            exit: None,
            exit_fd,
            pidfd,
        })
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// Where a guest connection to `dst` goes on the host, or None to refuse.
    fn map_dst(&self, dst: SocketAddr, udp: bool) -> Option<SocketAddr> {
        let n = &self.cfg.net;
        match dst.ip() {
            IpAddr::V4(a) if a == n.gateway => {
                self.cfg.host_loopback.then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dst.port()))
            }
            IpAddr::V6(a) if n.ipv6 && (a == n.gateway6 || a == n.router6_ll) => {
                self.cfg.host_loopback.then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), dst.port()))
            }
            IpAddr::V4(a) if a == n.dns => (dst.port() == 53).then_some(self.dns_upstream).flatten(),
            IpAddr::V6(a) if n.ipv6 && a == n.dns6 => (dst.port() == 53).then_some(self.dns_upstream).flatten(),
            IpAddr::V4(a) if n.contains4(a) || a.is_loopback() || a.is_broadcast() || a.is_multicast() => None,
            IpAddr::V6(a) if a.is_loopback() || a.is_multicast() || a.is_unicast_link_local() => None,
            IpAddr::V6(_) if !n.ipv6 => None,
            _ => {
                let _ = udp;
                Some(dst)
            }
        }
    }

    fn bind_for(&self, to: &SocketAddr) -> Option<IpAddr> {
        if to.ip().is_loopback() {
            return None;
        }
        if to.is_ipv4() {
            self.cfg.outbound4
        } else {
            self.cfg.outbound6
        }
    }

    /// Runs until an exit condition.
    pub fn run(&mut self) -> io::Result<Exit> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = self.now();
            let mut timeout =
                self.iface.poll_delay(now, &self.sockets).map(Duration::from).unwrap_or(Duration::from_secs(1));
            timeout = timeout.min(sweep_every());
            if self.tap_readable {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                let t = ev.token().0;
                let (kind, idx) = (t >> 32, t & 0xffff_ffff);
                match kind {
                    K_TAP => self.tap_readable = true,
                    K_API => self.api_accept(),
                    K_API_CONN => self.api_conn_event(idx),
                    K_EXIT => {
                        eprintln!("exitfd event");
                        self.exit = Some(Exit::ExitFd);
                    }
                    K_PIDFD => self.exit = Some(Exit::TargetGone),
                    K_HELPER if sys::peer_gone(self.helper.fd()) => self.exit = Some(Exit::HelperGone),
                    K_TCP => {
                        if let Some(f) = self.tcp.get_mut(idx) {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                f.readable = true;
                            }
                            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                                f.writable = true;
                            }
                        }
                    }
                    K_UDP => self.udp_readable(idx),
                    K_FWD_LISTEN => self.fwd_listener_event(idx),
                    K_FWD_CONN_A | K_FWD_CONN_B => self.fwd_conn_event(idx),
                    K_FWD_UDPNS => self.fwd_udpns_event(idx),
                    _ => {}
                }
            }
            if let Some(e) = self.exit.take() {
                return Ok(e);
            }
            if self.tap_readable {
                self.read_tap()?;
            }
            if let Some(e) = self.exit.take() {
                return Ok(e);
            }
            let now = self.now();
            self.iface.poll(now, &mut self.tap, &mut self.sockets);
            self.fix_fresh();
            if self.service_tcp() {
                let now = self.now();
                self.iface.poll(now, &mut self.tap, &mut self.sockets);
            }
            if self.last_sweep.elapsed() >= sweep_every() {
                self.sweep_udp();
                self.fwd_sweep();
                self.last_sweep = Instant::now();
            }
        }
    }

    /// Reads a batch of frames and classifies them.
    fn read_tap(&mut self) -> io::Result<()> {
        let mut n = 0;
        while n < BATCH {
            match sys::read(self.tap.fd, &mut self.tap.rx[n]) {
                Ok(len) => {
                    self.tap.rx_len[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tap_readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!("TAP device gone: {e}");
                    self.exit = Some(Exit::TapGone);
                    break;
                }
            }
        }
        self.tap.rx_n = n;
        self.tap.rx_next = 0;
        for i in 0..n {
            let keep = self.classify(i);
            self.tap.rx_keep[i] = keep;
        }
        Ok(())
    }

    /// Looks at frame `i`: handles UDP/ICMP echo itself; notes new TCP flows. Returns whether
    /// smoltcp should see the frame.
    fn classify(&mut self, i: usize) -> bool {
        let len = self.tap.rx_len[i];
        let frame = &self.tap.rx[i][..len];
        let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
        let src_mac = eth.src_addr();
        let (proto, src, dst, l4_off, l4_len) = match eth.ethertype() {
            EthernetProtocol::Arp => {
                if src_mac.is_unicast() {
                    self.guest_mac = src_mac;
                }
                return true;
            }
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
                if ip.more_frags() || ip.frag_offset() != 0 {
                    let ip_len = ip.total_len() as usize;
                    return self.defragment(i, ip_len);
                }
                let hl = ip.header_len() as usize;
                (ip.next_header(), IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), 14 + hl, ip.payload().len())
            }
            EthernetProtocol::Ipv6 if self.cfg.net.ipv6 => {
                let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else { return false };
                (ip.next_header(), IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), 14 + 40, ip.payload().len())
            }
            _ => return false,
        };
        if src_mac.is_unicast() {
            self.guest_mac = src_mac;
        }
        self.classify_l4(i, proto, src, dst, l4_off, l4_len)
    }

    /// Frame `i` is an IPv4 fragment: keeps it, and when it completes its datagram, puts the
    /// reassembled packet in its place and classifies that.
    fn defragment(&mut self, i: usize, ip_len: usize) -> bool {
        let Some(pkt) = self.reasm.add(&self.tap.rx[i][14..14 + ip_len], Instant::now()) else { return false };
        let Some(dst) = self.tap.rx[i].get_mut(14..14 + pkt.len()) else { return false };
        dst.copy_from_slice(&pkt);
        self.tap.rx_len[i] = 14 + pkt.len();
        self.classify(i)
    }

    fn classify_l4(&mut self, i: usize, proto: IpProtocol, src: IpAddr, dst: IpAddr, off: usize, l4len: usize) -> bool {
        let l4 = &self.tap.rx[i][off..off + l4len];
        match proto {
            IpProtocol::Tcp => {
                let Ok(t) = TcpPacket::new_checked(l4) else { return false };
                if t.syn() && !t.ack() {
                    let g = SocketAddr::new(src, t.src_port());
                    let d = SocketAddr::new(dst, t.dst_port());
                    if !self.tcp_by_tuple.contains_key(&(ep(g), ep(d))) {
                        return self.new_tcp(g, d, t.seq_number().0 as u32);
                    }
                }
                true
            }
            IpProtocol::Udp => {
                let Ok(u) = UdpPacket::new_checked(l4) else { return false };
                let g = SocketAddr::new(src, u.src_port());
                let d = SocketAddr::new(dst, u.dst_port());
                let plen = (u.len() as usize).saturating_sub(8).min(l4len - 8);
                self.udp_from_guest(UdpKind::Udp, g, d, 0, i, off + 8, plen);
                false
            }
            IpProtocol::Icmp | IpProtocol::Icmpv6 => {
                let v6 = proto == IpProtocol::Icmpv6;
                if l4len < 8 {
                    return false;
                }
                let (ty, ident, seq) = (l4[0], u16::from_be_bytes([l4[4], l4[5]]), u16::from_be_bytes([l4[6], l4[7]]));
                let echo = if v6 { ty == 128 } else { ty == 8 };
                if v6 && ty == 133 {
                    self.router_advert(src);
                    return false;
                }
                if !echo {
                    return v6; // NDP and friends go to smoltcp
                }
                let kind = if v6 { UdpKind::Icmp6 } else { UdpKind::Icmp4 };
                // one flow per echo identifier (the "port" of ICMP echo)
                let g = SocketAddr::new(src, ident);
                let d = SocketAddr::new(dst, 0);
                if self.is_local(dst) {
                    self.echo_reply_local(kind, g, d, ident, seq, i, off + 8, l4len - 8);
                } else {
                    self.udp_from_guest(kind, g, d, ident, i, off, l4len);
                }
                false
            }
            _ => false,
        }
    }

    fn is_local(&self, a: IpAddr) -> bool {
        let n = &self.cfg.net;
        match a {
            IpAddr::V4(a) => a == n.gateway || a == n.dns,
            IpAddr::V6(a) => a == n.gateway6 || a == n.dns6 || a == n.router6_ll,
        }
    }

    /// Starts a flow for a new SYN. Returns whether smoltcp should see the SYN (without a
    /// socket for it, smoltcp answers with a reset).
    fn new_tcp(&mut self, guest: SocketAddr, dst: SocketAddr, seq: u32) -> bool {
        let Some(target) = self.map_dst(dst, false) else { return true };
        if self.tcp.len() >= MAX_TCP {
            tracing::warn!("too many TCP flows ({MAX_TCP}); refusing {guest} -> {dst}");
            return true;
        }
        let host = match sys::tcp_connect(&target, self.bind_for(&target)) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!("connect {target}: {e}");
                match Unreach::from_error(&e) {
                    Some(u) if u != Unreach::Port => {
                        self.icmp_error(guest, dst, IpProtocol::Tcp, seq, u);
                        return false;
                    }
                    _ => return true,
                }
            }
        };
        // SAFETY: fd is a fresh, owned, non-blocking TCP socket.
        let host = TcpStream::from_std(unsafe { std::net::TcpStream::from_raw_fd(host.into_raw_fd()) });
        // reuse a finished socket (and its buffers) when there is one
        let handle = match self.spare.pop() {
            Some(h) => h,
            None => {
                static BIG: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
                let big = *BIG.get_or_init(|| {
                    std::env::var("PORTFWD_TCP_BUF").ok().and_then(|v| v.parse().ok()).unwrap_or(4 << 20)
                });
                let n = self.tcp.len();
                let size = if n < HUGE_BUF_FLOWS {
                    big
                } else if n < BIG_BUF_FLOWS {
                    1 << 20
                } else {
                    64 << 10
                };
                let mut s =
                    tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; size]), tcp::SocketBuffer::new(vec![0u8; size]));
                s.set_nagle_enabled(false);
                // a short delayed ACK: request/response traffic gets its ACK piggybacked,
                // bulk traffic is still acknowledged every second segment
                let us = *ACK_DELAY.get_or_init(|| {
                    std::env::var("PORTFWD_ACK_DELAY_US").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
                });
                s.set_ack_delay(Some(smoltcp::time::Duration::from_micros(us)));
                self.sockets.add(s)
            }
        };
        let s = self.sockets.get_mut::<tcp::Socket>(handle);
        s.pause_synack(true);
        if s.listen(ep(dst)).is_err() {
            self.sockets.remove(handle);
            return true;
        }
        let tuple = (ep(guest), ep(dst));
        let idx = self.tcp.insert(TcpFlow {
            handle,
            host,
            tuple,
            connected: false,
            readable: false,
            // a loopback connect has usually completed already: look at once
            writable: true,
            host_eof: false,
            host_shut: false,
            fresh: true,
            dead: false,
            syn_seq: seq,
        });
        let f = self.tcp.get_mut(idx).expect("just inserted");
        if self.poll.registry().register(&mut f.host, tok(K_TCP, idx), Interest::READABLE | Interest::WRITABLE).is_err()
        {
            f.dead = true;
        }
        self.tcp_by_tuple.insert(tuple, idx);
        true
    }

    /// After smoltcp consumed new SYNs, record which listener took which guest endpoint.
    fn fix_fresh(&mut self) {
        for (idx, f) in self.tcp.iter_mut() {
            if !f.fresh {
                continue;
            }
            f.fresh = false;
            let s = self.sockets.get::<tcp::Socket>(f.handle);
            if let (Some(r), Some(l)) = (s.remote_endpoint(), s.local_endpoint()) {
                if (r, l) != f.tuple {
                    f.tuple = (r, l);
                    self.tcp_by_tuple.insert((r, l), idx);
                }
            }
        }
    }

    /// Moves data between smoltcp sockets and host sockets; reaps finished flows.
    /// Returns whether anything was queued for the guest.
    fn service_tcp(&mut self) -> bool {
        let mut queued = false;
        let mut dead: Vec<usize> = Vec::new();
        let mut unreach = Vec::new();
        for (idx, f) in self.tcp.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(f.handle);
            let fd = f.host.as_raw_fd();
            if f.dead {
                s.abort();
                dead.push(idx);
                queued = true;
                continue;
            }
            if !f.connected {
                if !f.writable {
                    continue;
                }
                match sys::so_error(fd) {
                    Ok(()) if f.host.peer_addr().is_ok() => {
                        f.connected = true;
                        s.pause_synack(false);
                        queued = true;
                    }
                    Ok(()) => {
                        f.writable = false;
                        continue;
                    }
                    Err(e) => {
                        match Unreach::from_error(&e) {
                            // no SYN-ACK was ever sent: drop the socket quietly, report ICMP
                            Some(u) if u != Unreach::Port => {
                                unreach.push((f.tuple.0.into(), f.tuple.1.into(), f.syn_seq, u))
                            }
                            _ => s.abort(),
                        }
                        dead.push(idx);
                        queued = true;
                        continue;
                    }
                }
            }
            // host -> guest
            if f.readable && !f.host_eof && s.may_send() {
                for _ in 0..2 {
                    if !s.can_send() {
                        break;
                    }
                    let r = s.send(|buf| match sys::read(fd, buf) {
                        Ok(n) => (n, Ok(n)),
                        Err(e) => (0, Err(e)),
                    });
                    match r {
                        Ok(Ok(0)) => {
                            f.host_eof = true;
                            s.close();
                            queued = true;
                            break;
                        }
                        Ok(Ok(_)) => queued = true,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            f.readable = false;
                            break;
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(_)) => {
                            s.abort();
                            f.dead = true;
                            queued = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            // guest -> host
            if f.writable && !f.dead {
                for _ in 0..2 {
                    if !s.can_recv() {
                        break;
                    }
                    let r = s.recv(|buf| match sys::send(fd, buf) {
                        Ok(n) => (n, Ok(n)),
                        Err(e) => (0, Err(e)),
                    });
                    match r {
                        Ok(Ok(_)) => queued = true,
                        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            f.writable = false;
                            break;
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(_)) => {
                            s.abort();
                            f.dead = true;
                            queued = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            // guest finished sending: pass the FIN on once its data is out
            if !f.host_shut && !s.may_recv() && s.recv_queue() == 0 && s.state() != tcp::State::SynReceived {
                use tcp::State::*;
                if matches!(s.state(), CloseWait | LastAck | Closing | TimeWait | Closed) {
                    sys::shutdown_write(fd);
                    f.host_shut = true;
                }
            }
            match s.state() {
                tcp::State::Closed => {
                    if !(f.host_eof && f.host_shut) {
                        // reset by the guest (or aborted): reset the host side too
                        sys::set_linger0(fd);
                    }
                    dead.push(idx);
                }
                tcp::State::TimeWait => dead.push(idx),
                _ => {}
            }
            if f.dead && !dead.contains(&idx) {
                dead.push(idx);
            }
        }
        for (g, d, seq, u) in unreach {
            self.icmp_error(g, d, IpProtocol::Tcp, seq, u);
        }
        if !dead.is_empty() {
            // let the resets/FINs out before the sockets go
            let now = self.now();
            self.iface.poll(now, &mut self.tap, &mut self.sockets);
            for idx in dead {
                if let Some(mut f) = self.tcp.remove(idx) {
                    let _ = self.poll.registry().deregister(&mut f.host);
                    self.tcp_by_tuple.remove(&f.tuple);
                    let st = self.sockets.get::<tcp::Socket>(f.handle).state();
                    if self.spare.len() < SPARE_SOCKETS && matches!(st, tcp::State::Closed | tcp::State::TimeWait) {
                        self.spare.push(f.handle);
                    } else {
                        self.sockets.remove(f.handle);
                    }
                }
            }
        }
        queued
    }

    /// A UDP datagram (or ICMP echo request) from the guest: frame `i`, payload at `off`.
    #[allow(clippy::too_many_arguments)]
    fn udp_from_guest(
        &mut self,
        kind: UdpKind,
        g: SocketAddr,
        d: SocketAddr,
        ident: u16,
        i: usize,
        off: usize,
        plen: usize,
    ) {
        let key = (kind, g, d);
        let idx = match self.udp_by_key.get(&key) {
            Some(&idx) => idx,
            None => match self.new_udp(kind, g, d, ident) {
                Some(idx) => idx,
                None => return,
            },
        };
        let Some(f) = self.udp.get_mut(idx) else { return };
        f.last = Instant::now();
        let data = &self.tap.rx[i][off..off + plen];
        let _ = sys::send(f.sock.as_raw_fd(), data);
    }

    fn new_udp(&mut self, kind: UdpKind, g: SocketAddr, d: SocketAddr, ident: u16) -> Option<usize> {
        let target = match kind {
            UdpKind::Udp => self.map_dst(d, true)?,
            _ => d,
        };
        if self.udp.len() >= MAX_UDP {
            // evict the least recently used flow
            let oldest = self.udp.iter_mut().min_by_key(|(_, f)| f.last).map(|(i, _)| i)?;
            self.remove_udp(oldest);
        }
        let (fam, proto) = match kind {
            UdpKind::Udp => (sys::family(&target.ip()), 0),
            UdpKind::Icmp4 => (libc::AF_INET, libc::IPPROTO_ICMP),
            UdpKind::Icmp6 => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
        };
        let fd = match sys::socket(fam, libc::SOCK_DGRAM, proto) {
            Ok(fd) => fd,
            Err(e) => {
                if kind != UdpKind::Udp && !self.icmp_denied_logged {
                    tracing::warn!("cannot open an ICMP datagram socket ({e}); echo requests to outside addresses are dropped (see net.ipv4.ping_group_range)");
                    self.icmp_denied_logged = true;
                }
                return None;
            }
        };
        if let Some(b) = self.bind_for(&target) {
            sys::bind(fd.as_raw_fd(), &SocketAddr::new(b, 0)).ok()?;
        }
        if let Err(e) = sys::connect(fd.as_raw_fd(), &target) {
            if let (UdpKind::Udp, Some(u)) = (kind, Unreach::from_error(&e)) {
                self.icmp_error(g, d, IpProtocol::Udp, 0, u);
            }
            return None;
        }
        // SAFETY: fd is a fresh, owned, non-blocking datagram socket.
        let sock = UdpSocket::from_std(unsafe { std::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) });
        let (udp_idle, dns_idle) = udp_idle();
        let idle = if d.port() == 53 { dns_idle } else { udp_idle };
        let idx = self.udp.insert(UdpFlow { kind, sock, guest: g, dst: d, last: Instant::now(), idle, ident });
        let f = self.udp.get_mut(idx)?;
        if self.poll.registry().register(&mut f.sock, tok(K_UDP, idx), Interest::READABLE).is_err() {
            self.udp.remove(idx);
            return None;
        }
        self.udp_by_key.insert((kind, g, d), idx);
        Some(idx)
    }

    fn remove_udp(&mut self, idx: usize) {
        if let Some(mut f) = self.udp.remove(idx) {
            let _ = self.poll.registry().deregister(&mut f.sock);
            self.udp_by_key.remove(&(f.kind, f.guest, f.dst));
        }
    }

    fn sweep_udp(&mut self) {
        let now = Instant::now();
        let old: Vec<usize> =
            self.udp.iter_mut().filter(|(_, f)| now.duration_since(f.last) > f.idle).map(|(i, _)| i).collect();
        for i in old {
            self.remove_udp(i);
        }
    }

    /// Host socket of a UDP/ICMP flow readable: relay datagrams to the guest.
    fn udp_readable(&mut self, idx: usize) {
        loop {
            let Some(f) = self.udp.get_mut(idx) else { return };
            let (kind, guest, dst, ident) = (f.kind, f.guest, f.dst, f.ident);
            let v6 = guest.is_ipv6();
            let hdr = 14 + if v6 { 40 } else { 20 };
            let l4h = match kind {
                UdpKind::Udp => 8,
                _ => 0,
            };
            let room = (self.cfg.mtu as usize + 14).min(FRAME) - hdr - l4h;
            let r = sys::read(f.sock.as_raw_fd(), &mut self.out[hdr + l4h..hdr + l4h + room]);
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if let (UdpKind::Udp, Some(u)) = (kind, Unreach::from_error(&e)) {
                        self.icmp_error(guest, dst, IpProtocol::Udp, 0, u);
                    }
                    continue;
                }
            };
            f.last = Instant::now();
            match kind {
                UdpKind::Udp => {
                    self.emit_l4(IpProtocol::Udp, dst, guest, n + 8, |b| {
                        b[0..2].copy_from_slice(&dst.port().to_be_bytes());
                        b[2..4].copy_from_slice(&guest.port().to_be_bytes());
                        b[4..6].copy_from_slice(&((n + 8) as u16).to_be_bytes());
                    });
                }
                UdpKind::Icmp4 | UdpKind::Icmp6 => {
                    if n < 8 {
                        continue;
                    }
                    // the kernel rewrote the identifier; give the guest its own back
                    let proto = if kind == UdpKind::Icmp4 { IpProtocol::Icmp } else { IpProtocol::Icmpv6 };
                    self.emit_l4(proto, dst, guest, n, |b| {
                        b[4..6].copy_from_slice(&ident.to_be_bytes());
                    });
                }
            }
        }
    }

    /// Tells the guest that `dst` is unreachable (ICMP/ICMPv6 destination unreachable),
    /// quoting a reconstruction of its packet's headers. TCP refusals are resets instead.
    fn icmp_error(&mut self, guest: SocketAddr, dst: SocketAddr, proto: IpProtocol, seq: u32, u: Unreach) {
        if proto == IpProtocol::Tcp && u == Unreach::Port {
            return;
        }
        let v6 = guest.is_ipv6();
        let hdr = 14 + if v6 { 40 } else { 20 };
        // the quoted packet: IP header + 8 bytes of the transport header
        let q = hdr + 8;
        let qlen = if v6 { 48 } else { 28 };
        {
            let o = &mut self.out[q..q + qlen];
            o.fill(0);
            let (iph, l4) = o.split_at_mut(if v6 { 40 } else { 20 });
            match (guest.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    iph[0] = 0x45;
                    iph[2..4].copy_from_slice(&28u16.to_be_bytes());
                    iph[8] = 64;
                    iph[9] = u8::from(proto);
                    iph[12..16].copy_from_slice(&s.octets());
                    iph[16..20].copy_from_slice(&d.octets());
                    let c = !fold(sum(iph, 0));
                    iph[10..12].copy_from_slice(&c.to_be_bytes());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    iph[0] = 0x60;
                    iph[4..6].copy_from_slice(&8u16.to_be_bytes());
                    iph[6] = u8::from(proto);
                    iph[7] = 64;
                    iph[8..24].copy_from_slice(&s.octets());
                    iph[24..40].copy_from_slice(&d.octets());
                }
                _ => return,
            }
            l4[0..2].copy_from_slice(&guest.port().to_be_bytes());
            l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
            if proto == IpProtocol::Tcp {
                l4[4..8].copy_from_slice(&seq.to_be_bytes());
            } else {
                l4[4..6].copy_from_slice(&8u16.to_be_bytes());
            }
        }
        let n = &self.cfg.net;
        let (ty, code, from) = match (v6, u) {
            (false, Unreach::Net) => (3, 0, IpAddr::V4(n.gateway)),
            (false, Unreach::Host) => (3, 1, IpAddr::V4(n.gateway)),
            (false, Unreach::Port) => (3, 3, dst.ip()),
            (true, Unreach::Net) => (1, 0, IpAddr::V6(n.gateway6)),
            (true, Unreach::Host) => (1, 3, IpAddr::V6(n.gateway6)),
            (true, Unreach::Port) => (1, 4, dst.ip()),
        };
        let proto = if v6 { IpProtocol::Icmpv6 } else { IpProtocol::Icmp };
        self.emit_l4(proto, SocketAddr::new(from, 0), guest, 8 + qlen, |b| {
            b[0] = ty;
            b[1] = code;
            b[4..8].fill(0);
        });
    }

    /// Answers a router solicitation: the guest learns fd00::/64 (SLAAC), the default router
    /// fe80::2, the MTU and the DNS server (RDNSS), as from slirp4netns.
    fn router_advert(&mut self, to: IpAddr) {
        let IpAddr::V6(to6) = to else { return };
        let dst = if to6.is_unspecified() { Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1) } else { to6 };
        let n = self.cfg.net.clone();
        let mtu = self.cfg.mtu;
        let mac = self.our_mac.0;
        let len = 16 + 8 + 8 + 32 + 24;
        let hdr = 14 + 40;
        {
            let b = &mut self.out[hdr..hdr + len];
            b.fill(0);
            b[0] = 134; // router advertisement
            b[4] = 64; // cur hop limit
            b[6..8].copy_from_slice(&1800u16.to_be_bytes()); // router lifetime
            let o = &mut b[16..];
            // source link-layer address
            o[0] = 1;
            o[1] = 1;
            o[2..8].copy_from_slice(&mac);
            // MTU
            o[8] = 5;
            o[9] = 1;
            o[12..16].copy_from_slice(&mtu.to_be_bytes());
            // prefix information: on-link, autonomous
            let pi = &mut o[16..48];
            pi[0] = 3;
            pi[1] = 4;
            pi[2] = 64;
            pi[3] = 0xc0;
            pi[4..8].copy_from_slice(&86400u32.to_be_bytes());
            pi[8..12].copy_from_slice(&14400u32.to_be_bytes());
            pi[16..32].copy_from_slice(&n.network6.octets());
            // recursive DNS server
            let r = &mut o[48..72];
            r[0] = 25;
            r[1] = 3;
            r[4..8].copy_from_slice(&1800u32.to_be_bytes());
            r[8..24].copy_from_slice(&n.dns6.octets());
        }
        self.ndp_hop = true;
        self.emit_l4(
            IpProtocol::Icmpv6,
            SocketAddr::new(IpAddr::V6(n.router6_ll), 0),
            SocketAddr::new(IpAddr::V6(dst), 0),
            len,
            |_| {},
        );
        self.ndp_hop = false;
    }

    /// Answers an echo request to one of our own addresses.
    #[allow(clippy::too_many_arguments)]
    fn echo_reply_local(
        &mut self,
        kind: UdpKind,
        g: SocketAddr,
        d: SocketAddr,
        ident: u16,
        seq: u16,
        i: usize,
        off: usize,
        plen: usize,
    ) {
        let v6 = kind == UdpKind::Icmp6;
        let hdr = 14 + if v6 { 40 } else { 20 };
        if hdr + 8 + plen > self.out.len() {
            return;
        }
        self.out[hdr + 8..hdr + 8 + plen].copy_from_slice(&self.tap.rx[i][off..off + plen]);
        let proto = if v6 { IpProtocol::Icmpv6 } else { IpProtocol::Icmp };
        self.emit_l4(proto, d, g, plen + 8, |b| {
            b[0] = if v6 { 129 } else { 0 };
            b[1] = 0;
            b[4..6].copy_from_slice(&ident.to_be_bytes());
            b[6..8].copy_from_slice(&seq.to_be_bytes());
        });
    }

    /// Writes a frame whose L4 payload already sits in `self.out` after the Ethernet and IP
    /// headers; `fill` patches the L4 header; the checksum is computed here.
    fn emit_l4(
        &mut self,
        proto: IpProtocol,
        src: SocketAddr,
        dst: SocketAddr,
        l4len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let v6 = dst.is_ipv6();
        let iph = if v6 { 40 } else { 20 };
        let total = 14 + iph + l4len;
        if total > self.out.len() {
            return;
        }
        let b = &mut self.out[..total];
        b[0..6].copy_from_slice(&self.guest_mac.0);
        b[6..12].copy_from_slice(&self.our_mac.0);
        b[12..14].copy_from_slice(&(if v6 { 0x86ddu16 } else { 0x0800u16 }).to_be_bytes());
        {
            let ip = &mut b[14..14 + iph];
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    ip[0] = 0x45;
                    ip[1] = 0;
                    ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
                    ip[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
                    ip[8] = 64;
                    ip[9] = u8::from(proto);
                    ip[10..12].copy_from_slice(&[0, 0]);
                    ip[12..16].copy_from_slice(&s.octets());
                    ip[16..20].copy_from_slice(&d.octets());
                    let c = !fold(sum(&ip[..20], 0));
                    ip[10..12].copy_from_slice(&c.to_be_bytes());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
                    ip[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
                    ip[6] = u8::from(proto);
                    ip[7] = if proto == IpProtocol::Icmpv6 && self.ndp_hop { 255 } else { 64 };
                    ip[8..24].copy_from_slice(&s.octets());
                    ip[24..40].copy_from_slice(&d.octets());
                }
                _ => return,
            }
        }
        let (head, l4) = b.split_at_mut(14 + iph);
        fill(l4);
        let ck_off = match proto {
            IpProtocol::Udp => 6,
            _ => 2,
        };
        l4[ck_off..ck_off + 2].copy_from_slice(&[0, 0]);
        let mut acc = 0u32;
        if proto != IpProtocol::Icmp {
            // pseudo header
            let ip = &head[14..];
            if v6 {
                acc = sum(&ip[8..40], acc);
            } else {
                acc = sum(&ip[12..20], acc);
            }
            acc += u32::from(u8::from(proto));
            acc += l4len as u32;
        }
        acc = sum(l4, acc);
        let mut c = !fold(acc);
        if c == 0 && proto == IpProtocol::Udp {
            c = 0xffff;
        }
        l4[ck_off..ck_off + 2].copy_from_slice(&c.to_be_bytes());
        if sys::write(self.tap.fd, &self.out[..total]).is_err() {
            self.tap.tx_drops += 1;
        }
    }

    /// Closes everything the loop owns (the API socket file is removed by the caller).
    pub fn shutdown(&mut self) {
        // SAFETY: the TAP fd is owned by the engine and not used afterwards.
        unsafe { libc::close(self.tap.fd) };
        self.tap.fd = -1;
        let _ = &self.exit_fd;
        let _ = &self.pidfd;
    }

    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    pub fn tcp_flows(&self) -> usize {
        self.tcp.len()
    }
}

/// One's-complement sum of 16-bit big-endian words.
fn sum(b: &[u8], mut acc: u32) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [x] = chunks.remainder() {
        acc += u32::from(*x) << 8;
    }
    acc = (acc & 0xffff) + (acc >> 16);
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
