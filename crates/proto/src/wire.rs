//! Datagram wire format: the versioned header and the DATA, ACK and CLOSE bodies, with encoders
//! and decoders that reject garbage with an error instead of panicking.
//!
//! Every datagram is `header (14 B) | body | tag (16 B, only when the cipher level is not 0)`.
//! All integers are big-endian; ACK ranges use LEB128 variable-length integers.

use std::ops::Range;

/// First two bytes of every datagram ("SL").
pub const MAGIC: [u8; 2] = *b"SL";
/// Wire format version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes of the plaintext header.
pub const HEADER_LEN: usize = 14;
/// Largest packet number: packet numbers are 48 bits on the wire.
pub const MAX_PACKET_NUMBER: u64 = (1 << 48) - 1;
/// Largest block index: block indices are 48 bits on the wire.
pub const MAX_BLOCK_INDEX: u64 = (1 << 48) - 1;
/// Bytes of the DATA fields that precede the payload (block index u48, timestamp u32).
pub const DATA_FIELDS_LEN: usize = 10;
/// Bytes of the fixed ACK fields (flags, echo, delay, max_data, cumulative, range count).
pub const ACK_FIXED_LEN: usize = 1 + 4 + 4 + 8 + 8 + 2;

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header or than the fields of its packet type.
    #[error("datagram too short")]
    TooShort,
    /// Does not start with [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A packet type byte this build does not know.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// The body is inconsistent (bad varint, ranges out of order, trailing bytes...).
    #[error("malformed body: {0}")]
    Malformed(&'static str),
}

/// The kind of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// Sender -> receiver: one block of payload.
    Data = 1,
    /// Receiver -> sender: received ranges, flow-control limit and RTT echo. Also the keepalive.
    Ack = 2,
    /// Sender -> receiver: the transfer is over (complete or cancelled).
    Close = 3,
}

impl PacketType {
    fn from_byte(byte: u8) -> Result<Self, WireError> {
        match byte {
            1 => Ok(PacketType::Data),
            2 => Ok(PacketType::Ack),
            3 => Ok(PacketType::Close),
            other => Err(WireError::UnknownPacketType(other)),
        }
    }
}

/// The plaintext datagram header: magic, version, type, session id, packet number.
///
/// Layout: `magic[2] | version u8 | type u8 | session_id u32 | packet_number u48`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the body holds.
    pub packet_type: PacketType,
    /// Identifies the transfer (agreed over the HTTPS API), so one UDP port can carry many.
    pub session_id: u32,
    /// Per-direction counter; also the AEAD nonce, so it is never reused under one key.
    pub packet_number: u64,
}

impl Header {
    /// Appends the 14 header bytes to `out`. The packet number is truncated to 48 bits.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.packet_type as u8);
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.packet_number.to_be_bytes()[2..]);
    }

    /// Parses the header at the start of `datagram`.
    pub fn decode(datagram: &[u8]) -> Result<Header, WireError> {
        let bytes: &[u8; HEADER_LEN] = datagram
            .get(..HEADER_LEN)
            .and_then(|slice| slice.try_into().ok())
            .ok_or(WireError::TooShort)?;
        if bytes[0..2] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(WireError::UnsupportedVersion(bytes[2]));
        }
        let packet_type = PacketType::from_byte(bytes[3])?;
        let session_id = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let packet_number = read_u48(&bytes[8..14]);
        Ok(Header {
            packet_type,
            session_id,
            packet_number,
        })
    }
}

fn read_u48(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |acc, &byte| (acc << 8) | byte as u64)
}

fn write_u48(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes()[2..]);
}

/// The fields of a DATA body before its payload.
///
/// Layout: `block u48 | timestamp_us u32 | payload`. The payload length is implied by the
/// datagram length; the receiver checks it equals the block's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFields {
    /// Block index: byte offset / block size.
    pub block: u64,
    /// Sender clock in microseconds (wrapping), echoed back in ACKs for RTT measurement.
    pub timestamp_us: u32,
}

impl DataFields {
    /// Appends the DATA fields (not the payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_u48(out, self.block);
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
    }

    /// Splits a DATA body into its fields and payload.
    pub fn decode(body: &[u8]) -> Result<(DataFields, &[u8]), WireError> {
        if body.len() < DATA_FIELDS_LEN {
            return Err(WireError::TooShort);
        }
        let (fields, payload) = body.split_at(DATA_FIELDS_LEN);
        let block = read_u48(&fields[0..6]);
        let timestamp_us = u32::from_be_bytes([fields[6], fields[7], fields[8], fields[9]]);
        Ok((
            DataFields {
                block,
                timestamp_us,
            },
            payload,
        ))
    }
}

/// An echoed DATA timestamp inside an ACK, for RTT measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampEcho {
    /// `timestamp_us` of the most recently arrived DATA packet.
    pub timestamp_us: u32,
    /// Microseconds the receiver held that packet before sending this ACK.
    pub delay_us: u32,
}

