//! The UDP data path: one socket (the server's `--recv-port`) that carries every transfer in
//! both directions, demultiplexed by the protocol's session id, and the drivers that run
//! [`slipstream_proto::Sender`] over storage readers and [`slipstream_proto::Receiver`] over
//! storage sinks, with real time and real datagrams.
//!
//! The control plane negotiates a session over HTTPS (session id chosen by the receiver, a
//! random 32-byte key, the cipher level, the block size, the file sizes, the byte ranges the
//! receiver already has) and then calls [`DataEndpoint::start_send`] on the sending server and
//! [`DataEndpoint::start_receive`] on the receiving one.
//!
//! CONTRACT (written before the implementation; the implementer fills in the bodies and may add
//! fields, methods and modules, but keeps these names and meanings): the types and methods
//! below.
//!
//! Implementation:
//! - `endpoint`: the socket (32 MiB kernel buffers, forced past `rmem_max` when privileged),
//!   quinn-udp batched I/O (GSO out, recvmmsg/GRO in) and the receive task. DATA and CLOSE go
//!   to the receiving session of the header's session id, ACK to the sending one, so one
//!   endpoint can send to itself. Each session's inbound queue holds at most 32 MiB.
//! - `send`: a driver task per send (wakes on ACKs or about every millisecond, sends what the
//!   pacer allows in GSO batches) and a read-ahead task (4 MiB pieces, at most 64 MiB buffered,
//!   a piece is dropped once all its blocks are acknowledged; every byte is hashed in order).
//! - `receive`: a driver task per reception (the proto receiver writes into a queue of at most
//!   64 MiB, which is its flow-control window) and a writer task that owns the sinks: opens
//!   them lazily, writes runs of up to 1 MiB, checkpoints every `checkpoint_interval` and on
//!   completion, and commits or aborts them. A [reopenable](FileSink::reopenable) sink (File)
//!   is checkpointed and closed as soon as its file is complete, and the writer reopens it
//!   from that checkpoint to commit it.
//! - `open_sinks`: the server-wide bound on open reopenable sinks (at most 512, or a quarter
//!   of the open-file limit). A writer that needs one more when the bound is reached closes
//!   its least recently used one (checkpointed first, reopened on demand), so a transfer of
//!   any number of files holds a bounded number of descriptors.
//! - Progress counters are refreshed by the drivers every 20 ms; reading them takes a lock.

mod endpoint;
mod open_sinks;
mod receive;
mod send;

pub use open_sinks::{limit_for_this_process as open_sink_limit_for_this_process, MAX_OPEN_SINKS};

use slipstream_proto::{CipherLevel, RangeSet, RateLimits, TransferParams};
use slipstream_storage::data::{FileDigest, FileSink, ObjectReader, SinkCheckpoint};
use slipstream_storage::StorageResult;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Why a data transfer stopped short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// No acknowledgement from the peer for too long (the message says how long).
    #[error("{0}")]
    PeerSilent(String),
    /// Reading the source or writing the sink failed (the storage error's message).
    #[error("{0}")]
    Storage(String),
    /// Cancelled locally or by the peer.
    #[error("cancelled")]
    Cancelled,
    /// Anything else (socket errors, protocol setup).
    #[error("{0}")]
    Other(String),
}

/// Counters of one direction of one transfer, as the API's Transfer reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    /// Receiving side: distinct payload bytes received (including resumed ones).
    pub bytes_received: u64,
    pub block_size: u32,
    pub total_blocks: u64,
    pub blocks_sent: u64,
    pub blocks_acked: u64,
    pub blocks_retransmitted: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Datagrams dropped as forged, replayed, corrupted or malformed.
    pub packets_dropped: u64,
    /// Current send rate, kbit/s.
    pub rate_kbps: u64,
    pub round_trip_time_ms: f64,
    /// Sending side: files whose digest is known (read completely).
    pub files_read: u64,
    /// Where the peer's datagrams come from (receiving side), once known.
    pub peer: Option<SocketAddr>,
    /// Bytes the receiver already had when this run started (resume); the rest was re-sent.
    pub resumed_bytes: u64,
}

/// One file to send, in transfer order.
pub struct SendFile {
    pub reader: Box<dyn ObjectReader>,
    pub size: u64,
}

