//! Deterministic discrete-event simulator for the protocol tests: a virtual clock, a priority
//! queue of events, a seeded impaired link in each direction (delay, jitter, loss, reordering,
//! duplication, corruption, bottleneck rate with a drop-tail queue), an optional attacker that
//! replays and forges datagrams, and a pattern source / verifying sink that check every byte
//! without holding the transfer in memory.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slipstream_proto::{
    BlockSink, BlockSource, CipherLevel, RangeSet, RateLimits, Receiver, ReceiverStats, Sender,
    SenderStats, SessionSecret, SinkFull, TransferParams, TransportConfig,
};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The byte at global offset `offset` of every simulated transfer.
fn pattern_word(word_index: u64) -> u64 {
    // splitmix64
    let mut z = word_index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pattern_byte(offset: u64) -> u8 {
    (pattern_word(offset >> 3) >> ((offset & 7) * 8)) as u8
}

/// Fills `buf` with the pattern bytes of `offset..`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let mut position = 0usize;
    let mut cursor = offset;
    while position < buf.len() && cursor % 8 != 0 {
        buf[position] = pattern_byte(cursor);
        position += 1;
        cursor += 1;
    }
    let mut chunks = buf[position..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&pattern_word(cursor >> 3).to_le_bytes());
        cursor += 8;
    }
    for byte in chunks.into_remainder() {
        *byte = pattern_byte(cursor);
        cursor += 1;
    }
}

/// True when `data` equals the pattern bytes of `offset..`.
pub fn matches_pattern(offset: u64, data: &[u8]) -> bool {
    let mut position = 0usize;
    let mut cursor = offset;
    while position < data.len() && cursor % 8 != 0 {
        if data[position] != pattern_byte(cursor) {
            return false;
        }
        position += 1;
        cursor += 1;
    }
    let mut chunks = data[position..].chunks_exact(8);
    for chunk in &mut chunks {
        if chunk != pattern_word(cursor >> 3).to_le_bytes() {
            return false;
        }
        cursor += 8;
    }
    for &byte in chunks.remainder() {
        if byte != pattern_byte(cursor) {
            return false;
        }
        cursor += 1;
    }
    true
}

/// Supplies pattern bytes.
pub struct PatternSource;

impl BlockSource for PatternSource {
    fn read_block(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        fill_pattern(offset, buf);
        true
    }
}

/// How fast the simulated sink stores data.
#[derive(Debug, Clone, Copy)]
pub enum SinkModel {
    /// Writes instantly; always offers `window` bytes.
    Instant { window: u64 },
    /// Buffers up to `capacity` bytes and drains them at `drain_bps`.
    Slow { capacity: u64, drain_bps: u64 },
}

/// Checks every delivered byte against the pattern and that no byte is delivered twice.
#[derive(Debug)]
pub struct VerifyingSink {
    model: SinkModel,
    pub delivered: RangeSet,
    pub mismatched_blocks: u64,
    pub double_deliveries: u64,
    pub overflows: u64,
    pub buffered: u64,
    pub max_buffered: u64,
    last_drain: Duration,
}

impl VerifyingSink {
    pub fn new(model: SinkModel) -> Self {
        VerifyingSink {
            model,
            delivered: RangeSet::new(),
            mismatched_blocks: 0,
            double_deliveries: 0,
            overflows: 0,
            buffered: 0,
            max_buffered: 0,
            last_drain: Duration::ZERO,
        }
    }

    /// Advances the drain of a slow sink to virtual time `now`.
    pub fn drain(&mut self, now: Duration) {
        if let SinkModel::Slow { drain_bps, .. } = self.model {
            let elapsed = now.saturating_sub(self.last_drain);
            let drained = (elapsed.as_secs_f64() * drain_bps as f64 / 8.0) as u64;
            if drained > 0 {
                self.buffered -= drained.min(self.buffered);
                self.last_drain = now;
            }
        }
    }
}

