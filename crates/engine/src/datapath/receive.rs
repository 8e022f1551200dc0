//! The receiving driver: a task per reception that runs [`slipstream_proto::Receiver`] over
//! the shared socket, and a writer task that drains received payload into the per-file
//! [`FileSink`]s (opened lazily), checkpoints them periodically, and commits or aborts them.
//!
//! The proto receiver writes into a bounded queue (its `available()` is the room left, so a
//! slow disk slows the sender through flow control and never loses data). Consecutive blocks
//! are gathered into runs of up to 1 MiB before they go to the writer.

use super::endpoint::{Core, Inbound, InboundRx, Registration};
use super::{
    block_byte_ranges, covered_blocks, lock, range_bytes, DataError, Progress, ReceiveCheckpoint,
    ReceivePlan, SinkOpener,
};
use bytes::{Bytes, BytesMut};
use slipstream_proto::{
    BlockSink, CloseReason, FileSpace, RangeSet, ReceiveOutcome, Receiver, SessionSecret, SinkFull,
    TransferParams, TransportConfig,
};
use slipstream_storage::data::{FileDigest, FileSink};
use slipstream_storage::{StorageError, StorageResult};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Received bytes waiting for storage, at most.
const QUEUE_BUDGET: u64 = 64 << 20;
/// Largest run of consecutive blocks handed to the writer as one piece.
const RUN_MAX: usize = 1 << 20;
/// Longest sleep of the driver.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// How often the shared counters are refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(20);
/// After completion, how long retransmissions (whose ACK was lost) are still answered.
const LINGER: Duration = Duration::from_millis(1500);

/// Where a reception stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Running,
    /// Every byte arrived and was handed to the writer.
    Complete,
    Failed(DataError),
    Aborted,
}

enum WriterCmd {
    Data(u64, Bytes),
    Checkpoint,
    Commit(Vec<FileDigest>, oneshot::Sender<Vec<StorageResult<()>>>),
    Abort(oneshot::Sender<()>),
}

/// What the writer shares with the rest (no channel sender, so the writer ends when the handle
/// and the driver are gone).
struct WriterLink {
    checkpoints: watch::Sender<Option<ReceiveCheckpoint>>,
    /// Bytes handed to the writer and not yet written.
    queued: AtomicU64,
    /// The smallest window of the open sinks that have one (u64::MAX: none).
    window: AtomicU64,
    /// Signalled after writes (room freed).
    room: Notify,
    failure: Mutex<Option<String>>,
}

/// What the handle and the driver share.
pub(crate) struct RecvShared {
    pub progress: Mutex<Progress>,
    pub stopped: watch::Sender<Option<DataError>>,
    state: watch::Sender<State>,
    writer: mpsc::UnboundedSender<WriterCmd>,
    link: Arc<WriterLink>,
    abort: AtomicBool,
    wake: Notify,
    file_count: usize,
}

impl RecvShared {
    /// The latest checkpoint channel.
    pub fn checkpoints(&self) -> watch::Receiver<Option<ReceiveCheckpoint>> {
        self.link.checkpoints.subscribe()
    }

    pub async fn finish(
        &self,
        digests: Vec<FileDigest>,
    ) -> Result<Vec<StorageResult<()>>, DataError> {
        if digests.len() != self.file_count {
            return Err(DataError::Other(format!(
                "{} digests for {} files",
                digests.len(),
                self.file_count
            )));
        }
        let mut state = self.state.subscribe();
        let reached = state
            .wait_for(|state| *state != State::Running)
            .await
            .map(|state| state.clone())
            .map_err(|_| DataError::Other("the reception ended".into()))?;
        match reached {
            State::Complete => {}
            State::Failed(error) => return Err(error),
            State::Aborted | State::Running => return Err(DataError::Cancelled),
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriterCmd::Commit(digests, reply))
            .map_err(|_| {
                DataError::Other("the reception was already finished or aborted".into())
            })?;
        answer
            .await
            .map_err(|_| DataError::Other("the reception's writer stopped".into()))
    }

    pub async fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        self.state.send_if_modified(|state| {
            if matches!(state, State::Running | State::Complete) {
                *state = State::Aborted;
                true
            } else {
                false
            }
        });
        let (reply, answer) = oneshot::channel();
        if self.writer.send(WriterCmd::Abort(reply)).is_ok() {
            let _ = answer.await;
        }
    }
}