/// Everything the sending driver needs.
pub struct SendPlan {
    pub session_id: u32,
    /// The receiver's UDP address.
    pub peer: SocketAddr,
    pub cipher: CipherLevel,
    pub key: [u8; 32],
    pub block_size: u32,
    pub files: Vec<SendFile>,
    /// Global byte ranges (files laid end to end in order) the receiver already has durably.
    pub resume: Vec<Range<u64>>,
    pub rate: RateLimits,
    /// Fail when no acknowledgement arrives for this long.
    pub peer_timeout: Duration,
}

/// How a finished send ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOutcome {
    /// Every file's digest, in order (computed while reading; ranges skipped by a resume are
    /// read for hashing only).
    pub digests: Vec<FileDigest>,
    pub progress: Progress,
}

/// A running send. Dropping it does not stop the transfer; `cancel` or `pause` does.
pub struct SendHandle {
    shared: Arc<send::SendShared>,
    result: watch::Receiver<Option<Result<SendOutcome, DataError>>>,
}

impl SendHandle {
    /// The counters right now.
    pub fn progress(&self) -> Progress {
        lock(&self.shared.progress).clone()
    }
    /// Global byte ranges the receiver acknowledged (for the sender's own checkpoint).
    pub fn acked(&self) -> Vec<Range<u64>> {
        lock(&self.shared.acked).clone()
    }
    /// Changes the rate limits at once.
    pub fn set_rate(&self, rate: RateLimits) {
        lock(&self.shared.control).rate = Some(rate);
        self.shared.wake.notify_one();
    }
    /// Stops sending and tells the receiver the transfer is cancelled (CLOSE).
    pub fn cancel(&self) {
        lock(&self.shared.control)
            .stop
            .get_or_insert(send::Stop::Cancel);
        self.shared.wake.notify_one();
    }
    /// Stops sending without telling the receiver (suspend): a later `start_send` with the
    /// receiver's durable ranges continues.
    pub fn pause(&self) {
        lock(&self.shared.control)
            .stop
            .get_or_insert(send::Stop::Pause);
        self.shared.wake.notify_one();
    }
    /// Waits until every byte is acknowledged (then the outcome has the digests), or the send
    /// stopped (cancel → `DataError::Cancelled`, pause → `DataError::Cancelled`, or failure).
    pub async fn wait(&mut self) -> Result<SendOutcome, DataError> {
        match self.result.wait_for(Option::is_some).await {
            Ok(result) => result
                .clone()
                .unwrap_or_else(|| Err(DataError::Other("the send ended without a result".into()))),
            Err(_) => Err(DataError::Other(
                "the send driver stopped unexpectedly".into(),
            )),
        }
    }
}

/// Which sink the receiving data path asks its [`SinkOpener`] for.
#[derive(Debug, Clone)]
pub struct SinkRequest {
    /// The file's index in the transfer.
    pub index: usize,
    /// The state of a checkpoint of this file's earlier sink, to continue from
    /// ([`slipstream_storage::data::SinkOptions::resume`]).
    pub resume: Option<serde_json::Value>,
    /// With `resume`: fail rather than start afresh when the state cannot be resumed
    /// ([`slipstream_storage::data::SinkOptions::resume_only`]).
    pub resume_only: bool,
}

/// Opens the sink of a file: when its first byte arrives (sinks are opened lazily so that a
/// transfer of many files does not hold a descriptor per file from the start), and again from
/// a checkpoint's state when a closed sink is needed (more data, commit or abort).
pub type SinkOpener = Arc<
    dyn Fn(SinkRequest) -> Pin<Box<dyn Future<Output = StorageResult<Box<dyn FileSink>>> + Send>>
        + Send
        + Sync,
>;

/// Everything the receiving driver needs.
pub struct ReceivePlan {
    pub session_id: u32,
    pub cipher: CipherLevel,
    pub key: [u8; 32],
    pub block_size: u32,
    /// File sizes in transfer order.
    pub sizes: Vec<u64>,
    pub open_sink: SinkOpener,
    /// Sinks already opened by the control plane on resume (index → sink), whose
    /// `resumed()` ranges count as received.
    pub resumed_sinks: Vec<(usize, Box<dyn FileSink>)>,
    /// Files of a resumed reception whose sinks are closed (reopenable ones, which the control
    /// plane opened only to learn what they hold): the checkpoint to reopen each from, whose
    /// `durable` ranges (the reopened sink's `resumed()`) count as received.
    pub resumed_closed: Vec<(usize, SinkCheckpoint)>,
    /// How often to checkpoint the sinks (api.md `checkpointFrequencySeconds`).
    pub checkpoint_interval: Duration,
    /// Give up when the sender is silent this long before all bytes arrived.
    pub peer_timeout: Duration,
}