impl BlockSink for VerifyingSink {
    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkFull> {
        if let SinkModel::Slow { capacity, .. } = self.model {
            if self.buffered + data.len() as u64 > capacity {
                self.overflows += 1;
                return Err(SinkFull);
            }
            self.buffered += data.len() as u64;
            self.max_buffered = self.max_buffered.max(self.buffered);
        }
        if !matches_pattern(offset, data) {
            self.mismatched_blocks += 1;
        }
        let fresh = self.delivered.insert(offset..offset + data.len() as u64);
        if fresh != data.len() as u64 {
            self.double_deliveries += 1;
        }
        Ok(())
    }

    fn available(&self) -> u64 {
        match self.model {
            SinkModel::Instant { window } => window,
            SinkModel::Slow { capacity, .. } => capacity - self.buffered.min(capacity),
        }
    }
}

/// Impairments of one direction of the simulated path.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `0..jitter`, per datagram (reorders close datagrams).
    pub jitter: Duration,
    /// Bernoulli loss probability.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Probability one random bit of a datagram is flipped.
    pub corrupt: f64,
    /// Bottleneck rate in bit/s (datagram bytes), None for unlimited.
    pub rate_bps: Option<u64>,
    /// Drop-tail: a datagram that would wait longer than this in the bottleneck queue is dropped.
    pub buffer: Duration,
}

impl LinkConfig {
    pub fn ideal(delay: Duration) -> Self {
        LinkConfig {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            corrupt: 0.0,
            rate_bps: None,
            buffer: Duration::from_millis(100),
        }
    }
}

/// What happened on one link.
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    pub offered: u64,
    pub queue_drops: u64,
    pub random_losses: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub max_queue_delay: Duration,
    /// Per 100 ms bucket of virtual time: (sum of queue delays in µs, datagrams, max in µs).
    pub queue_buckets: Vec<(u64, u64, u64)>,
}

impl LinkStats {
    /// Mean queueing delay over the buckets of `from..to`.
    pub fn mean_queue_delay(&self, from: Duration, to: Duration) -> Duration {
        let (sum, count) = self
            .buckets(from, to)
            .fold((0, 0), |(s, c), b| (s + b.0, c + b.1));
        Duration::from_micros(sum.checked_div(count).unwrap_or(0))
    }

    /// Largest queueing delay over the buckets of `from..to`.
    pub fn max_queue_delay_between(&self, from: Duration, to: Duration) -> Duration {
        Duration::from_micros(self.buckets(from, to).map(|b| b.2).max().unwrap_or(0))
    }

    fn buckets(&self, from: Duration, to: Duration) -> impl Iterator<Item = &(u64, u64, u64)> {
        let first = (from.as_millis() / 100) as usize;
        let last = (to.as_millis() / 100) as usize;
        self.queue_buckets
            .iter()
            .enumerate()
            .filter(move |(index, _)| *index >= first && *index < last)
            .map(|(_, bucket)| bucket)
    }
}

/// A Bernoulli draw that skips the generator when it cannot succeed (rand is unoptimised in
/// test builds and dominated the simulation's time).
fn chance(rng: &mut StdRng, probability: f64) -> bool {
    probability > 0.0 && rng.gen_bool(probability)
}

struct Link {
    config: LinkConfig,
    busy_until: Duration,
    stats: LinkStats,
}

impl Link {
    fn new(config: LinkConfig) -> Self {
        Link {
            config,
            busy_until: Duration::ZERO,
            stats: LinkStats::default(),
        }
    }

