//! The receiving driver: a task per reception that runs [`slipstream_proto::Receiver`] over
//! the shared socket, and a writer task that drains received payload into the per-file
//! [`FileSink`]s (opened lazily), checkpoints them periodically, and commits or aborts them.
//!
//! Open files stay bounded: a reopenable sink (File) is checkpointed and closed as soon as its
//! file is complete, and when the server's bound on open sinks ([`super::open_sinks`]) is
//! reached the writer closes its least recently written one the same way. A closed sink is
//! reopened from its checkpoint when more of its data arrives, and to commit or abort it. The
//! checkpoints the writer publishes carry every file's latest sink checkpoint, closed ones
//! included, so the control plane can persist them all.
//!
//! The proto receiver writes into a bounded queue (its `available()` is the room left, so a
//! slow disk slows the sender through flow control and never loses data). Consecutive blocks
//! are gathered into runs of up to 1 MiB before they go to the writer.

use super::endpoint::{Core, Inbound, InboundRx, Registration};
use super::open_sinks::{OpenSinks, Slot};
use super::{
    block_byte_ranges, covered_blocks, lock, range_bytes, DataError, Progress, ReceiveCheckpoint,
    ReceivePlan, SinkOpener, SinkRequest,
};
use bytes::{Bytes, BytesMut};
use slipstream_proto::{
    BlockSink, CloseReason, FileSpace, RangeSet, ReceiveOutcome, Receiver, SessionSecret, SinkFull,
    TransferParams, TransportConfig,
};
use slipstream_storage::data::{FileDigest, FileSink, SinkCheckpoint};
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
/// The checkpoint of a sink closed between two periodic checkpoints is published after at
/// most this long (while data keeps coming; else at the next periodic one).
const PUBLISH_CLOSED: Duration = Duration::from_secs(1);

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
    /// Checkpoint every open sink, answer the last checkpoint, and end (the files stay).
    Close(oneshot::Sender<Option<ReceiveCheckpoint>>),
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

    /// Stops the driver: nothing more is received.
    fn stop(&self) {
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
    }

    pub async fn abort(&self) {
        self.stop();
        let (reply, answer) = oneshot::channel();
        if self.writer.send(WriterCmd::Abort(reply)).is_ok() {
            let _ = answer.await;
        }
    }

    pub async fn close(&self) -> Option<ReceiveCheckpoint> {
        self.stop();
        let (reply, answer) = oneshot::channel();
        self.writer.send(WriterCmd::Close(reply)).ok()?;
        answer.await.ok().flatten()
    }
}

