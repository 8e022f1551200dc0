//! The receiving side: `recv.openTransfer`, `recv.finishTransfer`, `recv.cancelTransfer` (the
//! methods a sending server calls, as the destination user) and `recv.getTransfers`,
//! `recv.getSources`.

pub mod expiry;
pub mod live;
pub mod open;
pub mod store;
pub mod targets;

use crate::error::EngineError;
use crate::negotiation::{FileResult, FinishAnswer};
use crate::params::Params;
use crate::{Caller, Engine};
use serde_json::{json, Value};
use slipstream_storage::data::{FileDigest, OverwriteMode, SinkOptions};
use slipstream_storage::file_data::partfile_name;
use std::collections::BTreeMap;
use std::sync::Arc;
use store::ReceptionRow;

/// The reception the sender calls `transferId`, if `caller` may act on it.
fn visible(engine: &Engine, p: &Params, caller: &Caller) -> Result<ReceptionRow, EngineError> {
    let uuid = p.string("transferId")?;
    match store::by_uuid(engine, &uuid)? {
        Some(row) if row.owner == caller.user || caller.superuser => Ok(row),
        _ => Err(EngineError::not_found(format!(
            "no incoming transfer '{uuid}' for user '{}'",
            caller.user
        ))),
    }
}

fn busy(id: i64) -> EngineError {
    EngineError::conflict(format!(
        "incoming transfer {id} is being verified and published: retry in a moment"
    ))
    .retryable()
}

/// `recv.finishTransfer(transferId, digests)`: waits for every byte, verifies each file
/// against the sender's digest and publishes it. Returns the per-file results.
pub async fn finish(
    engine: &Arc<Engine>,
    p: &Params,
    caller: &Caller,
) -> Result<Value, EngineError> {
    let row = visible(engine, p, caller)?;
    let digests: Vec<FileDigest> =
        serde_json::from_value(Value::Array(p.array("digests")?.clone()))
            .map_err(|e| EngineError::invalid_param("digests", format!("digests: {e}")))?;
    let regular: Vec<&crate::negotiation::WireFile> =
        row.files.iter().filter(|f| !f.is_empty_dir).collect();
    let all_ok = |status: &str| FinishAnswer {
        status: status.into(),
        error_message: row.error_message.clone(),
        files: regular
            .iter()
            .map(|f| FileResult {
                dest_path: f.dest_path.clone(),
                ok: status == "complete",
                error_message: None,
            })
            .collect(),
    };
    match row.status.as_str() {
        "complete" | "error" => return to_json(&all_ok(&row.status)),
        _ => {}
    }
    if digests.len() != regular.len() {
        return Err(EngineError::invalid_param(
            "digests",
            format!("{} digests for {} files", digests.len(), regular.len()),
        ));
    }
    if regular.is_empty() {
        store::end(engine, row.id, "complete", None)?;
        return to_json(&all_ok("complete"));
    }
    let live = {
        let mut registry = engine.receiving.lock();
        if registry.finishing.contains(&row.id) {
            return Err(busy(row.id));
        }
        let live = registry.live.remove(&row.id);
        if live.is_some() {
            registry.finishing.insert(row.id);
        }
        live
    };
    let Some(live) = live else {
        return Err(EngineError::conflict(format!(
            "incoming transfer {} is not active on this server (it restarted?): open it again",
            row.id
        ))
        .retryable());
    };
    // Run to the end even if the caller goes away: the files are published either way.
    let task_engine = engine.clone();
    let files: Vec<String> = regular.iter().map(|f| f.dest_path.clone()).collect();
    let id = row.id;
    let task = tokio::spawn(async move {
        live.stop_watching();
        let outcome = live.handle.finish(digests).await;
        let answer = match outcome {
            Ok(results) => {
                let files: Vec<FileResult> = files
                    .iter()
                    .zip(results)
                    .map(|(path, result)| FileResult {
                        dest_path: path.clone(),
                        ok: result.is_ok(),
                        error_message: result.err().map(|e| e.to_string()),
                    })
                    .collect();
                let failed = files.iter().find(|f| !f.ok);
                let message = failed.map(|f| {
                    format!(
                        "'{}': {}",
                        f.dest_path,
                        f.error_message.as_deref().unwrap_or("failed")
                    )
                });
                FinishAnswer {
                    status: if failed.is_some() {
                        "error"
                    } else {
                        "complete"
                    }
                    .into(),
                    error_message: message,
                    files,
                }
            }
            Err(error) => FinishAnswer {
                status: "error".into(),
                error_message: Some(format!("receiving failed: {error}")),
                files: Vec::new(),
            },
        };
        if let Err(error) = store::end(
            &task_engine,
            id,
            &answer.status,
            answer.error_message.as_deref(),
        ) {
            tracing::error!(reception = id, %error, "cannot record the end of a reception");
        }
        task_engine.receiving.lock().finishing.remove(&id);
        answer
    });
    let answer = task
        .await
        .map_err(|e| EngineError::internal(format!("finishing the reception failed: {e}")))?;
    tracing::info!(reception = id, status = %answer.status, "incoming transfer finished");
    to_json(&answer)
}

