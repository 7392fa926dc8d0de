//! The hickory-server request handler: answers container names from the [`Table`] and
//! forwards everything else to the upstream servers the table chooses.
//!
//! One handler serves one listening address (the handler knows the address, hickory's
//! `Request` only carries the source).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::table::{Kind, Resolution, Table};

/// Total time spent on upstream servers for one query, split between them (aardvark-dns: 5 s).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// The port upstream servers listen on.
pub const UPSTREAM_PORT: u16 = 53;

/// The table shared by every listener; replaced as a whole on reload.
pub type SharedTable = Arc<RwLock<Arc<Table>>>;

/// Settings common to every handler.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// TTL of the answers from the table.
    pub ttl: u32,
    /// Total upstream timeout per query.
    pub upstream_timeout: Duration,
    /// Port of the upstream servers (53; tests use another).
    pub upstream_port: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { ttl: 0, upstream_timeout: UPSTREAM_TIMEOUT, upstream_port: UPSTREAM_PORT }
    }
}

/// The request handler for one listening address.
#[derive(Debug, Clone)]
pub struct Handler {
    listen: IpAddr,
    table: SharedTable,
    settings: Settings,
}

impl Handler {
    pub fn new(listen: IpAddr, table: SharedTable, settings: Settings) -> Self {
        Handler { listen, table, settings }
    }

    fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Strips the IPv4-mapped form (`::ffff:a.b.c.d`) an IPv6 socket may report.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut builder = builder;
        if let Some(edns) = &request.edns {
            builder.edns(edns);
        }
        let result = if request.metadata.op_code != OpCode::Query {
            response.send_response(builder.error_msg(&request.metadata, ResponseCode::NotImp)).await
        } else if request.queries.len() != 1 {
            response.send_response(builder.error_msg(&request.metadata, ResponseCode::FormErr)).await
        } else {
            let query = &request.queries.queries()[0];
            let qname: Name = query.original().name().clone();
            let kind = match query.query_type() {
                RecordType::A => Kind::A,
                RecordType::AAAA => Kind::Aaaa,
                RecordType::PTR => Kind::Ptr,
                _ => Kind::Other,
            };
            let table = self.table();
            let asker = canonical(request.src().ip());
            let resolution = table.resolve(asker, self.listen, &qname.to_ascii(), kind);
            drop(table);
            let mut meta = Metadata::response_from_request(&request.metadata);
            meta.recursion_available = request.metadata.recursion_desired;
            let ttl = self.settings.ttl;
            match resolution {
                Resolution::Addrs(ips) => {
                    meta.authoritative = true;
                    let records: Vec<Record> = ips
                        .into_iter()
                        .map(|ip| {
                            let rdata = match ip {
                                IpAddr::V4(a) => RData::A(A(a)),
                                IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                            };
                            Record::from_rdata(qname.clone(), ttl, rdata)
                        })
                        .collect();
                    response.send_response(builder.build(meta, records.iter(), &[], &[], &[])).await
                }
                Resolution::Names(names) => {
                    meta.authoritative = true;
                    let records: Vec<Record> = names
                        .into_iter()
                        .filter_map(|n| Name::from_ascii(format!("{n}.")).ok())
                        .map(|n| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(n))))
                        .collect();
                    response.send_response(builder.build(meta, records.iter(), &[], &[], &[])).await
                }
                Resolution::NxDomain => {
                    meta.response_code = ResponseCode::NXDomain;
                    response.send_response(builder.build_no_records(meta)).await
                }
                Resolution::Forward(servers) => {
                    let upstreams: Vec<SocketAddr> =
                        servers.into_iter().map(|ip| SocketAddr::new(ip, self.settings.upstream_port)).collect();
                    match forward(request.as_slice(), &upstreams, self.settings.upstream_timeout).await {
                        Some((msg, raw_len)) => {
                            let mut m = msg.metadata;
                            m.id = request.metadata.id;
                            m.recursion_available = request.metadata.recursion_desired || m.recursion_available;
                            let limit = if request.protocol() == Protocol::Udp {
                                request.edns.as_ref().map_or(512, |e| e.max_payload().max(512)) as usize
                            } else {
                                usize::MAX
                            };
                            let size = msg.answers.len() + msg.authorities.len() + msg.additionals.len();
                            if m.truncation || (size > 0 && raw_len > limit) {
                                // the client retries over TCP
                                m.truncation = true;
                                response.send_response(builder.build_no_records(m)).await
                            } else {
                                response
                                    .send_response(builder.build(
                                        m,
                                        msg.answers.iter(),
                                        msg.authorities.iter(),
                                        &[],
                                        msg.additionals.iter().filter(|r| r.record_type() != RecordType::OPT),
                                    ))
                                    .await
                            }
                        }
                        None => {
                            response.send_response(builder.error_msg(&request.metadata, ResponseCode::ServFail)).await
                        }
                    }
                }
            }
        };
        match result {
            Ok(info) => info,
            Err(e) => {
                warn!("sending response to {}: {e}", request.src());
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                let header = hickory_proto::op::Header { metadata: meta, counts: Default::default() };
                ResponseInfo::from(header)
            }
        }
    }
}

