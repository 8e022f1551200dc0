//! The impairment model of one direction of the emulated path, free of any I/O.
//!
//! A packet offered at time `now` goes through, in this order:
//!
//! 1. a **Bernoulli loss** draw (one draw per offered packet, so the loss pattern depends only on
//!    the seed and the packet's index, not on timing);
//! 2. a **bottleneck** of `rate_bps` with a **drop-tail buffer**: the packet waits until the link
//!    is free, then takes `len * 8 / rate` to serialise; if the work already queued plus its own
//!    serialisation time exceeds the buffer, it is dropped (an idle link always takes a packet);
//!    a packet that lost the loss draw still uses the link (it is lost on the wire after the
//!    bottleneck, like a lossy last mile), so goodput at saturation is `rate * (1 - p)`;
//! 3. a constant **one-way delay** after serialisation ends.
//!
//! Time is plain nanoseconds from an arbitrary origin, passed in by the caller, so tests drive the
//! model with a fake clock. The link's busy time is kept in picoseconds so that rounding does not
//! drift the rate (1500 B at 2.5 Gbit/s is 4.8 µs exactly).
//!
//! Because the delay is constant and the bottleneck is FIFO, delivery times never decrease:
//! a plain FIFO of packets (see [`crate::ring`]) is enough to hold them until they are due.

use std::time::Duration;

use crate::rng::{Bernoulli, SplitMix64};

/// How large the bottleneck buffer is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BufferLimit {
    /// Holds this much time worth of the bottleneck rate.
    Time(Duration),
    /// Holds this many bytes.
    Bytes(u64),
    /// Never drops (only meaningful for tests; the packet ring still bounds memory).
    Unlimited,
}

/// Configuration of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Constant one-way propagation delay.
    pub delay: Duration,
    /// Probability that a packet is lost on the wire, in [0, 1].
    pub loss: f64,
    /// Bottleneck rate in bits per second; 0 means no rate cap (and then no queue).
    pub rate_bps: u64,
    /// Bottleneck buffer; ignored without a rate cap.
    pub buffer: BufferLimit,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            loss: 0.0,
            rate_bps: 0,
            buffer: BufferLimit::Time(Duration::from_millis(50)),
        }
    }
}

/// What happens to an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it at this time (ns, same origin as `now`).
    Deliver {
        /// Delivery time in nanoseconds.
        at_ns: u64,
    },
    /// Lost by the random-loss draw.
    Lost,
    /// Dropped at the tail of a full bottleneck buffer.
    QueueFull,
}

const PS_PER_NS: u64 = 1_000;
const PS_PER_S: u128 = 1_000_000_000_000;

/// One direction of the emulated path.
#[derive(Debug, Clone)]
pub struct Link {
    delay_ns: u64,
    loss: Bernoulli,
    rng: SplitMix64,
    rate_bps: u64,
    /// Buffer limit expressed as serialisation time, in ps; `None` = unlimited.
    limit_ps: Option<u64>,
    /// When the bottleneck finishes the last accepted packet, in ps.
    busy_until_ps: u64,
}

impl Link {
    /// A link following `cfg`, drawing its losses from a generator seeded with `seed`.
    pub fn new(cfg: &LinkConfig, seed: u64) -> Self {
        let rate_bps = cfg.rate_bps;
        let limit_ps = if rate_bps == 0 {
            None
        } else {
            match cfg.buffer {
                BufferLimit::Time(t) => Some(
                    u64::try_from(t.as_nanos())
                        .unwrap_or(u64::MAX)
                        .saturating_mul(PS_PER_NS),
                ),
                BufferLimit::Bytes(b) => Some(ser_ps(b, rate_bps)),
                BufferLimit::Unlimited => None,
            }
        };
        Self {
            delay_ns: u64::try_from(cfg.delay.as_nanos()).unwrap_or(u64::MAX / 4),
            loss: Bernoulli::new(cfg.loss),
            rng: SplitMix64::new(seed),
            rate_bps,
            limit_ps,
            busy_until_ps: 0,
        }
    }

    /// Offers a packet of `len` bytes (IP header included) at time `now_ns`.
    pub fn offer(&mut self, now_ns: u64, len: usize) -> Verdict {
        let lost = self.loss.sample(&mut self.rng);
        let now_ps = now_ns.saturating_mul(PS_PER_NS);
        let finish_ps = if self.rate_bps == 0 {
            now_ps
        } else {
            let ser = ser_ps(len as u64, self.rate_bps);
            let backlog = self.busy_until_ps.saturating_sub(now_ps);
            if let Some(limit) = self.limit_ps {
                if backlog > 0 && backlog.saturating_add(ser) > limit {
                    return Verdict::QueueFull;
                }
            }
            let finish = now_ps.max(self.busy_until_ps).saturating_add(ser);
            self.busy_until_ps = finish;
            finish
        };
        if lost {
            return Verdict::Lost;
        }
        Verdict::Deliver {
            at_ns: finish_ps.div_ceil(PS_PER_NS).saturating_add(self.delay_ns),
        }
    }

