//! One direction of the relay: the impairment [`Link`] model, the [`PacketRing`] that holds
//! packets until they are due, and the counters, driven through read/write closures.
//!
//! The pump never touches a file descriptor or a clock itself: the caller passes the time and two
//! closures (read one packet, write one packet) that follow the non-blocking `read(2)`/`write(2)`
//! convention (`ErrorKind::WouldBlock` when there is nothing to read or no room to write). The
//! TUN relay in [`crate::relay`] hands it real file descriptors; the tests hand it vectors.

use std::io::{self, ErrorKind};

use crate::model::{Link, Verdict};
use crate::ring::PacketRing;

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
}

impl Counters {
    /// A flat JSON object (hand-written: a dozen integers do not need a serialiser).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"rx_pkts\":{},\"rx_bytes\":{},\"tx_pkts\":{},\"tx_bytes\":{},\"lost\":{},\"queue_drops\":{},\"ring_full\":{},\"tx_errors\":{},\"max_held\":{},\"max_backlog_us\":{}}}",
            self.rx_pkts,
            self.rx_bytes,
            self.tx_pkts,
            self.tx_bytes,
            self.lost,
            self.queue_drops,
            self.ring_full,
            self.tx_errors,
            self.max_held,
            self.max_backlog_us
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
}

impl Pump {
    /// A pump with `slots` packet buffers of `slot_size` bytes.
    pub fn new(link: Link, slots: usize, slot_size: usize) -> Self {
        Self {
            link,
            ring: PacketRing::new(slots, slot_size),
            scratch: vec![0; slot_size.max(1)],
            counters: Counters::default(),
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

    /// Reads up to `max` packets with `read`, all stamped with arrival time `now_ns`, and queues
    /// those the model lets through. Returns how many packets were read; fewer than `max` means
    /// the source said `WouldBlock` (or returned 0).
    pub fn ingest<R>(&mut self, now_ns: u64, max: usize, mut read: R) -> io::Result<usize>
    where
        R: FnMut(&mut [u8]) -> io::Result<usize>,
    {
        let mut n = 0;
        while n < max {
            let in_ring = !self.ring.is_full();
            let buf = match self.ring.spare() {
                Some(b) => b,
                None => &mut self.scratch[..],
            };
            let len = match read(buf) {
                Ok(0) => break,
                Ok(len) => len,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            n += 1;
            self.counters.rx_pkts += 1;
            self.counters.rx_bytes += len as u64;
            if !in_ring {
                self.counters.ring_full += 1;
                continue;
            }
            let backlog_us = self.link.backlog_ns(now_ns) / 1_000;
            self.counters.max_backlog_us = self.counters.max_backlog_us.max(backlog_us);
            match self.link.offer(now_ns, len) {
                Verdict::Deliver { at_ns } => {
                    if self.ring.commit(len, at_ns) {
                        self.counters.max_held = self.counters.max_held.max(self.ring.len() as u64);
                    } else {
                        // Only possible if a read returned more than the slot size.
                        self.counters.ring_full += 1;
                    }
                }
                Verdict::Lost => self.counters.lost += 1,
                Verdict::QueueFull => self.counters.queue_drops += 1,
            }
        }
        Ok(n)
    }

    /// Writes every packet due at `now_ns` with `write`. Errors other than `WouldBlock` and
    /// `Interrupted` drop the packet and count as `tx_errors` (a relay must not stop because one
    /// packet was refused).
    pub fn release<W>(&mut self, now_ns: u64, mut write: W) -> Released
    where
        W: FnMut(&[u8]) -> io::Result<usize>,
    {
        while let Some(pkt) = self.ring.peek_due(now_ns) {
            let len = pkt.len() as u64;
            match write(pkt) {
                Ok(_) => {
                    self.counters.tx_pkts += 1;
                    self.counters.tx_bytes += len;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Released::Blocked,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => self.counters.tx_errors += 1,
            }
            self.ring.pop();
        }
        Released::Done
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
        Pump::new(Link::new(&cfg, 1), slots, 2048)
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
            p.release(9_999_999, |b| {
                out.push(b.to_vec());
                Ok(b.len())
            }),
            Released::Done
        );
        assert!(out.is_empty(), "nothing is due before 10 ms");
        p.release(10_000_000, |b| {
            out.push(b.to_vec());
            Ok(b.len())
        });
        assert_eq!(out.len(), 8);
        p.release(10_001_000, |b| {
            out.push(b.to_vec());
            Ok(b.len())
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
        p.release(0, |b| {
            got.push(b[0]);
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
        p.release(u64::MAX, |b| Ok(b.len()));
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
}
