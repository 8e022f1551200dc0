//! The S3 source: an [`ObjectReader`] over ranged GETs.
//!
//! The object is read in ranges of [`RANGE_SIZE`] (8 MiB, or the whole download share when it
//! is smaller). A read fetches the ranges it needs and starts the next few (read-ahead) in
//! parallel; each range's memory comes from the transfer's download share of the file cache,
//! so a reader never holds more than its share. The ranges kept are the one being read, one
//! behind it (re-reads for retransmissions are usually recent) and the read-ahead; older
//! ranges are dropped and fetched again if they are read again. Failed GETs are retried with
//! exponential backoff on 5xx answers, throttling, timeouts and broken connections.

use crate::backend::S3Backend;
use crate::client::Target;
use crate::errors::{backend_error, is_retryable, service_status};
use crate::upload::backoff;
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use slipstream_storage::cache::{CacheGrant, CacheShare};
use slipstream_storage::data::{ObjectReader, MIB};
use slipstream_storage::{RelPath, StorageError, StorageResult};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The size of one ranged GET.
pub const RANGE_SIZE: u64 = 8 * MIB;
/// At most this many ranges are read ahead.
const MAX_AHEAD: u64 = 4;
/// Attempts of one ranged GET.
const GET_ATTEMPTS: u32 = 6;
/// Bound on one attempt of a ranged GET (8 MiB at ~1 Mbit/s would take longer; the share is
/// meant for server-grade links).
const GET_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

struct Loaded {
    data: Bytes,
    _grant: CacheGrant,
}

#[derive(Default)]
struct Slot {
    cell: OnceCell<Result<Arc<Loaded>, StorageError>>,
}

struct Inner {
    client: Client,
    target: Arc<Target>,
    bucket: String,
    key: String,
    etag: Option<String>,
    size: u64,
    range: u64,
    ahead: u64,
    behind: u64,
    /// The share keeps room for one range outside the window (re-reads).
    spare: bool,
    /// The furthest range read so far.
    frontier: AtomicU64,
    share: CacheShare,
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
    gets: AtomicU64,
}

/// The S3 [`ObjectReader`]. Made by [`S3Backend::open_s3_reader`] (or `open_reader`).
pub struct S3Reader {
    inner: Arc<Inner>,
}

impl S3Backend {
    /// Opens the object at `path` for ranged reading (see the module documentation).
    pub async fn open_s3_reader(&self, path: &RelPath) -> StorageResult<S3Reader> {
        let key = self.key_for(path);
        let head = self
            .meta_client()
            .head_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await;
        let head = match head {
            Ok(head) => head,
            Err(e) if service_status(&e) == Some(404) => {
                return Err(StorageError::NotFound(format!(
                    "{path}: no such file in the S3 sandbox (key '{key}')"
                )))
            }
            Err(e) => {
                return Err(backend_error(
                    &format!("opening '{key}' for reading"),
                    &e,
                    self.target(),
                ))
            }
        };
        let size = head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let share = self.file_cache().download();
        let range = RANGE_SIZE.min(share.limit()).max(1);
        let slots = (share.limit() / range).max(1);
        // The window: one range behind when there is room, the read-ahead, and one range
        // spare for re-reads of older ranges.
        let spare = slots >= 2;
        let behind = u64::from(slots >= 3);
        let ahead = slots
            .saturating_sub(1 + behind + u64::from(spare))
            .min(MAX_AHEAD);
        Ok(S3Reader {
            inner: Arc::new(Inner {
                client: self.client().clone(),
                target: self.target().clone(),
                bucket: self.bucket().to_string(),
                key,
                etag: head.e_tag().map(str::to_string),
                size,
                range,
                ahead,
                behind,
                spare,
                frontier: AtomicU64::new(0),
                share,
                slots: Mutex::new(BTreeMap::new()),
                gets: AtomicU64::new(0),
            }),
        })
    }
}

