//! The sending side of a transfer: paces DATA datagrams at the controlled rate, tracks what the
//! receiver acknowledged, retransmits what stayed unacknowledged for an RTT plus margin, and
//! obeys the receiver's flow-control limit.
//!
//! Sans-IO: the driver passes `now` and datagrams in, takes datagrams out, and sleeps until
//! [`Sender::next_timeout`].

use crate::config::{TransferParams, TransportConfig};
use crate::crypto::{CryptoError, DropCounters, DropReason, PacketProtection, Role, SessionSecret};
use crate::range_set::RangeSet;
use crate::rate::{Pacer, RateController, RateLimits, RttEstimator};
use crate::transmit::{Transmit, TransmitKind};
use crate::wire::{AckFrame, CloseReason, DataFields, PacketType};
use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Where the sender gets payload bytes from (the engine's read-ahead over the source backend).
pub trait BlockSource {
    /// Fills `buf` (exactly the block's length) with the transfer's bytes starting at global
    /// `offset`. Returns false when they are not available yet; the sender sends nothing and asks
    /// again after `source_retry_interval`. Blocks are requested mostly in ascending order;
    /// retransmissions ask for older offsets again.
    fn read_block(&mut self, offset: u64, buf: &mut [u8]) -> bool;
}

/// Sender counters, named after the API's Transfer fields where one exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SenderStats {
    /// Number of blocks in the transfer (`totalBlocks`).
    pub total_blocks: u64,
    /// Payload bytes sent, retransmissions included (`bytesSent`).
    pub bytes_sent: u64,
    /// Distinct payload bytes the receiver acknowledged (`bytesAcked`).
    pub bytes_acked: u64,
    /// Distinct blocks sent at least once (`blocksSent`); blocks skipped on resume count.
    pub blocks_sent: u64,
    /// Distinct blocks acknowledged (`blocksAcked`).
    pub blocks_acked: u64,
    /// Block transmissions beyond the first (`blocksRetransmitted`).
    pub blocks_retransmitted: u64,
    /// Datagrams sent (`packetsSent`).
    pub packets_sent: u64,
    /// Valid datagrams received (`packetsRecv`).
    pub packets_received: u64,
    /// Datagram bytes sent, headers and tags included.
    pub wire_bytes_sent: u64,
    /// Datagrams dropped, by reason.
    pub dropped: DropCounters,
    /// Current pacing rate in bit/s (`sendRate` is this / 1000).
    pub rate_bps: u64,
    /// Current rate cap in bit/s.
    pub rate_limit_bps: u64,
    /// Smoothed round-trip time (`roundTripTimeMs`).
    pub smoothed_rtt: Duration,
    /// Smallest round-trip time seen.
    pub min_rtt: Option<Duration>,
    /// The receiver's flow-control limit: distinct bytes it accepts in total.
    pub flow_limit: u64,
    /// Sending opportunities (pacer ready) at which the next new block was held back by the
    /// flow-control limit: a sign the receiver's storage is the bottleneck.
    pub flow_blocked: u64,
}

/// One run of consecutive blocks sent close together, kept until its retransmission deadline.
struct SentRecord {
    blocks: Range<u64>,
    first_sent: Instant,
    last_sent: Instant,
}

/// Longest time span and block count merged into one [`SentRecord`].
const RECORD_SPAN: Duration = Duration::from_millis(1);
const RECORD_MAX_BLOCKS: u64 = 512;

/// Plausibility bound of an RTT sample (the echoed timestamp is a wrapping u32 of microseconds).
const MAX_RTT_SAMPLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Retransmit(u64),
    New(u64),
    TailCopy(u64),
}

