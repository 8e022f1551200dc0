//! What the two servers say to each other over the receiver's HTTPS API (our extension
//! methods `recv.openTransfer`, `recv.finishTransfer`, `recv.cancelTransfer`; see
//! docs/engine.md). Both sides use these types, so the wire shape is defined once.

use serde::{Deserialize, Serialize};

/// One entry of the transfer's file list, in transfer order. Empty folders carry no bytes;
/// the data path numbers only the regular files (in the same order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireFile {
    pub dest_path: String,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub modification_time: Option<i64>,
    #[serde(default)]
    pub is_empty_dir: bool,
}

/// `recv.openTransfer` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenRequest {
    /// The sender's id for this transfer (32 hex digits), stable across restarts: opening it
    /// again continues the same reception.
    pub transfer_id: String,
    /// The sender's `transferId`, shown by `recv.getTransfers` as `sourceTransferId`.
    pub source_transfer_id: i64,
    /// The sender's UDP port (`--recv-port`).
    pub source_port: u16,
    pub destination_path: String,
    pub overwrite_mode: u8,
    pub min_cipher: u8,
    pub checkpoint_frequency_seconds: Option<u64>,
    pub files: Vec<WireFile>,
}

/// `recv.openTransfer` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenAnswer {
    /// The receiver's id of the reception.
    pub transfer_id: i64,
    /// `receiving`, or `complete` when an earlier run already finished it.
    pub status: String,
    pub session_id: u32,
    /// 32 random bytes, hex.
    pub key: String,
    pub cipher: u8,
    pub block_size: u32,
    pub recv_port: u16,
    /// Global byte ranges (regular files laid end to end) the receiver already has durably.
    pub resume: Vec<[u64; 2]>,
}

/// One file's outcome in `recv.finishTransfer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileResult {
    pub dest_path: String,
    pub ok: bool,
    pub error_message: Option<String>,
}

/// `recv.finishTransfer` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishAnswer {
    /// `complete` or `error`.
    pub status: String,
    pub error_message: Option<String>,
    pub files: Vec<FileResult>,
}

/// 32 bytes from hex.
pub fn key_from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}