impl S3Reader {
    /// How many GET requests were sent (retries included).
    pub fn gets(&self) -> u64 {
        self.inner.gets.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        // The map only holds finished insertions; a panic cannot leave it half-written.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot of range `index`. Reading at or past the furthest range read so far moves the
    /// window (one range behind, the read-ahead in front), dropping ranges outside it and
    /// starting the read-ahead. An older range outside the window (a re-read) gets a slot of
    /// its own, dropped after the read; the window leaves room in the share for it.
    fn slot(self: &Arc<Self>, index: u64) -> Arc<Slot> {
        let last = self.size.saturating_sub(1) / self.range;
        let mut slots = self.slots();
        let frontier = self.frontier.load(Ordering::Relaxed);
        if index + self.behind < frontier && self.spare {
            return slots
                .get(&index)
                .cloned()
                .unwrap_or_else(|| Arc::new(Slot::default()));
        }
        let centre = if self.spare {
            index.max(frontier)
        } else {
            index
        };
        self.frontier.store(centre, Ordering::Relaxed);
        let low = index.min(centre.saturating_sub(self.behind));
        let high = (centre + self.ahead).min(last);
        slots.retain(|&i, _| i >= low && i <= high);
        let wanted = slots.entry(index).or_default().clone();
        for next in centre + 1..=high {
            if slots.contains_key(&next) {
                continue;
            }
            let slot = Arc::new(Slot::default());
            slots.insert(next, slot.clone());
            let inner = self.clone();
            tokio::spawn(async move {
                let _ = slot.cell.get_or_init(|| inner.fetch(next)).await;
            });
        }
        wanted
    }

    /// Reads range `index` into memory from the share.
    async fn fetch(self: &Arc<Self>, index: u64) -> Result<Arc<Loaded>, StorageError> {
        let start = index * self.range;
        let end = (start + self.range).min(self.size);
        let grant = self.share.acquire(end - start).await?;
        let what = format!("reading bytes {start}..{end} of '{}'", self.key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.gets.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .range(format!("bytes={start}-{}", end - 1));
            if let Some(etag) = &self.etag {
                request = request.if_match(etag);
            }
            let answer = tokio::time::timeout(GET_ATTEMPT_TIMEOUT, async {
                match request.send().await {
                    Ok(out) => out
                        .body
                        .collect()
                        .await
                        .map(|b| Ok(b.into_bytes()))
                        .map_err(|e| format!("the connection broke: {e}")),
                    Err(e) => Ok(Err(Box::new(e))),
                }
            })
            .await;
            let retry_reason = match answer {
                Ok(Ok(Ok(data))) if data.len() as u64 == end - start => {
                    return Ok(Arc::new(Loaded {
                        data,
                        _grant: grant,
                    }));
                }
                Ok(Ok(Ok(data))) => format!("{} bytes came instead of {}", data.len(), end - start),
                Ok(Ok(Err(e))) => {
                    let e = *e;
                    match service_status(&e) {
                        Some(412) => {
                            return Err(StorageError::Backend(format!(
                                "{what}: the object was replaced while it was being read; \
                                 send it again"
                            )))
                        }
                        Some(404) => {
                            return Err(StorageError::NotFound(format!(
                                "{what}: the object was removed while it was being read"
                            )))
                        }
                        _ if is_retryable(&e) => backend_error(&what, &e, &self.target).to_string(),
                        _ => return Err(backend_error(&what, &e, &self.target)),
                    }
                }
                Ok(Err(broken)) => broken,
                Err(_) => format!("no answer within {}s", GET_ATTEMPT_TIMEOUT.as_secs()),
            };
            if attempt >= GET_ATTEMPTS {
                return Err(StorageError::Backend(format!(
                    "{what}: failed {attempt} times, last: {retry_reason}"
                )));
            }
            tracing::debug!(key = %self.key, start, attempt, reason = %retry_reason, "ranged GET failed, retrying");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// The data of range `index`, fetching it (once more after a failure) if needed.
    async fn load(self: &Arc<Self>, index: u64) -> StorageResult<Arc<Loaded>> {
        let slot = self.slot(index);
        match slot.cell.get_or_init(|| self.fetch(index)).await {
            Ok(loaded) => Ok(loaded.clone()),
            Err(_) => {
                // A failed read-ahead (or a failure that may have passed): drop it, try anew.
                {
                    let mut slots = self.slots();
                    if slots.get(&index).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                        slots.remove(&index);
                    }
                }
                let fresh = self.slot(index);
                let result = fresh.cell.get_or_init(|| self.fetch(index)).await.clone();
                if result.is_err() {
                    let mut slots = self.slots();
                    if slots.get(&index).is_some_and(|s| Arc::ptr_eq(s, &fresh)) {
                        slots.remove(&index);
                    }
                }
                result
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectReader for S3Reader {
    fn size(&self) -> u64 {
        self.inner.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> StorageResult<Bytes> {
        let inner = &self.inner;
        if offset >= inner.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(len as u64).min(inner.size);
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let mut position = offset;
        while position < end {
            let index = position / inner.range;
            let start = index * inner.range;
            let loaded = inner.load(index).await?;
            let from = (position - start) as usize;
            let to = ((end - start) as usize).min(loaded.data.len());
            if from >= to {
                return Err(StorageError::Backend(format!(
                    "reading '{}': the object is shorter than its size {}",
                    inner.key, inner.size
                )));
            }
            // Copied out, so that the cache's accounting stays exact once the range is dropped.
            out.extend_from_slice(&loaded.data[from..to]);
            position = start + to as u64;
        }
        Ok(out.freeze())
    }
}
