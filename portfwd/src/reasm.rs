//! Reassembly of IPv4 fragments sent by the guest.
//!
//! How this works: fragments are collected per (source, destination, protocol, identifier)
//! into a buffer of at most 64 KiB, with a bitmap of the 8-byte blocks received. The header
//! of the first fragment (offset 0) is kept. Once the last fragment (no "more fragments" flag)
//! has told the total length and every block before it has arrived, the datagram is returned
//! as one unfragmented IPv4 packet (flags and offset cleared, length and checksum fixed) and
//! the engine handles it like any other. Overlapping fragments overwrite earlier data (no
//! overlap attack matters here: the guest only fools its own flows). Bounds: at most
//! [`MAX_PENDING`] datagrams in progress (the oldest is dropped to make room), each dropped
//! [`TIMEOUT`] after its first fragment; malformed fragments are dropped.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::wire::Ipv4Packet;

/// Datagrams being reassembled at once.
pub const MAX_PENDING: usize = 16;
/// A datagram not complete this long after its first fragment is dropped.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest IPv4 packet.
const MAX_PACKET: usize = 65535;
/// 8-byte blocks of the largest payload.
const BLOCKS: usize = MAX_PACKET.div_ceil(8);

type Key = (Ipv4Addr, Ipv4Addr, u8, u16);

struct Pending {
    key: Key,
    started: Instant,
    /// the first fragment's header (empty until it arrives)
    hdr: Vec<u8>,
    data: Vec<u8>,
    have: Vec<u64>,
    /// payload length, once the last fragment has arrived
    total: Option<usize>,
}

impl Pending {
    fn complete(&self) -> bool {
        let Some(total) = self.total else { return false };
        !self.hdr.is_empty() && (0..total.div_ceil(8)).all(|b| self.have[b / 64] & (1 << (b % 64)) != 0)
    }
}

/// Datagrams in reassembly.
#[derive(Default)]
pub struct Reassembler {
    pending: Vec<Pending>,
}

impl Reassembler {
    /// Takes one fragment (a whole IPv4 packet with MF set or a non-zero offset). Returns the
    /// reassembled packet when this fragment completes it.
    pub fn add(&mut self, packet: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.pending.retain(|p| now.duration_since(p.started) < TIMEOUT);
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let hl = ip.header_len() as usize;
        let off = ip.frag_offset() as usize;
        let payload = ip.payload();
        let end = off + payload.len();
        let more = ip.more_frags();
        if end + hl > MAX_PACKET || (more && (payload.is_empty() || payload.len() % 8 != 0)) {
            return None;
        }
        let key = (ip.src_addr(), ip.dst_addr(), u8::from(ip.next_header()), ip.ident());
        let i = match self.pending.iter().position(|p| p.key == key) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    // the oldest gives way
                    self.pending.remove(0);
                }
                self.pending.push(Pending {
                    key,
                    started: now,
                    hdr: Vec::new(),
                    data: Vec::new(),
                    have: vec![0; BLOCKS.div_ceil(64)],
                    total: None,
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[i];
        if !more {
            match p.total {
                Some(t) if t != end => {
                    // two different ends: give up on this datagram
                    self.pending.remove(i);
                    return None;
                }
                _ => p.total = Some(end),
            }
        }
        if p.total.is_some_and(|t| end > t) {
            self.pending.remove(i);
            return None;
        }
        if off == 0 {
            p.hdr = packet[..hl].to_vec();
        }
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[off..end].copy_from_slice(payload);
        for b in off / 8..end.div_ceil(8) {
            p.have[b / 64] |= 1 << (b % 64);
        }
        if !p.complete() {
            return None;
        }
        let p = self.pending.remove(i);
        let total = p.total.unwrap_or(0);
        let mut out = p.hdr;
        let hl = out.len();
        out.extend_from_slice(&p.data[..total]);
        let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
        ip.set_total_len((hl + total) as u16);
        ip.set_more_frags(false);
        ip.set_frag_offset(0);
        ip.fill_checksum();
        Some(out)
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::IpProtocol;

    /// An IPv4 fragment of a UDP datagram's bytes `payload[off..off+len]`.
    fn frag(payload: &[u8], off: usize, len: usize, ident: u16) -> Vec<u8> {
        let more = off + len < payload.len();
        let mut b = vec![0u8; 20 + len];
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + len) as u16);
        ip.set_ident(ident);
        ip.clear_flags();
        ip.set_more_frags(more);
        ip.set_frag_offset(off as u16);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Udp);
        ip.set_src_addr(Ipv4Addr::new(10, 0, 2, 100));
        ip.set_dst_addr(Ipv4Addr::new(10, 0, 2, 2));
        ip.fill_checksum();
        b[20..].copy_from_slice(&payload[off..off + len]);
        b
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let now = Instant::now();
        let mut r = Reassembler::default();
        // out of order, with a duplicate
        assert_eq!(r.add(&frag(&data, 1480, 1480, 7), now), None);
        assert_eq!(r.add(&frag(&data, 2960, 40, 7), now), None);
        assert_eq!(r.add(&frag(&data, 1480, 1480, 7), now), None);
        let out = r.add(&frag(&data, 0, 1480, 7), now).expect("complete");
        let ip = Ipv4Packet::new_checked(&out[..]).expect("valid");
        assert!(ip.verify_checksum());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.payload(), &data[..]);
        assert!(r.is_empty());
    }

    #[test]
    fn bounds_and_bad_fragments() {
        let data = vec![1u8; 100];
        let now = Instant::now();
        let mut r = Reassembler::default();
        // a non-final fragment whose length is not a multiple of 8
        assert_eq!(r.add(&frag(&data, 0, 13, 1), now), None);
        assert!(r.is_empty());
        // many incomplete datagrams: bounded
        for id in 0..100 {
            assert_eq!(r.add(&frag(&data, 0, 48, id), now), None);
        }
        assert_eq!(r.len(), MAX_PENDING);
        // expired ones are dropped
        assert_eq!(r.add(&frag(&data, 0, 48, 500), now + TIMEOUT + Duration::from_secs(1)), None);
        assert_eq!(r.len(), 1);
    }
}
