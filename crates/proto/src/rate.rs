//! Rate control: configured limits (transfer, destination, server), the RTT estimator, the
//! delay-based adaptive controller and the pacer that spaces datagrams at the chosen rate.
//!
//! The controller reacts to growing queueing delay (RTT above the minimum RTT), never to loss, so
//! random loss does not slow a transfer; it probes upward while delay stays flat.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Rate caps in kbit/s, all optional; the effective cap is the smallest one set.
///
/// Names follow the API: `sendRate` (per transfer), `sendRateMax` (per destination) and the
/// server-wide outgoing limit. The engine computes the server share (e.g. with borrowing).
/// `None` means no cap; a cap of 0 is treated as 1 kbit/s (the sender never stops entirely).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Per-transfer `sendRate`.
    pub transfer_kbps: Option<u64>,
    /// Per-destination `sendRateMax`.
    pub destination_kbps: Option<u64>,
    /// Server-wide outgoing limit (this transfer's share).
    pub server_kbps: Option<u64>,
}

impl RateLimits {
    /// One cap for the transfer alone.
    pub fn transfer(kbps: u64) -> Self {
        RateLimits {
            transfer_kbps: Some(kbps),
            ..Self::default()
        }
    }

    /// The smallest cap set, in kbit/s, or None when nothing is set.
    pub fn effective_kbps(&self) -> Option<u64> {
        [self.transfer_kbps, self.destination_kbps, self.server_kbps]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Tuning of the adaptive controller. The defaults suit 1 Mbit/s to 10 Gbit/s paths.
#[derive(Debug, Clone, PartialEq)]
pub struct RateControlConfig {
    /// Adapt to queueing delay. When false the sender sends at the configured cap.
    pub adaptive: bool,
    /// Rate at start; None starts at the cap (JetStream-style target rate).
    pub initial_kbps: Option<u64>,
    /// Cap used when no limit is configured.
    pub unlimited_kbps: u64,
    /// The controller never goes below this.
    pub min_kbps: u64,
    /// Standing queueing delay the controller tolerates before backing off, at most. On short
    /// paths the target is a quarter of the minimum RTT, but not below
    /// `min_target_queue_delay`, so a shallow LAN switch buffer is noticed too.
    pub target_queue_delay: Duration,
    /// Floor of the queueing delay target.
    pub min_target_queue_delay: Duration,
    /// Fraction of blocks lost (in each of two decision intervals in a row, with at least 64
    /// blocks in each) above which the loss cannot be random noise of a usable path: the sender
    /// is overrunning a buffer too shallow to show as delay, and backs off as on a queue.
    /// Random loss below it never lowers the rate.
    pub overrun_loss_fraction: f64,
    /// Decisions per smoothed RTT (more react faster, each on fewer RTT samples).
    pub decisions_per_rtt: u32,
    /// Shortest time between two decisions.
    pub min_decision_interval: Duration,
    /// Longest time between two decisions.
    pub max_decision_interval: Duration,
    /// Relative rate increase per RTT while delay is flat. It doubles for every 8 RTTs the delay
    /// stays flat well above the last measured bottleneck, up to `max_probe_gain`.
    pub probe_gain: f64,
    /// Cap of the accelerated probe gain, per RTT.
    pub max_probe_gain: f64,
    /// The path's minimum RTT is the smallest sample of about this long ago, so a route change
    /// that lengthens the path is not mistaken for a queue forever.
    pub min_rtt_window: Duration,
}

impl Default for RateControlConfig {
    fn default() -> Self {
        RateControlConfig {
            adaptive: true,
            initial_kbps: None,
            unlimited_kbps: 10_000_000,
            min_kbps: 64,
            target_queue_delay: Duration::from_millis(10),
            min_target_queue_delay: Duration::from_micros(500),
            overrun_loss_fraction: 0.5,
            decisions_per_rtt: 4,
            min_decision_interval: Duration::from_millis(10),
            max_decision_interval: Duration::from_millis(250),
            probe_gain: 0.01,
            max_probe_gain: 0.25,
            min_rtt_window: Duration::from_secs(10),
        }
    }
}

/// Smoothed RTT, variation and minimum, RFC 6298 style.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    smoothed: Duration,
    variation: Duration,
    min: Option<Duration>,
    latest: Option<Duration>,
}

impl RttEstimator {
    /// An estimator that reports `initial` until the first sample.
    pub fn new(initial: Duration) -> Self {
        RttEstimator {
            smoothed: initial,
            variation: initial / 2,
            min: None,
            latest: None,
        }
    }

