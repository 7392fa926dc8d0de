//! Thin wrappers over the Linux system calls portfwd needs and std does not offer: namespaces,
//! the TAP device and its interface ioctls, fd passing, splice, non-blocking connect with a
//! bound source address.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a libc return value into an `io::Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens `path` read-only with O_CLOEXEC.
pub fn open_ro(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// (device, inode) of a file, to compare namespaces.
pub fn dev_ino(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid descriptor and st a valid pointer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

/// setns(2).
pub fn setns(fd: RawFd, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::setns(fd, kind) }).map(|_| ())
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

/// Creates (or attaches to) TAP device `name` without packet info; returns its fd (blocking).
pub fn tap_open(name: &str) -> io::Result<OwnedFd> {
    let path = c"/dev/net/tun";
    // SAFETY: static NUL-terminated path.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: fd was just returned by open.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq that lives for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })?;
    Ok(fd)
}

/// A datagram socket for interface ioctls.
fn ctl_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_in(a: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
        sin_zero: [0; 8],
    }
}

fn sockaddr_in6(a: Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: a.octets() },
        sin6_scope_id: 0,
    }
}

/// A socket address in its C form and length.
pub fn c_sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v) => {
            let s = sockaddr_in(*v.ip(), v.port());
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, s) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v) => {
            let s = sockaddr_in6(*v.ip(), v.port());
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, s) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn if_ioctl(sock: &OwnedFd, req: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: the interface ioctls used here read/write one ifreq that outlives the call.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) }).map(|_| ())
}

/// Sets IFF_UP on an interface.
pub fn link_up(name: &str) -> io::Result<()> {
    let s = ctl_socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    if_ioctl(&s, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    if_ioctl(&s, libc::SIOCSIFFLAGS, &mut ifr)
}

/// Sets an interface's MTU.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let s = ctl_socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    if_ioctl(&s, libc::SIOCSIFMTU, &mut ifr)
}

/// Sets an interface's MAC address.
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let s = ctl_socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    // SAFETY: sockaddr is plain data; zero is valid.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in sa.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_hwaddr = sa;
    if_ioctl(&s, libc::SIOCSIFHWADDR, &mut ifr)
}

/// Reads an interface's MAC address.
pub fn get_mac(name: &str) -> io::Result<[u8; 6]> {
    let s = ctl_socket(libc::AF_INET)?;
    let mut ifr = ifreq(name)?;
    if_ioctl(&s, libc::SIOCGIFHWADDR, &mut ifr)?;
    let mut mac = [0u8; 6];
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let d = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    for (m, s) in mac.iter_mut().zip(d.iter()) {
        *m = *s as u8;
    }
    Ok(mac)
}

/// Assigns an IPv4 address, netmask and broadcast address to an interface.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let s = ctl_socket(libc::AF_INET)?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    let bcast = Ipv4Addr::from(u32::from(addr) | !mask);
    for (req, a) in
        [(libc::SIOCSIFADDR, addr), (libc::SIOCSIFNETMASK, Ipv4Addr::from(mask)), (libc::SIOCSIFBRDADDR, bcast)]
    {
        let mut ifr = ifreq(name)?;
        let sin = sockaddr_in(a, 0);
        // SAFETY: sockaddr_in fits in the sockaddr member of the union (same size).
        unsafe { std::ptr::write(&mut ifr.ifr_ifru.ifru_addr as *mut _ as *mut libc::sockaddr_in, sin) };
        if_ioctl(&s, req, &mut ifr)?;
    }
    Ok(())
}

/// Interface index of `name`.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// Adds a default IPv4 route via `gw` on `dev`.
pub fn add_default_route4(dev: &str, gw: Ipv4Addr) -> io::Result<()> {
    let s = ctl_socket(libc::AF_INET)?;
    // SAFETY: rtentry is plain data; zero is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    let any = sockaddr_in(Ipv4Addr::UNSPECIFIED, 0);
    let g = sockaddr_in(gw, 0);
    // SAFETY: sockaddr_in and sockaddr have the same size.
    unsafe {
        std::ptr::write(&mut rt.rt_dst as *mut _ as *mut libc::sockaddr_in, any);
        std::ptr::write(&mut rt.rt_genmask as *mut _ as *mut libc::sockaddr_in, any);
        std::ptr::write(&mut rt.rt_gateway as *mut _ as *mut libc::sockaddr_in, g);
    }
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    let cdev = CString::new(dev).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rt.rt_dev = cdev.as_ptr() as *mut libc::c_char;
    // SAFETY: rt and the device name it points to live across the call.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCADDRT, &mut rt) }).map(|_| ())
}

#[repr(C)]
struct In6Ifreq {
    addr: libc::in6_addr,
    prefixlen: u32,
    ifindex: libc::c_int,
}