/// Starts the driver and the writer of `plan`.
pub(crate) fn start(core: &Arc<Core>, plan: ReceivePlan) -> Arc<RecvShared> {
    let (writer_tx, writer_rx) = mpsc::unbounded_channel();
    let link = Arc::new(WriterLink {
        checkpoints: watch::channel(None).0,
        queued: AtomicU64::new(0),
        window: AtomicU64::new(u64::MAX),
        room: Notify::new(),
        failure: Mutex::new(None),
    });
    let shared = Arc::new(RecvShared {
        progress: Mutex::new(Progress {
            block_size: plan.block_size,
            ..Progress::default()
        }),
        stopped: watch::channel(None).0,
        state: watch::channel(State::Running).0,
        writer: writer_tx.clone(),
        link: link.clone(),
        abort: AtomicBool::new(false),
        wake: Notify::new(),
        file_count: plan.sizes.len(),
    });
    let fail = |message: String| {
        shared
            .state
            .send_replace(State::Failed(DataError::Other(message)));
    };
    let space = match FileSpace::new(plan.sizes.iter().copied()) {
        Ok(space) => space,
        Err(error) => {
            fail(error.to_string());
            return shared;
        }
    };
    let params = match TransferParams::new(plan.session_id, space.total_len(), plan.block_size) {
        Ok(params) => params,
        Err(error) => {
            fail(format!("transfer parameters: {error}"));
            return shared;
        }
    };
    let secret = SessionSecret {
        level: plan.cipher,
        key: &plan.key,
    };
    let mut receiver =
        match Receiver::new(params, TransportConfig::default(), secret, Instant::now()) {
            Ok(receiver) => receiver,
            Err(error) => {
                fail(format!("packet protection: {error}"));
                return shared;
            }
        };
    let Some((registration, inbound)) = core.register_receiver(plan.session_id) else {
        fail(format!(
            "session id {} is already receiving on this server",
            plan.session_id
        ));
        return shared;
    };

    // Resumed files: their durable ranges count as received (whole blocks only).
    let mut sinks: Vec<Option<Box<dyn FileSink>>> = plan.sizes.iter().map(|_| None).collect();
    let mut resumed = Vec::new();
    for (index, sink) in plan.resumed_sinks {
        for range in sink.resumed() {
            if let (Some(start), Some(end)) = (
                space.global_offset(index, range.start),
                space.global_offset(index, range.end),
            ) {
                resumed.push(start..end);
            }
        }
        match sinks.get_mut(index) {
            Some(slot) => *slot = Some(sink),
            None => {
                // Not a file of this transfer: nothing will ever write or commit it.
                tokio::spawn(async move {
                    let _ = sink.abort().await;
                });
            }
        }
    }
    let resumed_blocks = covered_blocks(&resumed, &params);
    receiver.resume_from(&resumed_blocks);
    let resumed_bytes = range_bytes(&block_byte_ranges(&resumed_blocks, &params));

    let writer = Writer {
        written: vec![0; plan.sizes.len()],
        sizes: plan.sizes,
        space,
        sinks,
        opener: plan.open_sink,
        link: link.clone(),
        finite_windows: BTreeMap::new(),
        failed: false,
    };
    tokio::spawn(writer.run(writer_rx, plan.checkpoint_interval));

    core.active_receives.fetch_add(1, Ordering::Relaxed);
    let driver = Driver {
        core: core.clone(),
        shared: shared.clone(),
        _registration: registration,
        peer_timeout: plan.peer_timeout,
        resumed_bytes,
    };
    let sink = QueueSink {
        writer: writer_tx,
        link,
        run: BytesMut::new(),
        run_start: 0,
        credit: u64::MAX,
    };
    tokio::spawn(driver.run(receiver, sink, inbound));
    shared
}

/// The proto receiver's sink: gathers runs of consecutive blocks and queues them for the
/// writer.
struct QueueSink {
    writer: mpsc::UnboundedSender<WriterCmd>,
    link: Arc<WriterLink>,
    run: BytesMut,
    run_start: u64,
    /// Extra cap on `available` (the incoming rate limit), in bytes beyond those received.
    credit: u64,
}