    /// Feeds one RTT sample (already corrected for the receiver's ACK delay).
    pub fn update(&mut self, sample: Duration) {
        if self.latest.is_none() {
            self.smoothed = sample;
            self.variation = sample / 2;
        } else {
            let deviation = self.smoothed.abs_diff(sample);
            self.variation = (self.variation * 3 + deviation) / 4;
            self.smoothed = (self.smoothed * 7 + sample) / 8;
        }
        self.latest = Some(sample);
        self.min = Some(self.min.map_or(sample, |min| min.min(sample)));
    }

    /// Smoothed RTT.
    pub fn smoothed(&self) -> Duration {
        self.smoothed
    }

    /// RTT variation.
    pub fn variation(&self) -> Duration {
        self.variation
    }

    /// Smallest sample seen: the path's propagation delay.
    pub fn min(&self) -> Option<Duration> {
        self.min
    }

    /// Most recent sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }
}

/// Fraction of the measured bottleneck rate the controller returns to once a queue drained.
const RESUME_FRACTION: f64 = 0.95;
/// Fewest blocks (lost + acknowledged) in a decision interval for the overrun check.
const OVERRUN_MIN_BLOCKS: u64 = 64;
/// Up to this multiple of the last measured bottleneck, probing does not accelerate.
const NEAR_BOTTLENECK: f64 = 1.15;
/// Shortest window of the delivery rate: long enough that a host descheduled for a few
/// milliseconds (ACKs held, then sent together) moves it little.
const MIN_DELIVERY_WINDOW: Duration = Duration::from_millis(50);
/// How long the highest recent delivery rate is remembered (at least 4 RTTs).
const DELIVERY_MAX_WINDOW: Duration = Duration::from_secs(2);
/// A back-off never goes below this fraction of the highest recent delivery rate: draining a
/// queue of our own never needs less, so delay that does not go away (another flow, or a host
/// that is not scheduled in time) cannot drive the rate towards zero.
const BACKOFF_FLOOR: f64 = 0.4;
/// Back-offs in a row after which a delay that never shrank is taken as part of the path. A
/// queue of our own drains once we send below the bottleneck; delay that stays whatever we do
/// (a host that is not scheduled in time, a longer route, a queue someone else keeps full) is
/// not ours to drain, so the path's minimum RTT is moved up to it instead of backing off again.
const FUTILE_BACKOFFS: u32 = 3;
/// A back-off counts as futile when the delay afterwards is above this fraction of before.
const FUTILE_DELAY_FRACTION: f64 = 0.9;

/// The delay-based adaptive rate controller.
///
/// Several times per smoothed RTT it takes the smallest RTT sample since the last decision
/// (which filters jitter) minus the path's minimum RTT as the standing queueing delay:
/// - above the target in two decisions in a row: the bottleneck is saturated, so its rate is
///   what the receiver acknowledged over the last RTT (the delivery rate). The rate drops below
///   that to drain the excess queue within about one RTT (but not below 40 % of the best recent
///   delivery rate), then holds for one RTT so the same queue is not punished twice. When three
///   back-offs in a row did not shrink the delay, it is not a queue of ours: the path's minimum
///   RTT moves up to it and the rate returns to the bottleneck;
/// - below half the target: if the rate is under 95 % of the last measured bottleneck (a drain
///   just ended) it goes straight back there; otherwise it probes up by `probe_gain` per RTT,
///   accelerating while the delay stays flat well above the old bottleneck;
/// - in between: unchanged.
///
/// Loss is not an input at all.
#[derive(Debug, Clone)]
pub struct RateController {
    config: RateControlConfig,
    limit_bps: u64,
    rate_bps: u64,
    interval_min_rtt: Option<Duration>,
    next_decision: Option<Instant>,
    hold_until: Option<Instant>,
    /// Since when the delay has been flat (no queue), for accelerating the probe.
    flat_since: Option<Instant>,
    lost_blocks_since_decision: u64,
    acked_blocks_since_decision: u64,
    heavy_loss_before: bool,
    /// Delivery rate measured the last time a standing queue was seen.
    bottleneck_bps: Option<u64>,
    /// The previous decision saw a queue above the target too.
    queue_before: bool,
    /// Queueing delay seen at the last back-off, and how many back-offs in a row found it no
    /// smaller (see [`FUTILE_BACKOFFS`]).
    delay_at_backoff: Option<Duration>,
    futile_backoffs: u32,
    /// Highest delivery rate of the last [`DELIVERY_MAX_WINDOW`] (or 4 RTTs), as a
    /// monotonically decreasing deque of (time, bit/s).
    delivery_max: VecDeque<(Instant, u64)>,
    path_min_rtt: WindowedMin,
    /// (time, total bytes acknowledged) at each ACK within the last delivery window.
    delivery: VecDeque<(Instant, u64)>,
}

impl RateController {
    /// A controller starting at the configured initial rate (or the cap).
    pub fn new(config: RateControlConfig, limits: RateLimits) -> Self {
        let limit_bps = Self::cap_bps(&config, limits);
        let min_bps = config.min_kbps.saturating_mul(1000);
        let rate_bps = config
            .initial_kbps
            .map_or(limit_bps, |kbps| kbps.saturating_mul(1000))
            .clamp(min_bps.min(limit_bps), limit_bps);
        RateController {
            config,
            limit_bps,
            rate_bps,
            interval_min_rtt: None,
            next_decision: None,
            hold_until: None,
            flat_since: None,
            lost_blocks_since_decision: 0,
            acked_blocks_since_decision: 0,
            heavy_loss_before: false,
            bottleneck_bps: None,
            queue_before: false,
            delay_at_backoff: None,
            futile_backoffs: 0,
            delivery_max: VecDeque::new(),
            path_min_rtt: WindowedMin::default(),
            delivery: VecDeque::new(),
        }
    }

