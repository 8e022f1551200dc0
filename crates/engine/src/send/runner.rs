//! The life of one running transfer on the sending server: negotiate with the receiver, send
//! through the data path, ask the receiver to verify and publish, and end in `complete`,
//! `error`, `suspended` or `cancelled`. A receiver that is unreachable or goes silent (it is
//! restarting) is retried with backoff for [`RETRY_LIMIT`]; each new negotiation resumes from
//! the receiver's durable checkpoints.

use crate::datapath::{DataError, SendFile, SendPlan};
use crate::destination::{self, DestinationRow};
use crate::error::EngineError;
use crate::manifest::{self, scan::ManifestFile};
use crate::negotiation::{key_from_hex, FinishAnswer, OpenAnswer, OpenRequest, WireFile};
use crate::remote::{retryable, Remote, LONG_CALL, SHORT_CALL};
use crate::send::queue::{self, Desired, LiveSend, Phase, Snapshot};
use crate::send::reader::LazyReader;
use crate::send::store::{self, Counters, TransferRow};
use crate::Engine;
use serde_json::json;
use slipstream_proto::{CipherLevel, RateLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a receiver may stay unreachable (or silent) before the transfer fails.
pub const RETRY_LIMIT: Duration = Duration::from_secs(120);
/// The sending data path gives up on a silent receiver after this long (then we renegotiate).
/// Long enough for a busy receiver that is reopening its files after a restart.
const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the live counters are refreshed.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// How often a running transfer's counters are saved, so that a sending server killed mid-run
/// keeps them (up to this long ago) for its next start.
const COUNTERS_SAVE: Duration = Duration::from_secs(1);

/// How a run ended.
enum End {
    Complete(u64),
    Error(String),
    Suspended,
    Cancelled,
    Shutdown,
}

/// Runs transfer `id` until it ends, records the outcome and starts the next queued one.
pub async fn run(engine: Arc<Engine>, id: i64, live: Arc<LiveSend>) {
    let end = match drive(&engine, id, &live).await {
        Ok(end) => end,
        Err(error) => End::Error(error.message),
    };
    let result = match &end {
        End::Complete(files) => store::set_files_complete(&engine, id, *files)
            .and_then(|_| store::set_status(&engine, id, "complete", None)),
        End::Error(message) => {
            tracing::warn!(transfer = id, %message, "transfer failed");
            destination::record_error(&engine, live.destination_id, -32010, message);
            store::set_status(&engine, id, "error", Some(message))
        }
        End::Suspended => store::set_status(&engine, id, "suspended", None),
        End::Cancelled => store::set_status(&engine, id, "cancelled", None),
        End::Shutdown => Ok(()),
    };
    if let Err(error) = result {
        tracing::error!(transfer = id, %error, "cannot record the end of a transfer");
    }
    if let End::Complete(_) = end {
        tracing::info!(transfer = id, "transfer complete");
    }
    queue::finished(&engine, id, live.destination_id);
}

fn rate_limits(transfer: Option<u64>, destination: &DestinationRow) -> RateLimits {
    RateLimits {
        transfer_kbps: transfer,
        destination_kbps: destination.send_rate_max,
        server_kbps: None,
    }
}

/// Waits before the next attempt (1, 2, 4 … 8 s), or ends the transfer when the receiver has
/// been unreachable for [`RETRY_LIMIT`]. Returns early when the API asks for something.
async fn backoff(
    trouble_since: &mut Option<Instant>,
    attempt: &mut u32,
    desired: &mut watch::Receiver<Desired>,
    what: &str,
) -> Option<End> {
    let since = *trouble_since.get_or_insert_with(Instant::now);
    if since.elapsed() > RETRY_LIMIT {
        return Some(End::Error(format!(
            "the receiving server did not respond for {} s: {what}",
            RETRY_LIMIT.as_secs()
        )));
    }
    let wait = Duration::from_secs(1u64 << (*attempt).min(3));
    *attempt += 1;
    tracing::info!(%what, retry_in_s = wait.as_secs(), "receiving server unavailable; will retry");
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = desired.changed() => {}
    }
    None
}

