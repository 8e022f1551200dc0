//! `recv.openTransfer`: the receiving server's half of the negotiation. A new transfer is
//! checked (cipher floor, paths, overwrite conflicts, S3 size limits) before any byte and its
//! folders are made; a known one (same sender id) continues from its checkpoints. Either way a
//! new data session is started and its parameters returned.

use crate::datapath::{ReceivePlan, SinkOpener, SinkRequest};
use crate::error::EngineError;
use crate::negotiation::{OpenAnswer, OpenRequest};
use crate::params::Params;
use crate::recv::store::{self, NewReception, ReceptionRow};
use crate::recv::targets::{self, Target};
use crate::recv::{expiry, live, sink_options};
use crate::{Caller, Engine};
use rand::RngCore;
use serde_json::Value;
use slipstream_proto::{CipherLevel, TransferParams};
use slipstream_storage::data::{FileSink, OverwriteMode, SinkCheckpoint};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The receiving data path gives up on a silent sender after this long; the sender comes back
/// with a new `openTransfer` and continues from the checkpoints.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// Datagram payload size the block size is chosen for (fits a 1500-byte MTU over IPv6).
const DATAGRAM_SIZE: usize = 1452;

fn parse(p: &Params) -> Result<OpenRequest, EngineError> {
    let request: OpenRequest = serde_json::from_value(Value::Object(p.0.clone()))
        .map_err(|e| EngineError::invalid_param("files", format!("openTransfer params: {e}")))?;
    let id = &request.transfer_id;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(EngineError::invalid_param(
            "transferId",
            "transferId must be 1 to 64 letters, digits or '-'",
        ));
    }
    Ok(request)
}

/// Resolves the reception's data files (regular files, in order) in the owner's sandbox.
pub fn data_targets(engine: &Engine, row: &ReceptionRow) -> Result<Vec<Target>, EngineError> {
    let vfs = engine.config.sandboxes.view(&row.owner)?;
    let all = targets::resolve_all(&vfs, &row.destination_path, &row.files)?;
    Ok(all.into_iter().filter(|t| !t.file.is_empty_dir).collect())
}

/// What a resumed reception's files hold, from their saved checkpoints.
#[derive(Default)]
pub struct Resumed {
    /// Sinks that stay open (those that are not reopenable, like S3's).
    pub open: Vec<(usize, Box<dyn FileSink>)>,
    /// Reopenable sinks (File), closed again at once so that a reception of many files does
    /// not hold a descriptor per file: the saved state and what the sink found durable.
    pub closed: Vec<(usize, SinkCheckpoint)>,
}

/// Reopens the sinks a reception checkpointed, from their saved state, one at a time. A sink
/// that cannot be resumed is skipped (its file starts over).
pub async fn reopen_sinks(engine: &Engine, row: &ReceptionRow) -> Result<Resumed, EngineError> {
    let targets = data_targets(engine, row)?;
    let mut resumed = Resumed::default();
    for (index, state) in store::checkpoints(engine, row.id)? {
        let Some(target) = targets.get(index) else {
            continue;
        };
        let options = sink_options(
            row.id,
            index,
            &target.file,
            row.overwrite_mode,
            Some(state.clone()),
            true,
        );
        match target.backend.create_sink(&target.rel, options).await {
            Ok(sink) if sink.reopenable() => {
                let durable = sink.resumed();
                // Closed now; the data path reopens it from the same state when it needs it.
                drop(sink);
                resumed
                    .closed
                    .push((index, SinkCheckpoint { state, durable }));
            }
            Ok(sink) => resumed.open.push((index, sink)),
            Err(error) => {
                tracing::warn!(reception = row.id, file = %target.shown, %error,
                    "cannot resume a partial file; it starts over");
            }
        }
    }
    Ok(resumed)
}

fn opener(reception_id: i64, mode: u8, targets: Vec<Target>) -> SinkOpener {
    let targets = Arc::new(targets);
    Arc::new(move |request: SinkRequest| {
        let targets = targets.clone();
        Box::pin(async move {
            let index = request.index;
            let target = targets.get(index).ok_or_else(|| {
                slipstream_storage::StorageError::Backend(format!(
                    "file index {index} is not part of the transfer"
                ))
            })?;
            let options = sink_options(
                reception_id,
                index,
                &target.file,
                mode,
                request.resume,
                request.resume_only,
            );
            target.backend.create_sink(&target.rel, options).await
        })
    })
}