impl QueueSink {
    /// Hands the current run to the writer.
    fn flush(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let data = std::mem::replace(&mut self.run, BytesMut::with_capacity(64 << 10)).freeze();
        let len = data.len() as u64;
        if self
            .writer
            .send(WriterCmd::Data(self.run_start, data))
            .is_err()
        {
            self.link.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

impl BlockSink for QueueSink {
    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkFull> {
        let contiguous = offset == self.run_start + self.run.len() as u64;
        if !self.run.is_empty() && (!contiguous || self.run.len() + data.len() > RUN_MAX) {
            self.flush();
        }
        if self.run.is_empty() {
            self.run_start = offset;
        }
        self.run.extend_from_slice(data);
        self.link
            .queued
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn available(&self) -> u64 {
        QUEUE_BUDGET
            .saturating_sub(self.link.queued.load(Ordering::Relaxed))
            .min(self.link.window.load(Ordering::Relaxed))
            .min(self.credit)
    }
}

/// Owns the sinks.
struct Writer {
    sizes: Vec<u64>,
    written: Vec<u64>,
    space: FileSpace,
    sinks: Vec<Option<Box<dyn FileSink>>>,
    opener: SinkOpener,
    link: Arc<WriterLink>,
    /// Windows of open, unfinished sinks that are not unlimited.
    finite_windows: BTreeMap<usize, u64>,
    failed: bool,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<WriterCmd>, interval: Duration) {
        let interval = interval.max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(WriterCmd::Data(offset, data)) => {
                        let len = data.len() as u64;
                        if !self.failed {
                            if let Err(error) = self.write(offset, data).await {
                                self.fail(error);
                            }
                        }
                        self.link.queued.fetch_sub(len, Ordering::Relaxed);
                        self.link.room.notify_one();
                        dirty = true;
                    }
                    Some(WriterCmd::Checkpoint) => {
                        self.checkpoint().await;
                        dirty = false;
                    }
                    Some(WriterCmd::Commit(digests, reply)) => {
                        let _ = reply.send(self.commit(digests).await);
                        return;
                    }
                    Some(WriterCmd::Abort(reply)) => {
                        self.abort().await;
                        let _ = reply.send(());
                        return;
                    }
                },
                _ = ticker.tick() => {
                    if dirty {
                        self.checkpoint().await;
                        dirty = false;
                    }
                }
            }
        }
    }

    fn fail(&mut self, error: StorageError) {
        self.failed = true;
        let mut failure = lock(&self.link.failure);
        if failure.is_none() {
            *failure = Some(error.to_string());
        }
    }

    async fn sink(&mut self, index: usize) -> StorageResult<&mut Box<dyn FileSink>> {
        let slot = self
            .sinks
            .get_mut(index)
            .ok_or_else(|| StorageError::Backend(format!("no file {index} in this transfer")))?;
        if slot.is_none() {
            *slot = Some((self.opener)(index).await?);
        }
        slot.as_mut()
            .ok_or_else(|| StorageError::Backend(format!("file {index} could not be opened")))
    }

    async fn write(&mut self, offset: u64, data: Bytes) -> StorageResult<()> {
        let end = offset + data.len() as u64;
        let segments: Vec<_> = self.space.segments(offset..end).collect();
        for segment in segments {
            let index = segment.file_index;
            let piece = data.slice(
                (segment.global_range.start - offset) as usize
                    ..(segment.global_range.end - offset) as usize,
            );
            let len = piece.len() as u64;
            let sink = self.sink(index).await?;
            sink.write_at(segment.file_range.start, piece).await?;
            let window = sink.window();
            self.written[index] += len;
            if window == u64::MAX || self.written[index] >= self.sizes[index] {
                self.finite_windows.remove(&index);
            } else {
                self.finite_windows.insert(index, window);
            }
        }
        let window = self
            .finite_windows
            .values()
            .min()
            .copied()
            .unwrap_or(u64::MAX);
        self.link.window.store(window, Ordering::Relaxed);
        Ok(())
    }

