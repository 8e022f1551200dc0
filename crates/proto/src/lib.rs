//! Sans-IO core of the Slipstream block transfer protocol: wire format, range bookkeeping,
//! sender and receiver state machines, rate control and packet protection.
//!
//! Nothing here touches sockets, files, clocks or async runtimes. The engine passes the current
//! [`std::time::Instant`] and received datagrams in, takes datagrams to send out, sleeps until
//! `next_timeout()`, and supplies or stores payload through [`BlockSource`] and [`BlockSink`].
//! See `README.md` in this crate for the wire format and the rate controller.

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
