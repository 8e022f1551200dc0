//! Transfer parameters both ends must agree on (session, length, block size) and the tunables of
//! the sender and receiver state machines.

use crate::crypto::CipherLevel;
use crate::rate::RateControlConfig;
use crate::wire::{DATA_FIELDS_LEN, HEADER_LEN, MAX_BLOCK_INDEX};
use std::ops::Range;
use std::time::Duration;

/// What both ends of one transfer agree on over the HTTPS API before the first datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferParams {
    /// Carried in every header; demultiplexes transfers sharing a UDP port.
    pub session_id: u32,
    /// Size of the transfer's global byte space (see [`crate::FileSpace`]).
    pub total_len: u64,
    /// Payload bytes per DATA datagram; block `i` covers bytes `i*block_size ..`.
    pub block_size: u32,
}

/// Invalid [`TransferParams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A block must hold at least one byte.
    #[error("block size must be at least 1")]
    ZeroBlockSize,
    /// Block indices are 48 bits on the wire.
    #[error("too many blocks: raise the block size")]
    TooManyBlocks,
    /// The datagram size leaves no room for payload.
    #[error("datagram size {0} leaves no room for payload")]
    DatagramTooSmall(usize),
}

impl TransferParams {
    /// Checked constructor.
    pub fn new(session_id: u32, total_len: u64, block_size: u32) -> Result<Self, ParamsError> {
        if block_size == 0 {
            return Err(ParamsError::ZeroBlockSize);
        }
        let params = TransferParams {
            session_id,
            total_len,
            block_size,
        };
        if params.total_blocks() > MAX_BLOCK_INDEX {
            return Err(ParamsError::TooManyBlocks);
        }
        Ok(params)
    }

    /// The largest block size whose DATA datagram fits in `max_datagram_size` bytes (the UDP
    /// payload, e.g. 1472 for a 1500-byte IPv4 MTU, 1452 for IPv6) at `level`.
    pub fn block_size_for_datagram(
        max_datagram_size: usize,
        level: CipherLevel,
    ) -> Result<u32, ParamsError> {
        let overhead = HEADER_LEN + DATA_FIELDS_LEN + level.overhead();
        match max_datagram_size.checked_sub(overhead) {
            Some(payload) if payload > 0 => {
                Ok(u32::try_from(payload).map_err(|_| ParamsError::DatagramTooSmall(0))?)
            }
            _ => Err(ParamsError::DatagramTooSmall(max_datagram_size)),
        }
    }

    /// Number of blocks: `ceil(total_len / block_size)`.
    pub fn total_blocks(&self) -> u64 {
        self.total_len.div_ceil(self.block_size.max(1) as u64)
    }

    /// Block holding byte `offset`.
    pub fn block_of(&self, offset: u64) -> u64 {
        offset / self.block_size.max(1) as u64
    }

    /// Byte range of `block` (the last block may be short).
    pub fn block_bytes(&self, block: u64) -> Range<u64> {
        let size = self.block_size as u64;
        let start = block.saturating_mul(size).min(self.total_len);
        let end = start.saturating_add(size).min(self.total_len);
        start..end
    }

    /// Payload length of `block`.
    pub fn block_len(&self, block: u64) -> usize {
        let bytes = self.block_bytes(block);
        (bytes.end - bytes.start) as usize
    }

    /// Bytes covered by a range of blocks.
    pub fn bytes_in_blocks(&self, blocks: Range<u64>) -> u64 {
        if blocks.start >= blocks.end {
            return 0;
        }
        self.block_bytes(blocks.end - 1).end - self.block_bytes(blocks.start).start
    }
}

/// Tunables of the sender and receiver. `initial_window` and `max_ack_delay` must be equal on
/// both ends (the engine can send them with the transfer parameters); the rest is local.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportConfig {
    /// Flow-control credit in bytes before the first ACK: the receiver's sink must be able to
    /// take this much (or one block, if that is more) as soon as the transfer starts.
    pub initial_window: u64,
    /// Longest the receiver waits before acknowledging received data. The sender adds it to its
    /// retransmission timeout.
    pub max_ack_delay: Duration,
    /// Receiver: acknowledge at once after this many DATA packets.
    pub ack_every_packets: u32,
    /// Receiver: send an ACK at least this often, even with nothing new (keepalive and window).
    pub keepalive_interval: Duration,
    /// Receiver: largest ACK datagram in bytes.
    pub max_ack_datagram_size: usize,
    /// Sender: RTT assumed before the first measurement.
    pub initial_rtt: Duration,
    /// Sender: slack added to RTT + 4 x variation + ACK delay before a block counts as lost.
    pub retransmit_margin: Duration,
    /// Sender: once every block was sent once, send each retransmission twice, so a lost
    /// retransmission at the end of a transfer costs no extra round trip.
    pub tail_copies: bool,
    /// Sender: stop sending when no ACK arrived for this long (or 4 smoothed RTTs if longer)
    /// while data is outstanding; sending resumes with the next ACK.
    pub stall_timeout: Duration,
    /// Sender: datagrams the pacer lets out back to back after a late wake-up, in time at the
    /// current rate (a timer tick's worth or so).
    pub max_pacing_burst: Duration,
    /// Sender: how far the sender may fall behind its schedule (a host that was not scheduled
    /// for a while) and still make it up, at [`PACING_CATCH_UP_SPEED`](crate::rate::PACING_CATCH_UP_SPEED)
    /// times the rate, so that the mean rate is the rate chosen rather than what the CPU allowed.
    pub max_pacing_debt: Duration,
    /// Sender: how long to wait before asking the block source again after it had no data.
    pub source_retry_interval: Duration,
    /// Sender: rate controller tuning.
    pub rate_control: RateControlConfig,
}

impl TransportConfig {
    /// The initial window both ends actually use: never less than one block, so a transfer can
    /// always start.
    pub fn effective_initial_window(&self, params: &TransferParams) -> u64 {
        self.initial_window.max(params.block_size as u64)
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            initial_window: 16 << 20,
            max_ack_delay: Duration::from_millis(10),
            ack_every_packets: 128,
            keepalive_interval: Duration::from_millis(100),
            max_ack_datagram_size: 1200,
            initial_rtt: Duration::from_millis(300),
            retransmit_margin: Duration::from_millis(5),
            tail_copies: true,
            stall_timeout: Duration::from_secs(2),
            max_pacing_burst: Duration::from_millis(2),
            max_pacing_debt: Duration::from_millis(20),
            source_retry_interval: Duration::from_millis(1),
            rate_control: RateControlConfig::default(),
        }
    }
}
