//! The sending side's transfer rows: loading, the counters kept across runs, status changes.

use crate::datapath::Progress;
use crate::error::EngineError;
use crate::Engine;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Counters over the runs of a transfer (each negotiation starts a new run whose datapath
/// counters start at zero): summed, except the distinct block counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub bytes_sent: u64,
    /// Distinct blocks sent and acknowledged: the most any run reached (each run counts the
    /// blocks the receiver already had as sent and acknowledged, so runs do not add up).
    pub blocks_sent: u64,
    pub blocks_acked: u64,
    pub blocks_retransmitted: u64,
    pub packets_sent: u64,
    pub packets_recv: u64,
    /// Microseconds spent sending (for aveSendRate).
    pub active_us: i64,
    /// Bytes acknowledged at the end of the last run (resumed ones included).
    #[serde(default)]
    pub last_acked: u64,
}

impl Counters {
    /// These counters plus one run's progress.
    pub fn plus(&self, p: &Progress, active_us: i64) -> Counters {
        Counters {
            bytes_sent: self.bytes_sent + p.bytes_sent,
            blocks_sent: self.blocks_sent.max(p.blocks_sent),
            blocks_acked: self.blocks_acked.max(p.blocks_acked),
            blocks_retransmitted: self.blocks_retransmitted + p.blocks_retransmitted,
            packets_sent: self.packets_sent + p.packets_sent,
            packets_recv: self.packets_recv + p.packets_received,
            active_us: self.active_us + active_us,
            last_acked: p.bytes_acked,
        }
    }
}

/// One transfer as stored.
#[derive(Debug, Clone)]
pub struct TransferRow {
    pub id: i64,
    /// The id the receiving server knows this transfer by (stable across restarts).
    pub uuid: String,
    pub owner: String,
    pub destination_id: i64,
    pub manifest_id: i64,
    pub destination_path: String,
    pub overwrite_mode: u8,
    pub priority: i64,
    pub checkpoint_seconds: Option<u64>,
    pub min_cipher: u8,
    pub send_rate: Option<u64>,
    pub status: String,
    pub error_message: Option<String>,
    pub total_bytes: u64,
    pub total_files: u64,
    pub files_complete: u64,
    pub block_size: u32,
    pub bytes_resumed: u64,
    pub counters: Counters,
    /// True once an `openTransfer` went out: the receiver may have a reception for it (a
    /// cancel must tell the receiver).
    pub negotiated: bool,
    pub request_us: i64,
    pub queue_us: Option<i64>,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
}

const COLUMNS: &str = "id, uuid, owner, destination_id, manifest_id, destination_path,
    overwrite_mode, priority, checkpoint_seconds, min_cipher, send_rate, status, error_message,
    total_bytes, total_files, files_complete, block_size, bytes_resumed, counters, negotiated,
    request_us, queue_us, start_us, end_us";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TransferRow> {
    let counters: Option<String> = r.get(18)?;
    Ok(TransferRow {
        id: r.get(0)?,
        uuid: r.get(1)?,
        owner: r.get(2)?,
        destination_id: r.get(3)?,
        manifest_id: r.get(4)?,
        destination_path: r.get(5)?,
        overwrite_mode: r.get(6)?,
        priority: r.get(7)?,
        checkpoint_seconds: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        min_cipher: r.get(9)?,
        send_rate: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        status: r.get(11)?,
        error_message: r.get(12)?,
        total_bytes: r.get::<_, i64>(13)? as u64,
        total_files: r.get::<_, i64>(14)? as u64,
        files_complete: r.get::<_, i64>(15)? as u64,
        block_size: r.get(16)?,
        bytes_resumed: r.get::<_, i64>(17)? as u64,
        counters: counters
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
        negotiated: r.get(19)?,
        request_us: r.get(20)?,
        queue_us: r.get(21)?,
        start_us: r.get(22)?,
        end_us: r.get(23)?,
    })
}

