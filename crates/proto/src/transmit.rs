//! `Transmit`: what `poll_transmit` of the sender or receiver hands back with a datagram.

/// What a datagram produced by `poll_transmit` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitKind {
    /// A block sent for the first time.
    NewData,
    /// A block sent again.
    Retransmission,
    /// An acknowledgement (receiver only).
    Ack,
    /// The closing packet (sender only).
    Close,
}

/// Describes the datagram just appended to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Kind of datagram.
    pub kind: TransmitKind,
    /// Datagram length in bytes: the last `size` bytes of the buffer.
    pub size: usize,
}
