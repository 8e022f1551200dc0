//! Per-datagram protection: cipher levels 0-3, per-direction keys from HKDF, packet-number nonces,
//! an anti-replay sliding window, and counters of every datagram dropped.
//!
//! Level 0 sends plaintext. Level 1 authenticates header and body with AES-256-GCM over an empty
//! plaintext (i.e. GMAC): readable but not forgeable. Levels 2 and 3 encrypt the body with
//! AES-128-GCM / AES-256-GCM, the header being additional authenticated data. The 16-byte tag is
//! appended. The nonce is the 48-bit packet number, so each key never sees a nonce twice.

use crate::wire::{Header, WireError, HEADER_LEN, MAX_PACKET_NUMBER};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

/// Bytes of the authentication tag appended to protected datagrams.
pub const TAG_LEN: usize = 16;

/// Packet protection level, numbered as the API's `minCipher` (api.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CipherLevel {
    /// No encryption, no integrity.
    None = 0,
    /// Authenticated, not encrypted (GMAC with AES-256-GCM).
    AuthenticatedOnly = 1,
    /// AES-128-GCM.
    Aes128Gcm = 2,
    /// AES-256-GCM.
    Aes256Gcm = 3,
}

impl CipherLevel {
    /// The level for an API `minCipher` number, if valid.
    pub fn from_level(level: u8) -> Option<CipherLevel> {
        match level {
            0 => Some(CipherLevel::None),
            1 => Some(CipherLevel::AuthenticatedOnly),
            2 => Some(CipherLevel::Aes128Gcm),
            3 => Some(CipherLevel::Aes256Gcm),
            _ => None,
        }
    }

    /// Bytes this level adds to each datagram.
    pub fn overhead(self) -> usize {
        match self {
            CipherLevel::None => 0,
            _ => TAG_LEN,
        }
    }

    fn algorithm(self) -> Option<&'static aead::Algorithm> {
        match self {
            CipherLevel::None => None,
            CipherLevel::AuthenticatedOnly | CipherLevel::Aes256Gcm => Some(&aead::AES_256_GCM),
            CipherLevel::Aes128Gcm => Some(&aead::AES_128_GCM),
        }
    }
}

/// Which end of the transfer this protection belongs to; decides which derived key seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends DATA, receives ACKs.
    Sender,
    /// Receives DATA, sends ACKs.
    Receiver,
}

/// The cipher level and the session secret both ends agreed on over the HTTPS API.
#[derive(Clone, Copy)]
pub struct SessionSecret<'a> {
    /// Protection level of every datagram of the session.
    pub level: CipherLevel,
    /// At least 16 bytes of shared secret (ignored at level 0).
    pub key: &'a [u8],
}

impl std::fmt::Debug for SessionSecret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("SessionSecret")
            .field("level", &self.level)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .finish()
    }
}

impl SessionSecret<'static> {
    /// Level 0: no secret needed.
    pub fn plaintext() -> Self {
        SessionSecret {
            level: CipherLevel::None,
            key: &[],
        }
    }
}

/// Errors building a [`PacketProtection`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Session keys must have at least 16 bytes of secret.
    #[error("session key too short: {0} bytes, need at least 16")]
    KeyTooShort(usize),
    /// aws-lc-rs refused to derive or build a key.
    #[error("key derivation failed")]
    KeyDerivation,
}

/// Every packet number of the session was used; nothing more can be sent under its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet numbers exhausted: start a new session")]
pub struct PacketNumbersExhausted;

/// Why a datagram was dropped instead of delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a datagram of this protocol, or a body that does not parse.
    Malformed,
    /// A valid header for another session.
    WrongSession,
    /// The packet number was already seen, or is too old to tell.
    Replayed,
    /// The tag did not verify: forged or corrupted.
    AuthenticationFailed,
    /// A well-formed packet of a type this end does not expect.
    UnexpectedType,
}

/// Counters of dropped datagrams, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// See [`DropReason::Malformed`].
    pub malformed: u64,
    /// See [`DropReason::WrongSession`].
    pub wrong_session: u64,
    /// See [`DropReason::Replayed`].
    pub replayed: u64,
    /// See [`DropReason::AuthenticationFailed`].
    pub authentication_failed: u64,
    /// See [`DropReason::UnexpectedType`].
    pub unexpected_type: u64,
}

impl DropCounters {
    /// Total of all reasons.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.wrong_session
            + self.replayed
            + self.authentication_failed
            + self.unexpected_type
    }

    /// Counts one drop.
    pub fn record(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::WrongSession => &mut self.wrong_session,
            DropReason::Replayed => &mut self.replayed,
            DropReason::AuthenticationFailed => &mut self.authentication_failed,
            DropReason::UnexpectedType => &mut self.unexpected_type,
        };
        *counter += 1;
    }
}

