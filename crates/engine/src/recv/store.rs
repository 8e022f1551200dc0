//! The receiving side's rows: receptions and their per-file sink checkpoints.

use crate::error::EngineError;
use crate::negotiation::WireFile;
use crate::Engine;
use rusqlite::{params, OptionalExtension};
use slipstream_storage::data::SinkCheckpoint;

/// One reception as stored.
#[derive(Debug, Clone)]
pub struct ReceptionRow {
    pub id: i64,
    pub source_transfer_id: Option<i64>,
    pub owner: String,
    pub source_ip: String,
    pub source_port: Option<u16>,
    pub destination_path: String,
    pub overwrite_mode: u8,
    pub cipher: u8,
    pub checkpoint_seconds: Option<u64>,
    pub status: String,
    pub error_message: Option<String>,
    pub total_size: u64,
    pub bytes_recv: u64,
    pub files: Vec<WireFile>,
    pub created_us: i64,
    pub end_us: Option<i64>,
    /// When the sender last opened or continued it (`openTransfer`) or sent data.
    pub active_us: i64,
}

const COLUMNS: &str = "id, source_uuid, source_transfer_id, owner, source_ip, source_port,
    destination_path, overwrite_mode, cipher, checkpoint_seconds, status, error_message,
    total_size, bytes_recv, files, created_us, end_us, COALESCE(active_us, created_us)";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReceptionRow> {
    let files: String = r.get(14)?;
    Ok(ReceptionRow {
        id: r.get(0)?,
        source_transfer_id: r.get(2)?,
        owner: r.get(3)?,
        source_ip: r.get(4)?,
        source_port: r.get(5)?,
        destination_path: r.get(6)?,
        overwrite_mode: r.get(7)?,
        cipher: r.get(8)?,
        checkpoint_seconds: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        status: r.get(10)?,
        error_message: r.get(11)?,
        total_size: r.get::<_, i64>(12)? as u64,
        bytes_recv: r.get::<_, i64>(13)? as u64,
        files: serde_json::from_str(&files).unwrap_or_default(),
        created_us: r.get(15)?,
        end_us: r.get(16)?,
        active_us: r.get(17)?,
    })
}

pub fn by_uuid(engine: &Engine, uuid: &str) -> Result<Option<ReceptionRow>, EngineError> {
    Ok(engine
        .db
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM receptions WHERE source_uuid = ?1"),
            [uuid],
            from_row,
        )
        .optional()?)
}