/// The sending state machine of one transfer.
pub struct Sender {
    params: TransferParams,
    config: TransportConfig,
    protection: PacketProtection,
    total_blocks: u64,
    acked: RangeSet,
    /// Blocks declared lost, waiting to be sent again.
    retransmit_queue: RangeSet,
    /// Retransmitted tail blocks that get one more copy when nothing else is waiting.
    tail_copies: RangeSet,
    /// Blocks sent at least once.
    sent_once: RangeSet,
    /// Lowest block that may not have been sent yet.
    new_cursor: u64,
    unique_bytes_sent: u64,
    sent_log: VecDeque<SentRecord>,
    flow_limit: u64,
    rtt: RttEstimator,
    controller: RateController,
    pacer: Pacer,
    epoch: Instant,
    now: Instant,
    last_ack_at: Instant,
    source_retry_at: Option<Instant>,
    close_reason: Option<CloseReason>,
    /// A CLOSE is due: once when the transfer ends, then again for each ACK that shows the
    /// receiver has not heard it.
    close_due: bool,
    close_sent: bool,
    stats: SenderStats,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("params", &self.params)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for `params`, sending at most at `limits`, starting at `now`. Fails only when
    /// the secret is unusable for its level (key shorter than 16 bytes).
    pub fn new(
        params: TransferParams,
        config: TransportConfig,
        limits: RateLimits,
        secret: SessionSecret<'_>,
        now: Instant,
    ) -> Result<Self, CryptoError> {
        let protection =
            PacketProtection::new(secret.level, secret.key, params.session_id, Role::Sender)?;
        let total_blocks = params.total_blocks();
        let controller = RateController::new(config.rate_control.clone(), limits);
        // An empty transfer is complete before it starts; it only sends its CLOSE.
        let close_reason = (total_blocks == 0).then_some(CloseReason::Complete);
        Ok(Sender {
            params,
            total_blocks,
            acked: RangeSet::new(),
            retransmit_queue: RangeSet::new(),
            tail_copies: RangeSet::new(),
            sent_once: RangeSet::new(),
            new_cursor: 0,
            unique_bytes_sent: 0,
            sent_log: VecDeque::new(),
            flow_limit: config.effective_initial_window(&params),
            rtt: RttEstimator::new(config.initial_rtt),
            controller,
            pacer: Pacer::new(now, config.max_pacing_burst, config.max_pacing_debt),
            epoch: now,
            now,
            last_ack_at: now,
            source_retry_at: None,
            close_due: close_reason.is_some(),
            close_reason,
            close_sent: false,
            stats: SenderStats {
                total_blocks,
                ..SenderStats::default()
            },
            protection,
            config,
        })
    }

    /// Resumes from a checkpoint: blocks already acknowledged in an earlier run are not sent.
    /// Call before the first `poll_transmit`; the receiver must resume with the same set.
    pub fn resume_from(&mut self, acked: &RangeSet) {
        for range in acked.iter() {
            let range = range.start.min(self.total_blocks)..range.end.min(self.total_blocks);
            self.mark_sent_once(range.clone());
            self.mark_acked(range);
        }
        // The receiver's first window counts the resumed bytes as received (see
        // `Receiver::resume_from`); start from the same limit so that a resume larger than the
        // initial window does not stall before the first ACK.
        self.flow_limit = self
            .flow_limit
            .max(self.unique_bytes_sent + self.config.effective_initial_window(&self.params));
        if self.is_complete() {
            self.close(CloseReason::Complete);
        }
    }

    /// The transfer parameters.
    pub fn params(&self) -> &TransferParams {
        &self.params
    }

    /// Blocks acknowledged so far: what a checkpoint saves.
    pub fn acked(&self) -> &RangeSet {
        &self.acked
    }

    /// Every block is acknowledged.
    pub fn is_complete(&self) -> bool {
        self.acked.len() >= self.total_blocks
    }

    /// The transfer ended (complete or cancelled) and the CLOSE packet went out at least once.
    /// The engine may then drop the sender (or keep it a little to answer late ACKs with a
    /// repeated CLOSE).
    pub fn is_closed(&self) -> bool {
        self.close_sent
    }

