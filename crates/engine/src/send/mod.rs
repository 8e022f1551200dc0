//! The sending side: `send.createTransfer` and the transfer control methods, the Transfer
//! structure (api.md §4), the per-destination queue and the runner of each transfer.

pub mod queue;
pub mod reader;
pub mod runner;
pub mod store;

use crate::error::EngineError;
use crate::params::{now_us, Params};
use crate::{destination, manifest, Caller, Engine};
use queue::Desired;
use rand::RngCore;
use rusqlite::params;
use serde_json::{json, Value};
use slipstream_storage::RelPath;
use std::sync::Arc;
use std::time::Duration;
use store::TransferRow;

const STATUSES: &[&str] = &[
    "pending",
    "inProgress",
    "suspended",
    "cancelled",
    "complete",
    "error",
];

fn transfer_json(engine: &Engine, row: &TransferRow) -> Value {
    let snapshot = engine.sending.live(row.id).and_then(|l| l.snapshot());
    let (counters, progress) = match &snapshot {
        Some(snapshot) => (snapshot.counters.clone(), Some(&snapshot.progress)),
        None => (row.counters.clone(), None),
    };
    let bytes_acked = if row.status == "complete" {
        row.total_bytes
    } else {
        // The data path counts the resumed bytes as acknowledged from the start.
        let current = progress.map_or(counters.last_acked, |p| p.bytes_acked);
        current.max(row.bytes_resumed).min(row.total_bytes)
    };
    let total_blocks = match row.block_size {
        0 => 0,
        size => row.total_bytes.div_ceil(u64::from(size)),
    };
    let ave = if counters.active_us > 0 {
        (counters.bytes_sent as f64 * 8.0 / 1000.0) / (counters.active_us as f64 / 1e6)
    } else {
        0.0
    };
    json!({
        "transferId": row.id,
        "status": row.status,
        "errorMessage": row.error_message,
        "owner": row.owner,
        "destinationId": row.destination_id.to_string(),
        "manifestId": row.manifest_id.to_string(),
        "destinationPath": row.destination_path,
        "overwriteMode": row.overwrite_mode,
        "priority": row.priority,
        "checkpointFrequencySeconds": row.checkpoint_seconds,
        "minCipher": row.min_cipher,
        "totalBytes": row.total_bytes,
        "totalFiles": row.total_files,
        "filesComplete": row.files_complete,
        "bytesSent": counters.bytes_sent,
        "bytesAcked": bytes_acked,
        "bytesResumed": row.bytes_resumed,
        "blockSize": row.block_size,
        "totalBlocks": total_blocks,
        "blocksSent": counters.blocks_sent,
        "blocksAcked": counters.blocks_acked,
        "blocksRetransmitted": counters.blocks_retransmitted,
        "packetsSent": counters.packets_sent,
        "packetsRecv": counters.packets_recv,
        "sendRate": row.send_rate,
        "currentSendRate": progress.map(|p| p.rate_kbps),
        "aveSendRate": ave.round() as u64,
        "roundTripTimeMs": progress.map(|p| p.round_trip_time_ms),
        "requestTime": row.request_us,
        "queueTime": row.queue_us,
        "startTime": row.start_us,
        "endTime": row.end_us,
        "processing": matches!(row.status.as_str(), "pending" | "inProgress"),
    })
}

/// The transfer if `caller` may see it; else -32004.
fn visible(engine: &Engine, id: i64, caller: &Caller) -> Result<TransferRow, EngineError> {
    match store::load(engine, id)? {
        Some(row) if row.owner == caller.user || caller.superuser => Ok(row),
        _ => Err(EngineError::not_found(format!(
            "transfer {id} does not exist (or is not yours): see send.getTransfers"
        ))),
    }
}