    /// Puts a datagram on the link at `now`; returns its arrival copies.
    fn transmit(
        &mut self,
        now: Duration,
        mut datagram: Vec<u8>,
        rng: &mut StdRng,
    ) -> Vec<(Duration, Vec<u8>)> {
        self.stats.offered += 1;
        let mut departure = now;
        if let Some(rate) = self.config.rate_bps {
            let start = self.busy_until.max(now);
            let waited = start - now;
            if waited > self.config.buffer {
                self.stats.queue_drops += 1;
                return Vec::new();
            }
            self.record_queue_delay(now, waited);
            let serialization =
                Duration::from_nanos(datagram.len() as u64 * 8 * 1_000_000_000 / rate);
            self.busy_until = start + serialization;
            departure = self.busy_until;
        }
        if chance(rng, self.config.loss) {
            self.stats.random_losses += 1;
            return Vec::new();
        }
        if chance(rng, self.config.corrupt) {
            self.stats.corrupted += 1;
            let bit = rng.gen_range(0..datagram.len() * 8);
            datagram[bit / 8] ^= 1 << (bit % 8);
        }
        let copies = if chance(rng, self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let mut arrivals = Vec::with_capacity(copies);
        for copy in 0..copies {
            let mut arrival = departure + self.config.delay;
            if !self.config.jitter.is_zero() {
                arrival += self.config.jitter.mul_f64(rng.gen::<f64>());
            }
            if chance(rng, self.config.reorder) {
                arrival += self.config.reorder_delay;
            }
            let payload = if copy + 1 == copies {
                std::mem::take(&mut datagram)
            } else {
                datagram.clone()
            };
            arrivals.push((arrival, payload));
        }
        arrivals
    }

    fn record_queue_delay(&mut self, now: Duration, waited: Duration) {
        self.stats.max_queue_delay = self.stats.max_queue_delay.max(waited);
        let bucket = (now.as_millis() / 100) as usize;
        if self.stats.queue_buckets.len() <= bucket {
            self.stats.queue_buckets.resize(bucket + 1, (0, 0, 0));
        }
        let micros = waited.as_micros() as u64;
        let entry = &mut self.stats.queue_buckets[bucket];
        entry.0 += micros;
        entry.1 += 1;
        entry.2 = entry.2.max(micros);
    }
}

/// An on-path attacker on the sender -> receiver direction.
#[derive(Debug, Clone, Default)]
pub struct AttackConfig {
    /// Probability, per forwarded datagram, of also replaying a recorded older datagram.
    pub replay: f64,
    /// Probability, per forwarded datagram, of injecting a forged datagram (valid header of the
    /// session, fresh packet number, random body).
    pub forge: f64,
}

/// One simulated transfer.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub total_len: u64,
    pub max_datagram_size: usize,
    pub cipher: CipherLevel,
    pub limits: RateLimits,
    pub transport: TransportConfig,
    pub forward: LinkConfig,
    pub backward: LinkConfig,
    pub sink: SinkModel,
    pub attack: AttackConfig,
    /// Virtual time after which the simulation gives up.
    pub time_limit: Duration,
    /// Rate caps applied to the sender at the given virtual times.
    pub rate_changes: Vec<(Duration, RateLimits)>,
    /// Further transfers sharing both links (same cipher, datagram size, transport config and
    /// sink model as the main one); the attacker only targets the main one.
    pub extra_flows: Vec<ExtraFlow>,
    /// Scheduling stalls of the sending host (see [`StallConfig`]).
    pub sender_stalls: Option<StallConfig>,
    /// Scheduling stalls of the receiving host.
    pub receiver_stalls: Option<StallConfig>,
    /// Timer granularity of the sender: timed wake-ups (not datagram arrivals) are rounded up to
    /// the next multiple, as tokio's 1 ms timer wheel does.
    pub sender_timer_tick: Option<Duration>,
}

/// A host that is not always scheduled, as on a CPU-starved machine: every so often (exponential
/// intervals of mean `mean_interval`) it stops for a time uniform in `0..max_duration`;
/// datagrams and timers that fall into a stall are handled, in order, when it ends.
#[derive(Debug, Clone, Copy)]
pub struct StallConfig {
    pub mean_interval: Duration,
    pub max_duration: Duration,
    pub seed: u64,
}

/// The stall windows of one host, generated lazily in time order.
struct Stalls {
    config: Option<StallConfig>,
    rng: StdRng,
    /// Current or next stall: `start..end`.
    window: (Duration, Duration),
    pub count: u64,
}

impl Stalls {
    fn new(config: Option<StallConfig>) -> Self {
        let mut stalls = Stalls {
            rng: StdRng::seed_from_u64(config.map_or(0, |c| c.seed)),
            config,
            window: (Duration::ZERO, Duration::ZERO),
            count: 0,
        };
        stalls.advance(Duration::ZERO);
        stalls
    }