/// Forwards a raw query to the upstreams in order, splitting `total` between them. Returns
/// the first usable answer: a SERVFAIL or REFUSED answer is kept only if no later server
/// gives a better one. The answer comes with its encoded length.
pub async fn forward(query: &[u8], upstreams: &[SocketAddr], total: Duration) -> Option<(Message, usize)> {
    if upstreams.is_empty() || query.len() < 12 {
        return None;
    }
    let per = total / u32::try_from(upstreams.len()).unwrap_or(1);
    let mut fallback = None;
    for server in upstreams {
        let res = tokio::time::timeout(per, exchange(query, *server)).await;
        match res {
            Ok(Ok(msg)) => {
                if matches!(msg.0.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) {
                    fallback = Some(msg);
                    continue;
                }
                return Some(msg);
            }
            Ok(Err(e)) => debug!("upstream {server}: {e}"),
            Err(_) => debug!("upstream {server}: timed out after {per:?}"),
        }
    }
    fallback
}

/// One exchange with one server: UDP, then TCP if the UDP answer is truncated.
async fn exchange(query: &[u8], server: SocketAddr) -> std::io::Result<(Message, usize)> {
    let id: u16 = rand::random();
    let mut q = query.to_vec();
    q[..2].copy_from_slice(&id.to_be_bytes());
    let udp = exchange_udp(&q, server, id).await?;
    // TC set (by the upstream, or by exchange_udp for an answer that filled its buffer and
    // may be cut): ask again over TCP without decoding what may be a partial message.
    if udp[2] & 0x02 == 0 {
        return Ok((decode(&udp)?, udp.len()));
    }
    let tcp = exchange_tcp(&q, server, id).await?;
    Ok((decode(&tcp)?, tcp.len()))
}

fn decode(bytes: &[u8]) -> std::io::Result<Message> {
    Message::from_vec(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

fn same_question(q: &[u8], r: &[u8]) -> bool {
    // the same question count (the upstream may change the case of the name)
    q.len() >= 12 && r.len() >= 12 && q[4..6] == r[4..6]
}

async fn exchange_udp(q: &[u8], server: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    sock.send(q).await?;
    // Answers larger than this buffer are rare (the query's EDNS size bounds them); one that
    // fills it may have been cut by the kernel, so it is marked truncated (TC) and the caller
    // asks again over TCP. A small buffer keeps a forwarded query cheap: no 64 KiB zeroing.
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await?;
        let r = &buf[..n];
        // ignore anything that is not the answer to this query
        if n >= 12 && r[..2] == id.to_be_bytes() && r[2] & 0x80 != 0 && same_question(q, r) {
            let mut out = r.to_vec();
            if n == buf.len() {
                out[2] |= 0x02;
            }
            return Ok(out);
        }
    }
}

async fn exchange_tcp(q: &[u8], server: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(server).await?;
    let len = u16::try_from(q.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut out = Vec::with_capacity(q.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(q);
    s.write_all(&out).await?;
    loop {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut buf).await?;
        if buf.len() >= 12 && buf[..2] == id.to_be_bytes() {
            return Ok(buf);
        }
    }
}