/// `send.createTransfer(destinationId, manifestId, destinationPath="", overwriteMode=4,
/// priority=100, checkpointFrequencySeconds=10, minCipher=3, sendRate=null)`.
pub fn create(engine: &Arc<Engine>, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let destination = destination::visible(engine, p.id("destinationId")?, caller)?;
    let manifest = manifest::visible(engine, p.id("manifestId")?, caller)?;
    match manifest.status.as_str() {
        "complete" => {}
        "pending" => {
            return Err(EngineError::conflict(format!(
                "manifest '{}' is still being built: wait until send.getManifest says complete",
                manifest.id
            )))
        }
        _ => {
            return Err(EngineError::conflict(format!(
                "manifest '{}' failed ({}): create a new one",
                manifest.id,
                manifest.error_message.unwrap_or_default()
            )))
        }
    }
    let destination_path = p.opt_string("destinationPath")?.unwrap_or_default();
    RelPath::parse(&destination_path)
        .map_err(|e| EngineError::invalid_param("destinationPath", e.to_string()))?;
    let overwrite_mode = p.u64_or("overwriteMode", 4)?;
    if overwrite_mode > 5 {
        return Err(EngineError::invalid_param(
            "overwriteMode",
            format!(
                "overwriteMode {overwrite_mode} is not one of 0..5 (0 in place never, 1 in place \
                 always, 2 in place same size, 3 never, 4 always, 5 backup)"
            ),
        ));
    }
    let priority = p.i64_or("priority", 100)?;
    let checkpoint = match p.get("checkpointFrequencySeconds") {
        None if p.0.contains_key("checkpointFrequencySeconds") => None,
        _ => Some(p.u64_or("checkpointFrequencySeconds", 10)?),
    };
    let min_cipher = p.u64_or("minCipher", 3)?;
    if min_cipher > 3 {
        return Err(EngineError::invalid_param(
            "minCipher",
            format!("minCipher {min_cipher} is not one of 0..3 (0 none, 1 authenticated, 2 AES-128-GCM, 3 AES-256-GCM)"),
        ));
    }
    let send_rate = p.opt_u64("sendRate")?;
    let mut uuid = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut uuid);
    let now = now_us();
    let id = {
        let conn = engine.db.conn();
        conn.execute(
            "INSERT INTO transfers (uuid, owner, destination_id, manifest_id, destination_path,
                 overwrite_mode, priority, checkpoint_seconds, min_cipher, send_rate, status,
                 total_bytes, total_files, request_us, queue_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13, ?13)",
            params![
                hex::encode(uuid),
                caller.user,
                destination.id,
                manifest.id,
                destination_path,
                overwrite_mode as i64,
                priority,
                checkpoint.map(|v| v as i64),
                min_cipher as i64,
                send_rate.map(|v| v as i64),
                manifest.total_size as i64,
                manifest.total_files as i64,
                now
            ],
        )?;
        conn.last_insert_rowid()
    };
    tracing::info!(
        transfer = id,
        destination = destination.id,
        manifest = manifest.id,
        "transfer queued"
    );
    let row = visible(engine, id, caller)?;
    let answer = transfer_json(engine, &row);
    queue::kick(engine, destination.id);
    Ok(answer)
}

/// `send.getTransfer(transferId)`.
pub fn get(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    Ok(transfer_json(engine, &row))
}

