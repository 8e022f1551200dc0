//! TCP segmentation offload at the TUN boundary, so the relay handles one 64 KiB read instead of
//! forty-odd 1500-byte ones, while the impairment model still sees every MTU-sized packet.
//!
//! With `IFF_VNET_HDR` each TUN read or write starts with a 10-byte `virtio_net_hdr`. After
//! `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` the sending stack hands over TCP/IPv4 super-packets
//! (`gso_type` TCPV4, `gso_size` = MSS) with a partial checksum. [`Segmenter`] cuts such a
//! packet into wire packets exactly as the kernel's software GSO would (sequence numbers, IP ids,
//! FIN/PSH only on the last segment, CWR only on the first), each with a header that asks the
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
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit.
pub const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const TCP_CSUM_OFFSET: u16 = 16;

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

/// The partial TCP checksum a `NEEDS_CSUM` packet carries: the folded pseudo-header sum for a
/// TCP segment of `tcp_len` bytes (header + payload), not complemented.
pub fn tcp4_pseudo_partial(ip: &[u8], tcp_len: usize) -> u16 {
    let mut s = sum16(0, &ip[12..20]);
    s = s.wrapping_add(6); // protocol TCP
    s = s.wrapping_add(tcp_len as u32);
    fold(s)
}

/// Full TCP checksum of a TCP/IPv4 packet (used by tests to check what the kernel would compute).
pub fn tcp4_full_checksum(pkt: &[u8]) -> u16 {
    let ihl = usize::from(pkt[0] & 0x0F) * 4;
    let mut s = sum16(0, &pkt[12..20]);
    s = s.wrapping_add(6);
    s = s.wrapping_add((pkt.len() - ihl) as u32);
    let tcp = &pkt[ihl..];
    s = sum16(s, &tcp[..16]);
    s = sum16(s, &tcp[18..]);
    !fold(s)
}

/// Header lengths (IP, TCP) of a TCP/IPv4 packet, checked against `pkt`.
pub fn tcp4_header_lens(pkt: &[u8]) -> Result<(usize, usize), GsoError> {
    if pkt.len() < 40 || pkt[0] >> 4 != 4 || pkt[9] != 6 {
        return Err(GsoError::Malformed);
    }
    let ihl = usize::from(pkt[0] & 0x0F) * 4;
    if ihl < 20 || pkt.len() < ihl + 20 {
        return Err(GsoError::Malformed);
    }
    let thl = usize::from(pkt[ihl + 12] >> 4) * 4;
    if thl < 20 || pkt.len() < ihl + thl {
        return Err(GsoError::Malformed);
    }
    Ok((ihl, thl))
}

/// The vnet header of a single (non-GSO) TCP/IPv4 packet with a partial checksum.
pub fn single_hdr(ihl: usize, thl: usize) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: (ihl + thl) as u16,
        gso_size: 0,
        csum_start: ihl as u16,
        csum_offset: TCP_CSUM_OFFSET,
    }
}

/// Cuts a TCP/IPv4 super-packet (without its vnet header) into segments of `mss` payload bytes,
/// one at a time, so the caller can run each through the model before copying it anywhere.
#[derive(Debug, Clone, Copy)]
pub struct Segmenter<'a> {
    pkt: &'a [u8],
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
        let (ihl, thl) = tcp4_header_lens(pkt)?;
        if mss == 0 || pkt.len() > 65_535 + 64 {
            return Err(GsoError::Malformed);
        }
        let payload = pkt.len() - ihl - thl;
        Ok(Self {
            pkt,
            ihl,
            thl,
            mss,
            count: payload.div_ceil(mss).max(1),
            id0: u16::from_be_bytes([pkt[4], pkt[5]]),
            seq0: u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]),
            flags0: pkt[ihl + 13],
        })
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
        buf[..VNET_HDR_LEN].copy_from_slice(&single_hdr(ihl, self.thl).to_bytes());
        let out = &mut buf[VNET_HDR_LEN..VNET_HDR_LEN + total];
        out[..hl].copy_from_slice(&self.pkt[..hl]);
        out[hl..].copy_from_slice(chunk);
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        out[4..6].copy_from_slice(&self.id0.wrapping_add(k as u16).to_be_bytes());
        ipv4_fix_checksum(out, ihl);
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
        let partial = tcp4_pseudo_partial(out, total - ihl);
        out[ihl + 16..ihl + 18].copy_from_slice(&partial.to_be_bytes());
        Ok(VNET_HDR_LEN + total)
    }
}

/// Builds, in `out`, the vnet header plus IP/TCP header of one super-packet made of consecutive
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
    let (ihl, thl) = tcp4_header_lens(p)?;
    let hl = ihl + thl;
    let total = hl + payload_total;
    if total > 65_535 || out.len() < VNET_HDR_LEN + hl || mss == 0 || mss > 65_535 {
        return Err(GsoError::Malformed);
    }
    let vh = VnetHdr {
        gso_type: GSO_TCPV4,
        gso_size: mss as u16,
        ..single_hdr(ihl, thl)
    };
    out[..VNET_HDR_LEN].copy_from_slice(&vh.to_bytes());
    let h = &mut out[VNET_HDR_LEN..VNET_HDR_LEN + hl];
    h.copy_from_slice(&p[..hl]);
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ipv4_fix_checksum(h, ihl);
    let last_flags = l.get(ihl + 13).copied().ok_or(GsoError::Malformed)?;
    h[ihl + 13] |= last_flags & (TCP_FIN | TCP_PSH);
    let partial = tcp4_pseudo_partial(h, total - ihl);
    h[ihl + 16..ihl + 18].copy_from_slice(&partial.to_be_bytes());
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
            assert_eq!(!fold(full), tcp4_full_checksum(ip));
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
        assert_eq!(!fold(full), tcp4_full_checksum(&whole));
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
        let mut udp = packet(100, 0);
        udp[9] = 17;
        assert_eq!(tcp4_header_lens(&udp), Err(GsoError::Malformed));
    }
}