/// Starts the driver and the writer of `plan`; reopenable sinks take their slots from
/// `open_sinks`.
pub(crate) fn start(
    core: &Arc<Core>,
    plan: ReceivePlan,
    open_sinks: Arc<OpenSinks>,
) -> Arc<RecvShared> {
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
    let mut sinks: Vec<Option<OpenSink>> = plan.sizes.iter().map(|_| None).collect();
    let mut resumed = Vec::new();
    let mut have = RangeSet::new();
    let global = |index: usize, ranges: &[std::ops::Range<u64>]| -> Vec<std::ops::Range<u64>> {
        ranges
            .iter()
            .filter_map(|range| {
                Some(
                    space.global_offset(index, range.start)?
                        ..space.global_offset(index, range.end)?,
                )
            })
            .collect()
    };
    let mut uses = 0u64;
    let mut lru = BTreeMap::new();
    for (index, sink) in plan.resumed_sinks {
        let ranges = global(index, &sink.resumed());
        match sinks.get_mut(index) {
            Some(place) => {
                uses += 1;
                let slot = sink.reopenable().then(|| open_sinks.take_over());
                if slot.is_some() {
                    lru.insert(uses, index);
                }
                *place = Some(OpenSink {
                    sink,
                    slot,
                    last_use: uses,
                });
            }
            None => {
                // Not a file of this transfer: nothing will ever write or commit it.
                tokio::spawn(async move {
                    let _ = sink.abort().await;
                });
                continue;
            }
        }
        for range in ranges {
            have.insert(range.clone());
            resumed.push(range);
        }
    }
    let mut states = BTreeMap::new();
    for (index, checkpoint) in plan.resumed_closed {
        if index >= sinks.len() || sinks[index].is_some() {
            continue;
        }
        for range in global(index, &checkpoint.durable) {
            have.insert(range.clone());
            resumed.push(range);
        }
        states.insert(index, Arc::new(checkpoint));
    }
    let resumed_blocks = covered_blocks(&resumed, &params);
    receiver.resume_from(&resumed_blocks);
    let resumed_bytes = range_bytes(&block_byte_ranges(&resumed_blocks, &params));

    let writer = Writer {
        space,
        sinks,
        opener: plan.open_sink,
        link: link.clone(),
        finite_windows: BTreeMap::new(),
        failed: false,
        have,
        states,
        lru,
        uses,
        open_sinks,
        unpublished: false,
        last_published: Instant::now(),
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

/// One open sink of the writer.
struct OpenSink {
    sink: Box<dyn FileSink>,
    /// The server-wide slot of a reopenable sink; `None` for the others (S3), which stay open
    /// until commit or abort.
    slot: Option<Slot>,
    /// The writer's use count when it was last written (least recently used goes first).
    last_use: u64,
}

/// Owns the sinks.
struct Writer {
    space: FileSpace,
    sinks: Vec<Option<OpenSink>>,
    opener: SinkOpener,
    link: Arc<WriterLink>,
    /// Windows of open, unfinished sinks that are not unlimited.
    finite_windows: BTreeMap<usize, u64>,
    failed: bool,
    /// Global byte ranges written or resumed: a file is complete when they cover it.
    have: RangeSet,
    /// The latest checkpoint of every file that has one, open or closed, until it is
    /// committed; a closed sink is reopened from it.
    states: BTreeMap<usize, Arc<SinkCheckpoint>>,
    /// The open sinks that hold a slot, by last use (use count → file index).
    lru: BTreeMap<u64, usize>,
    uses: u64,
    open_sinks: Arc<OpenSinks>,
    /// A sink was closed since the last published checkpoint.
    unpublished: bool,
    last_published: Instant,
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
                        if self.unpublished && self.last_published.elapsed() >= PUBLISH_CLOSED {
                            self.publish();
                        }
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
                    Some(WriterCmd::Close(reply)) => {
                        self.checkpoint().await;
                        let _ = reply.send(self.link.checkpoints.borrow().clone());
                        // Dropping the writer closes the sinks; checkpointed ones keep their
                        // files (and uploads) for the next session.
                        return;
                    }
                },
                _ = ticker.tick() => {
                    if dirty {
                        self.checkpoint().await;
                        dirty = false;
                    } else if self.unpublished && !self.failed {
                        self.publish();
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

    /// The global byte range of file `index`.
    fn file_range(&self, index: usize) -> std::ops::Range<u64> {
        self.space.file_range(index).unwrap_or(0..0)
    }

    /// True when every byte of file `index` was written or resumed.
    fn is_complete(&self, index: usize) -> bool {
        let range = self.file_range(index);
        self.have.count_in(range.clone()) >= range.end - range.start
    }

    /// The sink of file `index`, opened (or reopened from its checkpoint) if needed, and
    /// marked as just used.
    async fn sink(&mut self, index: usize) -> StorageResult<&mut Box<dyn FileSink>> {
        if index >= self.sinks.len() {
            return Err(StorageError::Backend(format!(
                "no file {index} in this transfer"
            )));
        }
        if self.sinks[index].is_none() {
            let resume = self.states.get(&index).map(|c| c.state.clone());
            // A closed sink's data must still be there: fail rather than start it afresh.
            let resume_only = resume.is_some();
            let sink = (self.opener)(SinkRequest {
                index,
                resume,
                resume_only,
            })
            .await?;
            let slot = if sink.reopenable() {
                match self.take_slot().await {
                    Ok(slot) => Some(slot),
                    Err(error) => {
                        // Kept open without a slot, so that commit or abort still ends it.
                        self.sinks[index] = Some(OpenSink {
                            sink,
                            slot: None,
                            last_use: 0,
                        });
                        return Err(error);
                    }
                }
            } else {
                None
            };
            self.sinks[index] = Some(OpenSink {
                sink,
                slot,
                last_use: 0,
            });
        }
        self.uses += 1;
        let uses = self.uses;
        let open = self.sinks[index]
            .as_mut()
            .ok_or_else(|| StorageError::Backend(format!("file {index} could not be opened")))?;
        if open.slot.is_some() {
            self.lru.remove(&open.last_use);
            self.lru.insert(uses, index);
        }
        open.last_use = uses;
        Ok(&mut open.sink)
    }

    /// A slot for one more open reopenable sink. When the server has none left, closes this
    /// reception's least recently used sink (freeing its slot) and tries again; with none of
    /// its own open, goes one over the limit so that this reception makes progress.
    async fn take_slot(&mut self) -> StorageResult<Slot> {
        loop {
            if let Some(slot) = self.open_sinks.try_take() {
                return Ok(slot);
            }
            let Some(&index) = self.lru.values().next() else {
                return Ok(self.open_sinks.take_over());
            };
            self.close(index).await?;
        }
    }

    /// Checkpoints the open sink of file `index` and closes it (freeing its slot); its
    /// checkpoint is kept to reopen it. A sink whose checkpoint fails stays open.
    async fn close(&mut self, index: usize) -> StorageResult<()> {
        let Some(mut open) = self.sinks.get_mut(index).and_then(Option::take) else {
            return Ok(());
        };
        match open.sink.checkpoint().await {
            Ok(checkpoint) => {
                self.lru.remove(&open.last_use);
                self.finite_windows.remove(&index);
                self.states.insert(index, Arc::new(checkpoint));
                self.unpublished = true;
                Ok(())
            }
            Err(error) => {
                self.sinks[index] = Some(open);
                Err(error)
            }
        }
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
            let sink = self.sink(index).await?;
            sink.write_at(segment.file_range.start, piece).await?;
            let window = sink.window();
            self.have.insert(segment.global_range.clone());
            let complete = self.is_complete(index);
            if window == u64::MAX || complete {
                self.finite_windows.remove(&index);
            } else {
                self.finite_windows.insert(index, window);
            }
            let reopenable = self.sinks[index]
                .as_ref()
                .is_some_and(|open| open.slot.is_some());
            if complete && reopenable {
                self.close(index).await?;
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
        for index in 0..self.sinks.len() {
            let Some(open) = self.sinks[index].as_mut() else {
                continue;
            };
            match open.sink.checkpoint().await {
                Ok(checkpoint) => {
                    self.states.insert(index, Arc::new(checkpoint));
                }
                Err(error) => {
                    self.fail(error);
                    return;
                }
            }
        }
        self.publish();
    }

    /// Publishes the latest checkpoint of every file that has one (open sinks as of their
    /// last checkpoint, which stays valid: it only claims less than they hold now).
    fn publish(&mut self) {
        let mut durable = RangeSet::new();
        let mut files = Vec::with_capacity(self.states.len());
        for (&index, checkpoint) in &self.states {
            for range in &checkpoint.durable {
                if let (Some(start), Some(end)) = (
                    self.space.global_offset(index, range.start),
                    self.space.global_offset(index, range.end),
                ) {
                    durable.insert(start..end);
                }
            }
            files.push((index, checkpoint.clone()));
        }
        self.link.checkpoints.send_replace(Some(ReceiveCheckpoint {
            files,
            durable: durable.iter().collect(),
        }));
        self.unpublished = false;
        self.last_published = Instant::now();
    }

    /// Opens a closed sink from its checkpoint to commit or abort it (`resume_only`: an error,
    /// `NotFound` when its data is gone); `None` when the file has no checkpoint. Takes `&mut`
    /// so that the future is `Send` (the writer holds sinks, which are not `Sync`).
    async fn reopen(&mut self, index: usize) -> Option<StorageResult<Box<dyn FileSink>>> {
        let checkpoint = self.states.get(&index)?;
        Some(
            (self.opener)(SinkRequest {
                index,
                resume: Some(checkpoint.state.clone()),
                resume_only: true,
            })
            .await,
        )
    }

    async fn commit(&mut self, digests: Vec<FileDigest>) -> Vec<StorageResult<()>> {
        let mut results = Vec::with_capacity(digests.len());
        for (index, digest) in digests.into_iter().enumerate() {
            // An open sink keeps its slot until its commit is done.
            let (sink, _slot) = match self.sinks.get_mut(index).and_then(Option::take) {
                Some(open) => {
                    self.lru.remove(&open.last_use);
                    (Ok(open.sink), open.slot)
                }
                None => match self.reopen(index).await {
                    Some(reopened) => (reopened, None),
                    // Never opened (an empty file, say): opened and committed now.
                    None => (
                        (self.opener)(SinkRequest {
                            index,
                            resume: None,
                            resume_only: false,
                        })
                        .await,
                        None,
                    ),
                },
            };
            results.push(match sink {
                Ok(sink) => sink.commit(digest).await,
                Err(error) => Err(error),
            });
            self.states.remove(&index);
        }
        results
    }

    async fn abort(&mut self) {
        for index in 0..self.sinks.len() {
            let reopened = match self.sinks[index].take() {
                Some(open) => Some(Ok(open.sink)),
                None => self.reopen(index).await,
            };
            match reopened {
                Some(Ok(sink)) => {
                    if let Err(error) = sink.abort().await {
                        tracing::warn!("aborting a reception's file: {error}");
                    }
                }
                // Its checkpoint's data is gone already: nothing to remove.
                Some(Err(StorageError::NotFound(_))) | None => {}
                Some(Err(error)) => {
                    tracing::warn!("cannot reopen a reception's file to discard it: {error}");
                }
            }
        }
        self.lru.clear();
        self.states.clear();
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
