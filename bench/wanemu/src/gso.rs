//! TCP (and UDP) segmentation offload at the TUN boundary, so the relay handles one 64 KiB read
//! instead of forty-odd 1500-byte ones, while the impairment model still sees every wire packet.
//!
//! With `IFF_VNET_HDR` each TUN read or write starts with a 10-byte `virtio_net_hdr`. After
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` the sending stack hands over TCP/IPv4 super-packets
//! (`gso_type` TCPV4, `gso_size` = MSS) with a partial checksum. [`Segmenter`] cuts such a
//! packet into wire packets exactly as the kernel's software GSO would (sequence numbers, IP ids,
//! FIN/PSH only on the last segment, CWR only on the first; for UDP `UDP_SEGMENT` super-packets,
//! `gso_type` UDP_L4, the per-datagram UDP length), each with a header that asks the
//! receiving kernel to treat the checksum as partial (`NEEDS_CSUM`), which local delivery accepts.
//! On the way out, [`merge_header`] rebuilds one super-packet header for a run of consecutive
//! segments that are due together, so the receiving stack also gets GRO-sized packets.
//!
//! Everything here is pure byte manipulation, tested without a TUN device.

/// Size of `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start`, stored at `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (UDP segmentation offload, `UDP_SEGMENT` senders).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit.
pub const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const TCP_CSUM_OFFSET: u16 = 16;
const UDP_CSUM_OFFSET: u16 = 6;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// A parsed `virtio_net_hdr` (native byte order, as TUN uses by default on little-endian hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` or 0.
    pub flags: u8,
    /// `GSO_NONE`, `GSO_TCPV4`, ... possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers (IP + TCP).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first 10 bytes of `b` (`None` if shorter).
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The 10 wire bytes.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a super-packet could not be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// Not a well-formed TCP/IPv4 packet.
    Malformed,
    /// A GSO type other than TCPv4 (never requested from the kernel).
    Unsupported,
}