/// A checkpoint of a whole reception: the latest sink checkpoint of every file that has one
/// and is not committed yet (open sinks and closed ones alike), and the global byte ranges
/// that are durable. A file's entry is the same `Arc` from one checkpoint to the next while
/// it does not change (a closed sink's), so a consumer can skip what it already saved.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveCheckpoint {
    pub files: Vec<(usize, Arc<SinkCheckpoint>)>,
    pub durable: Vec<Range<u64>>,
}

/// A running reception.
pub struct ReceiveHandle {
    shared: Arc<receive::RecvShared>,
}

impl ReceiveHandle {
    /// The counters right now.
    pub fn progress(&self) -> Progress {
        lock(&self.shared.progress).clone()
    }
    /// The latest checkpoint (taken every `checkpoint_interval`), for the control plane to
    /// persist.
    pub fn checkpoints(&self) -> tokio::sync::watch::Receiver<Option<ReceiveCheckpoint>> {
        self.shared.checkpoints()
    }
    /// Waits until every byte has arrived (or fails), then commits every file's sink with its
    /// digest (in file order; closed sinks are reopened from their checkpoint, files never
    /// opened, e.g. empty ones, are opened and committed too). Returns one result per file; the
    /// reception ends either way.
    pub async fn finish(
        &self,
        digests: Vec<FileDigest>,
    ) -> Result<Vec<StorageResult<()>>, DataError> {
        self.shared.finish(digests).await
    }
    /// Aborts every opened sink (closed ones are reopened from their checkpoint to be aborted)
    /// and forgets the session.
    pub async fn abort(&self) {
        self.shared.abort().await
    }
    /// Ends the session without discarding anything: nothing more is received, every open sink
    /// is checkpointed and closed (its file or upload stays for a later session), and the last
    /// checkpoint is returned for the control plane to save. `None` when the session's writer
    /// had already ended.
    pub async fn close(&self) -> Option<ReceiveCheckpoint> {
        self.shared.close().await
    }
    /// Resolves when the sender cancelled (CLOSE with reason cancelled) or went silent.
    pub async fn stopped(&self) -> DataError {
        let mut stopped = self.shared.stopped.subscribe();
        let reason = match stopped.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The reception is gone without a reason: nothing will ever stop it now.
            None => std::future::pending().await,
        }
    }
}

/// Server-wide counters of the data socket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    /// Datagrams for no known session, or dropped by a session as forged/replayed/corrupt.
    pub datagrams_dropped: u64,
}

/// The data socket of a server.
pub struct DataEndpoint {
    core: Arc<endpoint::Core>,
    receive_task: tokio::task::JoinHandle<()>,
    open_sinks: Arc<open_sinks::OpenSinks>,
}

impl Drop for DataEndpoint {
    fn drop(&mut self) {
        self.receive_task.abort();
    }
}

impl DataEndpoint {
    /// Binds the UDP socket (large send and receive buffers) and starts its I/O tasks.
    pub async fn bind(
        address: SocketAddr,
        outgoing_limit_kbps: Option<u64>,
        incoming_limit_kbps: Option<u64>,
    ) -> std::io::Result<Arc<DataEndpoint>> {
        let core = Arc::new(endpoint::Core::bind(
            address,
            outgoing_limit_kbps,
            incoming_limit_kbps,
        )?);
        let receive_task = tokio::spawn(core.clone().receive_loop());
        Ok(Arc::new(DataEndpoint {
            core,
            receive_task,
            open_sinks: open_sinks::OpenSinks::new(open_sinks::limit_for_this_process()),
        }))
    }
    /// How many reopenable sinks (File) the receptions of this endpoint keep open at most
    /// (each may go one over while others hold every slot); set at bind from the open-file
    /// limit (see [`open_sink_limit_for_this_process`]).
    pub fn open_sink_limit(&self) -> usize {
        self.open_sinks.limit()
    }
    /// Changes [`DataEndpoint::open_sink_limit`] (at least 1); sinks open beyond a lowered
    /// limit are closed as their receptions need new ones.
    pub fn set_open_sink_limit(&self, limit: usize) {
        self.open_sinks.set_limit(limit);
    }
    /// Reopenable sinks open right now, over all receptions.
    pub fn open_sinks(&self) -> usize {
        self.open_sinks.open()
    }
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local_addr()
    }
    /// A session id unused by any live session of this endpoint (nonzero, random). It stays
    /// reserved (never handed out again) until `start_receive` uses it, for up to 10 minutes.
    pub fn allocate_session_id(&self) -> u32 {
        self.core.allocate_session_id()
    }
    pub fn stats(&self) -> EndpointStats {
        use std::sync::atomic::Ordering::Relaxed;
        EndpointStats {
            datagrams_received: self.core.received.load(Relaxed),
            datagrams_sent: self.core.sent.load(Relaxed),
            datagrams_dropped: self.core.dropped.load(Relaxed),
        }
    }
    /// The kernel socket buffer sizes granted (receive, send), as Linux reports them (twice
    /// the requested value).
    pub fn socket_buffer_sizes(&self) -> (usize, usize) {
        self.core.buffer_sizes()
    }
    /// Test and diagnostic aid: drops this fraction (0.0-1.0) of the datagrams arriving at
    /// this endpoint, at random, as a lossy path would (counted as dropped). 0 turns it off.
    pub fn simulate_inbound_loss(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1e6) as u64;
        self.core
            .inbound_loss_ppm
            .store(ppm, std::sync::atomic::Ordering::Relaxed);
    }
    /// Starts sending. Must be called inside a tokio runtime.
    pub fn start_send(self: &Arc<Self>, plan: SendPlan) -> SendHandle {
        let (shared, result) = send::start(&self.core, plan);
        SendHandle { shared, result }
    }
    /// Starts receiving a negotiated session; datagrams for `plan.session_id` go to it. Must
    /// be called inside a tokio runtime.
    pub fn start_receive(self: &Arc<Self>, plan: ReceivePlan) -> ReceiveHandle {
        ReceiveHandle {
            shared: receive::start(&self.core, plan, self.open_sinks.clone()),
        }
    }
}