#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    rtmsg_type: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// Adds an IPv6 address and a default route via `gw` on `dev`.
pub fn set_ipv6(dev: &str, addr: Ipv6Addr, prefix: u8, gw: Ipv6Addr) -> io::Result<()> {
    let idx = if_index(dev)? as libc::c_int;
    let s = ctl_socket(libc::AF_INET6)?;
    let mut req = In6Ifreq { addr: libc::in6_addr { s6_addr: addr.octets() }, prefixlen: prefix.into(), ifindex: idx };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket takes a struct in6_ifreq, laid out as above.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFADDR, &mut req) })?;
    let mut rt = In6Rtmsg {
        dst: libc::in6_addr { s6_addr: [0; 16] },
        src: libc::in6_addr { s6_addr: [0; 16] },
        gateway: libc::in6_addr { s6_addr: gw.octets() },
        rtmsg_type: 0,
        dst_len: 0,
        src_len: 0,
        metric: 1,
        info: 0,
        flags: (libc::RTF_UP | libc::RTF_GATEWAY) as u32,
        ifindex: idx,
    };
    // SAFETY: SIOCADDRT on an AF_INET6 socket takes a struct in6_rtmsg, laid out as above.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCADDRT, &mut rt) }).map(|_| ())
}

/// Sets O_NONBLOCK on a descriptor.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) }).map(|_| ())
}

/// Sends a message and at most one descriptor over a unix socket.
pub fn send_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // Enough room for one int in a control message, aligned.
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points to a buffer of at least `space` bytes, so the first
        // header and its data fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
    }
    loop {
        // SAFETY: msg and the buffers it points to are valid for the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(());
    }
}

/// Receives one message into `buf` and at most one descriptor. `Ok(None)` on EOF.
pub fn recv_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let r = loop {
        // SAFETY: msg and its buffers are valid for the call.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        break r as usize;
    };
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; CMSG_* walk it within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if r == 0 && fd.is_none() {
        return Ok(None);
    }
    Ok(Some((r, fd)))
}

/// A new socket (non-blocking, close-on-exec) in the calling thread's network namespace.
pub fn socket(family: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = cvt(unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an int socket option.
pub fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v lives for the call; size matches.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// SO_LINGER {on, 0}: close sends a reset.
pub fn set_linger0(fd: RawFd) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: l lives for the call; size matches.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// bind(2).
pub fn bind(fd: RawFd, a: &SocketAddr) -> io::Result<()> {
    let (ss, len) = c_sockaddr(a);
    // SAFETY: ss holds a valid address of length len.
    cvt(unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) }).map(|_| ())
}

/// Non-blocking connect(2): Ok(()) when completed or in progress.
pub fn connect(fd: RawFd, a: &SocketAddr) -> io::Result<()> {
    let (ss, len) = c_sockaddr(a);
    // SAFETY: ss holds a valid address of length len.
    let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Family constant for an address.
pub fn family(a: &IpAddr) -> libc::c_int {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// Starts a non-blocking TCP connection to `to`, optionally from `from`.
pub fn tcp_connect(to: &SocketAddr, from: Option<IpAddr>) -> io::Result<OwnedFd> {
    let s = socket(family(&to.ip()), libc::SOCK_STREAM, 0)?;
    if let Some(f) = from {
        bind(s.as_raw_fd(), &SocketAddr::new(f, 0))?;
    }
    setsockopt_int(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    connect(s.as_raw_fd(), to)?;
    Ok(s)
}

/// A non-blocking pipe (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: p has room for two descriptors.
    cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: both are fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

/// Tries to grow a pipe's buffer; returns its size.
pub fn pipe_size(fd: RawFd, want: usize) -> usize {
    // SAFETY: fcntl on a pipe descriptor we own.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want as libc::c_int) };
    if r > 0 {
        return r as usize;
    }
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if r > 0 {
        r as usize
    } else {
        65536
    }
}

/// splice(2) without offsets; Ok(0) means EOF on the input.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets are allowed for pipes and sockets.
    let r = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// read(2) into a buffer.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// write(2) from a buffer.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of its length.
    let r = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// send(2) with MSG_NOSIGNAL (no SIGPIPE on a reset peer).
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of its length.
    let r = unsafe { libc::send(fd, buf.as_ptr() as *const libc::c_void, buf.len(), libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// shutdown(2) of the write side.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall; errors (ENOTCONN) are irrelevant here.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// SO_ERROR of a socket (the result of a non-blocking connect).
pub fn so_error(fd: RawFd) -> io::Result<()> {
    let mut v: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and l are valid out-parameters of the right size.
    cvt(unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut v as *mut _ as *mut libc::c_void, &mut l)
    })?;
    if v != 0 {
        Err(io::Error::from_raw_os_error(v))
    } else {
        Ok(())
    }
}

/// pidfd_open(2): a descriptor that becomes readable when the process exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// IPv4/IPv6 address of a local interface (for `--outbound-addr=IFNAME`).
pub fn iface_addr(name: &str, v6: bool) -> Option<IpAddr> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p walks the list returned by getifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a valid C string.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if n.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; its family tells the concrete type.
        let fam = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
        if fam == libc::AF_INET && !v6 {
            // SAFETY: family AF_INET means sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())));
            break;
        }
        if fam == libc::AF_INET6 && v6 {
            // SAFETY: family AF_INET6 means sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let a = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            if !a.is_unicast_link_local() {
                found = Some(IpAddr::V6(a));
                break;
            }
        }
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    found
}

/// Writes all of `buf` to a (blocking) fd, retrying on EINTR.
pub fn write_all_fd(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        match write(fd, &buf[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a socket's peer has closed it (EOF or error pending, nothing to read).
pub fn peer_gone(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: b is valid for one byte.
    let r = unsafe { libc::recv(fd, b.as_mut_ptr() as *mut libc::c_void, 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if r == 0 {
        return true;
    }
    r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
}