    /// Checkpoints every open sink and publishes the reception's checkpoint.
    async fn checkpoint(&mut self) {
        if self.failed {
            return;
        }
        let mut files = Vec::new();
        let mut durable = RangeSet::new();
        for index in 0..self.sinks.len() {
            let Some(sink) = self.sinks[index].as_mut() else {
                continue;
            };
            match sink.checkpoint().await {
                Ok(checkpoint) => {
                    for range in &checkpoint.durable {
                        if let (Some(start), Some(end)) = (
                            self.space.global_offset(index, range.start),
                            self.space.global_offset(index, range.end),
                        ) {
                            durable.insert(start..end);
                        }
                    }
                    files.push((index, checkpoint));
                }
                Err(error) => {
                    self.fail(error);
                    return;
                }
            }
        }
        self.link.checkpoints.send_replace(Some(ReceiveCheckpoint {
            files,
            durable: durable.iter().collect(),
        }));
    }

    async fn commit(&mut self, digests: Vec<FileDigest>) -> Vec<StorageResult<()>> {
        let mut results = Vec::with_capacity(digests.len());
        for (index, digest) in digests.into_iter().enumerate() {
            let sink = match self.sinks.get_mut(index).and_then(Option::take) {
                Some(sink) => Ok(sink),
                None => (self.opener)(index).await,
            };
            results.push(match sink {
                Ok(sink) => sink.commit(digest).await,
                Err(error) => Err(error),
            });
        }
        results
    }

    async fn abort(&mut self) {
        for slot in &mut self.sinks {
            if let Some(sink) = slot.take() {
                if let Err(error) = sink.abort().await {
                    tracing::warn!("aborting a reception's file: {error}");
                }
            }
        }
    }
}

struct Driver {
    core: Arc<Core>,
    shared: Arc<RecvShared>,
    _registration: Registration,
    peer_timeout: Duration,
    resumed_bytes: u64,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.core.active_receives.fetch_sub(1, Ordering::Relaxed);
        self.shared.state.send_if_modified(|state| {
            if *state == State::Running {
                *state = State::Failed(DataError::Other("the reception driver stopped".into()));
                true
            } else {
                false
            }
        });
    }
}

/// Per-loop bookkeeping of the driver.
struct Talk {
    peer: Option<(SocketAddr, Option<IpAddr>)>,
    last_heard: Instant,
    close: Option<CloseReason>,
}

impl Driver {
    fn handle(
        &self,
        receiver: &mut Receiver,
        sink: &mut QueueSink,
        talk: &mut Talk,
        now: Instant,
        mut batch: Inbound,
    ) {
        for item in &batch.items {
            match receiver.handle_datagram(now, &mut batch.buf[item.range.clone()], sink) {
                ReceiveOutcome::Dropped(_) => {}
                outcome => {
                    talk.peer = Some((item.from, item.local_ip));
                    talk.last_heard = now;
                    if let ReceiveOutcome::Closed(reason) = outcome {
                        talk.close = Some(reason);
                    }
                }
            }
        }
    }

    fn end(&self, error: DataError, stopped: bool) {
        if stopped {
            self.shared.stopped.send_replace(Some(error.clone()));
        }
        self.shared.state.send_if_modified(|state| {
            if *state == State::Running {
                *state = State::Failed(error);
                true
            } else {
                false
            }
        });
    }