/// `send.getTransfers(status=null)`.
pub fn list(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let status = p.opt_string("status")?;
    if let Some(status) = &status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(EngineError::invalid_param(
                "status",
                format!("status '{status}' is not one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let owner = (!caller.superuser).then_some(caller.user.as_str());
    let rows = store::list(engine, owner, status.as_deref())?;
    Ok(Value::Array(
        rows.iter().map(|row| transfer_json(engine, row)).collect(),
    ))
}

fn not_now(row: &TransferRow, what: &str) -> EngineError {
    EngineError::conflict(format!(
        "transfer {} is {}: only {what}",
        row.id, row.status
    ))
}

/// Asks a stop of `id`: a running transfer gets `desired`; a queued or suspended one is given
/// `status` at once. Returns false when the transfer had already ended.
fn stop(
    engine: &Arc<Engine>,
    row: &TransferRow,
    desired: Desired,
    status: &str,
    message: Option<&str>,
) -> Result<bool, EngineError> {
    let running = engine.sending.lock();
    if let Some(live) = running.by_transfer.get(&row.id) {
        live.desired.send_replace(desired);
        return Ok(true);
    }
    let current = store::load(engine, row.id)?
        .map(|r| r.status)
        .unwrap_or_default();
    if !matches!(current.as_str(), "pending" | "suspended") {
        return Ok(false);
    }
    store::set_status(engine, row.id, status, message)?;
    drop(running);
    if row.negotiated && status != "suspended" {
        let destination = destination::load(engine, row.destination_id)?;
        if let Some(destination) = destination {
            let remote = destination.remote();
            let uuid = row.uuid.clone();
            let message = message.unwrap_or("cancelled by the sender").to_string();
            tokio::spawn(async move {
                let _ = remote
                    .call(
                        "recv.cancelTransfer",
                        json!({"transferId": uuid, "message": message}),
                        crate::remote::SHORT_CALL,
                    )
                    .await;
            });
        }
    }
    Ok(true)
}

/// `send.suspendTransfer(transferId)`.
pub fn suspend(engine: &Arc<Engine>, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    if row.status == "suspended" {
        return Ok(Value::Null);
    }
    if !stop(engine, &row, Desired::Suspend, "suspended", None)? {
        return Err(not_now(
            &row,
            "pending or inProgress transfers can be suspended",
        ));
    }
    Ok(Value::Null)
}

/// `send.resumeTransfer(transferId)`: a suspended transfer queues again.
pub fn resume(engine: &Arc<Engine>, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    {
        let running = engine.sending.lock();
        if let Some(live) = running.by_transfer.get(&row.id) {
            // Suspended while it was still stopping: let it go on.
            live.desired.send_if_modified(|d| {
                let change = *d == Desired::Suspend;
                if change {
                    *d = Desired::Run;
                }
                change
            });
            return Ok(Value::Null);
        }
        match row.status.as_str() {
            "pending" | "inProgress" => return Ok(Value::Null),
            "suspended" => {
                engine.db.conn().execute(
                    "UPDATE transfers SET status = 'pending', queue_us = ?2 WHERE id = ?1",
                    params![row.id, now_us()],
                )?;
            }
            _ => return Err(not_now(&row, "suspended transfers can be resumed")),
        }
    }
    queue::kick(engine, row.destination_id);
    Ok(Value::Null)
}

/// `send.cancelTransfer(transferId)`: the receiver discards what it has (no partfile left).
pub fn cancel(engine: &Arc<Engine>, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    if row.status == "cancelled" {
        return Ok(Value::Null);
    }
    if !stop(engine, &row, Desired::Cancel, "cancelled", None)? {
        return Err(not_now(&row, "unfinished transfers can be cancelled"));
    }
    Ok(Value::Null)
}

/// `send.failTransfer(transferId, message)`: ends it in `error` with `message`.
pub fn fail(engine: &Arc<Engine>, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    let message = p
        .opt_string("message")?
        .unwrap_or_else(|| "failed by the user".into());
    if !stop(
        engine,
        &row,
        Desired::Fail(message.clone()),
        "error",
        Some(&message),
    )? {
        return Err(not_now(&row, "unfinished transfers can be failed"));
    }
    Ok(Value::Null)
}

/// `send.deleteTransfer(transferId)`: cancels it if unfinished, then forgets it.
pub async fn delete(
    engine: &Arc<Engine>,
    p: &Params,
    caller: &Caller,
) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    stop(engine, &row, Desired::Cancel, "cancelled", None)?;
    // A running transfer stops within moments; wait for it so its runner does not write to a
    // deleted row.
    for _ in 0..100 {
        if engine.sending.live(row.id).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine
        .db
        .conn()
        .execute("DELETE FROM transfers WHERE id = ?1", [row.id])?;
    Ok(Value::Null)
}

/// `send.setSendRate(transferId, kbps)`: applies at once to a running transfer.
pub fn set_send_rate(
    engine: &Arc<Engine>,
    p: &Params,
    caller: &Caller,
) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("transferId")?, caller)?;
    let kbps = p.opt_u64("kbps")?;
    if kbps == Some(0) {
        return Err(EngineError::invalid_param(
            "kbps",
            "kbps must be positive (or null for no limit); use suspendTransfer to stop sending",
        ));
    }
    engine.db.conn().execute(
        "UPDATE transfers SET send_rate = ?2 WHERE id = ?1",
        params![row.id, kbps.map(|v| v as i64)],
    )?;
    if let Some(live) = engine.sending.live(row.id) {
        live.rate.send_replace(kbps);
    }
    Ok(Value::Null)
}
