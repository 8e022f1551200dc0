//! The data path of transfers, shared by every sandbox type: reading a file at any offset
//! ([`ObjectReader`]), receiving a file's bytes at any offset in any order and publishing it only
//! once it is complete and verified ([`FileSink`]), the overwrite modes, and the file digest
//! both ends compute ([`FileDigest`]).
//!
//! The digest is the same whatever the storage: the file is cut into verification chunks of
//! [`verification_chunk_size`] bytes (the S3 part size for that file size, so an S3 sink can
//! hash each part before it uploads it), each chunk is hashed with BLAKE3, and the file digest
//! is the BLAKE3 hash of the concatenated chunk hashes. An empty file has one empty chunk.

use crate::error::{StorageError, StorageResult};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// The smallest S3 part (and verification chunk) Slipstream uses.
pub const MIN_PART_SIZE: u64 = 8 * MIB;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: u64 = 10_000;

/// The uniform part size for a file of `size` bytes: `max(8 MiB, ceil(size / 10,000)` rounded up
/// to a whole MiB`)`. Also the verification chunk size.
pub fn part_size(size: u64) -> u64 {
    let per_part = size.div_ceil(MAX_PARTS);
    let rounded = per_part.div_ceil(MIB).saturating_mul(MIB);
    rounded.max(MIN_PART_SIZE)
}

/// The verification chunk size of a file of `size` bytes (equal to [`part_size`]).
pub fn verification_chunk_size(size: u64) -> u64 {
    part_size(size)
}

/// What to do when the target file exists (JetStream's constants, api.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum OverwriteMode {
    /// 0: write in place; an existing file is never replaced (conflict).
    InPlaceNever = 0,
    /// 1: write in place, replacing any existing file.
    InPlaceAlways = 1,
    /// 2: write in place only if the existing file has the same size or is empty.
    InPlaceSameSize = 2,
    /// 3: write a partfile; never replace an existing file (conflict).
    Never = 3,
    /// 4: write a partfile, then replace any existing file.
    Always = 4,
    /// 5: write a partfile; keep the existing file as `NAME.bak`.
    Backup = 5,
}

impl From<OverwriteMode> for u8 {
    fn from(mode: OverwriteMode) -> u8 {
        mode as u8
    }
}

impl TryFrom<u8> for OverwriteMode {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        Ok(match value {
            0 => OverwriteMode::InPlaceNever,
            1 => OverwriteMode::InPlaceAlways,
            2 => OverwriteMode::InPlaceSameSize,
            3 => OverwriteMode::Never,
            4 => OverwriteMode::Always,
            5 => OverwriteMode::Backup,
            other => {
                return Err(format!(
                "overwriteMode {other} is not one of 0..5 (0 in place never, 1 in place always, \
                     2 in place same size, 3 never, 4 always, 5 backup)"
            ))
            }
        })
    }
}

impl OverwriteMode {
    /// True for the modes that write a partfile and rename it on completion.
    pub fn uses_partfile(self) -> bool {
        matches!(
            self,
            OverwriteMode::Never | OverwriteMode::Always | OverwriteMode::Backup
        )
    }
}

/// A file digest (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl FileDigest {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        if text.len() != 64 {
            return Err(serde::de::Error::custom("a digest is 64 hex digits"));
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| serde::de::Error::custom("a digest is 64 hex digits"))?;
        }
        Ok(out)
    }
}

/// Computes a [`FileDigest`] from the file's bytes fed strictly in order.
#[derive(Debug, Clone)]
pub struct DigestBuilder {
    size: u64,
    chunk_size: u64,
    fed: u64,
    chunk: blake3::Hasher,
    chunk_fill: u64,
    outer: blake3::Hasher,
}

impl DigestBuilder {
    /// A builder for a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        DigestBuilder {
            size,
            chunk_size: verification_chunk_size(size),
            fed: 0,
            chunk: blake3::Hasher::new(),
            chunk_fill: 0,
            outer: blake3::Hasher::new(),
        }
    }

    /// How many bytes were fed so far (the offset the next call must start at).
    pub fn position(&self) -> u64 {
        self.fed
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.chunk_size - self.chunk_fill) as usize;
            let take = room.min(data.len());
            self.chunk.update(&data[..take]);
            self.chunk_fill += take as u64;
            self.fed += take as u64;
            data = &data[take..];
            if self.chunk_fill == self.chunk_size {
                self.finish_chunk();
            }
        }
    }

    /// The digest from the chunk hashes of a file, in order (for sinks that hash each chunk
    /// themselves, like an S3 sink hashing each part before it uploads it).
    pub fn from_chunk_hashes<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> FileDigest {
        let mut outer = blake3::Hasher::new();
        for hash in hashes {
            outer.update(hash);
        }
        FileDigest(*outer.finalize().as_bytes())
    }

    fn finish_chunk(&mut self) {
        let hash = std::mem::take(&mut self.chunk).finalize();
        self.outer.update(hash.as_bytes());
        self.chunk_fill = 0;
    }

    /// The digest; fails if not exactly `size` bytes were fed.
    pub fn finish(mut self) -> StorageResult<FileDigest> {
        if self.fed != self.size {
            return Err(StorageError::Backend(format!(
                "digest: {} of {} bytes were hashed",
                self.fed, self.size
            )));
        }
        if self.chunk_fill > 0 || self.size == 0 {
            self.finish_chunk();
        }
        Ok(FileDigest(*self.outer.finalize().as_bytes()))
    }
}

