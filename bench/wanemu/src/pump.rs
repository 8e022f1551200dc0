//! One direction of the relay: the impairment [`Link`] model, the [`PacketRing`] that holds
//! packets until they are due, and the counters, driven through read/write closures.
//!
//! The pump never touches a file descriptor or a clock itself: the caller passes the time and two
//! closures (read one packet, write one packet) that follow the non-blocking `read(2)`/`write(2)`
//! convention (`ErrorKind::WouldBlock` when there is nothing to read or no room to write). The
//! TUN relay in [`crate::relay`] hands it real file descriptors; the tests hand it vectors.
//!
//! In offload mode (TUN with `IFF_VNET_HDR` and TSO, see [`crate::gso`]) every packet carries a
//! 10-byte vnet header, TCP super-packets are cut into wire packets before the model sees them,
//! and consecutive segments of one super-packet that are due together leave as one write.

use std::io::{self, ErrorKind, IoSlice};

use crate::gso::{
    self, Segmenter, VnetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_UDP_L4, VNET_HDR_LEN,
};
use crate::model::{Link, Verdict};
use crate::ring::PacketRing;

/// Largest TUN read in offload mode: a 64 KiB super-packet plus its vnet header.
const BIG_READ: usize = 65_536 + VNET_HDR_LEN + 64;
/// Most segments merged into one write.
const MAX_MERGE: usize = 64;

/// Per-direction counters, printed as JSON when the emulator exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets read from the ingress device.
    pub rx_pkts: u64,
    /// Bytes read from the ingress device.
    pub rx_bytes: u64,
    /// Packets written to the egress device.
    pub tx_pkts: u64,
    /// Bytes written to the egress device.
    pub tx_bytes: u64,
    /// Packets dropped by the random-loss model.
    pub lost: u64,
    /// Packets dropped at the tail of the full bottleneck buffer.
    pub queue_drops: u64,
    /// Packets dropped because every preallocated slot was in use (raise `--slots`).
    pub ring_full: u64,
    /// Packets the egress device refused (counted and dropped).
    pub tx_errors: u64,
    /// Most packets held at once (in the bottleneck queue or in flight on the delay line).
    pub max_held: u64,
    /// Largest bottleneck backlog seen when a packet arrived, in microseconds.
    pub max_backlog_us: u64,
    /// TUN reads (one read may carry a TCP super-packet of many wire packets).
    pub reads: u64,
    /// TUN writes (one write may carry several merged segments).
    pub writes: u64,
    /// Packets that could not be parsed or segmented (dropped).
    pub malformed: u64,
}

impl Counters {
    /// A flat JSON object (hand-written: a dozen integers do not need a serialiser).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"rx_pkts\":{},\"rx_bytes\":{},\"tx_pkts\":{},\"tx_bytes\":{},\"lost\":{},\"queue_drops\":{},\"ring_full\":{},\"tx_errors\":{},\"max_held\":{},\"max_backlog_us\":{},\"reads\":{},\"writes\":{},\"malformed\":{}}}",
            self.rx_pkts,
            self.rx_bytes,
            self.tx_pkts,
            self.tx_bytes,
            self.lost,
            self.queue_drops,
            self.ring_full,
            self.tx_errors,
            self.max_held,
            self.max_backlog_us,
            self.reads,
            self.writes,
            self.malformed
        )
    }
}

/// What [`Pump::release`] stopped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Nothing more is due now.
    Done,
    /// The egress said `WouldBlock`; the head packet stays queued and should be retried.
    Blocked,
}

/// One direction: model + ring + counters.
#[derive(Debug)]
pub struct Pump {
    link: Link,
    ring: PacketRing,
    scratch: Vec<u8>,
    counters: Counters,
    offload: bool,
    /// Super-packets seen, for segment tags (offload mode).
    group: u64,
}