/// A decoded ACK body.
///
/// Layout: `flags u8 | echo_ts u32 | echo_delay u32 | max_data u64 | cumulative u64 |
/// range_count u16 | range_count x (gap varint, len varint)`. Flag bit 0: the receiver holds
/// every block; bit 1: the echo fields are valid. Ranges are block ranges above `cumulative`,
/// ascending; each gap is counted from the end of the previous range (the first from
/// `cumulative`) and is at least 1, so ranges never touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckFrame {
    /// The receiver holds every block of the transfer.
    pub complete: bool,
    /// RTT echo, absent before the first DATA arrived.
    pub echo: Option<TimestampEcho>,
    /// Flow control: total count of distinct payload bytes the receiver accepts, ever. The sender
    /// may only send a new block whose end offset is at most this.
    pub max_data: u64,
    /// Every block below this index has been received.
    pub cumulative: u64,
    /// Further received block ranges, all above `cumulative`.
    pub ranges: Vec<Range<u64>>,
}

const ACK_FLAG_COMPLETE: u8 = 1;
const ACK_FLAG_ECHO: u8 = 2;

/// Builds an ACK body within a byte budget.
///
/// Call [`AckEncoder::try_push`] with ranges in any order; then [`AckEncoder::finish`] sorts and
/// encodes them. The budget is checked with an upper bound, so the result always fits.
pub struct AckEncoder {
    budget: usize,
    estimate: usize,
    ranges: Vec<Range<u64>>,
}

impl AckEncoder {
    /// An encoder whose body will take at most `max_body_len` bytes.
    pub fn new(max_body_len: usize) -> Self {
        AckEncoder {
            budget: max_body_len.saturating_sub(ACK_FIXED_LEN),
            estimate: 0,
            ranges: Vec::new(),
        }
    }

    /// Adds a range if it still fits; returns false (and adds nothing) when the budget is used up.
    ///
    /// Ranges must be disjoint, non-touching and above the `cumulative` passed to `finish`.
    pub fn try_push(&mut self, range: Range<u64>) -> bool {
        if range.start >= range.end {
            // Nothing to report; not a reason to stop filling.
            return true;
        }
        // gap <= start, so varint(start) bounds the encoded gap whatever the neighbours are.
        let cost = varint_len(range.start) + varint_len(range.end - range.start);
        if self.estimate + cost > self.budget || self.ranges.len() >= u16::MAX as usize {
            return false;
        }
        self.estimate += cost;
        self.ranges.push(range);
        true
    }

    /// Number of ranges accepted so far.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when no range was accepted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Appends the encoded ACK body to `out`.
    pub fn finish(
        mut self,
        out: &mut Vec<u8>,
        complete: bool,
        echo: Option<TimestampEcho>,
        max_data: u64,
        cumulative: u64,
    ) {
        self.ranges.sort_by_key(|range| range.start);
        // Drop anything that breaks the wire invariants (below cumulative, empty, touching), so a
        // caller mistake costs information, never a malformed ACK.
        let mut previous_end = cumulative;
        self.ranges.retain(|range| {
            let valid = range.start > previous_end && range.end > range.start;
            if valid {
                previous_end = range.end;
            }
            valid
        });
        let mut flags = 0;
        if complete {
            flags |= ACK_FLAG_COMPLETE;
        }
        if echo.is_some() {
            flags |= ACK_FLAG_ECHO;
        }
        out.push(flags);
        let echo = echo.unwrap_or(TimestampEcho {
            timestamp_us: 0,
            delay_us: 0,
        });
        out.extend_from_slice(&echo.timestamp_us.to_be_bytes());
        out.extend_from_slice(&echo.delay_us.to_be_bytes());
        out.extend_from_slice(&max_data.to_be_bytes());
        out.extend_from_slice(&cumulative.to_be_bytes());
        out.extend_from_slice(&(self.ranges.len() as u16).to_be_bytes());
        let mut previous_end = cumulative;
        for range in &self.ranges {
            write_varint(out, range.start - previous_end);
            write_varint(out, range.end - range.start);
            previous_end = range.end;
        }
    }
}

impl AckFrame {
    /// Encodes with every range (no budget); for tests and tools.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut encoder = AckEncoder::new(usize::MAX);
        for range in &self.ranges {
            encoder.try_push(range.clone());
        }
        encoder.finish(
            out,
            self.complete,
            self.echo,
            self.max_data,
            self.cumulative,
        );
    }

    /// Parses an ACK body, checking that ranges are ascending, non-empty and non-touching.
    pub fn decode(body: &[u8]) -> Result<AckFrame, WireError> {
        let mut reader = Reader { bytes: body };
        let flags = reader.take::<1>()?[0];
        if flags & !(ACK_FLAG_COMPLETE | ACK_FLAG_ECHO) != 0 {
            return Err(WireError::Malformed("unknown ACK flags"));
        }
        let timestamp_us = u32::from_be_bytes(reader.take::<4>()?);
        let delay_us = u32::from_be_bytes(reader.take::<4>()?);
        let max_data = u64::from_be_bytes(reader.take::<8>()?);
        let cumulative = u64::from_be_bytes(reader.take::<8>()?);
        let count = u16::from_be_bytes(reader.take::<2>()?) as usize;
        // Each range takes at least two bytes, which bounds the allocation by the datagram.
        if count > reader.bytes.len() / 2 {
            return Err(WireError::Malformed("range count exceeds body"));
        }
        let mut ranges = Vec::with_capacity(count);
        let mut previous_end = cumulative;
        for _ in 0..count {
            let gap = reader.varint()?;
            let len = reader.varint()?;
            if gap == 0 || len == 0 {
                return Err(WireError::Malformed("empty or touching ACK range"));
            }
            let start = previous_end
                .checked_add(gap)
                .ok_or(WireError::Malformed("ACK range overflows"))?;
            let end = start
                .checked_add(len)
                .ok_or(WireError::Malformed("ACK range overflows"))?;
            ranges.push(start..end);
            previous_end = end;
        }
        if !reader.bytes.is_empty() {
            return Err(WireError::Malformed("trailing bytes after ACK"));
        }
        let echo = (flags & ACK_FLAG_ECHO != 0).then_some(TimestampEcho {
            timestamp_us,
            delay_us,
        });
        Ok(AckFrame {
            complete: flags & ACK_FLAG_COMPLETE != 0,
            echo,
            max_data,
            cumulative,
            ranges,
        })
    }
}