/// One's-complement sum of `data` (big-endian 16-bit words) added to `sum`, unfolded.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// Recomputes the IPv4 header checksum of `ip` (header of `ihl` bytes) in place.
pub fn ipv4_fix_checksum(ip: &mut [u8], ihl: usize) {
    ip[10] = 0;
    ip[11] = 0;
    let c = !fold(sum16(0, &ip[..ihl]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The partial checksum a `NEEDS_CSUM` packet carries: the folded pseudo-header sum (addresses
/// from the IPv4 header `ip`, protocol `proto`, transport length `l4_len`), not complemented.
pub fn pseudo_partial(ip: &[u8], proto: u8, l4_len: usize) -> u16 {
    let mut s = sum16(0, &ip[12..20]);
    s = s.wrapping_add(u32::from(proto));
    s = s.wrapping_add(l4_len as u32);
    fold(s)
}

/// Full transport checksum of a TCP/IPv4 or UDP/IPv4 packet, ignoring the stored one (what the
/// kernel would compute; the tests compare partial checksums against it).
pub fn full_checksum(pkt: &[u8]) -> u16 {
    let ihl = usize::from(pkt[0] & 0x0F) * 4;
    let off = if pkt[9] == PROTO_UDP { 6 } else { 16 };
    let mut s = sum16(0, &pkt[12..20]);
    s = s.wrapping_add(u32::from(pkt[9]));
    s = s.wrapping_add((pkt.len() - ihl) as u32);
    let l4 = &pkt[ihl..];
    s = sum16(s, &l4[..off]);
    s = sum16(s, &l4[off + 2..]);
    !fold(s)
}

/// Header lengths (IP, transport) and protocol of a TCP/IPv4 or UDP/IPv4 packet, checked
/// against `pkt`.
pub fn l4_header_lens(pkt: &[u8]) -> Result<(usize, usize, u8), GsoError> {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 {
        return Err(GsoError::Malformed);
    }
    let ihl = usize::from(pkt[0] & 0x0F) * 4;
    let proto = pkt[9];
    let l4 = match proto {
        PROTO_TCP if ihl >= 20 && pkt.len() >= ihl + 20 => usize::from(pkt[ihl + 12] >> 4) * 4,
        PROTO_UDP => 8,
        _ => return Err(GsoError::Malformed),
    };
    if ihl < 20 || (proto == PROTO_TCP && l4 < 20) || pkt.len() < ihl + l4 {
        return Err(GsoError::Malformed);
    }
    Ok((ihl, l4, proto))
}

/// The vnet header of a single (non-GSO) TCP or UDP/IPv4 packet with a partial checksum.
pub fn single_hdr(ihl: usize, l4: usize, proto: u8) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: (ihl + l4) as u16,
        gso_size: 0,
        csum_start: ihl as u16,
        csum_offset: if proto == PROTO_UDP {
            UDP_CSUM_OFFSET
        } else {
            TCP_CSUM_OFFSET
        },
    }
}

/// The GSO type that carries `proto`.
fn gso_type_of(proto: u8) -> u8 {
    if proto == PROTO_UDP {
        GSO_UDP_L4
    } else {
        GSO_TCPV4
    }
}

/// Cuts a TCP/IPv4 or UDP/IPv4 super-packet (without its vnet header) into segments of `mss`
/// payload bytes, one at a time, so the caller can run each through the model before copying
/// it anywhere. A UDP super-packet (from a `UDP_SEGMENT` sender) becomes its datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Segmenter<'a> {
    pkt: &'a [u8],
    proto: u8,
    ihl: usize,
    thl: usize,
    mss: usize,
    count: usize,
    id0: u16,
    seq0: u32,
    flags0: u8,
}

impl<'a> Segmenter<'a> {
    /// Checks the packet and prepares to cut it.
    pub fn new(pkt: &'a [u8], mss: usize) -> Result<Self, GsoError> {
        let (ihl, thl, proto) = l4_header_lens(pkt)?;
        if mss == 0 || pkt.len() > 65_535 + 64 {
            return Err(GsoError::Malformed);
        }
        let payload = pkt.len() - ihl - thl;
        let tcp = proto == PROTO_TCP;
        Ok(Self {
            pkt,
            proto,
            ihl,
            thl,
            mss,
            count: payload.div_ceil(mss).max(1),
            id0: u16::from_be_bytes([pkt[4], pkt[5]]),
            seq0: if tcp {
                u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]])
            } else {
                0
            },
            flags0: if tcp { pkt[ihl + 13] } else { 0 },
        })
    }

    /// The vnet GSO type matching the packet's protocol.
    pub fn gso_type(&self) -> u8 {
        gso_type_of(self.proto)
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.count
    }

    fn chunk(&self, k: usize) -> &'a [u8] {
        let payload = &self.pkt[self.ihl + self.thl..];
        let start = (k * self.mss).min(payload.len());
        let end = ((k + 1) * self.mss).min(payload.len());
        &payload[start..end]
    }

    /// Length of segment `k` on the wire (IP packet, no vnet header).
    pub fn wire_len(&self, k: usize) -> usize {
        self.ihl + self.thl + self.chunk(k).len()
    }

    /// Writes a vnet header plus segment `k` into `buf`; returns the bytes written.
    pub fn write(&self, k: usize, buf: &mut [u8]) -> Result<usize, GsoError> {
        let (ihl, hl) = (self.ihl, self.ihl + self.thl);
        let chunk = self.chunk(k);
        let total = hl + chunk.len();
        if k >= self.count || buf.len() < VNET_HDR_LEN + total {
            return Err(GsoError::Malformed);
        }
        let vh = single_hdr(ihl, self.thl, self.proto);
        buf[..VNET_HDR_LEN].copy_from_slice(&vh.to_bytes());
        let out = &mut buf[VNET_HDR_LEN..VNET_HDR_LEN + total];
        out[..hl].copy_from_slice(&self.pkt[..hl]);
        out[hl..].copy_from_slice(chunk);
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        out[4..6].copy_from_slice(&self.id0.wrapping_add(k as u16).to_be_bytes());
        ipv4_fix_checksum(out, ihl);
        if self.proto == PROTO_TCP {
            let seq = self.seq0.wrapping_add((k * self.mss) as u32);
            out[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
            let mut f = self.flags0;
            if k + 1 < self.count {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if k > 0 {
                f &= !TCP_CWR;
            }
            out[ihl + 13] = f;
        } else {
            out[ihl + 4..ihl + 6].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
        }
        let partial = pseudo_partial(out, self.proto, total - ihl);
        let at = ihl + usize::from(vh.csum_offset);
        out[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        Ok(VNET_HDR_LEN + total)
    }
}

/// Builds, in `out`, the vnet header plus IP/TCP (or IP/UDP) header of one super-packet made of consecutive
/// segments: `first` and `last` are the first and last segments (each with its vnet header, as
/// written by [`Segmenter`]), `payload_total` the sum of their payloads and `mss` the payload
/// of every segment but the last. Returns the length written (10 + header length).
pub fn merge_header(
    first: &[u8],
    last: &[u8],
    payload_total: usize,
    mss: usize,
    out: &mut [u8],
) -> Result<usize, GsoError> {
    let p = first.get(VNET_HDR_LEN..).ok_or(GsoError::Malformed)?;
    let l = last.get(VNET_HDR_LEN..).ok_or(GsoError::Malformed)?;
    let (ihl, thl, proto) = l4_header_lens(p)?;
    let hl = ihl + thl;
    let total = hl + payload_total;
    if total > 65_535 || out.len() < VNET_HDR_LEN + hl || mss == 0 || mss > 65_535 {
        return Err(GsoError::Malformed);
    }
    let single = single_hdr(ihl, thl, proto);
    let vh = VnetHdr {
        gso_type: gso_type_of(proto),
        gso_size: mss as u16,
        ..single
    };
    out[..VNET_HDR_LEN].copy_from_slice(&vh.to_bytes());
    let h = &mut out[VNET_HDR_LEN..VNET_HDR_LEN + hl];
    h.copy_from_slice(&p[..hl]);
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ipv4_fix_checksum(h, ihl);
    if proto == PROTO_TCP {
        let last_flags = l.get(ihl + 13).copied().ok_or(GsoError::Malformed)?;
        h[ihl + 13] |= last_flags & (TCP_FIN | TCP_PSH);
    } else {
        // Like a UDP GRO packet: the UDP length covers the whole super-packet.
        h[ihl + 4..ihl + 6].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
    }
    let partial = pseudo_partial(h, proto, total - ihl);
    let at = ihl + usize::from(single.csum_offset);
    h[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    Ok(VNET_HDR_LEN + hl)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TCP/IPv4 packet with timestamps (32-byte TCP header) and `payload` bytes 0, 1, 2, ...
    pub(crate) fn packet(payload: usize, flags: u8) -> Vec<u8> {
        let (ihl, thl) = (20, 32);
        let mut p = vec![0u8; ihl + thl + payload];
        p[0] = 0x45;
        let tot = (ihl + thl + payload) as u16;
        p[2..4].copy_from_slice(&tot.to_be_bytes());
        p[4..6].copy_from_slice(&0xFFFEu16.to_be_bytes()); // ids wrap
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 77, 9, 1]);
        p[16..20].copy_from_slice(&[10, 77, 9, 2]);
        ipv4_fix_checksum(&mut p, ihl);
        let t = ihl;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&0xFFFF_FF00u32.to_be_bytes()); // seq wraps
        p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        p[t + 12] = ((thl / 4) as u8) << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&1000u16.to_be_bytes());
        p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        for (i, b) in p[ihl + thl..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    fn segments(pkt: &[u8], mss: usize) -> Vec<Vec<u8>> {
        let s = Segmenter::new(pkt, mss).unwrap();
        (0..s.count())
            .map(|k| {
                let mut b = vec![0u8; 2048];
                let n = s.write(k, &mut b).unwrap();
                assert_eq!(n, VNET_HDR_LEN + s.wire_len(k));
                b.truncate(n);
                b
            })
            .collect()
    }

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }

    #[test]
    fn segments_like_kernel_gso() {
        let mss = 1448;
        let pkt = packet(3 * mss + 100, TCP_PSH | TCP_CWR | 0x10);
        let segs = segments(&pkt, mss);
        assert_eq!(segs.len(), 4);
        let mut payload = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            let vh = VnetHdr::parse(s).unwrap();
            assert_eq!(
                (
                    vh.flags,
                    vh.gso_type,
                    vh.hdr_len,
                    vh.csum_start,
                    vh.csum_offset
                ),
                (1, 0, 52, 20, 16)
            );
            let ip = &s[VNET_HDR_LEN..];
            let plen = if k < 3 { mss } else { 100 };
            assert_eq!(ip.len(), 52 + plen);
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
            assert_eq!(
                u16::from_be_bytes([ip[4], ip[5]]),
                0xFFFEu16.wrapping_add(k as u16)
            );
            assert_eq!(fold(sum16(0, &ip[..20])), 0xFFFF, "IP checksum valid");
            let seq = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
            assert_eq!(seq, 0xFFFF_FF00u32.wrapping_add((k * mss) as u32));
            let f = ip[33];
            assert_eq!(f & TCP_PSH != 0, k == 3, "PSH only on the last");
            assert_eq!(f & TCP_CWR != 0, k == 0, "CWR only on the first");
            assert_eq!(f & 0x10, 0x10, "ACK everywhere");
            // The partial checksum completes to the real one when the payload is added.
            let partial = u16::from_be_bytes([ip[36], ip[37]]);
            let mut full = sum16(u32::from(partial), &ip[20..36]);
            full = sum16(full, &ip[38..]);
            assert_eq!(!fold(full), full_checksum(ip));
            payload.extend_from_slice(&ip[52..]);
        }
        assert_eq!(payload, pkt[52..]);
    }

    #[test]
    fn merged_header_describes_the_run() {
        let mss = 1000;
        let pkt = packet(5 * mss, TCP_PSH | TCP_FIN | 0x10);
        let segs = segments(&pkt, mss);
        // Merge segments 1..=4 (the first one was, say, lost).
        let mut out = [0u8; 128];
        let n = merge_header(&segs[1], &segs[4], 4 * mss, mss, &mut out).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 52);
        let vh = VnetHdr::parse(&out).unwrap();
        assert_eq!(
            (vh.gso_type, vh.gso_size, vh.hdr_len, vh.flags),
            (GSO_TCPV4, 1000, 52, F_NEEDS_CSUM)
        );
        let h = &out[VNET_HDR_LEN..n];
        assert_eq!(u16::from_be_bytes([h[2], h[3]]) as usize, 52 + 4 * mss);
        assert_eq!(fold(sum16(0, &h[..20])), 0xFFFF);
        assert_eq!(
            &h[24..28],
            &segs[1][VNET_HDR_LEN + 24..VNET_HDR_LEN + 28],
            "seq of the first"
        );
        assert_eq!(
            h[33] & (TCP_PSH | TCP_FIN),
            TCP_PSH | TCP_FIN,
            "flags of the last"
        );
        let mut whole = h.to_vec();
        for s in &segs[1..=4] {
            whole.extend_from_slice(&s[VNET_HDR_LEN + 52..]);
        }
        let partial = u16::from_be_bytes([whole[36], whole[37]]);
        let full = sum16(sum16(u32::from(partial), &whole[20..36]), &whole[38..]);
        assert_eq!(!fold(full), full_checksum(&whole));
    }

    #[test]
    fn rejects_garbage_and_oversized_runs() {
        assert_eq!(
            Segmenter::new(&[0u8; 30], 1000).err(),
            Some(GsoError::Malformed)
        );
        let pkt = packet(10_000, 0x10);
        assert_eq!(Segmenter::new(&pkt, 0).err(), Some(GsoError::Malformed));
        let s = Segmenter::new(&pkt, 1000).unwrap();
        assert_eq!(
            s.write(0, &mut [0u8; 100]),
            Err(GsoError::Malformed),
            "buffer too small"
        );
        assert_eq!(
            s.write(10, &mut [0u8; 2048]),
            Err(GsoError::Malformed),
            "no such segment"
        );
        let mut out = [0u8; 128];
        let seg = segments(&pkt, 1000);
        assert!(merge_header(&seg[0], &seg[1], 70_000, 1000, &mut out).is_err());
        let mut icmp = packet(100, 0);
        icmp[9] = 1;
        assert_eq!(l4_header_lens(&icmp), Err(GsoError::Malformed));
    }

    /// A UDP/IPv4 packet carrying `payload` bytes 0, 1, 2, ... (a `UDP_SEGMENT` super-packet
    /// when larger than the segment size).
    pub(crate) fn udp_packet(payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 28 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_UDP;
        p[12..16].copy_from_slice(&[10, 77, 9, 1]);
        p[16..20].copy_from_slice(&[10, 77, 9, 2]);
        ipv4_fix_checksum(&mut p, 20);
        p[20..22].copy_from_slice(&4000u16.to_be_bytes());
        p[22..24].copy_from_slice(&8886u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        p
    }

    #[test]
    fn udp_super_packet_becomes_datagrams_and_merges_back() {
        let pkt = udp_packet(3 * 1200 + 500);
        let s = Segmenter::new(&pkt, 1200).unwrap();
        assert_eq!((s.count(), s.gso_type()), (4, GSO_UDP_L4));
        let segs = segments(&pkt, 1200);
        let mut payload = Vec::new();
        for (k, seg) in segs.iter().enumerate() {
            let vh = VnetHdr::parse(seg).unwrap();
            assert_eq!(
                (vh.flags, vh.hdr_len, vh.csum_start, vh.csum_offset),
                (1, 28, 20, 6)
            );
            let ip = &seg[VNET_HDR_LEN..];
            let plen = if k < 3 { 1200 } else { 500 };
            assert_eq!(ip.len(), 28 + plen);
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
            assert_eq!(
                u16::from_be_bytes([ip[24], ip[25]]) as usize,
                8 + plen,
                "UDP length"
            );
            assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 0x1234 + k as u16);
            assert_eq!(fold(sum16(0, &ip[..20])), 0xFFFF);
            let partial = u16::from_be_bytes([ip[26], ip[27]]);
            let full = sum16(sum16(u32::from(partial), &ip[20..26]), &ip[28..]);
            assert_eq!(!fold(full), full_checksum(ip));
            payload.extend_from_slice(&ip[28..]);
        }
        assert_eq!(payload, pkt[28..]);
        let mut out = [0u8; 64];
        let n = merge_header(&segs[0], &segs[3], 3 * 1200 + 500, 1200, &mut out).unwrap();
        let vh = VnetHdr::parse(&out).unwrap();
        assert_eq!(
            (vh.gso_type, vh.gso_size, vh.hdr_len, vh.csum_offset),
            (GSO_UDP_L4, 1200, 28, 6)
        );
        let h = &out[VNET_HDR_LEN..n];
        assert_eq!(&h[..24], &pkt[..24], "IP header and ports as sent");
        assert_eq!(&h[24..26], &pkt[24..26], "UDP length of the whole");
    }
}