/// `recv.openTransfer(...)`.
pub async fn open(engine: &Arc<Engine>, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let request = parse(p)?;
    let floor = engine.config.min_cipher;
    if request.min_cipher < floor {
        return Err(EngineError::permission_denied(format!(
            "minCipher {} is below this server's --min-cipher {floor}: create the transfer \
             with minCipher {floor} or higher",
            request.min_cipher
        )));
    }
    let cipher = CipherLevel::from_level(request.min_cipher)
        .ok_or_else(|| EngineError::invalid_param("minCipher", "minCipher must be 0..3"))?;
    let mode = OverwriteMode::try_from(request.overwrite_mode)
        .map_err(|e| EngineError::invalid_param("overwriteMode", e))?;
    let endpoint = engine.endpoint.clone().ok_or_else(|| {
        EngineError::internal(
            "the UDP data path is not available on this server (see its log: --recv-port may \
             be in use)",
        )
    })?;
    let _guard = engine.receiving.open_lock.lock().await;
    let source_ip = caller.address.to_string();
    let existing = store::by_uuid(engine, &request.transfer_id)?;
    let (row, resumed) = match existing {
        Some(row) => {
            if row.owner != caller.user && !caller.superuser {
                return Err(EngineError::permission_denied(format!(
                    "incoming transfer '{}' belongs to another user",
                    request.transfer_id
                )));
            }
            match row.status.as_str() {
                "complete" => return answer(engine, &row, 0, [0; 32], 0, Vec::new(), "complete"),
                "receiving" => {}
                _ if expiry::is_expired(row.error_message.as_deref()) => {
                    return Err(EngineError::conflict(format!(
                        "incoming transfer {} (to '{}') {}; its partial files were removed: \
                         create a new transfer to send the files again",
                        row.id,
                        row.destination_path,
                        row.error_message.as_deref().unwrap_or("expired")
                    )))
                }
                _ => {
                    return Err(EngineError::conflict(
                        row.error_message
                            .unwrap_or_else(|| "this incoming transfer failed".into()),
                    ))
                }
            }
            if engine.receiving.is_finishing(row.id) {
                return Err(EngineError::conflict(format!(
                    "incoming transfer {} is being verified and published: retry in a moment",
                    row.id
                ))
                .retryable());
            }
            // A sender that comes back replaces its earlier session: that one is closed (its
            // files stay) and its last checkpoint saved before the files are reopened.
            if let Some(old) = engine.receiving.take(row.id) {
                old.stop_watching();
                live::close_and_save(engine, &old).await;
            }
            store::set_source(engine, row.id, &source_ip, request.source_port)?;
            targets::prepare(&data_targets(engine, &row)?).await?;
            let sinks = reopen_sinks(engine, &row).await?;
            (row, sinks)
        }
        None => {
            let vfs = engine.config.sandboxes.view(&caller.user)?;
            let checked = async {
                let all = targets::resolve_all(&vfs, &request.destination_path, &request.files)?;
                targets::check(&all, mode, engine.config.file_cache_upload_size).await?;
                targets::prepare(&all).await?;
                Ok::<(), EngineError>(())
            }
            .await;
            let new = NewReception {
                uuid: &request.transfer_id,
                source_transfer_id: request.source_transfer_id,
                owner: &caller.user,
                source_ip: source_ip.clone(),
                source_port: request.source_port,
                destination_path: &request.destination_path,
                overwrite_mode: request.overwrite_mode,
                cipher: request.min_cipher,
                checkpoint_seconds: request.checkpoint_frequency_seconds,
                files: &request.files,
                status: if checked.is_ok() {
                    "receiving"
                } else {
                    "error"
                },
                error_message: checked.as_ref().err().map(|e| e.message.as_str()),
            };
            let id = store::insert(engine, &new)?;
            if let Err(error) = checked {
                tracing::info!(reception = id, %error, "incoming transfer refused");
                return Err(error);
            }
            let row = store::by_uuid(engine, &request.transfer_id)?
                .ok_or_else(|| EngineError::internal("a new reception vanished"))?;
            tracing::info!(reception = id, user = %caller.user, files = request.files.len(),
                "incoming transfer opened");
            (row, Resumed::default())
        }
    };

    let targets = data_targets(engine, &row)?;
    let mut offsets = Vec::with_capacity(targets.len());
    let mut total = 0u64;
    for target in &targets {
        offsets.push(total);
        total += target.file.size;
    }
    let mut resume: Vec<Range<u64>> = Vec::new();
    let open_ranges = resumed.open.iter().map(|(i, s)| (*i, s.resumed()));
    let closed_ranges = resumed.closed.iter().map(|(i, c)| (*i, c.durable.clone()));
    for (index, ranges) in open_ranges.chain(closed_ranges) {
        for range in ranges {
            resume.push(offsets[index] + range.start..offsets[index] + range.end);
        }
    }
    resume.sort_by_key(|r| r.start);
    if targets.is_empty() {
        return answer(engine, &row, 0, [0; 32], 0, resume, "receiving");
    }
    let block_size = TransferParams::block_size_for_datagram(DATAGRAM_SIZE, cipher)
        .map_err(|e| EngineError::internal(format!("block size: {e}")))?;
    let session_id = endpoint.allocate_session_id();
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let plan = ReceivePlan {
        session_id,
        cipher,
        key,
        block_size,
        sizes: targets.iter().map(|t| t.file.size).collect(),
        open_sink: opener(row.id, row.overwrite_mode, targets),
        resumed_sinks: resumed.open,
        resumed_closed: resumed.closed,
        checkpoint_interval: Duration::from_secs(row.checkpoint_seconds.unwrap_or(10).max(1)),
        peer_timeout: PEER_TIMEOUT,
    };
    let handle = endpoint.start_receive(plan);
    live::register(engine, row.id, handle);
    answer(
        engine,
        &row,
        session_id,
        key,
        block_size,
        resume,
        "receiving",
    )
}

fn answer(
    engine: &Engine,
    row: &ReceptionRow,
    session_id: u32,
    key: [u8; 32],
    block_size: u32,
    resume: Vec<Range<u64>>,
    status: &str,
) -> Result<Value, EngineError> {
    let answer = OpenAnswer {
        transfer_id: row.id,
        status: status.into(),
        session_id,
        key: hex::encode(key),
        cipher: row.cipher,
        block_size,
        recv_port: engine.recv_port(),
        resume: resume.iter().map(|r| [r.start, r.end]).collect(),
    };
    serde_json::to_value(answer).map_err(|e| EngineError::internal(e.to_string()))
}
