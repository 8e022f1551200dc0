//! The sending driver: a task per send that runs [`slipstream_proto::Sender`] with real time
//! over the shared socket, fed by a read-ahead task that reads every file sequentially in large
//! pieces into a bounded buffer and hashes it on the way (so digests are free).
//!
//! Pacing: the proto pacer keeps up to 2 ms of credit, so the driver wakes about once per
//! millisecond (tokio's timer granularity) and sends everything due as GSO batches.

use super::endpoint::{Core, Inbound, InboundRx, Registration};
use super::{
    block_byte_ranges, covered_blocks, lock, range_bytes, DataError, Progress, SendFile,
    SendOutcome, SendPlan,
};
use bytes::Bytes;
use slipstream_proto::{
    BlockSource, FileSpace, RangeSet, RateLimits, Sender, SessionSecret, TransferParams,
    TransportConfig,
};
use slipstream_storage::data::{DigestBuilder, FileDigest};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Bytes the read-ahead reads per call.
const PIECE: u64 = 4 << 20;
/// Bytes of file data one send keeps in memory, at most (plus one piece).
const READ_AHEAD_BUDGET: u64 = 64 << 20;
/// Datagrams sealed per batch before they are handed to the socket.
const MAX_BATCH: usize = 256;
/// Longest sleep of the driver (it checks commands, limits and the peer timeout this often).
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// How often the shared counters are refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(20);
/// Smallest queueing delay target of the rate controller (see [`sender_config`]).
const MIN_QUEUE_TARGET: Duration = Duration::from_millis(2);
/// Smallest slack before an unacknowledged block counts as lost (see [`sender_config`]).
const RETRANSMIT_MARGIN: Duration = Duration::from_millis(20);
/// After the end, how long late ACKs are still answered with CLOSE.
const LINGER: Duration = Duration::from_secs(1);

/// How a send is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Send CLOSE(cancelled).
    Cancel,
    /// Stop quietly.
    Pause,
}

#[derive(Debug, Default)]
pub(crate) struct Control {
    pub rate: Option<RateLimits>,
    pub stop: Option<Stop>,
}

/// What the handle and the driver share.
pub(crate) struct SendShared {
    pub progress: Mutex<Progress>,
    pub acked: Mutex<Vec<std::ops::Range<u64>>>,
    pub control: Mutex<Control>,
    pub wake: Notify,
}

type ResultTx = watch::Sender<Option<Result<SendOutcome, DataError>>>;

/// Starts the driver of `plan`.
pub(crate) fn start(
    core: &Arc<Core>,
    plan: SendPlan,
) -> (
    Arc<SendShared>,
    watch::Receiver<Option<Result<SendOutcome, DataError>>>,
) {
    let shared = Arc::new(SendShared {
        progress: Mutex::new(Progress {
            block_size: plan.block_size,
            peer: Some(plan.peer),
            ..Progress::default()
        }),
        acked: Mutex::new(Vec::new()),
        control: Mutex::new(Control::default()),
        wake: Notify::new(),
    });
    let (result_tx, result_rx) = watch::channel(None);
    let (registration, inbound) = core.register_sender(plan.session_id, plan.peer);
    core.active_sends.fetch_add(1, Ordering::Relaxed);
    let driver = Driver {
        core: core.clone(),
        shared: shared.clone(),
        result: result_tx,
        _registration: registration,
    };
    tokio::spawn(driver.run(plan, inbound));
    (shared, result_rx)
}

struct Driver {
    core: Arc<Core>,
    shared: Arc<SendShared>,
    result: ResultTx,
    _registration: Registration,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.core.active_sends.fetch_sub(1, Ordering::Relaxed);
        // A driver that panicked still reports an end.
        self.result.send_if_modified(|result| {
            if result.is_none() {
                *result = Some(Err(DataError::Other("the send driver stopped".into())));
                true
            } else {
                false
            }
        });
    }
}

/// The read-ahead buffer and what the reading task reports.
struct ReadAhead {
    pieces: Mutex<Pieces>,
    /// Signalled when pieces were evicted.
    room: Notify,
    files_read: AtomicU64,
}

#[derive(Default)]
struct Pieces {
    /// Global start -> data; pieces never straddle files.
    map: BTreeMap<u64, Bytes>,
    buffered: u64,
}