    fn cap_bps(config: &RateControlConfig, limits: RateLimits) -> u64 {
        limits
            .effective_kbps()
            .unwrap_or(config.unlimited_kbps)
            .saturating_mul(1000)
            .max(1000)
    }

    /// Applies new caps at runtime. Lowering the cap lowers the rate at once. Raising it jumps
    /// to the new cap when the old cap was what held the rate and no path bottleneck is known
    /// (as at the start of a transfer); otherwise the controller probes up to it.
    pub fn set_limits(&mut self, limits: RateLimits) {
        let old_limit = self.limit_bps;
        self.limit_bps = Self::cap_bps(&self.config, limits);
        let cap_bound = self.rate_bps >= old_limit && self.bottleneck_bps.is_none();
        if !self.config.adaptive || (self.limit_bps > old_limit && cap_bound) {
            self.rate_bps = self.limit_bps;
        }
        self.rate_bps = self.rate_bps.min(self.limit_bps);
    }

    /// Current sending rate in bit/s (datagram bytes, headers included).
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Current cap in bit/s.
    pub fn limit_bps(&self) -> u64 {
        self.limit_bps
    }

    /// Counts blocks the sender declared lost (only used to spot a sender overrunning a buffer
    /// too shallow to show as delay; see `overrun_loss_fraction`).
    pub fn on_blocks_lost(&mut self, blocks: u64) {
        self.lost_blocks_since_decision += blocks;
    }

