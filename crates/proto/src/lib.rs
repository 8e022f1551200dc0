//! Sans-IO core of the Slipstream block transfer protocol: wire format, range bookkeeping,
//! sender and receiver state machines, rate control and packet protection.
//!
//! Nothing here touches sockets, files, clocks or async runtimes. The engine passes the current
//! [`std::time::Instant`] and received datagrams in, takes datagrams to send out, sleeps until
//! `next_timeout()`, and supplies or stores payload through [`BlockSource`] and [`BlockSink`].
//! See `README.md` in this crate for the wire format and the rate controller.
//!
//! A whole transfer in memory, with the "network" being a direct hand-over:
//!
//! ```
//! use slipstream_proto::*;
//! use std::time::{Duration, Instant};
//!
//! struct Zeros;
//! impl BlockSource for Zeros {
//!     fn read_block(&mut self, _offset: u64, buf: &mut [u8]) -> bool {
//!         buf.fill(0);
//!         true
//!     }
//! }
//! struct Counter(u64);
//! impl BlockSink for Counter {
//!     fn write_block(&mut self, _offset: u64, data: &[u8]) -> Result<(), SinkFull> {
//!         self.0 += data.len() as u64;
//!         Ok(())
//!     }
//!     fn available(&self) -> u64 {
//!         64 << 20
//!     }
//! }
//!
//! let start = Instant::now();
//! let block_size = TransferParams::block_size_for_datagram(1452, CipherLevel::Aes256Gcm)?;
//! let params = TransferParams::new(7, 1_000_000, block_size)?;
//! let secret = SessionSecret { level: CipherLevel::Aes256Gcm, key: &[42; 32] };
//! let config = TransportConfig::default();
//! let mut sender = Sender::new(params, config.clone(), RateLimits::transfer(100_000), secret, start)?;
//! let mut receiver = Receiver::new(params, config, secret, start)?;
//! let (mut source, mut sink) = (Zeros, Counter(0));
//!
//! let mut now = start;
//! let mut buffer = Vec::new();
//! while !sender.is_closed() {
//!     buffer.clear();
//!     let mut sizes = Vec::new();
//!     while let Some(transmit) = sender.poll_transmit(now, &mut source, &mut buffer) {
//!         sizes.push(transmit.size);
//!     }
//!     let mut offset = 0;
//!     for size in sizes {
//!         receiver.handle_datagram(now, &mut buffer[offset..offset + size], &mut sink);
//!         offset += size;
//!     }
//!     buffer.clear();
//!     while receiver.poll_transmit(now, &mut buffer).is_some() {
//!         let _ = sender.handle_datagram(now, &mut buffer);
//!         buffer.clear();
//!     }
//!     // A real driver sleeps until the earliest timeout or the next datagram.
//!     let next = [sender.next_timeout(), receiver.next_timeout()].into_iter().flatten().min();
//!     now = next.map_or(now, |next| next.max(now)).max(now + Duration::from_micros(100));
//! }
//! assert!(receiver.is_complete());
//! assert_eq!(sink.0, 1_000_000);
//! assert_eq!(sender.stats().bytes_acked, 1_000_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod crypto;
pub mod file_space;
pub mod range_set;
pub mod rate;
pub mod receiver;
pub mod sender;
pub mod transmit;
pub mod wire;

pub use config::{ParamsError, TransferParams, TransportConfig};
pub use crypto::{
    CipherLevel, CryptoError, DropCounters, DropReason, PacketNumbersExhausted, PacketProtection,
    ReplayWindow, Role, SessionSecret,
};
pub use file_space::{FileSegment, FileSpace, SizeOverflow};
pub use range_set::RangeSet;
pub use rate::{Pacer, RateControlConfig, RateController, RateLimits, RttEstimator};
pub use receiver::{BlockSink, ReceiveOutcome, Receiver, ReceiverStats, SinkFull};
pub use sender::{BlockSource, Sender, SenderStats};
pub use transmit::{Transmit, TransmitKind};
pub use wire::{CloseReason, Header, PacketType, WireError};