impl Pieces {
    /// Copies `buf.len()` bytes at global `offset` out of the pieces, if all are buffered.
    fn copy_out(&self, offset: u64, buf: &mut [u8]) -> bool {
        let mut filled = 0usize;
        while filled < buf.len() {
            let position = offset + filled as u64;
            let Some((&start, data)) = self.map.range(..=position).next_back() else {
                return false;
            };
            let skip = (position - start) as usize;
            if skip >= data.len() {
                return false;
            }
            let take = (data.len() - skip).min(buf.len() - filled);
            buf[filled..filled + take].copy_from_slice(&data[skip..skip + take]);
            filled += take;
        }
        true
    }

    /// Drops every piece whose blocks are all acknowledged; returns whether any was.
    fn evict_acked(&mut self, acked: &RangeSet, params: &TransferParams) -> bool {
        let mut evicted = false;
        let mut freed = 0;
        self.map.retain(|&start, data| {
            let end = start + data.len() as u64;
            let blocks = params.block_of(start)..params.block_of(end.saturating_sub(1)) + 1;
            let keep = data.is_empty() || !acked.contains_range(blocks);
            if !keep {
                evicted = true;
                freed += data.len() as u64;
            }
            keep
        });
        self.buffered -= freed;
        evicted
    }
}

/// The proto sender's view of the read-ahead (the lock is held for one batch).
struct LockedSource<'a>(&'a Pieces);

impl BlockSource for LockedSource<'_> {
    fn read_block(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        self.0.copy_out(offset, buf)
    }
}

fn storage_error(error: slipstream_storage::StorageError) -> DataError {
    DataError::Storage(error.to_string())
}