impl From<WireError> for DropReason {
    fn from(_: WireError) -> Self {
        DropReason::Malformed
    }
}

/// Seals outgoing and opens incoming datagrams of one session, for one [`Role`].
pub struct PacketProtection {
    level: CipherLevel,
    session_id: u32,
    seal_key: Option<LessSafeKey>,
    open_key: Option<LessSafeKey>,
    next_packet_number: u64,
    replay: ReplayWindow,
    drops: DropCounters,
}

impl std::fmt::Debug for PacketProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketProtection")
            .field("level", &self.level)
            .field("session_id", &self.session_id)
            .field("next_packet_number", &self.next_packet_number)
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

impl PacketProtection {
    /// Level 0: no keys, plaintext datagrams.
    pub fn plaintext(session_id: u32) -> Self {
        PacketProtection {
            level: CipherLevel::None,
            session_id,
            seal_key: None,
            open_key: None,
            next_packet_number: 0,
            replay: ReplayWindow::default(),
            drops: DropCounters::default(),
        }
    }

    /// Protection at `level`, with per-direction keys derived by HKDF-SHA256 from `session_key`
    /// (the secret both ends agreed over the HTTPS API) and the session id. Both ends call this
    /// with the same key and their own `role`. `session_key` is ignored at level 0.
    pub fn new(
        level: CipherLevel,
        session_key: &[u8],
        session_id: u32,
        role: Role,
    ) -> Result<Self, CryptoError> {
        let Some(algorithm) = level.algorithm() else {
            return Ok(Self::plaintext(session_id));
        };
        if session_key.len() < 16 {
            return Err(CryptoError::KeyTooShort(session_key.len()));
        }
        let sender_key = derive_key(algorithm, level, session_key, session_id, b"s2r")?;
        let receiver_key = derive_key(algorithm, level, session_key, session_id, b"r2s")?;
        let (seal_key, open_key) = match role {
            Role::Sender => (sender_key, receiver_key),
            Role::Receiver => (receiver_key, sender_key),
        };
        Ok(PacketProtection {
            level,
            session_id,
            seal_key: Some(seal_key),
            open_key: Some(open_key),
            next_packet_number: 0,
            replay: ReplayWindow::default(),
            drops: DropCounters::default(),
        })
    }

    /// The cipher level.
    pub fn level(&self) -> CipherLevel {
        self.level
    }

    /// The session id written into and expected in every header.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Drops counted so far.
    pub fn drops(&self) -> DropCounters {
        self.drops
    }

    /// Counts a drop decided by the caller (e.g. a body that failed to parse after opening).
    pub fn record_drop(&mut self, reason: DropReason) {
        self.drops.record(reason);
    }

    /// Appends a header with the next packet number to `out` and returns where this datagram
    /// starts in `out`. Append the body, then call [`PacketProtection::seal`] with that start.
    /// Fails once all 2^48 packet numbers are used (years at line rate): a nonce must never
    /// repeat under one key, so the session must be re-keyed.
    pub fn start_packet(
        &mut self,
        packet_type: crate::wire::PacketType,
        out: &mut Vec<u8>,
    ) -> Result<usize, PacketNumbersExhausted> {
        let start = out.len();
        if self.next_packet_number > MAX_PACKET_NUMBER {
            return Err(PacketNumbersExhausted);
        }
        let header = Header {
            packet_type,
            session_id: self.session_id,
            packet_number: self.next_packet_number,
        };
        self.next_packet_number += 1;
        header.encode(out);
        Ok(start)
    }

    /// Protects the datagram at `out[start..]` (header then body) in place, appending the tag
    /// if the level has one.
    pub fn seal(&self, out: &mut Vec<u8>, start: usize) {
        let Some(key) = &self.seal_key else {
            return;
        };
        let Some(datagram) = out.get_mut(start..).filter(|d| d.len() >= HEADER_LEN) else {
            return;
        };
        let nonce = nonce_for(read_packet_number(datagram));
        let tag = if self.level == CipherLevel::AuthenticatedOnly {
            key.seal_in_place_separate_tag(nonce, Aad::from(&datagram[..]), &mut [])
        } else {
            let (header, body) = datagram.split_at_mut(HEADER_LEN);
            key.seal_in_place_separate_tag(nonce, Aad::from(&header[..]), body)
        };
        match tag {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            // AES-GCM sealing only fails for inputs over 64 GiB, far beyond any datagram; if it
            // ever did, a zero tag makes the peer drop the packet instead of accepting it.
            Err(_) => out.extend_from_slice(&[0; TAG_LEN]),
        }
    }