pub fn by_id(engine: &Engine, id: i64) -> Result<Option<ReceptionRow>, EngineError> {
    Ok(engine
        .db
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM receptions WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn list(engine: &Engine, owner: Option<&str>) -> Result<Vec<ReceptionRow>, EngineError> {
    let conn = engine.db.conn();
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM receptions WHERE (?1 IS NULL OR owner = ?1) ORDER BY id"
    ))?;
    let rows = statement.query_map(params![owner], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a new reception records.
pub struct NewReception<'a> {
    pub uuid: &'a str,
    pub source_transfer_id: i64,
    pub owner: &'a str,
    pub source_ip: String,
    pub source_port: u16,
    pub destination_path: &'a str,
    pub overwrite_mode: u8,
    pub cipher: u8,
    pub checkpoint_seconds: Option<u64>,
    pub files: &'a [WireFile],
    /// `receiving`, or `error` for one refused before any byte.
    pub status: &'a str,
    pub error_message: Option<&'a str>,
}

pub fn insert(engine: &Engine, new: &NewReception<'_>) -> Result<i64, EngineError> {
    let total: u64 = new.files.iter().map(|f| f.size).sum();
    let files = serde_json::to_string(new.files).unwrap_or_else(|_| "[]".into());
    let now = crate::params::now_us();
    let conn = engine.db.conn();
    conn.execute(
        "INSERT INTO receptions (source_uuid, source_transfer_id, owner, source_ip, source_port,
             destination_path, overwrite_mode, cipher, checkpoint_seconds, status,
             error_message, total_size, files, created_us, end_us, active_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                 CASE WHEN ?10 = 'receiving' THEN NULL ELSE ?14 END, ?14)",
        params![
            new.uuid,
            new.source_transfer_id,
            new.owner,
            new.source_ip,
            new.source_port,
            new.destination_path,
            new.overwrite_mode,
            new.cipher,
            new.checkpoint_seconds.map(|v| v as i64),
            new.status,
            new.error_message,
            total as i64,
            files,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Ends a reception (`complete` or `error`) and forgets its checkpoints.
pub fn end(
    engine: &Engine,
    id: i64,
    status: &str,
    message: Option<&str>,
) -> Result<(), EngineError> {
    let mut conn = engine.db.conn();
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE receptions SET status = ?2, error_message = ?3, end_us = ?4,
             bytes_recv = CASE WHEN ?2 = 'complete' THEN total_size ELSE bytes_recv END
         WHERE id = ?1",
        params![id, status, message, crate::params::now_us()],
    )?;
    tx.execute(
        "DELETE FROM reception_checkpoints WHERE reception_id = ?1",
        [id],
    )?;
    tx.commit()?;
    Ok(())
}

/// Updates the live counters of a reception; `active`: the sender was heard since the last
/// update (the reception's idle time starts again).
pub fn set_progress(
    engine: &Engine,
    id: i64,
    bytes_recv: u64,
    source_port: Option<u16>,
    active: bool,
) -> Result<(), EngineError> {
    engine.db.conn().execute(
        "UPDATE receptions SET bytes_recv = ?2, source_port = COALESCE(?3, source_port),
             active_us = CASE WHEN ?4 THEN ?5 ELSE active_us END
         WHERE id = ?1 AND status = 'receiving'",
        params![
            id,
            bytes_recv as i64,
            source_port,
            active,
            crate::params::now_us()
        ],
    )?;
    Ok(())
}

/// Records the sender's address of a new run (the sender is active now).
pub fn set_source(engine: &Engine, id: i64, ip: &str, port: u16) -> Result<(), EngineError> {
    engine.db.conn().execute(
        "UPDATE receptions SET source_ip = ?2, source_port = ?3, active_us = ?4 WHERE id = ?1",
        params![id, ip, port, crate::params::now_us()],
    )?;
    Ok(())
}

/// Receptions still `receiving` whose sender has been idle since before `cutoff_us` (µs since
/// the epoch), counting idle time from `counted_from_us` at the earliest (this server's start:
/// a sender cannot come back while the receiver is down).
pub fn idle(
    engine: &Engine,
    cutoff_us: i64,
    counted_from_us: i64,
) -> Result<Vec<ReceptionRow>, EngineError> {
    let conn = engine.db.conn();
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM receptions WHERE status = 'receiving'
             AND MAX(COALESCE(active_us, created_us), ?2) < ?1 ORDER BY id"
    ))?;
    let rows = statement.query_map(params![cutoff_us, counted_from_us], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets the finished receptions (`complete` or `error`) that ended before `before_us`;
/// returns how many.
pub fn prune(engine: &Engine, before_us: i64) -> Result<usize, EngineError> {
    let mut conn = engine.db.conn();
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM reception_checkpoints WHERE reception_id IN (SELECT id FROM receptions
             WHERE status != 'receiving' AND end_us < ?1)",
        [before_us],
    )?;
    let pruned = tx.execute(
        "DELETE FROM receptions WHERE status != 'receiving' AND end_us < ?1",
        [before_us],
    )?;
    tx.commit()?;
    Ok(pruned)
}

/// Persists sink checkpoints of a reception (file index, checkpoint), replacing earlier ones
/// of the same files.
pub fn save_checkpoint<'a>(
    engine: &Engine,
    id: i64,
    files: impl IntoIterator<Item = (usize, &'a SinkCheckpoint)>,
) -> Result<(), EngineError> {
    let mut conn = engine.db.conn();
    let tx = conn.transaction()?;
    {
        let mut statement = tx.prepare_cached(
            "INSERT OR REPLACE INTO reception_checkpoints (reception_id, file_index, state, durable)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (index, sink) in files {
            let durable: Vec<[u64; 2]> = sink.durable.iter().map(|r| [r.start, r.end]).collect();
            statement.execute(params![
                id,
                index as i64,
                sink.state.to_string(),
                serde_json::to_string(&durable).unwrap_or_else(|_| "[]".into())
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The saved sink states of a reception: (file index, state).
pub fn checkpoints(
    engine: &Engine,
    id: i64,
) -> Result<Vec<(usize, serde_json::Value)>, EngineError> {
    let conn = engine.db.conn();
    let mut statement = conn.prepare(
        "SELECT file_index, state FROM reception_checkpoints WHERE reception_id = ?1
         ORDER BY file_index",
    )?;
    let rows = statement.query_map([id], |r| {
        Ok((r.get::<_, i64>(0)? as usize, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (index, text) = row?;
        if let Ok(state) = serde_json::from_str(&text) {
            out.push((index, state));
        }
    }
    Ok(out)
}