impl Pump {
    /// A pump with `slots` packet buffers of `slot_size` bytes. With `offload`, reads and writes
    /// carry vnet headers (see the module docs); `slot_size` must then leave room for them.
    pub fn new(link: Link, slots: usize, slot_size: usize, offload: bool) -> Self {
        Self {
            link,
            ring: PacketRing::new(slots, slot_size),
            scratch: vec![0; if offload { BIG_READ } else { slot_size.max(1) }],
            counters: Counters::default(),
            offload,
            group: 0,
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Delivery time of the next queued packet.
    pub fn next_due(&self) -> Option<u64> {
        self.ring.next_due()
    }

    /// Packets held right now.
    pub fn held(&self) -> usize {
        self.ring.len()
    }

    /// Runs one wire packet of `len` bytes through the model; returns its delivery time if it
    /// is to be delivered and there is a slot for it.
    fn offer(&mut self, now_ns: u64, len: usize) -> Option<u64> {
        self.counters.rx_pkts += 1;
        self.counters.rx_bytes += len as u64;
        if self.ring.is_full() {
            self.counters.ring_full += 1;
            return None;
        }
        let backlog_us = self.link.backlog_ns(now_ns) / 1_000;
        self.counters.max_backlog_us = self.counters.max_backlog_us.max(backlog_us);
        match self.link.offer(now_ns, len) {
            Verdict::Deliver { at_ns } => Some(at_ns),
            Verdict::Lost => {
                self.counters.lost += 1;
                None
            }
            Verdict::QueueFull => {
                self.counters.queue_drops += 1;
                None
            }
        }
    }

    fn committed(&mut self) {
        self.counters.max_held = self.counters.max_held.max(self.ring.len() as u64);
    }

    /// Reads up to `max` times with `read`, stamping everything read with arrival time `now_ns`,
    /// and queues what the model lets through. Returns how many reads returned data; fewer than
    /// `max` means the source said `WouldBlock` (or returned 0).
    pub fn ingest<R>(&mut self, now_ns: u64, max: usize, mut read: R) -> io::Result<usize>
    where
        R: FnMut(&mut [u8]) -> io::Result<usize>,
    {
        let mut n = 0;
        while n < max {
            let r = if self.offload {
                read(&mut self.scratch[..])
            } else {
                match self.ring.spare() {
                    Some(b) => read(b),
                    None => read(&mut self.scratch[..]),
                }
            };
            let len = match r {
                Ok(0) => break,
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            n += 1;
            self.counters.reads += 1;
            if self.offload {
                self.ingest_vnet(now_ns, len);
            } else if let Some(at) = self.offer(now_ns, len) {
                // The packet is already in the spare slot (the ring was not full, or offer
                // would have said so).
                if self.ring.commit(len, at) {
                    self.committed();
                }
            }
        }
        Ok(n)
    }

    /// Offload mode: `self.scratch[..len]` holds a vnet header and a packet.
    fn ingest_vnet(&mut self, now_ns: u64, len: usize) {
        let Some(vh) = VnetHdr::parse(&self.scratch[..len]) else {
            self.counters.malformed += 1;
            return;
        };
        let gso_type = vh.gso_type & !GSO_ECN;
        if gso_type == GSO_NONE {
            if let Some(at) = self.offer(now_ns, len - VNET_HDR_LEN) {
                match self.ring.spare() {
                    Some(slot) if slot.len() >= len => {
                        slot[..len].copy_from_slice(&self.scratch[..len]);
                        self.ring.commit(len, at);
                        self.committed();
                    }
                    _ => self.counters.malformed += 1,
                }
            }
            return;
        }
        if gso_type != GSO_TCPV4 && gso_type != GSO_UDP_L4 {
            self.counters.malformed += 1;
            return;
        }
        let pkt = &self.scratch[VNET_HDR_LEN..len];
        let seg = match Segmenter::new(pkt, usize::from(vh.gso_size)) {
            Ok(seg) if seg.gso_type() == gso_type => seg,
            _ => {
                self.counters.malformed += 1;
                return;
            }
        };
        self.group += 1;
        // Tags let release() recognise consecutive segments: group in the high bits, index in
        // the low byte. Packets of more than 255 segments (tiny MSS) are simply not merged.
        let base = if seg.count() <= 255 {
            self.group << 8
        } else {
            0
        };
        for k in 0..seg.count() {
            let wire = seg.wire_len(k);
            self.counters.rx_pkts += 1;
            self.counters.rx_bytes += wire as u64;
            if self.ring.is_full() {
                self.counters.ring_full += 1;
                continue;
            }
            let backlog_us = self.link.backlog_ns(now_ns) / 1_000;
            self.counters.max_backlog_us = self.counters.max_backlog_us.max(backlog_us);
            let at = match self.link.offer(now_ns, wire) {
                Verdict::Deliver { at_ns } => at_ns,
                Verdict::Lost => {
                    self.counters.lost += 1;
                    continue;
                }
                Verdict::QueueFull => {
                    self.counters.queue_drops += 1;
                    continue;
                }
            };
            let written = match self.ring.spare() {
                Some(slot) => seg.write(k, slot),
                None => continue, // not reached: fullness was checked above
            };
            match written {
                Ok(l) => {
                    let tag = if base == 0 { 0 } else { base + k as u64 };
                    self.ring.commit_tagged(l, at, tag);
                    self.counters.max_held = self.counters.max_held.max(self.ring.len() as u64);
                }
                Err(_) => self.counters.malformed += 1,
            }
        }
    }

    /// Writes every packet due at `now_ns` with `write` (a gather write of the given slices).
    /// Errors other than `WouldBlock` and `Interrupted` drop the packet(s) and count as
    /// `tx_errors` (a relay must not stop because one packet was refused).
    pub fn release<W>(&mut self, now_ns: u64, mut write: W) -> Released
    where
        W: FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    {
        // vnet header + IPv4 header (<= 60) + TCP header (<= 60).
        let mut hdr = [0u8; 160];
        loop {
            let Some((due, tag, first)) = self.ring.entry(0) else {
                return Released::Done;
            };
            if due > now_ns {
                return Released::Done;
            }
            let mut iov: [IoSlice<'_>; MAX_MERGE + 1] = [IoSlice::new(&[]); MAX_MERGE + 1];
            let mut run = 1;
            let mut wire = (first.len() - if self.offload { VNET_HDR_LEN } else { 0 }) as u64;
            let mut iov_len = 1;
            iov[0] = IoSlice::new(first);
            if self.offload && tag != 0 {
                let hl = VnetHdr::parse(first).map_or(0, |h| usize::from(h.hdr_len));
                let seg_payload = first.len().saturating_sub(VNET_HDR_LEN + hl);
                let mut payload = seg_payload;
                let mut last = first;
                while run < MAX_MERGE {
                    match self.ring.entry(run) {
                        Some((d, t, b))
                            if d <= now_ns
                                && t == tag + run as u64
                                && b.len() > VNET_HDR_LEN + hl
                                && hl + payload + b.len() - VNET_HDR_LEN - hl <= 65_535 =>
                        {
                            payload += b.len() - VNET_HDR_LEN - hl;
                            wire += (b.len() - VNET_HDR_LEN) as u64;
                            last = b;
                            run += 1;
                        }
                        _ => break,
                    }
                }
                if run > 1 {
                    match gso::merge_header(first, last, payload, seg_payload, &mut hdr) {
                        Ok(n) => {
                            iov[0] = IoSlice::new(&hdr[..n]);
                            for k in 0..run {
                                if let Some((_, _, b)) = self.ring.entry(k) {
                                    iov[k + 1] = IoSlice::new(&b[VNET_HDR_LEN + hl..]);
                                }
                            }
                            iov_len = run + 1;
                        }
                        Err(_) => {
                            // Send them one by one instead.
                            run = 1;
                            wire = (first.len() - VNET_HDR_LEN) as u64;
                        }
                    }
                }
            }
            match write(&iov[..iov_len]) {
                Ok(_) => {
                    self.counters.tx_pkts += run as u64;
                    self.counters.tx_bytes += wire;
                    self.counters.writes += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Released::Blocked,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => self.counters.tx_errors += run as u64,
            }
            self.ring.pop_n(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;
    use crate::model::{BufferLimit, LinkConfig};

    fn pump(delay_ms: u64, loss: f64, rate_bps: u64, buffer: BufferLimit, slots: usize) -> Pump {
        let cfg = LinkConfig {
            delay: Duration::from_millis(delay_ms),
            loss,
            rate_bps,
            buffer,
        };
        Pump::new(Link::new(&cfg, 1), slots, 2048, false)
    }

    fn flat(v: &[IoSlice<'_>]) -> Vec<u8> {
        v.iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// A source that yields the given packets, then `WouldBlock`.
    fn source(pkts: &mut VecDeque<Vec<u8>>) -> impl FnMut(&mut [u8]) -> io::Result<usize> + '_ {
        move |buf| match pkts.pop_front() {
            Some(p) => {
                buf[..p.len()].copy_from_slice(&p);
                Ok(p.len())
            }
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }

    #[test]
    fn packets_come_out_intact_in_order_after_the_delay() {
        let mut p = pump(10, 0.0, 0, BufferLimit::Unlimited, 64);
        let mut input: VecDeque<Vec<u8>> =
            (0..20u8).map(|i| vec![i; 40 + usize::from(i)]).collect();
        let expected: Vec<Vec<u8>> = input.iter().cloned().collect();
        assert_eq!(p.ingest(0, 8, source(&mut input)).unwrap(), 8);
        assert_eq!(p.ingest(1_000, 100, source(&mut input)).unwrap(), 12);
        let mut out = Vec::new();
        assert_eq!(
            p.release(9_999_999, |v| {
                out.push(flat(v));
                Ok(0)
            }),
            Released::Done
        );
        assert!(out.is_empty(), "nothing is due before 10 ms");
        p.release(10_000_000, |v| {
            out.push(flat(v));
            Ok(0)
        });
        assert_eq!(out.len(), 8);
        p.release(10_001_000, |v| {
            out.push(flat(v));
            Ok(0)
        });
        assert_eq!(out, expected);
        assert_eq!(p.counters().tx_pkts, 20);
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn blocked_egress_keeps_the_packet() {
        let mut p = pump(0, 0.0, 0, BufferLimit::Unlimited, 4);
        let mut input: VecDeque<Vec<u8>> = vec![vec![1; 10], vec![2; 10]].into();
        p.ingest(0, 10, source(&mut input)).unwrap();
        let mut calls = 0;
        let r = p.release(0, |_| {
            calls += 1;
            if calls == 2 {
                Err(ErrorKind::WouldBlock.into())
            } else {
                Ok(10)
            }
        });
        assert_eq!(r, Released::Blocked);
        assert_eq!(p.held(), 1);
        let mut got = Vec::new();
        p.release(0, |v| {
            got.push(v[0][0]);
            Ok(10)
        });
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn egress_errors_drop_and_count() {
        let mut p = pump(0, 0.0, 0, BufferLimit::Unlimited, 4);
        let mut input: VecDeque<Vec<u8>> = vec![vec![1; 10], vec![2; 10]].into();
        p.ingest(0, 10, source(&mut input)).unwrap();
        assert_eq!(
            p.release(0, |_| Err(io::Error::from_raw_os_error(libc::EIO))),
            Released::Done
        );
        assert_eq!(p.counters().tx_errors, 2);
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let mut p = pump(100, 0.0, 0, BufferLimit::Unlimited, 3);
        let mut input: VecDeque<Vec<u8>> = (0..5).map(|_| vec![7; 100]).collect();
        assert_eq!(p.ingest(0, 10, source(&mut input)).unwrap(), 5);
        let c = *p.counters();
        assert_eq!((c.rx_pkts, c.ring_full, c.max_held), (5, 2, 3));
    }

    #[test]
    fn counters_add_up_under_loss_and_overload() {
        // 100 Mbit/s, 1 ms buffer (12 500 B), 10 % loss; 1000 packets of 1000 B offered in one burst.
        let mut p = pump(
            0,
            0.1,
            100_000_000,
            BufferLimit::Time(Duration::from_millis(1)),
            4096,
        );
        let mut input: VecDeque<Vec<u8>> = (0..1000).map(|_| vec![0; 1000]).collect();
        p.ingest(0, usize::MAX, source(&mut input)).unwrap();
        p.release(u64::MAX, |_| Ok(0));
        let c = *p.counters();
        assert_eq!(
            c.rx_pkts,
            c.tx_pkts + c.lost + c.queue_drops + c.ring_full + c.tx_errors
        );
        // 12 packets fit the buffer; losses are drawn on those (and lost ones still use the link).
        assert_eq!(c.tx_pkts + c.lost, 12);
        assert_eq!(c.queue_drops, 988);
        assert!(c.to_json().starts_with("{\"rx_pkts\":1000,"));
    }

    #[test]
    fn source_errors_propagate() {
        let mut p = pump(0, 0.0, 0, BufferLimit::Unlimited, 4);
        let e = p
            .ingest(0, 10, |_| Err(io::Error::from_raw_os_error(libc::EBADF)))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    fn offload_pump(loss: f64, rate_bps: u64) -> Pump {
        let cfg = LinkConfig {
            delay: Duration::from_millis(1),
            loss,
            rate_bps,
            buffer: BufferLimit::Unlimited,
        };
        Pump::new(Link::new(&cfg, 3), 4096, 1600, true)
    }

    fn super_packet(segs: usize, mss: usize) -> Vec<u8> {
        let pkt = crate::gso::tests::packet(segs * mss, 0x18);
        let vh = VnetHdr {
            flags: gso::F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: mss as u16,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut v = vh.to_bytes().to_vec();
        v.extend_from_slice(&pkt);
        v
    }

    /// Payload bytes and TCP sequence numbers of what was written, per write.
    fn writes(p: &mut Pump, now: u64) -> Vec<(VnetHdr, u32, Vec<u8>)> {
        let mut out = Vec::new();
        p.release(now, |v| {
            let b = flat(v);
            let vh = VnetHdr::parse(&b).unwrap();
            let ip = &b[VNET_HDR_LEN..];
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
            let seq = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
            out.push((vh, seq, ip[52..].to_vec()));
            Ok(b.len())
        });
        out
    }

    #[test]
    fn offload_super_packet_is_segmented_for_the_model_and_merged_on_the_way_out() {
        let mut p = offload_pump(0.0, 0);
        let mut input: VecDeque<Vec<u8>> = vec![super_packet(10, 1000)].into();
        assert_eq!(p.ingest(0, 8, source(&mut input)).unwrap(), 1);
        assert_eq!(p.counters().rx_pkts, 10, "the model saw ten wire packets");
        assert_eq!(p.counters().rx_bytes, 10 * 1052);
        let w = writes(&mut p, 1_000_000);
        assert_eq!(w.len(), 1, "all ten due together: one write");
        assert_eq!((w[0].0.gso_type, w[0].0.gso_size), (GSO_TCPV4, 1000));
        assert_eq!(w[0].2, crate::gso::tests::packet(10_000, 0x18)[52..]);
        let c = *p.counters();
        assert_eq!(
            (c.tx_pkts, c.tx_bytes, c.writes, c.reads),
            (10, 10 * 1052, 1, 1)
        );
    }

    #[test]
    fn offload_loss_splits_the_run_and_nothing_else_is_lost() {
        let mut p = offload_pump(0.2, 0);
        let mut input: VecDeque<Vec<u8>> = (0..50).map(|_| super_packet(40, 1448)).collect();
        p.ingest(0, 100, source(&mut input)).unwrap();
        let w = writes(&mut p, u64::MAX);
        let c = *p.counters();
        assert_eq!(c.rx_pkts, 2000);
        assert!((300..500).contains(&c.lost), "lost {}", c.lost);
        assert_eq!(c.tx_pkts + c.lost, 2000);
        let payload: usize = w.iter().map(|(_, _, b)| b.len()).sum();
        assert_eq!(payload as u64, c.tx_pkts * 1448);
        assert!(w.len() < c.tx_pkts as usize, "runs were merged");
        for (vh, _, b) in &w {
            if b.len() > 1448 {
                assert_eq!(vh.gso_type, GSO_TCPV4);
            } else {
                assert_eq!(vh.gso_type, GSO_NONE);
            }
        }
    }

    #[test]
    fn offload_rate_cap_releases_segments_as_they_finish() {
        // 1 Gbit/s: 1052-byte wire packets take 8.416 µs; at 1 ms + 30 µs three are due.
        let mut p = offload_pump(0.0, 1_000_000_000);
        let mut input: VecDeque<Vec<u8>> = vec![super_packet(10, 1000)].into();
        p.ingest(0, 8, source(&mut input)).unwrap();
        let w = writes(&mut p, 1_030_000);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].2.len(), 3000);
        let w = writes(&mut p, 2_000_000);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].1,
            0xFFFF_FF00u32.wrapping_add(3000),
            "continues where it stopped"
        );
        assert_eq!(w[0].2.len(), 7000);
    }

    #[test]
    fn offload_plain_packets_pass_through_with_their_header() {
        let mut p = offload_pump(0.0, 0);
        let mut pkt = VnetHdr::default().to_bytes().to_vec();
        pkt.extend_from_slice(&[0x45; 84]); // ICMP-sized, never parsed
        let mut input: VecDeque<Vec<u8>> = vec![pkt.clone(), vec![1, 2, 3]].into();
        p.ingest(0, 8, source(&mut input)).unwrap();
        let mut out = Vec::new();
        p.release(u64::MAX, |v| {
            out.push(flat(v));
            Ok(0)
        });
        assert_eq!(out, vec![pkt]);
        assert_eq!(
            p.counters().malformed,
            1,
            "a 3-byte read has no vnet header"
        );
    }
}
