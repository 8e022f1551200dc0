//! The receiving side of a transfer: accepts DATA datagrams, drops duplicates, hands new payload
//! to the engine's sink, and sends bounded, coalesced range ACKs that carry the flow-control
//! limit and an RTT echo.
//!
//! Sans-IO: the driver passes `now` and datagrams in, takes ACK datagrams out, and sleeps until
//! [`Receiver::next_timeout`].

use crate::config::{TransferParams, TransportConfig};
use crate::crypto::{
    CryptoError, DropCounters, DropReason, PacketNumbersExhausted, PacketProtection, Role,
    SessionSecret,
};
use crate::range_set::RangeSet;
use crate::transmit::{Transmit, TransmitKind};
use crate::wire::{AckEncoder, CloseReason, DataFields, PacketType, TimestampEcho, HEADER_LEN};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The sink refused a block (no room); it is not acknowledged, so the sender sends it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkFull;

/// Where received payload goes (the engine's writer over the destination backend).
pub trait BlockSink {
    /// Takes the payload of one block at global `offset`. Called once per block (duplicates
    /// never reach the sink), in arrival order, which is not offset order.
    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkFull>;

    /// Bytes the sink can still take beyond everything handed to it so far. The receiver turns
    /// this into the flow-control limit it advertises, so it is a promise: the sink must then
    /// accept that much. Asked after every write; when room frees up without new data, call
    /// [`Receiver::update_window`].
    fn available(&self) -> u64;
}

/// What one received datagram did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// A new block was written to the sink.
    Delivered {
        /// Block index.
        block: u64,
    },
    /// A block already received; nothing was written.
    Duplicate {
        /// Block index.
        block: u64,
    },
    /// The sink refused the block.
    Refused {
        /// Block index.
        block: u64,
    },
    /// The sender ended the transfer.
    Closed(CloseReason),
    /// The datagram was invalid (counted in [`ReceiverStats::dropped`]).
    Dropped(DropReason),
}

/// Receiver counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Number of blocks in the transfer.
    pub total_blocks: u64,
    /// Distinct blocks received.
    pub blocks_received: u64,
    /// Distinct payload bytes received.
    pub bytes_received: u64,
    /// Blocks received again (retransmissions that crossed an ACK, duplicated datagrams).
    pub duplicate_blocks: u64,
    /// Blocks the sink refused.
    pub refused_blocks: u64,
    /// Valid datagrams received.
    pub packets_received: u64,
    /// Datagrams sent (ACKs).
    pub packets_sent: u64,
    /// Datagrams dropped, by reason.
    pub dropped: DropCounters,
    /// Flow-control limit last advertised.
    pub flow_limit: u64,
}

/// An echo older than this is not sent (it would no longer measure the path).
const MAX_ECHO_AGE: Duration = Duration::from_secs(1);

/// The receiving state machine of one transfer.
pub struct Receiver {
    params: TransferParams,
    config: TransportConfig,
    protection: PacketProtection,
    total_blocks: u64,
    received: RangeSet,
    /// Received blocks not yet mentioned in an ACK (or received again, so the sender missed it).
    unreported: RangeSet,
    bytes_received: u64,
    flow_limit: u64,
    advertised_limit: u64,
    /// Timestamp and arrival time of the most recent DATA packet, for the RTT echo.
    last_data: Option<(u32, Instant)>,
    ack_due: Option<Instant>,
    packets_since_ack: u32,
    last_ack_sent: Option<Instant>,
    window_update_due: bool,
    created: Instant,
    close_reason: Option<CloseReason>,
    stats: ReceiverStats,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("params", &self.params)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver for `params`. Its first ACK (announcing the window) is due at once. Fails
    /// only when the secret is unusable for its level (key shorter than 16 bytes).
    pub fn new(
        params: TransferParams,
        config: TransportConfig,
        secret: SessionSecret<'_>,
        now: Instant,
    ) -> Result<Self, CryptoError> {
        let protection =
            PacketProtection::new(secret.level, secret.key, params.session_id, Role::Receiver)?;
        let total_blocks = params.total_blocks();
        Ok(Receiver {
            params,
            total_blocks,
            received: RangeSet::new(),
            unreported: RangeSet::new(),
            bytes_received: 0,
            flow_limit: config.effective_initial_window(&params),
            advertised_limit: 0,
            last_data: None,
            ack_due: Some(now),
            packets_since_ack: 0,
            last_ack_sent: None,
            window_update_due: false,
            created: now,
            close_reason: None,
            stats: ReceiverStats {
                total_blocks,
                ..ReceiverStats::default()
            },
            protection,
            config,
        })
    }