    /// Feeds an ACK: the RTT sample it yielded (if any), the blocks it newly acknowledged, and
    /// the running total of bytes acked.
    pub fn on_ack(
        &mut self,
        now: Instant,
        sample: Option<Duration>,
        rtt: &RttEstimator,
        newly_acked_blocks: u64,
        total_acked_bytes: u64,
    ) {
        self.acked_blocks_since_decision += newly_acked_blocks;
        let smoothed = rtt.smoothed();
        let window = smoothed.clamp(MIN_DELIVERY_WINDOW, Duration::from_secs(1));
        // ACKs before the first acknowledged byte (keepalives while data is still on its way)
        // would make the delivery rate look lower than it is.
        if total_acked_bytes > 0 {
            self.delivery.push_back((now, total_acked_bytes));
        }
        while let Some(&(oldest, _)) = self.delivery.front() {
            if now.saturating_duration_since(oldest) > window && self.delivery.len() > 2 {
                self.delivery.pop_front();
            } else {
                break;
            }
        }
        if let Some(sample) = sample {
            self.interval_min_rtt = Some(self.interval_min_rtt.map_or(sample, |m| m.min(sample)));
            self.path_min_rtt
                .update(now, sample, self.config.min_rtt_window / 2);
        }
        if !self.config.adaptive {
            return;
        }
        let interval = (smoothed / self.config.decisions_per_rtt.max(1)).clamp(
            self.config.min_decision_interval,
            self.config.max_decision_interval,
        );
        let Some(next_decision) = self.next_decision else {
            // The first decision comes quickly: a start above the bottleneck fills its queue
            // within the first RTT.
            self.next_decision = Some(now + self.config.min_decision_interval);
            return;
        };
        if now < next_decision {
            return;
        }
        self.next_decision = Some(now + interval);
        let (Some(interval_min), Some(path_min)) =
            (self.interval_min_rtt.take(), self.path_min_rtt.value())
        else {
            return;
        };
        let queue_delay = interval_min.saturating_sub(path_min);
        let target = (path_min / 4).clamp(
            self.config.min_target_queue_delay,
            self.config
                .target_queue_delay
                .max(self.config.min_target_queue_delay),
        );
        let lost = std::mem::take(&mut self.lost_blocks_since_decision);
        let acked = std::mem::take(&mut self.acked_blocks_since_decision);
        // Heavy loss must persist for two decisions in a row, over enough blocks to mean
        // something, before it counts as an overrun.
        let heavy_loss = lost + acked >= OVERRUN_MIN_BLOCKS
            && lost as f64 > self.config.overrun_loss_fraction * (lost + acked) as f64;
        let overrun = heavy_loss && self.heavy_loss_before;
        self.heavy_loss_before = heavy_loss;
        let min_bps = self
            .config
            .min_kbps
            .saturating_mul(1000)
            .min(self.limit_bps);
        let delivered_max = self.update_delivery_max(now, smoothed);
        let queue_now = queue_delay > target;
        // A queue must be seen by two decisions in a row: one interval whose every RTT sample
        // is late is more often a host that was not scheduled than a queue.
        let queue = queue_now && self.queue_before;
        self.queue_before = queue_now;
        if queue || overrun {
            self.flat_since = None;
            if self.hold_until.is_some_and(|hold| now < hold) {
                return;
            }
            let futile = self.delay_at_backoff.is_some_and(|before| {
                queue_delay.as_secs_f64() > before.as_secs_f64() * FUTILE_DELAY_FRACTION
            });
            self.futile_backoffs = if futile { self.futile_backoffs + 1 } else { 0 };
            if self.futile_backoffs >= FUTILE_BACKOFFS {
                // Not our queue: the delay becomes part of the path, and the rate goes back to
                // just under the bottleneck.
                self.path_min_rtt.reset(now, interval_min);
                self.futile_backoffs = 0;
                self.delay_at_backoff = None;
                self.queue_before = false;
                let resume_bps = self
                    .bottleneck_bps
                    .map_or(self.rate_bps, |b| (b as f64 * RESUME_FRACTION) as u64);
                self.rate_bps = resume_bps.max(self.rate_bps).clamp(min_bps, self.limit_bps);
                return;
            }
            self.delay_at_backoff = Some(queue_delay);
            // A standing queue means the bottleneck is saturated: what gets through is its rate.
            // The recent highest delivery rate is the better guess of the bottleneck to return
            // to once the queue drained (a host that was not scheduled makes the current one
            // look low), the current one the better guess of what gets through now.
            let delivered = self.delivery_rate_bps();
            if let Some(best) = delivered_max {
                self.bottleneck_bps = Some(best);
            }
            let base = delivered.map_or(self.rate_bps, |d| d.min(self.rate_bps));
            // Send below it long enough to drain the excess queue in about one RTT.
            let excess = queue_delay.saturating_sub(target).as_secs_f64();
            let drain_time = smoothed.max(Duration::from_millis(20)).as_secs_f64();
            let factor = (1.0 - excess / drain_time).clamp(0.5, 0.95);
            let floor = delivered_max.map_or(0, |d| (d as f64 * BACKOFF_FLOOR) as u64);
            self.rate_bps = ((base as f64 * factor) as u64)
                .max(floor)
                .clamp(min_bps, self.limit_bps);
            self.hold_until = Some(now + smoothed + interval);
        } else if queue_now {
            self.flat_since = None;
        } else if queue_delay * 2 < target {
            self.delay_at_backoff = None;
            self.futile_backoffs = 0;
            let flat_since = *self.flat_since.get_or_insert(now);
            let resume_bps = self
                .bottleneck_bps
                .map_or(0, |bottleneck| (bottleneck as f64 * RESUME_FRACTION) as u64);
            if self.rate_bps < resume_bps {
                // The queue has drained: go straight back to just under the known bottleneck.
                self.rate_bps = resume_bps.clamp(min_bps, self.limit_bps);
                self.flat_since = Some(now);
                return;
            }
            // Probe gently around the known bottleneck. Well above it (or with none known)
            // double the step for every 8 RTTs of flat delay: the path gained capacity.
            let near_bottleneck = self.bottleneck_bps.is_some_and(|bottleneck| {
                (self.rate_bps as f64) < bottleneck as f64 * NEAR_BOTTLENECK
            });
            let doublings = if near_bottleneck {
                0
            } else {
                // So far above the last bottleneck that it no longer describes the path.
                self.bottleneck_bps = None;
                let flat_rtts = now.saturating_duration_since(flat_since).as_secs_f64()
                    / smoothed.max(Duration::from_millis(1)).as_secs_f64();
                ((flat_rtts / 8.0) as u32).min(16)
            };
            let gain_per_rtt = (self.config.probe_gain * f64::from(1u32 << doublings))
                .min(self.config.max_probe_gain);
            let share_of_rtt = (interval.as_secs_f64()
                / smoothed.max(Duration::from_millis(1)).as_secs_f64())
            .min(1.0);
            let raised =
                (self.rate_bps as f64 * (1.0 + gain_per_rtt * share_of_rtt)) as u64 + 8_000;
            self.rate_bps = raised.clamp(min_bps, self.limit_bps);
        } else {
            self.flat_since = None;
        }
    }