    /// Work queued at the bottleneck at `now_ns` (including the packet on the wire), in ns.
    pub fn backlog_ns(&self, now_ns: u64) -> u64 {
        self.busy_until_ps
            .saturating_sub(now_ns.saturating_mul(PS_PER_NS))
            / PS_PER_NS
    }
}

/// Serialisation time of `bytes` at `rate_bps`, in picoseconds, rounded up.
pub fn ser_ps(bytes: u64, rate_bps: u64) -> u64 {
    if rate_bps == 0 {
        return 0;
    }
    let ps = (u128::from(bytes) * 8 * PS_PER_S).div_ceil(u128::from(rate_bps));
    u64::try_from(ps).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg(delay_ms: u64, loss: f64, rate_bps: u64, buffer: BufferLimit) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_millis(delay_ms),
            loss,
            rate_bps,
            buffer,
        }
    }

    #[test]
    fn delay_only_delivers_after_exactly_the_delay() {
        let mut l = Link::new(&cfg(50, 0.0, 0, BufferLimit::Unlimited), 1);
        assert_eq!(l.offer(0, 1500), Verdict::Deliver { at_ns: 50 * MS });
        assert_eq!(l.offer(7, 40), Verdict::Deliver { at_ns: 50 * MS + 7 });
        // No rate cap: simultaneous packets are not serialised.
        assert_eq!(l.offer(7, 1500), Verdict::Deliver { at_ns: 50 * MS + 7 });
        assert_eq!(l.backlog_ns(7), 0);
    }

    #[test]
    fn delivery_times_never_decrease() {
        let mut l = Link::new(&cfg(10, 0.0, 1_000_000_000, BufferLimit::Unlimited), 1);
        let mut last = 0;
        let mut g = SplitMix64::new(9);
        let mut now = 0;
        for _ in 0..10_000 {
            now += g.next_u64() % 20_000;
            let len = 40 + (g.next_u64() % 1461) as usize;
            match l.offer(now, len) {
                Verdict::Deliver { at_ns } => {
                    assert!(at_ns >= last);
                    assert!(at_ns >= now + 10 * MS);
                    last = at_ns;
                }
                v => panic!("unexpected {v:?}"),
            }
        }
    }

    #[test]
    fn loss_rate_matches_probability_and_repeats_with_seed() {
        let n = 1_000_000;
        let run = |seed| {
            let mut l = Link::new(&cfg(0, 0.01, 0, BufferLimit::Unlimited), seed);
            (0..n)
                .map(|i| l.offer(i, 1500) == Verdict::Lost)
                .collect::<Vec<_>>()
        };
        let a = run(42);
        let lost = a.iter().filter(|&&x| x).count();
        // Binomial(1e6, 0.01): sd ≈ 99.5, so ±600 is six sigma.
        assert!((9_400..=10_600).contains(&lost), "lost {lost}");
        assert_eq!(a, run(42), "same seed, same pattern");
        assert_ne!(a, run(43), "other seed, other pattern");
    }

    #[test]
    fn loss_one_drops_everything_and_zero_nothing() {
        let mut all = Link::new(&cfg(0, 1.0, 0, BufferLimit::Unlimited), 1);
        let mut none = Link::new(&cfg(0, 0.0, 0, BufferLimit::Unlimited), 1);
        for i in 0..1000 {
            assert_eq!(all.offer(i, 100), Verdict::Lost);
            assert!(matches!(none.offer(i, 100), Verdict::Deliver { .. }));
        }
    }

    #[test]
    fn rate_cap_serialises_back_to_back_packets() {
        // 1 Gbit/s: 1500 B take 12 µs.
        let mut l = Link::new(&cfg(5, 0.0, 1_000_000_000, BufferLimit::Unlimited), 1);
        for i in 1..=1000u64 {
            assert_eq!(
                l.offer(0, 1500),
                Verdict::Deliver {
                    at_ns: i * 12_000 + 5 * MS
                }
            );
        }
        assert_eq!(l.backlog_ns(0), 12 * MS);
        assert_eq!(l.backlog_ns(6 * MS), 6 * MS);
    }

    #[test]
    fn rate_cap_has_no_rounding_drift() {
        // 2.5 Gbit/s, 1000 B: 3.2 µs each; 1 M packets must end at exactly 3.2 s.
        let mut l = Link::new(&cfg(0, 0.0, 2_500_000_000, BufferLimit::Unlimited), 1);
        let mut last = Verdict::Lost;
        for _ in 0..1_000_000 {
            last = l.offer(0, 1000);
        }
        assert_eq!(last, Verdict::Deliver { at_ns: 3_200 * MS });
        // 7 Mbit/s, 1 B: 8/7 µs, not a whole number of ps; 7 M bytes take 8 s give or take 7 µs.
        let mut l = Link::new(&cfg(0, 0.0, 7_000_000, BufferLimit::Unlimited), 1);
        for _ in 0..7_000_000 - 1 {
            l.offer(0, 1);
        }
        match l.offer(0, 1) {
            Verdict::Deliver { at_ns } => assert!(at_ns.abs_diff(8_000 * MS) <= 7_000, "{at_ns}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn idle_link_starts_immediately() {
        let mut l = Link::new(&cfg(0, 0.0, 1_000_000_000, BufferLimit::Unlimited), 1);
        assert_eq!(l.offer(0, 1500), Verdict::Deliver { at_ns: 12_000 });
        // Arrives long after the link went idle: no leftover credit, no wait.
        assert_eq!(l.offer(MS, 1500), Verdict::Deliver { at_ns: MS + 12_000 });
    }

    #[test]
    fn rate_cap_limits_throughput_of_a_steady_overload() {
        // Offer 2 Gbit/s for 1 s into a 1 Gbit/s link with a 50 ms buffer: about half is dropped,
        // and what gets through leaves at 1 Gbit/s.
        let mut l = Link::new(
            &cfg(
                0,
                0.0,
                1_000_000_000,
                BufferLimit::Time(Duration::from_millis(50)),
            ),
            1,
        );
        let (mut ok, mut drop, mut last) = (0u64, 0u64, 0u64);
        for i in 0..166_667u64 {
            match l.offer(i * 6_000, 1500) {
                Verdict::Deliver { at_ns } => {
                    ok += 1;
                    last = at_ns;
                }
                Verdict::QueueFull => drop += 1,
                Verdict::Lost => unreachable!(),
            }
        }
        let delivered_bps = ok as f64 * 1500.0 * 8.0 / (last as f64 / 1e9);
        assert!((delivered_bps - 1e9).abs() < 1e6, "{delivered_bps}");
        assert!((78_000..81_000).contains(&drop), "drop {drop}");
        // The queue never holds more than the buffer.
        assert!(l.backlog_ns(166_666 * 6_000) <= 50 * MS);
    }

    #[test]
    fn queue_overflow_drops_tail_by_time() {
        // 1 ms at 1 Gbit/s = 125 000 B = 83.3 packets of 1500 B.
        let mut l = Link::new(
            &cfg(
                0,
                0.0,
                1_000_000_000,
                BufferLimit::Time(Duration::from_millis(1)),
            ),
            1,
        );
        let verdicts: Vec<_> = (0..200).map(|_| l.offer(0, 1500)).collect();
        let ok = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Deliver { .. }))
            .count();
        assert_eq!(ok, 83);
        // Drop-tail: the first 83 pass, everything after is dropped.
        assert!(verdicts[..83]
            .iter()
            .all(|v| matches!(v, Verdict::Deliver { .. })));
        assert!(verdicts[83..].iter().all(|v| *v == Verdict::QueueFull));
        // Once one packet has drained (12 µs), exactly one more fits.
        assert!(matches!(l.offer(12_000, 1500), Verdict::Deliver { .. }));
        assert_eq!(l.offer(12_000, 1500), Verdict::QueueFull);
        // A small packet still fits in the leftover space.
        assert!(matches!(l.offer(12_000, 40), Verdict::Deliver { .. }));
    }

    #[test]
    fn queue_overflow_drops_tail_by_bytes() {
        let mut l = Link::new(&cfg(0, 0.0, 100_000_000, BufferLimit::Bytes(10_000)), 1);
        let ok = (0..100)
            .filter(|_| matches!(l.offer(0, 1000), Verdict::Deliver { .. }))
            .count();
        assert_eq!(ok, 10);
    }

    #[test]
    fn tiny_buffer_still_passes_a_packet_on_an_idle_link() {
        let mut l = Link::new(&cfg(0, 0.0, 1_000_000_000, BufferLimit::Bytes(100)), 1);
        assert!(matches!(l.offer(0, 1500), Verdict::Deliver { .. }));
        assert_eq!(l.offer(0, 1500), Verdict::QueueFull);
    }

    #[test]
    fn lost_packets_still_use_the_bottleneck() {
        let mut l = Link::new(&cfg(0, 1.0, 1_000_000_000, BufferLimit::Unlimited), 1);
        assert_eq!(l.offer(0, 1500), Verdict::Lost);
        assert_eq!(l.backlog_ns(0), 12_000);
    }
}