    fn advance(&mut self, after: Duration) {
        let Some(config) = self.config else {
            return;
        };
        let gap = -config.mean_interval.as_secs_f64() * (1.0 - self.rng.gen::<f64>()).ln();
        let start = after + Duration::from_secs_f64(gap);
        let end = start + config.max_duration.mul_f64(self.rng.gen::<f64>());
        self.window = (start, end);
    }

    /// When the host can handle something due at `now`: `now`, or the end of the stall it is in.
    fn ready_at(&mut self, now: Duration) -> Duration {
        if self.config.is_none() {
            return now;
        }
        while self.window.1 <= now {
            let end = self.window.1;
            self.advance(end);
        }
        if now >= self.window.0 {
            self.count += 1;
            self.window.1
        } else {
            now
        }
    }
}

/// A further transfer in a shared simulation.
#[derive(Debug, Clone)]
pub struct ExtraFlow {
    pub total_len: u64,
    pub limits: RateLimits,
    /// Virtual time at which its endpoints are created.
    pub start_at: Duration,
}

impl SimConfig {
    pub fn new(total_len: u64, rate_kbps: u64, one_way: Duration) -> Self {
        SimConfig {
            seed: 1,
            total_len,
            max_datagram_size: 1472,
            cipher: CipherLevel::None,
            limits: RateLimits::transfer(rate_kbps),
            transport: TransportConfig::default(),
            forward: LinkConfig::ideal(one_way),
            backward: LinkConfig::ideal(one_way),
            sink: SinkModel::Instant { window: 64 << 20 },
            attack: AttackConfig::default(),
            time_limit: Duration::from_secs(120),
            rate_changes: Vec::new(),
            extra_flows: Vec::new(),
            sender_stalls: None,
            receiver_stalls: None,
            sender_timer_tick: None,
        }
    }
}

/// Outcome of a simulated transfer.
#[derive(Debug)]
pub struct SimResult {
    pub params: TransferParams,
    /// Virtual time at which the sender saw every block acknowledged.
    pub sender_complete_at: Option<Duration>,
    /// Virtual time at which the receiver held every block.
    pub receiver_complete_at: Option<Duration>,
    pub sender: SenderStats,
    pub receiver: ReceiverStats,
    pub forward: LinkStats,
    pub backward: LinkStats,
    pub sink: VerifyingSink,
    /// (virtual time, sender rate in bit/s), sampled every 10 ms.
    pub rate_samples: Vec<(Duration, u64)>,
    pub replays_injected: u64,
    pub forgeries_injected: u64,
    pub events: u64,
    /// Results of `extra_flows`, in order.
    pub extra: Vec<FlowResult>,
}

impl SimResult {
    /// Every byte of `0..total_len` was delivered once and matched the pattern.
    pub fn assert_data_intact(&self) {
        assert_eq!(
            self.sink.mismatched_blocks, 0,
            "corrupted data reached the sink"
        );
        assert_eq!(self.sink.double_deliveries, 0, "a byte was delivered twice");
        assert_eq!(
            self.sink.delivered.len(),
            self.params.total_len,
            "bytes missing"
        );
        if self.params.total_len > 0 {
            assert_eq!(
                self.sink.delivered.iter().collect::<Vec<_>>(),
                vec![0..self.params.total_len]
            );
        }
    }

    /// Goodput in bit/s: transfer bytes over the time until the sender knew it was complete.
    pub fn goodput_bps(&self) -> f64 {
        let elapsed = self.sender_complete_at.expect("transfer did not complete");
        self.params.total_len as f64 * 8.0 / elapsed.as_secs_f64()
    }

    /// Mean sender rate over samples in `from..to`.
    pub fn mean_rate_bps(&self, from: Duration, to: Duration) -> f64 {
        let rates: Vec<u64> = self
            .rate_samples
            .iter()
            .filter(|(time, _)| *time >= from && *time < to)
            .map(|&(_, rate)| rate)
            .collect();
        rates.iter().sum::<u64>() as f64 / rates.len().max(1) as f64
    }

    pub fn min_rate_bps(&self) -> u64 {
        self.rate_samples.iter().map(|&(_, r)| r).min().unwrap_or(0)
    }
}