    async fn run(self, mut receiver: Receiver, mut sink: QueueSink, mut inbound: InboundRx) {
        let started = Instant::now();
        let mut talk = Talk {
            peer: None,
            last_heard: started,
            close: None,
        };
        let mut out = Vec::with_capacity(4096);
        let mut sizes = Vec::new();
        let mut completed_at: Option<Instant> = None;
        let mut last_progress: Option<Instant> = None;
        let mut dropped_seen = 0u64;
        let mut rate_sample = (started, receiver.stats().bytes_received);
        let mut rate_kbps = 0u64;
        let start_bytes = receiver.stats().bytes_received;
        let initial_window = TransportConfig::default().initial_window;
        loop {
            let now = Instant::now();
            if self.shared.abort.load(Ordering::Relaxed) {
                return;
            }
            while let Some(batch) = inbound.try_recv() {
                self.handle(&mut receiver, &mut sink, &mut talk, now, batch);
            }
            sink.flush();
            if let Some(message) = lock(&sink.link.failure).clone() {
                self.end(DataError::Storage(message), false);
                return;
            }

            // Flow control: queue room, sink windows and the incoming rate share.
            if let Some(kbps) = self.core.incoming_share_kbps() {
                let elapsed = now.saturating_duration_since(started).as_secs_f64();
                let allowed =
                    start_bytes + initial_window + (kbps as f64 * 1000.0 / 8.0 * elapsed) as u64;
                sink.credit = allowed.saturating_sub(receiver.stats().bytes_received);
            }
            receiver.update_window(sink.available());

            if let Some((peer, local_ip)) = talk.peer {
                while let Some(transmit) = receiver.poll_transmit(now, &mut out) {
                    sizes.push(transmit.size);
                }
                if !sizes.is_empty() {
                    self.core.send(peer, local_ip, &out, &sizes).await;
                    out.clear();
                    sizes.clear();
                }
            }

            if receiver.is_complete() && completed_at.is_none() {
                completed_at = Some(now);
                let _ = sink.writer.send(WriterCmd::Checkpoint);
                dropped_seen = self.publish(&receiver, &talk, rate_kbps, dropped_seen);
                self.shared.state.send_if_modified(|state| {
                    if *state == State::Running {
                        *state = State::Complete;
                        true
                    } else {
                        false
                    }
                });
            }
            if completed_at.is_none() {
                if talk.close == Some(CloseReason::Cancelled) {
                    self.publish(&receiver, &talk, rate_kbps, dropped_seen);
                    self.end(DataError::Cancelled, true);
                    return;
                }
                if now.saturating_duration_since(talk.last_heard) > self.peer_timeout {
                    self.publish(&receiver, &talk, rate_kbps, dropped_seen);
                    let error = DataError::PeerSilent(format!(
                        "no data from the sender for {:.1} s",
                        self.peer_timeout.as_secs_f64()
                    ));
                    self.end(error, true);
                    return;
                }
            }
            if let Some(at) = completed_at {
                if talk.close.is_some() || now.saturating_duration_since(at) >= LINGER {
                    self.publish(&receiver, &talk, rate_kbps, dropped_seen);
                    return;
                }
            }

            if last_progress.is_none_or(|at| now.saturating_duration_since(at) >= PROGRESS_INTERVAL)
            {
                last_progress = Some(now);
                let elapsed = now.saturating_duration_since(rate_sample.0);
                if elapsed >= Duration::from_secs(1) {
                    let bytes = receiver.stats().bytes_received;
                    rate_kbps = ((bytes - rate_sample.1) as f64 * 8.0
                        / 1000.0
                        / elapsed.as_secs_f64()) as u64;
                    rate_sample = (now, bytes);
                }
                dropped_seen = self.publish(&receiver, &talk, rate_kbps, dropped_seen);
            }

            let mut deadline = match (talk.peer, receiver.next_timeout()) {
                (Some(_), Some(at)) => at.min(now + MAX_SLEEP),
                _ => now + MAX_SLEEP,
            };
            if deadline <= now {
                deadline = now + Duration::from_millis(1);
            }
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = sink.link.room.notified() => {}
                batch = inbound.recv() => {
                    if let Some(batch) = batch {
                        self.handle(&mut receiver, &mut sink, &mut talk, Instant::now(), batch);
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
        }
    }

    /// Refreshes the shared counters; returns the drop count now known to the endpoint.
    fn publish(&self, receiver: &Receiver, talk: &Talk, rate_kbps: u64, dropped_seen: u64) -> u64 {
        let stats = receiver.stats();
        let dropped = stats.dropped.total();
        let seen = self.core.report_session_drops(dropped, dropped_seen);
        let mut progress = lock(&self.shared.progress);
        progress.bytes_received = stats.bytes_received;
        progress.bytes_acked = stats.bytes_received;
        progress.total_blocks = stats.total_blocks;
        progress.blocks_acked = stats.blocks_received;
        progress.packets_sent = stats.packets_sent;
        progress.packets_received = stats.packets_received;
        progress.packets_dropped = dropped;
        progress.rate_kbps = rate_kbps;
        progress.peer = talk.peer.map(|(peer, _)| peer);
        progress.resumed_bytes = self.resumed_bytes;
        seen
    }
}