fn to_json(answer: &FinishAnswer) -> Result<Value, EngineError> {
    serde_json::to_value(answer).map_err(|e| EngineError::internal(e.to_string()))
}

/// `recv.cancelTransfer(transferId, message)`: discards everything received (no partfile, no
/// multipart upload left).
pub async fn cancel(
    engine: &Arc<Engine>,
    p: &Params,
    caller: &Caller,
) -> Result<Value, EngineError> {
    let row = visible(engine, p, caller)?;
    if row.status != "receiving" {
        return Ok(Value::Null);
    }
    if engine.receiving.is_finishing(row.id) {
        return Err(busy(row.id));
    }
    let message = p
        .opt_string("message")?
        .unwrap_or_else(|| "cancelled by the sender".into());
    let _guard = engine.receiving.open_lock.lock().await;
    discard(engine, &row).await.map_err(|_| busy(row.id))?;
    store::end(engine, row.id, "error", Some(&message))?;
    tracing::info!(reception = row.id, %message, "incoming transfer cancelled");
    Ok(Value::Null)
}

/// Discards everything a reception that is still `receiving` has, so that no partfile or
/// multipart upload is left: a live session is stopped and aborts its sinks (closed ones are
/// reopened from their checkpoints to be aborted); otherwise each checkpointed sink is reopened
/// from its saved state and aborted. Then, in File sandboxes, any partfile of the reception
/// that no checkpoint recorded (one made just before a crash, say) is removed by its name.
/// Multipart uploads that no checkpoint recorded are left to the stale-upload reaper
/// (`--stale-upload-age`). The caller holds `open_lock`. Nothing is done while the
/// reception's files are being verified and published.
pub(crate) async fn discard(engine: &Engine, row: &ReceptionRow) -> Result<(), live::Finishing> {
    match engine.receiving.take_unless_finishing(row.id)? {
        Some(live) => {
            live.stop_watching();
            live.handle.abort().await;
        }
        None => discard_checkpointed(engine, row).await,
    }
    remove_partfiles(engine, row).await;
    Ok(())
}

/// Reopens each checkpointed sink of a reception that is not running and aborts it (which
/// removes its partfile, its in-place file, or its multipart upload). A checkpoint whose data
/// is gone already is skipped: nothing is created just to be removed.
async fn discard_checkpointed(engine: &Engine, row: &ReceptionRow) {
    let (targets, checkpoints) = match (
        open::data_targets(engine, row),
        store::checkpoints(engine, row.id),
    ) {
        (Ok(targets), Ok(checkpoints)) => (targets, checkpoints),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(reception = row.id, %error, "cannot discard the partial files");
            return;
        }
    };
    for (index, state) in checkpoints {
        let Some(target) = targets.get(index) else {
            continue;
        };
        let options = sink_options(
            row.id,
            index,
            &target.file,
            row.overwrite_mode,
            Some(state),
            true,
        );
        let result = match target.backend.create_sink(&target.rel, options).await {
            Ok(sink) => sink.abort().await,
            Err(slipstream_storage::StorageError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(reception = row.id, file = %target.shown, %error,
                "cannot discard a partial file");
        }
    }
}