/// Reads every file in order: pieces the receiver still needs go into the buffer (waiting for
/// room), all bytes go through the file's digest.
async fn read_ahead(
    ahead: Arc<ReadAhead>,
    files: Vec<SendFile>,
    space: FileSpace,
    skip: RangeSet,
) -> Result<Vec<FileDigest>, DataError> {
    let mut digests = Vec::with_capacity(files.len());
    for (index, file) in files.into_iter().enumerate() {
        let base = space.file_range(index).map_or(0, |range| range.start);
        let mut builder = DigestBuilder::new(file.size);
        let mut position = 0u64;
        while position < file.size {
            let len = PIECE.min(file.size - position);
            let global = base + position..base + position + len;
            let needed = !skip.contains_range(global.clone());
            if needed {
                loop {
                    let notified = ahead.room.notified();
                    {
                        let pieces = lock(&ahead.pieces);
                        if pieces.buffered == 0 || pieces.buffered + len <= READ_AHEAD_BUDGET {
                            break;
                        }
                    }
                    notified.await;
                }
            }
            // `len` is at most PIECE, so it fits a usize.
            let data = file
                .reader
                .read_at(position, len as usize)
                .await
                .map_err(storage_error)?;
            if data.len() as u64 != len {
                return Err(DataError::Storage(format!(
                    "file {index} of the transfer is shorter than announced: {} of {} bytes \
                     could be read",
                    position + data.len() as u64,
                    file.size
                )));
            }
            let hashed = data.clone();
            builder = tokio::task::spawn_blocking(move || {
                builder.update(&hashed);
                builder
            })
            .await
            .map_err(|e| DataError::Other(format!("hashing task failed: {e}")))?;
            if needed {
                let mut pieces = lock(&ahead.pieces);
                pieces.buffered += len;
                pieces.map.insert(global.start, data);
            }
            position += len;
        }
        digests.push(builder.finish().map_err(storage_error)?);
        ahead.files_read.fetch_add(1, Ordering::Relaxed);
    }
    Ok(digests)
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Driver {
    async fn run(self, plan: SendPlan, inbound: InboundRx) {
        let result = self.drive(plan, inbound).await;
        if let Err(error) = result {
            self.result.send_if_modified(|slot| {
                if slot.is_none() {
                    *slot = Some(Err(error));
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Runs the send; publishes a success itself (then lingers) and returns failures.
    async fn drive(&self, plan: SendPlan, mut inbound: InboundRx) -> Result<(), DataError> {
        let space = FileSpace::new(plan.files.iter().map(|file| file.size))
            .map_err(|e| DataError::Other(e.to_string()))?;
        let params = TransferParams::new(plan.session_id, space.total_len(), plan.block_size)
            .map_err(|e| DataError::Other(format!("transfer parameters: {e}")))?;
        let secret = SessionSecret {
            level: plan.cipher,
            key: &plan.key,
        };
        let mut base_limits = plan.rate;
        let mut server_share = self.core.outgoing_share_kbps();
        let limits = with_share(base_limits, server_share);
        let mut sender = Sender::new(params, sender_config(), limits, secret, Instant::now())
            .map_err(|e| DataError::Other(format!("packet protection: {e}")))?;
        let resumed_blocks = covered_blocks(&plan.resume, &params);
        sender.resume_from(&resumed_blocks);
        let resumed_bytes = range_bytes(&block_byte_ranges(&resumed_blocks, &params));
        // Bytes the read-ahead reads for hashing only.
        let mut skip = RangeSet::new();
        for range in block_byte_ranges(&resumed_blocks, &params) {
            skip.insert(range);
        }

        let ahead = Arc::new(ReadAhead {
            pieces: Mutex::new(Pieces::default()),
            room: Notify::new(),
            files_read: AtomicU64::new(0),
        });
        let file_count = plan.files.len();
        let reader = AbortOnDrop(tokio::spawn(read_ahead(
            ahead.clone(),
            plan.files,
            space,
            skip,
        )));
        let mut reader = Some(reader);
        let mut digests: Option<Vec<FileDigest>> = None;

        let peer = plan.peer;
        let mut out: Vec<u8> = Vec::with_capacity(MAX_BATCH * 1600);
        let mut sizes: Vec<usize> = Vec::with_capacity(MAX_BATCH);
        let mut cancelled = false;
        let mut failure: Option<DataError> = None;
        let mut finished_at: Option<Instant> = None;
        let mut last_progress: Option<Instant> = None;
        let mut dropped_seen = 0u64;

        loop {
            let now = Instant::now();
            // Commands and limits.
            let (rate, stop) = {
                let mut control = lock(&self.shared.control);
                (control.rate.take(), control.stop)
            };
            let share = self.core.outgoing_share_kbps();
            if rate.is_some() || share != server_share {
                if let Some(rate) = rate {
                    base_limits = rate;
                }
                server_share = share;
                sender.set_rate_limits(with_share(base_limits, server_share));
            }
            match stop {
                Some(Stop::Pause) => return Err(DataError::Cancelled),
                Some(Stop::Cancel) if !cancelled && finished_at.is_none() => {
                    cancelled = true;
                    sender.cancel();
                }
                _ => {}
            }

            // Received datagrams.
            while let Some(batch) = inbound.try_recv() {
                self.handle(&mut sender, now, batch);
            }

            // The read-ahead: evict what is acknowledged, notice its end or failure.
            if lock(&ahead.pieces).evict_acked(sender.acked(), &params) {
                ahead.room.notify_one();
            }
            if reader.as_ref().is_some_and(|task| task.0.is_finished()) {
                if let Some(mut task) = reader.take() {
                    match (&mut task.0).await {
                        Ok(Ok(list)) => digests = Some(list),
                        Ok(Err(error)) => failure = Some(error),
                        Err(error) => {
                            failure = Some(DataError::Other(format!("read-ahead failed: {error}")))
                        }
                    }
                }
                if failure.is_some() && finished_at.is_none() {
                    sender.cancel();
                }
            }

            // Peer silence.
            if finished_at.is_none()
                && failure.is_none()
                && !sender.is_complete()
                && now.saturating_duration_since(sender.last_ack_at()) > plan.peer_timeout
            {
                failure = Some(DataError::PeerSilent(format!(
                    "no acknowledgement from {peer} for {:.1} s",
                    plan.peer_timeout.as_secs_f64()
                )));
                sender.cancel();
            }

            // Transmit everything due.
            let mut sent_any = false;
            loop {
                {
                    let pieces = lock(&ahead.pieces);
                    let mut source = LockedSource(&pieces);
                    while sizes.len() < MAX_BATCH {
                        match sender.poll_transmit(now, &mut source, &mut out) {
                            Some(transmit) => sizes.push(transmit.size),
                            None => break,
                        }
                    }
                }
                if sizes.is_empty() {
                    break;
                }
                sent_any = true;
                self.core.send(peer, None, &out, &sizes).await;
                let full = sizes.len() >= MAX_BATCH;
                out.clear();
                sizes.clear();
                if !full {
                    break;
                }
            }

            // Progress.
            if last_progress.is_none_or(|at| now.saturating_duration_since(at) >= PROGRESS_INTERVAL)
            {
                last_progress = Some(now);
                dropped_seen = self.publish(&sender, &params, &ahead, resumed_bytes, dropped_seen);
            }

            // Endings.
            if finished_at.is_none() {
                if let Some(error) = failure.take() {
                    if sender.is_closed() {
                        self.publish(&sender, &params, &ahead, resumed_bytes, dropped_seen);
                        return Err(error);
                    }
                    failure = Some(error);
                } else if cancelled && sender.is_closed() {
                    self.publish(&sender, &params, &ahead, resumed_bytes, dropped_seen);
                    self.result.send_replace(Some(Err(DataError::Cancelled)));
                    finished_at = Some(now);
                } else if sender.is_complete() && sender.is_closed() && digests.is_some() {
                    dropped_seen =
                        self.publish(&sender, &params, &ahead, resumed_bytes, dropped_seen);
                    let digests = digests.clone().unwrap_or_default();
                    debug_assert_eq!(digests.len(), file_count);
                    let progress = lock(&self.shared.progress).clone();
                    self.result
                        .send_replace(Some(Ok(SendOutcome { digests, progress })));
                    finished_at = Some(now);
                }
            }
            if let Some(at) = finished_at {
                if now.saturating_duration_since(at) >= LINGER {
                    return Ok(());
                }
            }

            // Sleep until the next thing to do or a datagram.
            let mut deadline = sender
                .next_timeout()
                .map_or(now + MAX_SLEEP, |at| at.min(now + MAX_SLEEP));
            if reader.is_some() && sender.is_complete() {
                // Waiting for the last digests.
                deadline = deadline.min(now + Duration::from_millis(5));
            }
            if deadline <= now && !sent_any {
                deadline = now + Duration::from_millis(1);
            }
            if deadline > now {
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    batch = inbound.recv() => {
                        if let Some(batch) = batch {
                            self.handle(&mut sender, Instant::now(), batch);
                        }
                    }
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    fn handle(&self, sender: &mut Sender, now: Instant, mut batch: Inbound) {
        for item in &batch.items {
            let _ = sender.handle_datagram(now, &mut batch.buf[item.range.clone()]);
        }
    }

    /// Refreshes the shared counters; returns the drop count now known to the endpoint.
    fn publish(
        &self,
        sender: &Sender,
        params: &TransferParams,
        ahead: &ReadAhead,
        resumed_bytes: u64,
        dropped_seen: u64,
    ) -> u64 {
        let stats = sender.stats();
        let dropped = stats.dropped.total();
        let seen = self.core.report_session_drops(dropped, dropped_seen);
        {
            let mut progress = lock(&self.shared.progress);
            progress.bytes_sent = stats.bytes_sent;
            progress.bytes_acked = stats.bytes_acked;
            progress.block_size = params.block_size;
            progress.total_blocks = stats.total_blocks;
            progress.blocks_sent = stats.blocks_sent;
            progress.blocks_acked = stats.blocks_acked;
            progress.blocks_retransmitted = stats.blocks_retransmitted;
            progress.packets_sent = stats.packets_sent;
            progress.packets_received = stats.packets_received;
            progress.packets_dropped = dropped;
            progress.rate_kbps = stats.rate_bps / 1000;
            progress.round_trip_time_ms = stats.smoothed_rtt.as_secs_f64() * 1000.0;
            progress.files_read = ahead.files_read.load(Ordering::Relaxed);
            progress.resumed_bytes = resumed_bytes;
        }
        *lock(&self.shared.acked) = block_byte_ranges(sender.acked(), params);
        seen
    }
}

/// The sender's tunables: the defaults, except that the queueing delay the rate controller
/// tolerates is at least [`MIN_QUEUE_TARGET`], because this driver sends in bursts (one per
/// timer tick) that by themselves delay the last datagram of a burst by up to a tick.
fn sender_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.retransmit_margin = config.retransmit_margin.max(RETRANSMIT_MARGIN);
    config.rate_control.min_target_queue_delay = config
        .rate_control
        .min_target_queue_delay
        .max(MIN_QUEUE_TARGET);
    config
}

/// The transfer's limits with the endpoint's share of the server-wide limit added.
fn with_share(limits: RateLimits, share: Option<u64>) -> RateLimits {
    let server_kbps = match (limits.server_kbps, share) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    RateLimits {
        server_kbps,
        ..limits
    }
}