    /// Resumes from a checkpoint: these blocks are already safely stored.
    pub fn resume_from(&mut self, received: &RangeSet) {
        for range in received.iter() {
            let range = range.start.min(self.total_blocks)..range.end.min(self.total_blocks);
            for gap in self.received.gaps(range.clone()) {
                self.bytes_received += self.params.bytes_in_blocks(gap.clone());
                self.stats.blocks_received += gap.end - gap.start;
            }
            self.received.insert(range);
        }
        self.stats.bytes_received = self.bytes_received;
        self.flow_limit = self
            .flow_limit
            .max(self.bytes_received + self.config.effective_initial_window(&self.params));
    }

    /// The transfer parameters.
    pub fn params(&self) -> &TransferParams {
        &self.params
    }

    /// Blocks received (and handed to the sink) so far.
    pub fn received(&self) -> &RangeSet {
        &self.received
    }

    /// Every block has been received.
    pub fn is_complete(&self) -> bool {
        self.received.len() >= self.total_blocks
    }

    /// Why the sender closed the transfer, once its CLOSE arrived.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// Counters.
    pub fn stats(&self) -> ReceiverStats {
        let mut stats = self.stats.clone();
        stats.dropped = self.protection.drops();
        stats.flow_limit = self.flow_limit;
        stats
    }

    /// Tells the receiver the sink can now take `available` bytes beyond what it was handed
    /// (e.g. after a flush freed cache space). A significant increase is announced at once.
    pub fn update_window(&mut self, available: u64) {
        self.raise_flow_limit(available);
    }

    fn raise_flow_limit(&mut self, available: u64) {
        let limit = self.bytes_received.saturating_add(available);
        if limit <= self.flow_limit {
            return;
        }
        self.flow_limit = limit;
        let threshold = (self.config.initial_window / 8).max(16 * self.params.block_size as u64);
        if self.flow_limit >= self.advertised_limit.saturating_add(threshold) {
            self.window_update_due = true;
        }
    }