    /// When the last valid ACK arrived; the engine fails the transfer if this gets too old.
    pub fn last_ack_at(&self) -> Instant {
        self.last_ack_at
    }

    /// Changes the rate caps (e.g. `setSendRate`, or a new server-wide share).
    pub fn set_rate_limits(&mut self, limits: RateLimits) {
        self.controller.set_limits(limits);
    }

    /// Stops sending data; the next `poll_transmit` emits a CLOSE(cancelled) packet. No effect
    /// once the transfer ended.
    pub fn cancel(&mut self) {
        self.close(CloseReason::Cancelled);
    }

    /// Counters for the API and logs.
    pub fn stats(&self) -> SenderStats {
        let mut stats = self.stats.clone();
        stats.dropped = self.protection.drops();
        stats.rate_bps = self.controller.rate_bps();
        stats.rate_limit_bps = self.controller.limit_bps();
        stats.smoothed_rtt = self.rtt.smoothed();
        stats.min_rtt = self.rtt.min();
        stats.flow_limit = self.flow_limit;
        stats
    }

    /// Time after sending at which an unacknowledged block counts as lost: smoothed RTT + 4 x
    /// variation + the receiver's ACK delay + margin. Never earlier than one RTT.
    pub fn retransmit_timeout(&self) -> Duration {
        self.rtt.smoothed()
            + (self.rtt.variation() * 4).max(Duration::from_millis(1))
            + self.config.max_ack_delay
            + self.config.retransmit_margin
    }