/// The transfer `id`, whoever owns it.
pub fn load(engine: &Engine, id: i64) -> Result<Option<TransferRow>, EngineError> {
    Ok(engine
        .db
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM transfers WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// The transfers `owner` may see (all for `None`), optionally with one status.
pub fn list(
    engine: &Engine,
    owner: Option<&str>,
    status: Option<&str>,
) -> Result<Vec<TransferRow>, EngineError> {
    let conn = engine.db.conn();
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM transfers WHERE (?1 IS NULL OR owner = ?1)
         AND (?2 IS NULL OR status = ?2) ORDER BY id"
    ))?;
    let rows = statement.query_map(params![owner, status], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets the status (and, for final ones, the end time and message).
pub fn set_status(
    engine: &Engine,
    id: i64,
    status: &str,
    message: Option<&str>,
) -> Result<(), EngineError> {
    let final_status = matches!(status, "complete" | "error" | "cancelled");
    engine.db.conn().execute(
        "UPDATE transfers SET status = ?2,
             error_message = CASE WHEN ?3 IS NULL THEN error_message ELSE ?3 END,
             end_us = CASE WHEN ?4 THEN ?5 ELSE end_us END
         WHERE id = ?1",
        params![id, status, message, final_status, crate::params::now_us()],
    )?;
    Ok(())
}

/// Saves the counters of finished runs.
pub fn save_counters(engine: &Engine, id: i64, counters: &Counters) -> Result<(), EngineError> {
    let text = serde_json::to_string(counters).unwrap_or_default();
    engine.db.conn().execute(
        "UPDATE transfers SET counters = ?2 WHERE id = ?1",
        params![id, text],
    )?;
    Ok(())
}

/// Records that an `openTransfer` is about to go out (see [`TransferRow::negotiated`]).
pub fn set_opening(engine: &Engine, id: i64) -> Result<(), EngineError> {
    engine.db.conn().execute(
        "UPDATE transfers SET negotiated = 1 WHERE id = ?1",
        params![id],
    )?;
    Ok(())
}

/// Records a successful negotiation: block size and the bytes the receiver already had.
pub fn set_negotiated(
    engine: &Engine,
    id: i64,
    block_size: u32,
    bytes_resumed: u64,
) -> Result<(), EngineError> {
    engine.db.conn().execute(
        "UPDATE transfers SET negotiated = 1, block_size = ?2, bytes_resumed = ?3 WHERE id = ?1",
        params![id, block_size, bytes_resumed as i64],
    )?;
    Ok(())
}

/// Records how many files the receiver committed.
pub fn set_files_complete(engine: &Engine, id: i64, files: u64) -> Result<(), EngineError> {
    engine.db.conn().execute(
        "UPDATE transfers SET files_complete = ?2 WHERE id = ?1",
        params![id, files as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_add_up_but_distinct_blocks_do_not() {
        let first = Progress {
            bytes_sent: 1000,
            bytes_acked: 900,
            blocks_sent: 10,
            blocks_acked: 9,
            blocks_retransmitted: 1,
            packets_sent: 11,
            packets_received: 5,
            ..Progress::default()
        };
        // The second run resumes the 9 acknowledged blocks and sends the last 11 of 20.
        let second = Progress {
            bytes_sent: 1100,
            bytes_acked: 2000,
            blocks_sent: 20,
            blocks_acked: 20,
            blocks_retransmitted: 0,
            packets_sent: 11,
            packets_received: 6,
            ..Progress::default()
        };
        let total = Counters::default().plus(&first, 10).plus(&second, 20);
        assert_eq!(
            total,
            Counters {
                bytes_sent: 2100,
                blocks_sent: 20,
                blocks_acked: 20,
                blocks_retransmitted: 1,
                packets_sent: 22,
                packets_recv: 11,
                active_us: 30,
                last_acked: 2000,
            }
        );
    }
}