    /// Processes a datagram from the sender (decrypted in place), writing new payload to `sink`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &mut [u8],
        sink: &mut impl BlockSink,
    ) -> ReceiveOutcome {
        let (header, body) = match self.protection.open(datagram) {
            Ok(opened) => opened,
            Err(reason) => return ReceiveOutcome::Dropped(reason),
        };
        match header.packet_type {
            PacketType::Data => {}
            PacketType::Close => {
                return match CloseReason::decode(body) {
                    Ok(reason) => {
                        self.stats.packets_received += 1;
                        self.close_reason = Some(reason);
                        ReceiveOutcome::Closed(reason)
                    }
                    Err(_) => self.reject(DropReason::Malformed),
                };
            }
            PacketType::Ack => return self.reject(DropReason::UnexpectedType),
        }
        let Ok((fields, payload)) = DataFields::decode(body) else {
            return self.reject(DropReason::Malformed);
        };
        let block = fields.block;
        if block >= self.total_blocks || payload.len() != self.params.block_len(block) {
            return self.reject(DropReason::Malformed);
        }
        self.stats.packets_received += 1;
        self.last_data = Some((fields.timestamp_us, now));
        self.packets_since_ack += 1;
        let outcome = if self.received.contains(block) {
            self.stats.duplicate_blocks += 1;
            // The sender did not know we had it: report its range again.
            self.unreported.insert(block..block + 1);
            ReceiveOutcome::Duplicate { block }
        } else {
            let offset = self.params.block_bytes(block).start;
            if sink.write_block(offset, payload).is_err() {
                self.stats.refused_blocks += 1;
                return ReceiveOutcome::Refused { block };
            }
            self.received.insert(block..block + 1);
            self.unreported.insert(block..block + 1);
            self.bytes_received += payload.len() as u64;
            self.stats.blocks_received += 1;
            self.stats.bytes_received = self.bytes_received;
            self.raise_flow_limit(sink.available());
            ReceiveOutcome::Delivered { block }
        };
        let deadline =
            if self.packets_since_ack >= self.config.ack_every_packets || self.is_complete() {
                now
            } else {
                now + self.config.max_ack_delay
            };
        self.ack_due = Some(self.ack_due.map_or(deadline, |due| due.min(deadline)));
        outcome
    }

    fn reject(&mut self, reason: DropReason) -> ReceiveOutcome {
        self.protection.record_drop(reason);
        ReceiveOutcome::Dropped(reason)
    }

    fn keepalive_due_at(&self) -> Instant {
        match self.last_ack_sent {
            Some(sent) => sent + self.config.keepalive_interval,
            None => self.created,
        }
    }

    /// Appends an ACK to `out` (never cleared) if one is due at `now`: enough packets, ACK
    /// delay elapsed, completion, a window update, or the keepalive interval. Nothing after the
    /// sender's CLOSE. Call until it returns None, then sleep until [`Receiver::next_timeout`].
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit> {
        if self.close_reason.is_some() {
            return None;
        }
        let due = self.window_update_due
            || self.ack_due.is_some_and(|due| now >= due)
            || now >= self.keepalive_due_at();
        if !due {
            return None;
        }
        let start = out.len();
        self.write_ack(now, out).ok()?;
        Some(Transmit {
            kind: TransmitKind::Ack,
            size: out.len() - start,
        })
    }

    fn write_ack(&mut self, now: Instant, out: &mut Vec<u8>) -> Result<(), PacketNumbersExhausted> {
        let start = self.protection.start_packet(PacketType::Ack, out)?;
        let cumulative = self
            .received
            .first_range()
            .filter(|range| range.start == 0)
            .map_or(0, |range| range.end);
        let body_budget = self
            .config
            .max_ack_datagram_size
            .saturating_sub(HEADER_LEN + self.protection.level().overhead());
        let mut encoder = AckEncoder::new(body_budget);
        let mut included = BTreeSet::new();
        // First what changed since the last ACK (each piece as its whole received range)...
        while let Some(piece) = self.unreported.first_range() {
            let Some(enclosing) = self.received.range_containing(piece.start) else {
                self.unreported.remove(piece);
                continue;
            };
            if enclosing.end > cumulative {
                if !encoder.try_push(enclosing.clone()) {
                    break;
                }
                included.insert(enclosing.start);
            }
            self.unreported.remove(enclosing);
        }
        // ...then the highest ranges, which repeat recent news in case an ACK was lost.
        for range in self.received.iter().rev() {
            if range.end <= cumulative {
                break;
            }
            if included.contains(&range.start) {
                continue;
            }
            if !encoder.try_push(range) {
                break;
            }
        }
        let echo = self.last_data.and_then(|(timestamp_us, arrived)| {
            let held = now.saturating_duration_since(arrived);
            (held <= MAX_ECHO_AGE).then_some(TimestampEcho {
                timestamp_us,
                delay_us: held.as_micros() as u32,
            })
        });
        encoder.finish(out, self.is_complete(), echo, self.flow_limit, cumulative);
        self.protection.seal(out, start);
        self.stats.packets_sent += 1;
        self.advertised_limit = self.flow_limit;
        self.window_update_due = false;
        self.packets_since_ack = 0;
        self.last_ack_sent = Some(now);
        // News that did not fit goes out in the next ACK, right away.
        self.ack_due = (!self.unreported.is_empty()).then_some(now);
        Ok(())
    }

    /// The next instant at which `poll_transmit` will send an ACK (None after CLOSE). An instant
    /// in the past means now.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.close_reason.is_some() {
            return None;
        }
        if self.window_update_due {
            return Some(self.created);
        }
        let keepalive = self.keepalive_due_at();
        Some(self.ack_due.map_or(keepalive, |due| due.min(keepalive)))
    }
}