/// Locks a mutex, ignoring poisoning: every critical section of the data path leaves its data
/// consistent (plain counters and collections updated in single steps), so a panic elsewhere
/// while holding a lock does not make the data unusable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The blocks whose bytes all lie in `bytes` (global byte ranges; touching ranges are merged
/// first, so a block straddling two files counts when both pieces are there).
pub(crate) fn covered_blocks(bytes: &[Range<u64>], params: &TransferParams) -> RangeSet {
    let mut merged = RangeSet::new();
    for range in bytes {
        merged.insert(range.start..range.end.min(params.total_len));
    }
    let block_size = params.block_size.max(1) as u64;
    let mut blocks = RangeSet::new();
    for range in merged.iter() {
        let first = range.start.div_ceil(block_size);
        let end = if range.end >= params.total_len {
            params.total_blocks()
        } else {
            range.end / block_size
        };
        if first < end {
            blocks.insert(first..end);
        }
    }
    blocks
}

/// The global byte ranges of a set of blocks.
pub(crate) fn block_byte_ranges(blocks: &RangeSet, params: &TransferParams) -> Vec<Range<u64>> {
    blocks
        .iter()
        .filter(|range| range.start < range.end)
        .map(|range| params.block_bytes(range.start).start..params.block_bytes(range.end - 1).end)
        .collect()
}

/// Bytes in a list of disjoint ranges.
pub(crate) fn range_bytes(ranges: &[Range<u64>]) -> u64 {
    ranges
        .iter()
        .map(|range| range.end.saturating_sub(range.start))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_covered_by_byte_ranges() {
        let params = TransferParams::new(1, 1000, 100).unwrap();
        // 0..250 covers blocks 0 and 1, 300..420 block 3; 950..1000 is only part of the last
        // block (900..1000).
        let blocks = covered_blocks(&[0..250, 300..420, 950..1000], &params);
        assert_eq!(blocks.iter().collect::<Vec<_>>(), vec![0..2, 3..4]);
        // Touching ranges (as from two files) are merged first: 0..420 covers blocks 0..4.
        let blocks = covered_blocks(&[0..250, 300..420, 250..300], &params);
        assert_eq!(blocks.iter().collect::<Vec<_>>(), vec![0..4]);
        let blocks = covered_blocks(std::slice::from_ref(&(900..1000)), &params);
        assert_eq!(blocks.iter().collect::<Vec<_>>(), vec![9..10]);
        let params = TransferParams::new(1, 1050, 100).unwrap();
        let blocks = covered_blocks(std::slice::from_ref(&(1000..1050)), &params);
        assert_eq!(blocks.iter().collect::<Vec<_>>(), vec![10..11]);
        assert_eq!(block_byte_ranges(&blocks, &params), vec![1000..1050]);
        assert_eq!(range_bytes(&[0..10, 20..25]), 15);
    }
}