#[derive(Debug)]
enum EventKind {
    ToReceiver(usize, Vec<u8>),
    ToSender(usize, Vec<u8>),
    WakeSender(usize),
    WakeReceiver(usize),
    SinkTick,
    SetRate(RateLimits),
}

struct Event {
    time: Duration,
    sequence: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.time == other.time && self.sequence == other.sequence
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed, so the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

struct EventQueue {
    heap: BinaryHeap<Event>,
    sequence: u64,
}

impl EventQueue {
    fn push(&mut self, time: Duration, kind: EventKind) {
        self.sequence += 1;
        self.heap.push(Event {
            time,
            sequence: self.sequence,
            kind,
        });
    }
}

const SESSION_ID: u32 = 0x5151;
const SESSION_KEY: [u8; 32] = *b"simulated session key, 32 bytes!";
const SINK_TICK: Duration = Duration::from_millis(1);

/// One transfer inside the simulation: both endpoints and their bookkeeping.
struct Flow {
    params: TransferParams,
    sender: Sender,
    receiver: Receiver,
    sink: VerifyingSink,
    sender_wake: Option<Duration>,
    receiver_wake: Option<Duration>,
    sender_complete_at: Option<Duration>,
    receiver_complete_at: Option<Duration>,
    rate_samples: Vec<(Duration, u64)>,
    next_rate_sample: Duration,
}

impl Flow {
    fn new(
        config: &SimConfig,
        index: usize,
        total_len: u64,
        limits: RateLimits,
        start: Instant,
    ) -> Self {
        let block_size =
            TransferParams::block_size_for_datagram(config.max_datagram_size, config.cipher)
                .expect("datagram size");
        let params =
            TransferParams::new(SESSION_ID + index as u32, total_len, block_size).expect("params");
        let secret = SessionSecret {
            level: config.cipher,
            key: &SESSION_KEY,
        };
        Flow {
            params,
            sender: Sender::new(params, config.transport.clone(), limits, secret, start)
                .expect("sender"),
            receiver: Receiver::new(params, config.transport.clone(), secret, start)
                .expect("receiver"),
            sink: VerifyingSink::new(config.sink),
            sender_wake: None,
            receiver_wake: None,
            sender_complete_at: None,
            receiver_complete_at: None,
            rate_samples: Vec::new(),
            next_rate_sample: Duration::ZERO,
        }
    }

    fn finished(&self) -> bool {
        self.sender.is_closed() && self.receiver.close_reason().is_some()
    }