/// Tells the receiver to discard the reception (best effort, a few tries in the background).
fn cancel_remote(remote: Arc<Remote>, uuid: String, message: String) {
    tokio::spawn(async move {
        for attempt in 0..5u32 {
            let result = remote
                .call(
                    "recv.cancelTransfer",
                    json!({"transferId": uuid, "message": message}),
                    SHORT_CALL,
                )
                .await;
            match result {
                Ok(_) => return,
                Err(e) if retryable(&e) && attempt < 4 => {
                    tokio::time::sleep(Duration::from_secs(2 << attempt)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot tell the receiving server to cancel");
                    return;
                }
            }
        }
    });
}

fn stop(want: &Desired, remote: &Arc<Remote>, row: &TransferRow, negotiated: bool) -> End {
    match want {
        Desired::Run => End::Error("internal: stop without a reason".into()),
        Desired::Suspend => End::Suspended,
        Desired::Shutdown => End::Shutdown,
        Desired::Cancel => {
            if negotiated {
                cancel_remote(
                    remote.clone(),
                    row.uuid.clone(),
                    "cancelled by the sender".into(),
                );
            }
            End::Cancelled
        }
        Desired::Fail(message) => {
            if negotiated {
                cancel_remote(remote.clone(), row.uuid.clone(), message.clone());
            }
            End::Error(message.clone())
        }
    }
}

fn open_request(engine: &Engine, row: &TransferRow, files: &[ManifestFile]) -> OpenRequest {
    OpenRequest {
        transfer_id: row.uuid.clone(),
        source_transfer_id: row.id,
        source_port: engine.recv_port(),
        destination_path: row.destination_path.clone(),
        overwrite_mode: row.overwrite_mode,
        min_cipher: row.min_cipher,
        checkpoint_frequency_seconds: row.checkpoint_seconds,
        files: files
            .iter()
            .map(|f| WireFile {
                dest_path: f.dest_path.clone(),
                size: f.size,
                executable: f.executable,
                modification_time: f.mtime,
                is_empty_dir: f.is_empty_dir,
            })
            .collect(),
    }
}

async fn peer_address(destination: &DestinationRow, port: u16) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((destination.host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve '{}': {e}", destination.host))?
        .next()
        .ok_or_else(|| format!("'{}' has no address", destination.host))
}

async fn drive(engine: &Arc<Engine>, id: i64, live: &LiveSend) -> Result<End, EngineError> {
    let row = store::load(engine, id)?
        .ok_or_else(|| EngineError::not_found(format!("transfer {id} vanished")))?;
    let destination = destination::load(engine, row.destination_id)?.ok_or_else(|| {
        EngineError::not_found(format!(
            "destination '{}' of this transfer was deleted",
            row.destination_id
        ))
    })?;
    let files = manifest::files(engine, row.manifest_id)?;
    let endpoint = engine.endpoint.clone().ok_or_else(|| {
        EngineError::internal(
            "the UDP data path is not available on this server (see the server log: \
             --recv-port may be in use)",
        )
    })?;
    let vfs = engine.config.sandboxes.view(&row.owner)?;
    let request = serde_json::to_value(open_request(engine, &row, &files))
        .map_err(|e| EngineError::internal(format!("cannot encode the file list: {e}")))?;
    let remote = Arc::new(destination.remote());
    let regular: Vec<&ManifestFile> = files.iter().filter(|f| !f.is_empty_dir).collect();

    let mut desired = live.desired.subscribe();
    let mut rate = live.rate.subscribe();
    let mut counters: Counters = row.counters.clone();
    let mut negotiated = row.negotiated;
    let mut trouble_since: Option<Instant> = None;
    let mut attempt = 0u32;
    loop {
        let want = desired.borrow_and_update().clone();
        if want != Desired::Run {
            return Ok(stop(&want, &remote, &row, negotiated));
        }
        live.set_phase(Phase::Negotiating);
        if !negotiated {
            // The receiver may make its reception even if its answer never arrives (we are
            // stopped or killed meanwhile): from now on a cancel must tell it.
            store::set_opening(engine, id)?;
            negotiated = true;
        }
        let opened = tokio::select! {
            r = remote.call("recv.openTransfer", request.clone(), SHORT_CALL * 4) => r,
            _ = desired.changed() => continue,
        };
        let answer: OpenAnswer = match opened {
            Ok(value) => serde_json::from_value(value).map_err(|e| {
                EngineError::internal(format!("the receiving server's openTransfer answer: {e}"))
            })?,
            Err(e) if retryable(&e) => {
                if let Some(end) = backoff(
                    &mut trouble_since,
                    &mut attempt,
                    &mut desired,
                    &e.to_string(),
                )
                .await
                {
                    return Ok(end);
                }
                continue;
            }
            Err(e) => {
                return Ok(End::Error(format!(
                    "the receiving server refused the transfer: {e}"
                )))
            }
        };
        let resume: Vec<std::ops::Range<u64>> = answer.resume.iter().map(|[a, b]| *a..*b).collect();
        let resumed: u64 = resume.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        store::set_negotiated(engine, id, answer.block_size, resumed)?;
        tracing::info!(
            transfer = id,
            session = answer.session_id,
            resumed_bytes = resumed,
            block_size = answer.block_size,
            cipher = answer.cipher,
            "transfer negotiated"
        );
        if answer.status == "complete" {
            return Ok(End::Complete(regular.len() as u64));
        }

        let mut digests = Vec::new();
        if !regular.is_empty() {
            let cipher = CipherLevel::from_level(answer.cipher).ok_or_else(|| {
                EngineError::internal(format!("receiver chose unknown cipher {}", answer.cipher))
            })?;
            let key = key_from_hex(&answer.key).ok_or_else(|| {
                EngineError::internal("the receiving server sent a malformed session key")
            })?;
            let peer = match peer_address(&destination, answer.recv_port).await {
                Ok(peer) => peer,
                Err(message) => return Ok(End::Error(message)),
            };
            let mut send_files = Vec::with_capacity(regular.len());
            for file in &regular {
                let (backend, rel) = vfs.resolve(&file.src_path)?;
                send_files.push(SendFile {
                    reader: Box::new(LazyReader::new(
                        backend,
                        rel,
                        file.src_path.clone(),
                        file.size,
                    )),
                    size: file.size,
                });
            }
            let plan = SendPlan {
                session_id: answer.session_id,
                peer,
                cipher,
                key,
                block_size: answer.block_size,
                files: send_files,
                resume,
                rate: rate_limits(*rate.borrow_and_update(), &destination),
                peer_timeout: PEER_TIMEOUT,
            };
            let mut handle = endpoint.start_send(plan);
            live.set_phase(Phase::Sending);
            let started = crate::params::now_us();
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            let mut saved = Instant::now();
            let result = loop {
                tokio::select! {
                    r = handle.wait() => break r,
                    changed = desired.changed() => {
                        if changed.is_ok() {
                            let want = desired.borrow().clone();
                            match want {
                                Desired::Run => {}
                                Desired::Suspend | Desired::Shutdown => handle.pause(),
                                Desired::Cancel | Desired::Fail(_) => handle.cancel(),
                            }
                        }
                    }
                    changed = rate.changed() => {
                        if changed.is_ok() {
                            handle.set_rate(rate_limits(*rate.borrow(), &destination));
                        }
                    }
                    _ = tick.tick() => {
                        let progress = handle.progress();
                        let total = counters.plus(&progress, crate::params::now_us() - started);
                        if saved.elapsed() >= COUNTERS_SAVE {
                            saved = Instant::now();
                            if let Err(error) = store::save_counters(engine, id, &total) {
                                tracing::warn!(transfer = id, %error, "cannot save the counters");
                            }
                        }
                        live.set_snapshot(Some(Snapshot { progress, counters: total }));
                    }
                }
            };
            let progress = handle.progress();
            let elapsed = crate::params::now_us() - started;
            tracing::info!(transfer = id, bytes_sent = progress.bytes_sent,
                bytes_acked = progress.bytes_acked, seconds = elapsed as f64 / 1e6,
                outcome = ?result.as_ref().map(|_| "all acknowledged"), "data run ended");
            counters = counters.plus(&progress, elapsed);
            store::save_counters(engine, id, &counters)?;
            live.set_snapshot(None);
            match result {
                Ok(outcome) => {
                    trouble_since = None;
                    attempt = 0;
                    digests = outcome.digests;
                }
                // Paused or cancelled: the top of the loop looks at what was asked.
                Err(DataError::Cancelled) => continue,
                Err(DataError::PeerSilent(message)) => {
                    if let Some(end) =
                        backoff(&mut trouble_since, &mut attempt, &mut desired, &message).await
                    {
                        return Ok(end);
                    }
                    continue;
                }
                Err(error) => {
                    let message = format!("sending failed: {error}");
                    cancel_remote(remote.clone(), row.uuid.clone(), message.clone());
                    return Ok(End::Error(message));
                }
            }
        }

        live.set_phase(Phase::Finishing);
        let hex: Vec<String> = digests.iter().map(|d| d.to_hex()).collect();
        let finished = remote
            .call(
                "recv.finishTransfer",
                json!({"transferId": row.uuid, "digests": hex}),
                LONG_CALL,
            )
            .await;
        match finished {
            Ok(value) => {
                let answer: FinishAnswer = serde_json::from_value(value).map_err(|e| {
                    EngineError::internal(format!(
                        "the receiving server's finishTransfer answer: {e}"
                    ))
                })?;
                let ok = answer.files.iter().filter(|f| f.ok).count() as u64;
                store::set_files_complete(engine, id, ok)?;
                if answer.status == "complete" {
                    return Ok(End::Complete(ok));
                }
                let message = answer
                    .files
                    .iter()
                    .find(|f| !f.ok)
                    .map(|f| {
                        format!(
                            "'{}': {}",
                            f.dest_path,
                            f.error_message.as_deref().unwrap_or("failed")
                        )
                    })
                    .or(answer.error_message)
                    .unwrap_or_else(|| "the receiving server reported an error".into());
                return Ok(End::Error(message));
            }
            Err(e) if retryable(&e) => {
                if let Some(end) = backoff(
                    &mut trouble_since,
                    &mut attempt,
                    &mut desired,
                    &e.to_string(),
                )
                .await
                {
                    return Ok(end);
                }
            }
            Err(e) => {
                return Ok(End::Error(format!(
                    "the receiving server could not finish the transfer: {e}"
                )))
            }
        }
    }
}