/// The BLAKE3 hash of one verification chunk.
pub fn chunk_hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Reads one file at any offset.
#[async_trait]
pub trait ObjectReader: Send + Sync {
    /// The file's size when it was opened.
    fn size(&self) -> u64;
    /// Up to `len` bytes at `offset` (fewer only at the end of the file).
    async fn read_at(&self, offset: u64, len: usize) -> StorageResult<Bytes>;
}

/// How a sink is created.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The file's final size.
    pub size: u64,
    /// What to do with an existing file (S3 ignores it and behaves as `InPlaceAlways`, but the
    /// object appears only when complete).
    pub overwrite: OverwriteMode,
    /// Set the executable bit on the published file (File sandboxes).
    pub executable: bool,
    /// Modification time to give the published file, µs since the epoch (File sandboxes).
    pub modification_time: Option<i64>,
    /// A unique name for this reception (e.g. the receiving transfer id and file index); used
    /// in partfile names so that two receptions never share one.
    pub reception_id: String,
    /// The state a previous sink of the same reception saved with [`FileSink::checkpoint`];
    /// the new sink continues from what survived.
    pub resume: Option<serde_json::Value>,
    /// With `resume`: when that state can no longer be resumed (its file or upload is gone or
    /// was replaced), fail with `NotFound` instead of starting afresh. Used to open a sink only
    /// to abort it, so that nothing is created (or truncated) just to be removed again.
    pub resume_only: bool,
}

/// A checkpoint of a sink: what to hand back in [`SinkOptions::resume`] and which byte ranges
/// are durable (survive a crash of this process) at this moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkCheckpoint {
    pub state: serde_json::Value,
    pub durable: Vec<std::ops::Range<u64>>,
}

/// Receives one file's bytes at any offset, in any order, each byte at most once per offset
/// (rewrites of the same bytes are allowed and harmless), and publishes the file under its
/// final name only in [`FileSink::commit`], after checking its digest.
///
/// Dropping a sink without `commit` or `abort` must not leave a published partial file; the
/// engine always calls one of them.
#[async_trait]
pub trait FileSink: Send {
    /// Byte ranges already durable when the sink was opened with `resume` (empty for a new
    /// sink): the sender need not send them again.
    fn resumed(&self) -> Vec<std::ops::Range<u64>>;

    /// How many more bytes the sink can take right now without waiting (flow control: an S3
    /// sink whose cache share is full answers 0 until parts have gone out). `u64::MAX` when it
    /// never needs to wait.
    fn window(&self) -> u64;

    /// True when this sink can be closed after a [`FileSink::checkpoint`] and reopened from its
    /// state later without losing anything written (every written byte is durable after a
    /// checkpoint), and closing it frees an open file. The engine closes such sinks when their
    /// file is complete, and the least recently used ones when too many are open. False (the
    /// default) keeps the sink open until `commit` or `abort`.
    fn reopenable(&self) -> bool {
        false
    }

    /// Writes `data` at `offset`. May wait for room (backpressure), never fails for lack of it.
    async fn write_at(&mut self, offset: u64, data: Bytes) -> StorageResult<()>;

    /// Makes what was written durable as far as this sink can, and describes how to resume.
    async fn checkpoint(&mut self) -> StorageResult<SinkCheckpoint>;

    /// Verifies the whole file against `expected` and publishes it under its final name.
    /// A mismatch publishes nothing (an in-place file is removed) and is an error.
    async fn commit(self: Box<Self>, expected: FileDigest) -> StorageResult<()>;

    /// Discards everything: no partfile, no multipart upload, no partial file under the final
    /// name unless an in-place mode already replaced it (then that partial file is removed).
    async fn abort(self: Box<Self>) -> StorageResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_arithmetic() {
        assert_eq!(part_size(0), 8 * MIB);
        assert_eq!(part_size(1_000_000), 8 * MIB);
        assert_eq!(part_size(1_000_000_000), 8 * MIB);
        // 1 TB: 10^12 / 10^4 = 10^8 bytes = 95.37 MiB -> 96 MiB.
        assert_eq!(part_size(1_000_000_000_000), 96 * MIB);
        // 5 TiB: 5 * 2^40 / 10^4 = 549755813.9 bytes -> 525 MiB (524.29 rounded up).
        assert_eq!(part_size(5 << 40), 525 * MIB);
        for size in [1_000_000_000_000u64, 5 << 40, (8 * MIB) * MAX_PARTS + 1] {
            assert!(part_size(size) * MAX_PARTS >= size, "{size}");
        }
    }

    #[test]
    fn digest_is_independent_of_feeding_and_matches_chunk_hashes() {
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = DigestBuilder::new(data.len() as u64);
        whole.update(&data);
        let mut pieces = DigestBuilder::new(data.len() as u64);
        for piece in data.chunks(777_777) {
            pieces.update(piece);
        }
        let hashes: Vec<[u8; 32]> = data
            .chunks(part_size(data.len() as u64) as usize)
            .map(chunk_hash)
            .collect();
        let expected = whole.finish().unwrap();
        assert_eq!(pieces.finish().unwrap(), expected);
        assert_eq!(DigestBuilder::from_chunk_hashes(&hashes), expected);
        let empty = DigestBuilder::new(0).finish().unwrap();
        assert_eq!(empty.0, *blake3::hash(&chunk_hash(&[])).as_bytes());
        assert!(DigestBuilder::new(5).finish().is_err());
    }

    #[test]
    fn overwrite_modes_round_trip() {
        for n in 0..6u8 {
            assert_eq!(u8::from(OverwriteMode::try_from(n).unwrap()), n);
        }
        assert!(OverwriteMode::try_from(6).is_err());
        assert!(OverwriteMode::Backup.uses_partfile());
        assert!(!OverwriteMode::InPlaceAlways.uses_partfile());
    }
}