    fn into_result(self) -> FlowResult {
        FlowResult {
            params: self.params,
            sender_complete_at: self.sender_complete_at,
            receiver_complete_at: self.receiver_complete_at,
            sender: self.sender.stats(),
            receiver: self.receiver.stats(),
            sink: self.sink,
            rate_samples: self.rate_samples,
        }
    }
}

/// Outcome of one extra flow of a shared simulation.
#[derive(Debug)]
pub struct FlowResult {
    pub params: TransferParams,
    pub sender_complete_at: Option<Duration>,
    pub receiver_complete_at: Option<Duration>,
    pub sender: SenderStats,
    pub receiver: ReceiverStats,
    pub sink: VerifyingSink,
    pub rate_samples: Vec<(Duration, u64)>,
}

/// Runs the transfer (plus any `extra_flows` sharing its links) to completion, or to the time
/// limit, in virtual time.
pub fn run(config: SimConfig) -> SimResult {
    let base = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut flows = vec![Flow::new(&config, 0, config.total_len, config.limits, base)];
    let mut starts = vec![Duration::ZERO];
    for (index, extra) in config.extra_flows.iter().enumerate() {
        flows.push(Flow::new(
            &config,
            index + 1,
            extra.total_len,
            extra.limits,
            base + extra.start_at,
        ));
        starts.push(extra.start_at);
    }
    let mut source = PatternSource;
    let mut forward = Link::new(config.forward.clone());
    let mut backward = Link::new(config.backward.clone());
    let mut queue = EventQueue {
        heap: BinaryHeap::new(),
        sequence: 0,
    };
    for (index, flow) in flows.iter_mut().enumerate() {
        queue.push(starts[index], EventKind::WakeSender(index));
        queue.push(starts[index], EventKind::WakeReceiver(index));
        flow.sender_wake = Some(starts[index]);
        flow.receiver_wake = Some(starts[index]);
    }
    if matches!(config.sink, SinkModel::Slow { .. }) {
        queue.push(SINK_TICK, EventKind::SinkTick);
    }
    for &(at, limits) in &config.rate_changes {
        queue.push(at, EventKind::SetRate(limits));
    }
    let mut recorded: Vec<Vec<u8>> = Vec::new();
    let mut replays_injected = 0;
    let mut forgeries_injected = 0;
    let mut forged_packet_number = 1u64 << 40;
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut sizes = Vec::new();
    let mut events = 0u64;
    let mut sender_stalls = Stalls::new(config.sender_stalls);
    let mut receiver_stalls = Stalls::new(config.receiver_stalls);

    while let Some(event) = queue.heap.pop() {
        let now_virtual = event.time;
        if now_virtual > config.time_limit {
            break;
        }
        // A stalled host handles the event when the stall ends.
        let ready = match event.kind {
            EventKind::ToReceiver(..) | EventKind::WakeReceiver(_) => {
                receiver_stalls.ready_at(now_virtual)
            }
            EventKind::ToSender(..) | EventKind::WakeSender(_) => {
                sender_stalls.ready_at(now_virtual)
            }
            _ => now_virtual,
        };
        if ready > now_virtual {
            match event.kind {
                EventKind::WakeSender(index) if flows[index].sender_wake == Some(now_virtual) => {
                    flows[index].sender_wake = Some(ready);
                }
                EventKind::WakeReceiver(index)
                    if flows[index].receiver_wake == Some(now_virtual) =>
                {
                    flows[index].receiver_wake = Some(ready);
                }
                _ => {}
            }
            queue.push(ready, event.kind);
            continue;
        }
        events += 1;
        let now = base + now_virtual;
        let mut touch_sender = None;
        let mut touch_receivers = Vec::new();
        match event.kind {
            EventKind::ToReceiver(index, mut datagram) => {
                let flow = &mut flows[index];
                flow.receiver
                    .handle_datagram(now, &mut datagram, &mut flow.sink);
                touch_receivers.push(index);
            }
            EventKind::ToSender(index, mut datagram) => {
                let _ = flows[index].sender.handle_datagram(now, &mut datagram);
                touch_sender = Some(index);
            }
            EventKind::WakeSender(index) => {
                if flows[index].sender_wake != Some(now_virtual) {
                    continue;
                }
                flows[index].sender_wake = None;
                touch_sender = Some(index);
            }
            EventKind::WakeReceiver(index) => {
                if flows[index].receiver_wake != Some(now_virtual) {
                    continue;
                }
                flows[index].receiver_wake = None;
                touch_receivers.push(index);
            }
            EventKind::SetRate(limits) => {
                flows[0].sender.set_rate_limits(limits);
                touch_sender = Some(0);
            }
            EventKind::SinkTick => {
                for (index, flow) in flows.iter_mut().enumerate() {
                    flow.sink.drain(now_virtual);
                    flow.receiver.update_window(flow.sink.available());
                    touch_receivers.push(index);
                }
                if flows.iter().any(|flow| !flow.receiver.is_complete()) {
                    queue.push(now_virtual + SINK_TICK, EventKind::SinkTick);
                }
            }
        }

        if let Some(index) = touch_sender {
            let flow = &mut flows[index];
            // Batch like a GSO driver: all due datagrams appended to one buffer, then split.
            buffer.clear();
            sizes.clear();
            while let Some(transmit) = flow.sender.poll_transmit(now, &mut source, &mut buffer) {
                sizes.push(transmit.size);
            }
            let mut offset = 0;
            for &size in &sizes {
                let datagram = buffer[offset..offset + size].to_vec();
                offset += size;
                let attacked = index == 0;
                if attacked && config.attack.replay > 0.0 && rng.gen_bool(0.01) {
                    recorded.push(datagram.clone());
                }
                let datagram_copy_for_forgery = datagram.clone();
                for (arrival, copy) in forward.transmit(now_virtual, datagram, &mut rng) {
                    queue.push(arrival, EventKind::ToReceiver(index, copy));
                }
                if attacked && !recorded.is_empty() && rng.gen_bool(config.attack.replay) {
                    let pick = rng.gen_range(0..recorded.len());
                    replays_injected += 1;
                    queue.push(
                        now_virtual + config.forward.delay,
                        EventKind::ToReceiver(0, recorded[pick].clone()),
                    );
                }
                if attacked && config.attack.forge > 0.0 && rng.gen_bool(config.attack.forge) {
                    forgeries_injected += 1;
                    forged_packet_number += 1;
                    let mut forged = datagram_copy_for_forgery;
                    forged[8..14].copy_from_slice(&forged_packet_number.to_be_bytes()[2..]);
                    for byte in &mut forged[14..] {
                        *byte = rng.gen();
                    }
                    queue.push(
                        now_virtual + config.forward.delay,
                        EventKind::ToReceiver(0, forged),
                    );
                }
            }
            if flow.sender_complete_at.is_none() && flow.sender.is_complete() {
                flow.sender_complete_at = Some(now_virtual);
            }
            if now_virtual >= flow.next_rate_sample {
                flow.rate_samples
                    .push((now_virtual, flow.sender.stats().rate_bps));
                flow.next_rate_sample = now_virtual + Duration::from_millis(10);
            }
            let mut timeout = flow.sender.next_timeout();
            if let (Some(tick), Some(at)) = (config.sender_timer_tick, timeout) {
                // Round the wake-up up to the next tick of the timer.
                let since = at.saturating_duration_since(base);
                let ticks = since.as_nanos().div_ceil(tick.as_nanos().max(1));
                let rounded = tick.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
                timeout = Some(base + rounded.max(since));
            }
            schedule(
                &mut queue,
                &mut flow.sender_wake,
                timeout,
                base,
                now_virtual,
                EventKind::WakeSender(index),
            );
        }
        for index in touch_receivers {
            let flow = &mut flows[index];
            loop {
                buffer.clear();
                if flow.receiver.poll_transmit(now, &mut buffer).is_none() {
                    break;
                }
                for (arrival, copy) in backward.transmit(now_virtual, buffer.clone(), &mut rng) {
                    queue.push(arrival, EventKind::ToSender(index, copy));
                }
            }
            if flow.receiver_complete_at.is_none() && flow.receiver.is_complete() {
                flow.receiver_complete_at = Some(now_virtual);
            }
            let timeout = flow.receiver.next_timeout();
            schedule(
                &mut queue,
                &mut flow.receiver_wake,
                timeout,
                base,
                now_virtual,
                EventKind::WakeReceiver(index),
            );
        }
        if flows.iter().all(Flow::finished) {
            break;
        }
    }

    let mut flows = flows.into_iter().map(Flow::into_result);
    let main = flows.next().expect("the main flow");
    SimResult {
        params: main.params,
        sender_complete_at: main.sender_complete_at,
        receiver_complete_at: main.receiver_complete_at,
        sender: main.sender,
        receiver: main.receiver,
        forward: forward.stats,
        backward: backward.stats,
        sink: main.sink,
        rate_samples: main.rate_samples,
        replays_injected,
        forgeries_injected,
        events,
        extra: flows.collect(),
    }
}

fn schedule(
    queue: &mut EventQueue,
    scheduled: &mut Option<Duration>,
    timeout: Option<Instant>,
    base: Instant,
    now: Duration,
    kind: EventKind,
) {
    let Some(timeout) = timeout else {
        return;
    };
    // An endpoint that just ran and still says "now" waits one microsecond, so a bug shows up
    // as a slow test rather than a hang.
    let at = timeout
        .saturating_duration_since(base)
        .max(now + Duration::from_micros(1));
    if scheduled.is_none_or(|current| at < current) {
        *scheduled = Some(at);
        queue.push(at, kind);
    }
}