/// Why the sender ended a transfer, carried by a CLOSE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Every block was acknowledged.
    Complete = 0,
    /// The transfer was cancelled or failed on the sender.
    Cancelled = 1,
}

impl CloseReason {
    /// Appends the one-byte CLOSE body.
    pub fn encode(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }

    /// Parses a CLOSE body.
    pub fn decode(body: &[u8]) -> Result<CloseReason, WireError> {
        match body {
            [0] => Ok(CloseReason::Complete),
            [1] => Ok(CloseReason::Cancelled),
            [] => Err(WireError::TooShort),
            _ => Err(WireError::Malformed("bad CLOSE body")),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(WireError::TooShort)?;
        self.bytes = rest;
        Ok(*head)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for index in 0..10 {
            let [byte] = self.take::<1>()?;
            let bits = (byte & 0x7f) as u64;
            if index == 9 && bits > 1 {
                return Err(WireError::Malformed("varint overflows u64"));
            }
            value |= bits << (7 * index);
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(WireError::Malformed("overlong varint"));
                }
                return Ok(value);
            }
        }
        Err(WireError::Malformed("varint longer than 10 bytes"))
    }
}

/// Encoded length of a LEB128 varint.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Appends `value` as a LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn header_roundtrip() {
        let header = Header {
            packet_type: PacketType::Ack,
            session_id: 0xdead_beef,
            packet_number: MAX_PACKET_NUMBER,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(Header::decode(&out), Ok(header));
        out[2] = 9;
        assert_eq!(Header::decode(&out), Err(WireError::UnsupportedVersion(9)));
        assert_eq!(Header::decode(&out[..5]), Err(WireError::TooShort));
    }

    #[test]
    fn data_roundtrip() {
        let fields = DataFields {
            block: MAX_BLOCK_INDEX,
            timestamp_us: 123_456,
        };
        let mut out = Vec::new();
        fields.encode(&mut out);
        out.extend_from_slice(b"payload");
        assert_eq!(DataFields::decode(&out), Ok((fields, &b"payload"[..])));
    }

    #[test]
    fn ack_roundtrip_and_budget() {
        let frame = AckFrame {
            complete: false,
            echo: Some(TimestampEcho {
                timestamp_us: 7,
                delay_us: 900,
            }),
            max_data: 1 << 40,
            cumulative: 1000,
            ranges: vec![1001..1005, 2000..300_000, u64::MAX - 10..u64::MAX],
        };
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(AckFrame::decode(&out), Ok(frame));

        let mut encoder = AckEncoder::new(100);
        let mut accepted = 0;
        for index in 0..1000u64 {
            if encoder.try_push(index * 10 + 1..index * 10 + 5) {
                accepted += 1;
            }
        }
        let mut out = Vec::new();
        encoder.finish(&mut out, true, None, 0, 0);
        assert!(out.len() <= 100, "{} bytes", out.len());
        let decoded = AckFrame::decode(&out).unwrap();
        assert_eq!(decoded.ranges.len(), accepted);
        assert!(decoded.complete);
        assert_eq!(decoded.echo, None);
    }

    #[test]
    fn varint_roundtrip_and_rejects() {
        for value in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            let mut reader = Reader { bytes: &out };
            assert_eq!(reader.varint(), Ok(value));
        }
        let mut reader = Reader { bytes: &[0xff; 11] };
        assert!(reader.varint().is_err());
        let mut reader = Reader { bytes: &[0x80, 0] };
        assert!(reader.varint().is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = StdRng::seed_from_u64(99);
        for _ in 0..50_000 {
            let len = rng.gen_range(0..80);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.5) && bytes.len() >= 4 {
                bytes[0..2].copy_from_slice(&MAGIC);
                bytes[2] = VERSION;
                bytes[3] = rng.gen_range(1..=3);
            }
            let _ = Header::decode(&bytes);
            let _ = DataFields::decode(&bytes);
            let _ = AckFrame::decode(&bytes);
            let _ = CloseReason::decode(&bytes);
        }
    }
}