    /// Checks and decrypts a received datagram in place. On success returns the header and the
    /// plaintext body; on failure counts the drop and returns its reason.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<(Header, &'a [u8]), DropReason> {
        let result = self.open_inner(datagram);
        if let Err(reason) = result {
            self.drops.record(reason);
        }
        result
    }

    fn open_inner<'a>(&mut self, datagram: &'a mut [u8]) -> Result<(Header, &'a [u8]), DropReason> {
        let header = Header::decode(datagram)?;
        if header.session_id != self.session_id {
            return Err(DropReason::WrongSession);
        }
        let Some(key) = &self.open_key else {
            return Ok((header, &datagram[HEADER_LEN..]));
        };
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        // Check (without recording) before the costly decryption; record only after the tag
        // verified, so forged packet numbers cannot move the window.
        self.replay.check(header.packet_number)?;
        let nonce = nonce_for(header.packet_number);
        let tag_start = datagram.len() - TAG_LEN;
        let (authenticated, tag) = datagram.split_at_mut(tag_start);
        let body_len = if self.level == CipherLevel::AuthenticatedOnly {
            key.open_in_place_separate_tag(nonce, Aad::from(&authenticated[..]), tag, &mut [])
                .map_err(|_| DropReason::AuthenticationFailed)?;
            tag_start - HEADER_LEN
        } else {
            let (header_bytes, body) = authenticated.split_at_mut(HEADER_LEN);
            key.open_in_place_separate_tag(nonce, Aad::from(&header_bytes[..]), tag, body)
                .map_err(|_| DropReason::AuthenticationFailed)?
                .len()
        };
        self.replay.record(header.packet_number);
        Ok((header, &datagram[HEADER_LEN..HEADER_LEN + body_len]))
    }
}

fn read_packet_number(datagram: &[u8]) -> u64 {
    datagram[8..HEADER_LEN]
        .iter()
        .fold(0u64, |acc, &byte| (acc << 8) | byte as u64)
}

fn nonce_for(packet_number: u64) -> Nonce {
    let mut nonce = [0u8; aead::NONCE_LEN];
    nonce[4..].copy_from_slice(&packet_number.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

fn derive_key(
    algorithm: &'static aead::Algorithm,
    level: CipherLevel,
    session_key: &[u8],
    session_id: u32,
    direction: &[u8],
) -> Result<LessSafeKey, CryptoError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"slipstream packet keys v1");
    let prk = salt.extract(session_key);
    let session = session_id.to_be_bytes();
    let level_byte = [level as u8];
    let info: [&[u8]; 3] = [direction, &session, &level_byte];
    let okm = prk
        .expand(&info, algorithm)
        .map_err(|_| CryptoError::KeyDerivation)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

const REPLAY_WINDOW_WORDS: usize = 128;
/// Packet numbers tracked behind the highest one seen (8192, like WireGuard's order of size).
pub const REPLAY_WINDOW_PACKETS: u64 = (REPLAY_WINDOW_WORDS * 64) as u64;

/// Sliding-window replay filter (RFC 4303 section 3.4.3 style): remembers which of the last
/// [`REPLAY_WINDOW_PACKETS`] packet numbers were seen; anything older is rejected.
#[derive(Clone)]
pub struct ReplayWindow {
    highest: Option<u64>,
    seen: [u64; REPLAY_WINDOW_WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            highest: None,
            seen: [0; REPLAY_WINDOW_WORDS],
        }
    }
}