    /// Records the current delivery rate and returns the highest of the recent window.
    fn update_delivery_max(&mut self, now: Instant, smoothed: Duration) -> Option<u64> {
        let window = DELIVERY_MAX_WINDOW.max(smoothed * 4);
        if let Some(rate) = self.delivery_rate_bps() {
            while self.delivery_max.back().is_some_and(|&(_, r)| r <= rate) {
                self.delivery_max.pop_back();
            }
            self.delivery_max.push_back((now, rate));
        }
        while self
            .delivery_max
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > window)
        {
            self.delivery_max.pop_front();
        }
        self.delivery_max.front().map(|&(_, rate)| rate)
    }

    /// Bytes acknowledged per second over the last window, in bit/s.
    pub fn delivery_rate_bps(&self) -> Option<u64> {
        let &(first_time, first_bytes) = self.delivery.front()?;
        let &(last_time, last_bytes) = self.delivery.back()?;
        let elapsed = last_time.duration_since(first_time);
        if elapsed < Duration::from_millis(5) {
            return None;
        }
        Some(((last_bytes - first_bytes) as f64 * 8.0 / elapsed.as_secs_f64()) as u64)
    }
}

/// Minimum over a sliding window, kept as the minima of the current and the previous half.
#[derive(Debug, Clone, Default)]
struct WindowedMin {
    current: Option<Duration>,
    current_started: Option<Instant>,
    previous: Option<Duration>,
}

impl WindowedMin {
    fn update(&mut self, now: Instant, sample: Duration, half_window: Duration) {
        let expired = self
            .current_started
            .is_none_or(|started| now.saturating_duration_since(started) >= half_window);
        if expired {
            self.previous = self.current;
            self.current = Some(sample);
            self.current_started = Some(now);
        } else {
            self.current = Some(self.current.map_or(sample, |current| current.min(sample)));
        }
    }

    /// Forgets every sample before `now`: `sample` is the minimum from here on.
    fn reset(&mut self, now: Instant, sample: Duration) {
        self.previous = None;
        self.current = Some(sample);
        self.current_started = Some(now);
    }

    fn value(&self) -> Option<Duration> {
        match (self.previous, self.current) {
            (Some(previous), Some(current)) => Some(previous.min(current)),
            (previous, current) => previous.or(current),
        }
    }
}

/// How much faster than the rate the pacer sends while it makes up for lost time.
pub const PACING_CATCH_UP_SPEED: u32 = 2;

/// Spaces datagrams at a rate. Two schedules: the rate's own, which may lag the clock by up to
/// `max_debt` (time the host lost, to be made up), and a faster one at
/// [`PACING_CATCH_UP_SPEED`] times the rate that may lag by `max_burst` only. A datagram leaves
/// when both allow it, so after a stall the sender catches up at twice the rate instead of in
/// one line-rate burst, and never sends more than `max_burst` back to back.
#[derive(Debug, Clone)]
pub struct Pacer {
    next_send: Instant,
    next_fast: Instant,
    max_burst: Duration,
    max_debt: Duration,
}