    /// Processes a datagram from the receiver (decrypted in place). Invalid datagrams are
    /// counted in [`SenderStats::dropped`] and return the reason.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &mut [u8]) -> Result<(), DropReason> {
        self.now = self.now.max(now);
        let (header, body) = self.protection.open(datagram)?;
        if header.packet_type != PacketType::Ack {
            self.protection.record_drop(DropReason::UnexpectedType);
            return Err(DropReason::UnexpectedType);
        }
        let frame = match AckFrame::decode(body) {
            Ok(frame) if self.ack_is_in_bounds(&frame) => frame,
            _ => {
                self.protection.record_drop(DropReason::Malformed);
                return Err(DropReason::Malformed);
            }
        };
        self.on_ack(now, frame);
        Ok(())
    }

    fn ack_is_in_bounds(&self, frame: &AckFrame) -> bool {
        frame.cumulative <= self.total_blocks
            && frame
                .ranges
                .last()
                .is_none_or(|range| range.end <= self.total_blocks)
    }

    fn on_ack(&mut self, now: Instant, frame: AckFrame) {
        self.stats.packets_received += 1;
        if self.close_reason.is_some() {
            // The receiver still talks, so it missed our CLOSE (or it is not sent yet): send.
            self.close_due = true;
            return;
        }
        self.last_ack_at = now;
        self.flow_limit = self.flow_limit.max(frame.max_data);
        let sample = frame.echo.and_then(|echo| {
            let elapsed_us = self.timestamp_us(now).wrapping_sub(echo.timestamp_us);
            let sample = Duration::from_micros(elapsed_us.saturating_sub(echo.delay_us) as u64);
            (sample <= MAX_RTT_SAMPLE).then_some(sample.max(Duration::from_micros(1)))
        });
        if let Some(sample) = sample {
            self.rtt.update(sample);
        }
        let acked_before = self.stats.blocks_acked;
        if frame.complete {
            self.mark_acked(0..self.total_blocks);
        } else {
            self.mark_acked(0..frame.cumulative);
            for range in frame.ranges {
                self.mark_acked(range);
            }
        }
        self.controller.on_ack(
            now,
            sample,
            &self.rtt,
            self.stats.blocks_acked - acked_before,
            self.stats.bytes_acked,
        );
        if self.is_complete() {
            self.close(CloseReason::Complete);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.close_reason.is_none() {
            self.close_reason = Some(reason);
            self.close_due = true;
        }
    }

    fn mark_acked(&mut self, blocks: Range<u64>) {
        if blocks.start >= blocks.end {
            return;
        }
        let mut new_bytes = 0;
        let mut new_blocks = 0;
        for gap in self.acked.gaps(blocks.clone()) {
            new_bytes += self.params.bytes_in_blocks(gap.clone());
            new_blocks += gap.end - gap.start;
        }
        if new_blocks == 0 {
            return;
        }
        self.acked.insert(blocks.clone());
        self.retransmit_queue.remove(blocks.clone());
        self.tail_copies.remove(blocks);
        self.stats.bytes_acked += new_bytes;
        self.stats.blocks_acked += new_blocks;
    }

    fn mark_sent_once(&mut self, blocks: Range<u64>) {
        for gap in self.sent_once.gaps(blocks.clone()) {
            self.unique_bytes_sent += self.params.bytes_in_blocks(gap.clone());
            self.stats.blocks_sent += gap.end - gap.start;
        }
        self.sent_once.insert(blocks);
    }

    fn timestamp_us(&self, now: Instant) -> u32 {
        // Truncation is the wrap-around the wire format expects.
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// Moves blocks whose retransmission deadline passed and that are still unacknowledged into
    /// the retransmission queue.
    fn detect_losses(&mut self, now: Instant) {
        let timeout = self.retransmit_timeout();
        while let Some(record) = self.sent_log.front() {
            if now < record.last_sent + timeout {
                break;
            }
            let blocks = record.blocks.clone();
            self.sent_log.pop_front();
            let lost: Vec<Range<u64>> = self.acked.gaps(blocks).collect();
            for range in lost {
                let newly_lost = self.retransmit_queue.insert(range);
                self.controller.on_blocks_lost(newly_lost);
            }
        }
    }

    fn stalled(&self, now: Instant) -> bool {
        let outstanding = !self.sent_log.is_empty() || !self.retransmit_queue.is_empty();
        let limit = self.config.stall_timeout.max(self.rtt.smoothed() * 4);
        outstanding && now.saturating_duration_since(self.last_ack_at) > limit
    }

    fn next_new_block(&self) -> Option<u64> {
        let block = self.sent_once.first_missing_from(self.new_cursor);
        (block < self.total_blocks).then_some(block)
    }

    fn all_sent_once(&self) -> bool {
        self.sent_once.len() >= self.total_blocks
    }

    /// True when sending `block` for the first time stays within the receiver's limit.
    fn within_flow_limit(&self, block: u64) -> bool {
        self.unique_bytes_sent + self.params.block_len(block) as u64 <= self.flow_limit
    }

    /// The next block to send, without taking it.
    fn peek_candidate(&self) -> Option<Candidate> {
        if let Some(block) = self.retransmit_queue.first() {
            return Some(Candidate::Retransmit(block));
        }
        if let Some(block) = self
            .next_new_block()
            .filter(|&block| self.within_flow_limit(block))
        {
            return Some(Candidate::New(block));
        }
        self.tail_copies.first().map(Candidate::TailCopy)
    }

    /// Appends the next datagram to `out` if one is due at `now`: a CLOSE when the transfer
    /// ended, else a DATA block (retransmissions first, then new blocks, then tail copies) when
    /// the pacer allows. Call repeatedly until it returns None, then sleep until
    /// [`Sender::next_timeout`] or the next received datagram.
    ///
    /// `out` is appended to, never cleared, so a driver can batch datagrams for UDP GSO: DATA
    /// datagrams all have the same size except the transfer's last block (which is shorter, as
    /// GSO allows for the final segment) and CLOSE.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        source: &mut impl BlockSource,
        out: &mut Vec<u8>,
    ) -> Option<Transmit> {
        self.now = self.now.max(now);
        if let Some(reason) = self.close_reason {
            if !self.close_due {
                return None;
            }
            self.close_due = false;
            self.close_sent = true;
            let start = self.protection.start_packet(PacketType::Close, out).ok()?;
            reason.encode(out);
            self.protection.seal(out, start);
            let size = out.len() - start;
            self.stats.packets_sent += 1;
            self.stats.wire_bytes_sent += size as u64;
            return Some(Transmit {
                kind: TransmitKind::Close,
                size,
            });
        }
        self.detect_losses(now);
        if self.stalled(now) || !self.pacer.ready(now) {
            return None;
        }
        if self.source_retry_at.is_some_and(|retry| now < retry) {
            return None;
        }
        let candidate = self.peek_candidate();
        if !matches!(candidate, Some(Candidate::New(_))) && self.next_new_block().is_some() {
            self.stats.flow_blocked += 1;
        }
        let candidate = candidate?;
        let block = match candidate {
            Candidate::Retransmit(block) | Candidate::New(block) | Candidate::TailCopy(block) => {
                block
            }
        };
        let bytes = self.params.block_bytes(block);
        let start = self.protection.start_packet(PacketType::Data, out).ok()?;
        DataFields {
            block,
            timestamp_us: self.timestamp_us(now),
        }
        .encode(out);
        let payload_start = out.len();
        out.resize(payload_start + (bytes.end - bytes.start) as usize, 0);
        if !source.read_block(bytes.start, &mut out[payload_start..]) {
            // Nothing was sent: forget the datagram (its packet number stays unused, harmless).
            out.truncate(start);
            self.source_retry_at = Some(now + self.config.source_retry_interval);
            return None;
        }
        self.source_retry_at = None;
        let kind = match candidate {
            Candidate::Retransmit(_) => {
                self.retransmit_queue.remove(block..block + 1);
                if self.config.tail_copies && self.all_sent_once() {
                    self.tail_copies.insert(block..block + 1);
                }
                self.record_sent(block, now);
                self.stats.blocks_retransmitted += 1;
                TransmitKind::Retransmission
            }
            Candidate::New(_) => {
                self.mark_sent_once(block..block + 1);
                self.new_cursor = block + 1;
                self.record_sent(block, now);
                TransmitKind::NewData
            }
            Candidate::TailCopy(_) => {
                // Not recorded: the retransmission it copies carries the loss deadline.
                self.tail_copies.remove(block..block + 1);
                self.stats.blocks_retransmitted += 1;
                TransmitKind::Retransmission
            }
        };
        self.protection.seal(out, start);
        let size = out.len() - start;
        self.pacer.on_sent(now, size, self.controller.rate_bps());
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes.end - bytes.start;
        self.stats.wire_bytes_sent += size as u64;
        Some(Transmit { kind, size })
    }

    fn record_sent(&mut self, block: u64, now: Instant) {
        if let Some(last) = self.sent_log.back_mut() {
            if last.blocks.end == block
                && now.saturating_duration_since(last.first_sent) <= RECORD_SPAN
                && last.blocks.end - last.blocks.start < RECORD_MAX_BLOCKS
            {
                last.blocks.end = block + 1;
                last.last_sent = now;
                return;
            }
        }
        self.sent_log.push_back(SentRecord {
            blocks: block..block + 1,
            first_sent: now,
            last_sent: now,
        });
    }

    /// The next instant at which `poll_transmit` has something to do: a pacing slot, a
    /// retransmission deadline or a retry of the block source. None when only a received
    /// datagram can make progress (or the transfer is closed). An instant in the past means now.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.close_reason.is_some() {
            return self.close_due.then_some(self.epoch);
        }
        let loss_deadline = self
            .sent_log
            .front()
            .map(|record| record.last_sent + self.retransmit_timeout());
        let has_candidate = self.peek_candidate().is_some();
        let send_slot = (has_candidate && !self.stalled(self.now)).then(|| {
            let slot = self.pacer.next_send();
            match self.source_retry_at {
                Some(retry) => slot.max(retry),
                None => slot,
            }
        });
        match (loss_deadline, send_slot) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