impl ReplayWindow {
    /// Ok when `packet_number` is new and inside the window.
    pub fn check(&self, packet_number: u64) -> Result<(), DropReason> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if packet_number > highest {
            return Ok(());
        }
        if highest - packet_number >= REPLAY_WINDOW_PACKETS {
            return Err(DropReason::Replayed);
        }
        if self.bit(packet_number) {
            return Err(DropReason::Replayed);
        }
        Ok(())
    }

    /// Marks `packet_number` seen, sliding the window forward if it is the highest.
    pub fn record(&mut self, packet_number: u64) {
        match self.highest {
            Some(highest) if packet_number <= highest => {}
            Some(highest) => {
                if packet_number - highest >= REPLAY_WINDOW_PACKETS {
                    self.seen = [0; REPLAY_WINDOW_WORDS];
                } else {
                    for cleared in highest + 1..=packet_number {
                        self.clear_bit(cleared);
                    }
                }
                self.highest = Some(packet_number);
            }
            None => {
                self.highest = Some(packet_number);
            }
        }
        let (word, mask) = Self::position(packet_number);
        self.seen[word] |= mask;
    }

    fn position(packet_number: u64) -> (usize, u64) {
        let slot = packet_number % REPLAY_WINDOW_PACKETS;
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }

    fn bit(&self, packet_number: u64) -> bool {
        let (word, mask) = Self::position(packet_number);
        self.seen[word] & mask != 0
    }

    fn clear_bit(&mut self, packet_number: u64) {
        let (word, mask) = Self::position(packet_number);
        self.seen[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PacketType;

    const KEY: [u8; 32] = [7; 32];

    fn pair(level: CipherLevel) -> (PacketProtection, PacketProtection) {
        (
            PacketProtection::new(level, &KEY, 42, Role::Sender).unwrap(),
            PacketProtection::new(level, &KEY, 42, Role::Receiver).unwrap(),
        )
    }

    fn packet(protection: &mut PacketProtection, body: &[u8]) -> Vec<u8> {
        // Built after some unrelated bytes, as a GSO batch would be.
        let mut out = vec![0xee; 5];
        let start = protection.start_packet(PacketType::Data, &mut out).unwrap();
        assert_eq!(start, 5);
        out.extend_from_slice(body);
        protection.seal(&mut out, start);
        out.split_off(start)
    }

    #[test]
    fn every_level_roundtrips_and_rejects_tampering() {
        for level in [
            CipherLevel::None,
            CipherLevel::AuthenticatedOnly,
            CipherLevel::Aes128Gcm,
            CipherLevel::Aes256Gcm,
        ] {
            let (mut sender, mut receiver) = pair(level);
            let mut datagram = packet(&mut sender, b"hello blocks");
            assert_eq!(datagram.len(), HEADER_LEN + 12 + level.overhead());
            let encrypted = level >= CipherLevel::Aes128Gcm;
            assert_eq!(
                datagram[HEADER_LEN..HEADER_LEN + 12] != b"hello blocks"[..],
                encrypted
            );
            let (header, body) = receiver
                .open(&mut datagram.clone())
                .map(|(h, b)| (h, b.to_vec()))
                .unwrap();
            assert_eq!(header.packet_number, 0);
            assert_eq!(body, b"hello blocks");
            if level == CipherLevel::None {
                continue;
            }
            // Replay of the same datagram.
            assert_eq!(
                receiver.open(&mut datagram).err(),
                Some(DropReason::Replayed)
            );
            // Any flipped bit, header or body or tag, fails authentication.
            let fresh = packet(&mut sender, b"second");
            for bit in 0..fresh.len() * 8 {
                let mut corrupted = fresh.clone();
                corrupted[bit / 8] ^= 1 << (bit % 8);
                assert!(receiver.open(&mut corrupted).is_err(), "bit {bit}");
            }
            let mut intact = fresh.clone();
            assert!(receiver.open(&mut intact).is_ok());
            // A packet sealed by the receiver's own key is not accepted as the sender's.
            let mut reflected = packet(&mut receiver, b"reflected");
            let mut other_receiver = pair(level).1;
            assert_eq!(
                other_receiver.open(&mut reflected).err(),
                Some(DropReason::AuthenticationFailed)
            );
            assert!(receiver.drops().total() > 0);
        }
    }

    #[test]
    fn replay_window_accepts_reordering_rejects_duplicates_and_old() {
        let mut window = ReplayWindow::default();
        for packet_number in [5u64, 3, 9, 4, 20_000, 19_999] {
            assert!(window.check(packet_number).is_ok());
            window.record(packet_number);
        }
        assert!(window.check(9).is_err()); // too old now
        assert!(window.check(19_999).is_err());
        assert!(window.check(19_998).is_ok());
        assert!(window.check(20_000 - REPLAY_WINDOW_PACKETS).is_err());
        assert!(window.check(20_001).is_ok());
    }

    #[test]
    fn packet_numbers_never_wrap() {
        let (mut sender, _) = pair(CipherLevel::Aes256Gcm);
        sender.next_packet_number = MAX_PACKET_NUMBER;
        let mut out = Vec::new();
        assert!(sender.start_packet(PacketType::Data, &mut out).is_ok());
        assert_eq!(
            sender.start_packet(PacketType::Data, &mut out),
            Err(PacketNumbersExhausted)
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            PacketProtection::new(CipherLevel::Aes256Gcm, &[1; 8], 1, Role::Sender),
            Err(CryptoError::KeyTooShort(8))
        ));
    }
}