impl Pacer {
    /// A pacer that may send immediately.
    pub fn new(now: Instant, max_burst: Duration, max_debt: Duration) -> Self {
        Pacer {
            next_send: now,
            next_fast: now,
            max_burst,
            max_debt: max_debt.max(max_burst),
        }
    }

    /// When the next datagram may leave.
    pub fn next_send(&self) -> Instant {
        self.next_send.max(self.next_fast)
    }

    /// True when a datagram may leave at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        now >= self.next_send()
    }

    /// Accounts for a datagram of `bytes` sent at `now` at `rate_bps`.
    pub fn on_sent(&mut self, now: Instant, bytes: usize, rate_bps: u64) {
        let nanos = (bytes as u128 * 8 * 1_000_000_000) / rate_bps.max(1) as u128;
        let spacing = Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
        let earliest = now.checked_sub(self.max_debt).unwrap_or(now);
        self.next_send = self.next_send.max(earliest) + spacing;
        let earliest_fast = now.checked_sub(self.max_burst).unwrap_or(now);
        self.next_fast = self.next_fast.max(earliest_fast) + spacing / PACING_CATCH_UP_SPEED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_limit_is_the_smallest() {
        let limits = RateLimits {
            transfer_kbps: Some(500_000),
            destination_kbps: Some(100_000),
            server_kbps: None,
        };
        assert_eq!(limits.effective_kbps(), Some(100_000));
        assert_eq!(RateLimits::default().effective_kbps(), None);
    }

    #[test]
    fn pacer_spaces_and_bounds_bursts() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Duration::from_millis(1), Duration::from_millis(1));
        // 1250 bytes at 10 Mbit/s = 1 ms.
        pacer.on_sent(start, 1250, 10_000_000);
        assert_eq!(pacer.next_send(), start + Duration::from_millis(1));
        // After a long idle, at most 1 ms of credit is kept.
        let later = start + Duration::from_secs(1);
        pacer.on_sent(later, 1250, 10_000_000);
        assert_eq!(pacer.next_send(), later);
        assert!(pacer.ready(later));
    }

    #[test]
    fn pacer_makes_up_a_stall_at_twice_the_rate() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        // 1250 bytes at 10 Mbit/s = 1 ms per datagram; 2 ms of burst, 10 ms of debt.
        let mut pacer = Pacer::new(start, ms(2), ms(10));
        // The host stalls for 8 ms: then it sends 2 ms worth back to back...
        let mut now = start + ms(8);
        let mut sent = 0;
        while pacer.ready(now) {
            pacer.on_sent(now, 1250, 10_000_000);
            sent += 1;
        }
        assert!(
            (4..=5).contains(&sent),
            "{sent}: about 2 ms of burst at twice the rate"
        );
        // ...then one datagram every half millisecond until the debt is paid.
        let mut times = Vec::new();
        while times.len() < 40 {
            now = pacer.next_send();
            times.push(now);
            pacer.on_sent(now, 1250, 10_000_000);
        }
        assert_eq!(times[1] - times[0], Duration::from_micros(500));
        // In all, 20 datagrams by 16 ms: the 8 ms stall is made up by 16 ms, then 1 ms spacing.
        let by_16ms = times.iter().filter(|&&t| t <= start + ms(16)).count() + sent;
        assert!((16..=18).contains(&by_16ms), "{by_16ms} datagrams by 16 ms");
        assert_eq!(times[39] - times[38], ms(1));
        // A stall longer than the debt loses the excess.
        let later = now + ms(100);
        let mut count = 0;
        let mut t = later;
        while t < later + ms(20) {
            if pacer.ready(t) {
                pacer.on_sent(t, 1250, 10_000_000);
                count += 1;
            } else {
                t = pacer.next_send();
            }
        }
        assert!(
            (29..=31).contains(&count),
            "{count} datagrams in 20 ms after a long stall"
        );
    }

    #[test]
    fn rtt_estimator_tracks_min_and_smooths() {
        let mut rtt = RttEstimator::new(Duration::from_millis(300));
        rtt.update(Duration::from_millis(100));
        assert_eq!(rtt.smoothed(), Duration::from_millis(100));
        rtt.update(Duration::from_millis(180));
        assert_eq!(rtt.smoothed(), Duration::from_millis(110));
        assert_eq!(rtt.min(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn windowed_min_forgets_old_samples() {
        let start = Instant::now();
        let half = Duration::from_secs(5);
        let mut min = WindowedMin::default();
        min.update(start, Duration::from_millis(50), half);
        min.update(
            start + Duration::from_secs(6),
            Duration::from_millis(80),
            half,
        );
        assert_eq!(min.value(), Some(Duration::from_millis(50)));
        min.update(
            start + Duration::from_secs(12),
            Duration::from_millis(90),
            half,
        );
        assert_eq!(min.value(), Some(Duration::from_millis(80)));
    }

    #[test]
    fn fixed_rate_mode_ignores_delay() {
        let start = Instant::now();
        let config = RateControlConfig {
            adaptive: false,
            ..RateControlConfig::default()
        };
        let mut controller = RateController::new(config, RateLimits::transfer(50_000));
        let mut rtt = RttEstimator::new(Duration::from_millis(50));
        for step in 0..400u64 {
            let sample = Duration::from_millis(50 + step);
            rtt.update(sample);
            let now = start + Duration::from_millis(step * 5);
            controller.on_ack(now, Some(sample), &rtt, 10, step * 10_000);
        }
        assert_eq!(controller.rate_bps(), 50_000_000);
        controller.set_limits(RateLimits::transfer(80_000));
        assert_eq!(controller.rate_bps(), 80_000_000);
    }

    #[test]
    fn raising_the_cap_jumps_when_the_cap_was_binding() {
        let mut controller =
            RateController::new(RateControlConfig::default(), RateLimits::transfer(100_000));
        controller.set_limits(RateLimits::transfer(10_000));
        assert_eq!(controller.rate_bps(), 10_000_000);
        controller.set_limits(RateLimits::transfer(500_000));
        assert_eq!(controller.rate_bps(), 500_000_000);
    }

    #[test]
    fn controller_ignores_loss_and_backs_off_on_delay() {
        let start = Instant::now();
        let mut controller =
            RateController::new(RateControlConfig::default(), RateLimits::transfer(100_000));
        let mut rtt = RttEstimator::new(Duration::from_millis(50));
        let mut acked = 0u64;
        // Flat 50 ms RTT, delivery at 100 Mbit/s: stays at the cap.
        for step in 0..200u64 {
            let now = start + Duration::from_millis(step * 5);
            rtt.update(Duration::from_millis(50));
            acked += 62_500;
            controller.on_ack(now, Some(Duration::from_millis(50)), &rtt, 45, acked);
            assert_eq!(controller.rate_bps(), 100_000_000);
        }
        // Queue grows, delivery falls to 50 Mbit/s: within one RTT the rate drops below the
        // delivery rate (to drain the queue), but not recklessly.
        for step in 200..220u64 {
            let now = start + Duration::from_millis(step * 5);
            let sample = Duration::from_millis(80);
            rtt.update(sample);
            acked += 31_250;
            controller.on_ack(now, Some(sample), &rtt, 22, acked);
        }
        assert!(
            controller.rate_bps() < 50_000_000,
            "{}",
            controller.rate_bps()
        );
        assert!(
            controller.rate_bps() >= 25_000_000,
            "{}",
            controller.rate_bps()
        );
    }

    #[test]
    fn delay_that_backing_off_does_not_shrink_becomes_part_of_the_path() {
        let start = Instant::now();
        let mut controller =
            RateController::new(RateControlConfig::default(), RateLimits::transfer(100_000));
        let mut rtt = RttEstimator::new(Duration::from_millis(50));
        let mut acked = 0u64;
        let mut lowest = u64::MAX;
        // 50 ms for a second, then 80 ms for good (a longer route, or a host that is never
        // scheduled in time); delivery follows the rate, as on a path with room to spare.
        for step in 0..1000u64 {
            let now = start + Duration::from_millis(step * 5);
            let sample = Duration::from_millis(if step < 200 { 50 } else { 80 });
            rtt.update(sample);
            acked += controller.rate_bps() / 8 / 200;
            controller.on_ack(now, Some(sample), &rtt, 40, acked);
            if step >= 200 {
                lowest = lowest.min(controller.rate_bps());
            }
        }
        assert!(lowest >= 40_000_000, "fell to {lowest}");
        assert!(
            controller.rate_bps() >= 90_000_000,
            "{} after 4 s of the longer path",
            controller.rate_bps()
        );
    }
}