/// Removes the partfiles of a reception by name from File sandboxes (modes 3 to 5), whether
/// or not a checkpoint recorded them. Nothing else is touched: a partfile's name holds the
/// reception id and the file index.
async fn remove_partfiles(engine: &Engine, row: &ReceptionRow) {
    let Ok(mode) = OverwriteMode::try_from(row.overwrite_mode) else {
        return;
    };
    if !mode.uses_partfile() {
        return;
    }
    let targets = match open::data_targets(engine, row) {
        Ok(targets) => targets,
        Err(error) => {
            tracing::warn!(reception = row.id, %error, "cannot look for leftover partfiles");
            return;
        }
    };
    for (index, target) in targets.iter().enumerate() {
        if target.backend.type_name() != "File" || target.rel.is_root() {
            continue;
        }
        let name = partfile_name(target.rel.name(), &format!("{}-{index}", row.id));
        let Ok(path) = target.rel.parent().join(&name) else {
            continue;
        };
        match target.backend.remove(&path, false).await {
            Ok(()) => {
                tracing::info!(reception = row.id, file = %target.shown,
                    "removed a leftover partfile");
            }
            Err(slipstream_storage::StorageError::NotFound(_)) => {}
            Err(error) => {
                tracing::warn!(reception = row.id, file = %target.shown, %error,
                    "cannot remove a leftover partfile");
            }
        }
    }
}

/// The sink options of data file `index` of a reception.
pub fn sink_options(
    reception_id: i64,
    index: usize,
    file: &crate::negotiation::WireFile,
    mode: u8,
    resume: Option<Value>,
    resume_only: bool,
) -> SinkOptions {
    SinkOptions {
        size: file.size,
        overwrite: OverwriteMode::try_from(mode).unwrap_or(OverwriteMode::Always),
        executable: file.executable,
        modification_time: file.modification_time,
        reception_id: format!("{reception_id}-{index}"),
        resume,
        resume_only,
    }
}

fn reception_json(engine: &Engine, row: &ReceptionRow) -> Value {
    let live = engine.receiving.get(row.id).map(|l| l.handle.progress());
    let bytes = live
        .as_ref()
        .map(|p| p.bytes_received)
        .unwrap_or(row.bytes_recv);
    let port = live
        .as_ref()
        .and_then(|p| p.peer.map(|a| a.port()))
        .or(row.source_port);
    json!({
        "transferId": row.id,
        "sourceIP": row.source_ip,
        "sourcePort": port,
        "owner": row.owner,
        "destinationPath": row.destination_path,
        "status": row.status,
        "totalSize": row.total_size,
        "bytesRecv": bytes,
        "errorMessage": row.error_message,
        "sourceTransferId": row.source_transfer_id,
        "startTime": row.created_us,
        "endTime": row.end_us,
    })
}

/// `recv.getTransfers()`: incoming transfers into the caller's sandbox (a superuser: all).
pub fn list(engine: &Engine, caller: &Caller) -> Result<Value, EngineError> {
    let owner = (!caller.superuser).then_some(caller.user.as_str());
    let rows = store::list(engine, owner)?;
    Ok(Value::Array(
        rows.iter().map(|row| reception_json(engine, row)).collect(),
    ))
}

/// `recv.getSources()`: the sending servers, with counts and average receive rate (kbit/s).
pub fn sources(engine: &Engine, caller: &Caller) -> Result<Value, EngineError> {
    let owner = (!caller.superuser).then_some(caller.user.as_str());
    let rows = store::list(engine, owner)?;
    #[derive(Default)]
    struct Source {
        active: u64,
        complete: u64,
        error: u64,
        bytes: u64,
        micros: i64,
    }
    let now = crate::params::now_us();
    let mut sources: BTreeMap<(String, Option<u16>), Source> = BTreeMap::new();
    for row in &rows {
        let entry = sources
            .entry((row.source_ip.clone(), row.source_port))
            .or_default();
        match row.status.as_str() {
            "receiving" => entry.active += 1,
            "complete" => entry.complete += 1,
            _ => entry.error += 1,
        }
        let bytes = engine
            .receiving
            .get(row.id)
            .map(|l| l.handle.progress().bytes_received)
            .unwrap_or(row.bytes_recv);
        entry.bytes += bytes;
        entry.micros += row.end_us.unwrap_or(now) - row.created_us;
    }
    Ok(Value::Array(
        sources
            .into_iter()
            .map(|((ip, port), s)| {
                let rate = if s.micros > 0 {
                    (s.bytes as f64 * 8.0 / 1000.0 / (s.micros as f64 / 1e6)).round() as u64
                } else {
                    0
                };
                json!({
                    "sourceIP": ip,
                    "sourcePort": port,
                    "activeTransferCount": s.active,
                    "completeTransferCount": s.complete,
                    "errorTransferCount": s.error,
                    "aveRecvRate": rate,
                })
            })
            .collect(),
    ))
}
