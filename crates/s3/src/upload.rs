//! The S3 sink: receives a file's bytes at any offset in any order and uploads it as a
//! multipart upload whose parts are also the file's verification chunks.
//!
//! - Parts have the uniform size [`part_size`]`(size)`. A part's buffer is taken from the
//!   transfer's cache share when its first byte arrives (waiting while the share or the whole
//!   cache is full); writes into a part that already has its buffer never wait, so that a
//!   retransmission that completes a part can always land.
//! - A complete part is hashed ([`chunk_hash`]) and sent with UploadPart at once, several at a
//!   time; its buffer goes back to the cache when S3 has it.
//! - A file smaller than one part is a single PutObject at commit.
//! - `commit` compares the digest of the part hashes with the sender's BEFORE
//!   CompleteMultipartUpload (a mismatch aborts the upload: nothing appears), completes, and
//!   checks the object's size with HEAD. overwriteMode is ignored: the object is replaced, but
//!   only once it is complete.
//! - Any failure, and `abort`, aborts the multipart upload. Dropping the sink without commit or
//!   abort aborts it too, unless a checkpoint was handed out: then the upload is kept so that a
//!   new sink can resume it (the stale-upload reaper removes it if nobody does).
//! - Resume: the checkpoint names the UploadId and the parts (number, ETag, hash); a new sink
//!   confirms them with ListParts and re-sends the rest. A vanished upload starts afresh (or is
//!   `NotFound` with [`SinkOptions::resume_only`]).
//! - The sink is not [reopenable](FileSink::reopenable): parts still being filled live only in
//!   its memory, so it stays open until commit or abort (it holds no file descriptor).

use crate::backend::S3Backend;
use crate::client::Target;
use crate::errors::{backend_error, failure_of, is_expired_token, is_retryable};
use crate::reaper;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use slipstream_storage::cache::{CacheGrant, CacheShare};
use slipstream_storage::data::{
    chunk_hash, part_size, DigestBuilder, FileDigest, FileSink, SinkCheckpoint, SinkOptions,
    MAX_PARTS, MIB,
};
use slipstream_storage::{RelPath, StorageError, StorageResult};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// S3's largest object (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// S3's largest part (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// At most this many UploadPart requests of one sink run at once.
const MAX_PARALLEL_PARTS: u64 = 8;
/// Attempts of one UploadPart (on top of the SDK's own retries) for retryable failures.
const PART_ATTEMPTS: u32 = 4;

/// Refuses, before any byte is sent, a file that cannot be uploaded with an upload share of
/// `share` bytes (`--max-file-cache-upload-size`): its part size must fit the share (and S3's
/// 5 GiB part limit) with at most 10,000 parts, and it must be within S3's 5 TiB object limit.
/// The message names the flag and the value needed.
pub fn check_upload_size(size: u64, share: u64) -> StorageResult<()> {
    if size > MAX_OBJECT_SIZE {
        return Err(StorageError::Backend(format!(
            "a file of {size} bytes cannot be uploaded to S3: S3's largest object is 5 TiB \
             ({MAX_OBJECT_SIZE} bytes)"
        )));
    }
    let part = part_size(size);
    let largest = share.min(MAX_PART_SIZE);
    if part > largest || size > MAX_PARTS.saturating_mul(largest) {
        return Err(StorageError::Backend(format!(
            "a file of {size} bytes is too large for an S3 upload with \
             --max-file-cache-upload-size {share} ({} MiB): it needs 10,000 parts of {} MiB; \
             set --max-file-cache-upload-size to at least {}MiB (and --max-file-cache-size \
             at least as large)",
            share / MIB,
            part / MIB,
            part / MIB
        )));
    }
    Ok(())
}

/// What a checkpoint hands back in [`SinkOptions::resume`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResumeState {
    /// `None` for a file sent as one PutObject (nothing survives a restart).
    pub upload_id: Option<String>,
    pub key: String,
    pub size: u64,
    pub part_size: u64,
    pub parts: Vec<SavedPart>,
}

/// One uploaded part in a [`ResumeState`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedPart {
    pub number: u32,
    pub etag: String,
    /// The part's BLAKE3 hash, hex.
    pub hash: String,
}

/// Byte ranges received within one part, kept merged and sorted.
#[derive(Debug, Default)]
struct Ranges {
    spans: Vec<(u64, u64)>,
    total: u64,
}

impl Ranges {
    fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Fast path: appending right after the last span (in-order writes).
        if let Some(last) = self.spans.last_mut() {
            if last.1 == start {
                last.1 = end;
                self.total += end - start;
                return;
            }
        }
        let first = self.spans.partition_point(|s| s.1 < start);
        let mut last = first;
        let (mut lo, mut hi) = (start, end);
        while last < self.spans.len() && self.spans[last].0 <= end {
            lo = lo.min(self.spans[last].0);
            hi = hi.max(self.spans[last].1);
            last += 1;
        }
        let removed: u64 = self.spans[first..last].iter().map(|s| s.1 - s.0).sum();
        self.spans.splice(first..last, [(lo, hi)]);
        self.total = self.total - removed + (hi - lo);
    }
}

enum Part {
    /// Nothing received.
    Empty,
    /// Receiving into a buffer from the cache.
    Filling {
        buf: Vec<u8>,
        have: Ranges,
        grant: CacheGrant,
    },
    /// Complete, being hashed and uploaded.
    Sending,
    /// In S3.
    Done { etag: String, hash: [u8; 32] },
}

/// What the part tasks share.
struct Shared {
    client: Client,
    target: Arc<Target>,
    bucket: String,
    key: String,
    upload_part_calls: Arc<AtomicU64>,
}

type PartResult = StorageResult<(usize, String, [u8; 32])>;

/// The S3 [`FileSink`]. Made by [`S3Backend::create_s3_sink`] (or `create_sink`).
pub struct S3Sink {
    shared: Arc<Shared>,
    share: CacheShare,
    size: u64,
    part_size: u64,
    /// `None` for a file sent as one PutObject at commit.
    upload_id: Option<String>,
    parts: Vec<Part>,
    tasks: JoinSet<PartResult>,
    parallel: Arc<Semaphore>,
    resumed: Vec<Range<u64>>,
    failed: Option<StorageError>,
    /// A checkpoint was handed out: dropping keeps the upload for a resume.
    checkpointed: bool,
    /// Committed or aborted.
    finished: bool,
}

impl S3Backend {
    /// Opens the S3 sink for `path` (see the module documentation); `create_sink` boxes it.
    pub async fn create_s3_sink(
        &self,
        path: &RelPath,
        options: SinkOptions,
    ) -> StorageResult<S3Sink> {
        if path.is_root() {
            return Err(StorageError::Conflict(
                "a transfer cannot write to the sandbox root itself: name a file".into(),
            ));
        }
        let share = self.file_cache().upload();
        check_upload_size(options.size, share.limit())?;
        let key = self.key_for(path);
        let size = options.size;
        let part = part_size(size);
        let count = size.div_ceil(part) as usize;
        let shared = Arc::new(Shared {
            client: self.client().clone(),
            target: self.target().clone(),
            bucket: self.bucket().to_string(),
            key: key.clone(),
            upload_part_calls: Arc::new(AtomicU64::new(0)),
        });
        let parallel = (share.limit() / part).clamp(1, MAX_PARALLEL_PARTS) as usize;
        let mut sink = S3Sink {
            shared,
            share,
            size,
            part_size: part,
            upload_id: None,
            parts: (0..count.max(1)).map(|_| Part::Empty).collect(),
            tasks: JoinSet::new(),
            parallel: Arc::new(Semaphore::new(parallel)),
            resumed: Vec::new(),
            failed: None,
            checkpointed: false,
            finished: false,
        };
        if sink.single() {
            return Ok(sink);
        }
        let asked_to_resume = options.resume.is_some();
        let previous = match options.resume {
            Some(value) => serde_json::from_value::<ResumeState>(value).ok(),
            None => None,
        };
        if let Some(state) = previous {
            if sink.reattach(state).await? {
                return Ok(sink);
            }
        }
        if asked_to_resume && options.resume_only {
            return Err(StorageError::NotFound(format!(
                "the partial upload of '{key}' cannot be resumed (it is gone or was for \
                 another file)"
            )));
        }
        let created = sink
            .shared
            .client
            .create_multipart_upload()
            .bucket(&sink.shared.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                sink.shared
                    .error(&format!("starting the upload of '{key}'"), &e)
            })?;
        let id = created.upload_id().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(StorageError::Backend(format!(
                "starting the upload of '{key}': S3 returned no UploadId"
            )));
        }
        reaper::register(&id);
        sink.upload_id = Some(id);
        Ok(sink)
    }
}

impl Shared {
    fn error<E>(&self, what: &str, e: &SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if let Some(failure) = failure_of(e).filter(is_expired_token) {
            return StorageError::Backend(format!(
                "{what}: session token expired: get fresh temporary credentials and set \
                 accessKeyId, secretKey and sessionToken in the sandbox mapping; the upload was \
                 aborted ({})",
                failure.detail()
            ));
        }
        backend_error(what, e, &self.target)
    }

    async fn upload_part(
        &self,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> StorageResult<String> {
        let what = format!("uploading part {number} of '{}'", self.key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.upload_part_calls.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()))
                .send()
                .await;
            match result {
                Ok(out) => {
                    return Ok(out.e_tag().map(normalize_etag).unwrap_or_default());
                }
                Err(e) if attempt < PART_ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(key = %self.key, number, attempt, "UploadPart failed, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.error(&what, &e)),
            }
        }
    }

    async fn abort_upload(&self, upload_id: &str) -> StorageResult<()> {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await;
        reaper::unregister(upload_id);
        match result {
            Ok(_) => Ok(()),
            Err(e) if crate::errors::service_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.error(
                &format!(
                    "aborting the upload of '{}' (UploadId {upload_id})",
                    self.key
                ),
                &e,
            )),
        }
    }
}

/// 250 ms, 500 ms, 1 s, ... at most 8 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.saturating_sub(1).min(5))
}

fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl S3Sink {
    /// True when the file goes as one PutObject at commit (smaller than one part).
    fn single(&self) -> bool {
        self.size < self.part_size
    }

    /// The byte range of part `index` (0-based).
    fn part_range(&self, index: usize) -> Range<u64> {
        let start = index as u64 * self.part_size;
        start..(start + self.part_size).min(self.size)
    }

    /// How many UploadPart requests this sink has sent (retries included).
    pub fn upload_part_calls(&self) -> u64 {
        self.shared.upload_part_calls.load(Ordering::Relaxed)
    }

    /// The counter behind [`S3Sink::upload_part_calls`], readable after the sink is gone.
    pub fn upload_part_counter(&self) -> Arc<AtomicU64> {
        self.shared.upload_part_calls.clone()
    }

    /// The multipart UploadId (`None` for a single PutObject).
    pub fn upload_id(&self) -> Option<&str> {
        self.upload_id.as_deref()
    }

    /// The uniform part size.
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// Re-attaches to a previous upload; false when it cannot be used (start afresh).
    async fn reattach(&mut self, state: ResumeState) -> StorageResult<bool> {
        let Some(id) = state.upload_id.clone() else {
            return Ok(false);
        };
        if state.key != self.shared.key
            || state.size != self.size
            || state.part_size != self.part_size
        {
            // A different file: that upload is of no use to anyone now.
            let _ = self.shared.abort_upload(&id).await;
            return Ok(false);
        }
        let mut listed = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .shared
                .client
                .list_parts()
                .bucket(&self.shared.bucket)
                .key(&self.shared.key)
                .upload_id(&id)
                .set_part_number_marker(marker.clone())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) if crate::errors::service_status(&e) == Some(404) => {
                    tracing::info!(key = %self.shared.key, upload_id = %id,
                        "the upload to resume is gone; starting afresh");
                    return Ok(false);
                }
                Err(e) => {
                    return Err(self.shared.error(
                        &format!("resuming the upload of '{}' (ListParts)", self.shared.key),
                        &e,
                    ))
                }
            };
            for part in page.parts() {
                if let (Some(number), Some(size), Some(etag)) =
                    (part.part_number(), part.size(), part.e_tag())
                {
                    listed.push((number, size, normalize_etag(etag)));
                }
            }
            marker = page.next_part_number_marker().map(str::to_string);
            if !page.is_truncated().unwrap_or(false) || marker.is_none() {
                break;
            }
        }
        reaper::register(&id);
        self.upload_id = Some(id);
        for saved in &state.parts {
            let index = (saved.number as usize).wrapping_sub(1);
            if index >= self.parts.len() {
                continue;
            }
            let range = self.part_range(index);
            let expected = (range.end - range.start) as i64;
            let confirmed = listed.iter().any(|(n, size, etag)| {
                *n as u32 == saved.number && *size == expected && *etag == saved.etag
            });
            if let (true, Some(hash)) = (confirmed, unhex(&saved.hash)) {
                self.parts[index] = Part::Done {
                    etag: saved.etag.clone(),
                    hash,
                };
                push_range(&mut self.resumed, range);
            }
        }
        Ok(true)
    }

    /// Takes in the results of finished part tasks; the first failure fails the sink.
    async fn reap(&mut self) -> StorageResult<()> {
        while let Some(done) = self.tasks.try_join_next() {
            self.settle(done).await?;
        }
        self.check()
    }

    /// Waits for every part task.
    async fn drain(&mut self) -> StorageResult<()> {
        while let Some(done) = self.tasks.join_next().await {
            self.settle(done).await?;
        }
        self.check()
    }

    async fn settle(
        &mut self,
        done: Result<PartResult, tokio::task::JoinError>,
    ) -> StorageResult<()> {
        match done {
            Ok(Ok((index, etag, hash))) => {
                self.parts[index] = Part::Done { etag, hash };
                Ok(())
            }
            Ok(Err(error)) => Err(self.fail(error).await),
            Err(join) => {
                let error = StorageError::Backend(format!(
                    "uploading '{}': a part upload task failed ({join})",
                    self.shared.key
                ));
                Err(self.fail(error).await)
            }
        }
    }

    fn check(&self) -> StorageResult<()> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Records the first failure and aborts the upload; returns the error to report.
    async fn fail(&mut self, error: StorageError) -> StorageError {
        if self.failed.is_some() {
            return self.failed.clone().unwrap_or(error);
        }
        self.failed = Some(error.clone());
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.release_buffers();
        if let Some(id) = self.upload_id.clone() {
            if let Err(abort_error) = self.shared.abort_upload(&id).await {
                tracing::warn!(error = %abort_error, "could not abort a failed upload");
            }
        }
        self.finished = true;
        error
    }

    fn release_buffers(&mut self) {
        for part in &mut self.parts {
            if matches!(part, Part::Filling { .. }) {
                *part = Part::Empty;
            }
        }
    }

    /// Hashes and uploads the complete part `index` in a task of its own.
    fn send_part(&mut self, index: usize) {
        let Part::Filling { buf, grant, .. } =
            std::mem::replace(&mut self.parts[index], Part::Sending)
        else {
            return;
        };
        let Some(upload_id) = self.upload_id.clone() else {
            return;
        };
        let shared = self.shared.clone();
        let parallel = self.parallel.clone();
        self.tasks.spawn(async move {
            let _grant = grant;
            // The semaphore is never closed, so acquiring only waits.
            let _permit = parallel.acquire_owned().await.ok();
            let data = Bytes::from(buf);
            let hashed = data.clone();
            let hash = tokio::task::spawn_blocking(move || chunk_hash(&hashed))
                .await
                .map_err(|e| StorageError::Backend(format!("hashing a part: {e}")))?;
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let etag = shared.upload_part(&upload_id, number, data).await?;
            Ok((index, etag, hash))
        });
    }

    fn state(&self) -> ResumeState {
        let parts = self
            .parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Part::Done { etag, hash } => Some(SavedPart {
                    number: (i + 1) as u32,
                    etag: etag.clone(),
                    hash: hex(hash),
                }),
                _ => None,
            })
            .collect();
        ResumeState {
            upload_id: self.upload_id.clone(),
            key: self.shared.key.clone(),
            size: self.size,
            part_size: self.part_size,
            parts,
        }
    }

    async fn head_size(&self) -> StorageResult<u64> {
        let key = &self.shared.key;
        let out = self
            .shared
            .client
            .head_object()
            .bucket(&self.shared.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                self.shared
                    .error(&format!("checking the uploaded '{key}'"), &e)
            })?;
        Ok(out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    }

    fn integrity_error(&self, got: FileDigest, expected: FileDigest) -> StorageError {
        StorageError::Backend(format!(
            "integrity check failed for '{}': the received data has digest {}, the sender's is \
             {}; nothing was published (the upload was aborted); send the file again",
            self.shared.key,
            got.to_hex(),
            expected.to_hex()
        ))
    }

    async fn commit_single(&mut self, expected: FileDigest) -> StorageResult<()> {
        let key = self.shared.key.clone();
        let data = match std::mem::replace(&mut self.parts[0], Part::Sending) {
            Part::Filling { buf, have, .. } if have.total == self.size => buf,
            Part::Empty if self.size == 0 => Vec::new(),
            Part::Filling { have, .. } => {
                return Err(StorageError::Backend(format!(
                    "committing '{key}': only {} of {} bytes were received",
                    have.total, self.size
                )))
            }
            _ => {
                return Err(StorageError::Backend(format!(
                    "committing '{key}': no data was received"
                )))
            }
        };
        let data = Bytes::from(data);
        let got = DigestBuilder::from_chunk_hashes([&chunk_hash(&data)]);
        if got != expected {
            return Err(self.integrity_error(got, expected));
        }
        self.shared
            .client
            .put_object()
            .bucket(&self.shared.bucket)
            .key(&key)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.shared.error(&format!("storing '{key}'"), &e))?;
        self.check_size().await
    }

    async fn check_size(&self) -> StorageResult<()> {
        let stored = self.head_size().await?;
        if stored != self.size {
            return Err(StorageError::Backend(format!(
                "'{}' was stored with {stored} bytes instead of {}: the S3 endpoint lost data; \
                 send the file again",
                self.shared.key, self.size
            )));
        }
        Ok(())
    }

    async fn commit_multipart(&mut self, expected: FileDigest) -> StorageResult<()> {
        self.drain().await?;
        let key = self.shared.key.clone();
        let missing: Vec<usize> = (0..self.parts.len())
            .filter(|&i| !matches!(self.parts[i], Part::Done { .. }))
            .collect();
        if let Some(&first) = missing.first() {
            let error = StorageError::Backend(format!(
                "committing '{key}': {} of {} parts are incomplete (the first is part {}, bytes \
                 {:?}); the upload was aborted",
                missing.len(),
                self.parts.len(),
                first + 1,
                self.part_range(first)
            ));
            return Err(self.fail(error).await);
        }
        let mut hashes = Vec::with_capacity(self.parts.len());
        let mut completed = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            if let Part::Done { etag, hash } = part {
                hashes.push(*hash);
                completed.push(
                    CompletedPart::builder()
                        .part_number((i + 1) as i32)
                        .e_tag(etag.clone())
                        .build(),
                );
            }
        }
        let got = DigestBuilder::from_chunk_hashes(&hashes);
        if got != expected {
            let error = self.integrity_error(got, expected);
            return Err(self.fail(error).await);
        }
        let Some(id) = self.upload_id.clone() else {
            return Err(StorageError::Backend(format!(
                "committing '{key}': the upload has no UploadId"
            )));
        };
        let done = self
            .shared
            .client
            .complete_multipart_upload()
            .bucket(&self.shared.bucket)
            .key(&key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = done {
            let error = self
                .shared
                .error(&format!("completing the upload of '{key}'"), &e);
            return Err(self.fail(error).await);
        }
        reaper::unregister(&id);
        self.finished = true;
        self.check_size().await
    }
}

/// Appends `range` to sorted ranges, merging with the last one when adjacent.
fn push_range(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    if let Some(last) = ranges.last_mut() {
        if last.end == range.start {
            last.end = range.end;
            return;
        }
    }
    ranges.push(range);
}

#[async_trait::async_trait]
impl FileSink for S3Sink {
    fn resumed(&self) -> Vec<Range<u64>> {
        self.resumed.clone()
    }

    fn window(&self) -> u64 {
        self.share.available()
    }

    async fn write_at(&mut self, offset: u64, data: Bytes) -> StorageResult<()> {
        self.reap().await?;
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            return Err(StorageError::Backend(format!(
                "writing '{}': bytes {offset}..{end} are beyond the file's size {}",
                self.shared.key, self.size
            )));
        }
        let mut position = offset;
        while position < end {
            let index = (position / self.part_size) as usize;
            let range = self.part_range(index);
            let stop = end.min(range.end);
            if matches!(self.parts[index], Part::Empty) {
                let len = range.end - range.start;
                let grant = self.share.acquire(len).await?;
                self.parts[index] = Part::Filling {
                    // calloc: pages are committed as they are written.
                    buf: vec![0u8; len as usize],
                    have: Ranges::default(),
                    grant,
                };
            }
            let mut complete = false;
            if let Part::Filling { buf, have, .. } = &mut self.parts[index] {
                let from = (position - offset) as usize;
                let to = (stop - offset) as usize;
                let at = (position - range.start) as usize;
                buf[at..at + (to - from)].copy_from_slice(&data[from..to]);
                have.insert(position - range.start, stop - range.start);
                complete = have.total == range.end - range.start;
            }
            // Sending or Done: a rewrite of bytes S3 already has (harmless, ignored).
            if complete && !self.single() {
                self.send_part(index);
            }
            position = stop;
        }
        Ok(())
    }

    async fn checkpoint(&mut self) -> StorageResult<SinkCheckpoint> {
        self.reap().await?;
        self.checkpointed = true;
        let mut durable = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if matches!(part, Part::Done { .. }) {
                push_range(&mut durable, self.part_range(i));
            }
        }
        let state = serde_json::to_value(self.state())
            .map_err(|e| StorageError::Backend(format!("checkpoint: {e}")))?;
        Ok(SinkCheckpoint { state, durable })
    }

    async fn commit(mut self: Box<Self>, expected: FileDigest) -> StorageResult<()> {
        self.check()?;
        let result = if self.single() {
            self.commit_single(expected).await
        } else {
            self.commit_multipart(expected).await
        };
        self.finished = true;
        result
    }

    async fn abort(mut self: Box<Self>) -> StorageResult<()> {
        self.finished = true;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.release_buffers();
        match self.upload_id.clone() {
            Some(id) if self.failed.is_none() => self.shared.abort_upload(&id).await,
            _ => Ok(()),
        }
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.clone() else {
            return;
        };
        if self.finished {
            return;
        }
        if self.checkpointed {
            // Kept for a resume; no longer owned by a live sink, so the reaper may remove it
            // once it is old.
            reaper::unregister(&id);
            return;
        }
        self.tasks.abort_all();
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = shared.abort_upload(&id).await {
                        tracing::warn!(%error, "could not abort a dropped upload");
                    }
                });
            }
            Err(_) => {
                reaper::unregister(&id);
                tracing::warn!(upload_id = %id, key = %shared.key,
                    "a dropped upload could not be aborted outside the runtime; the reaper will remove it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let mut r = Ranges::default();
        r.insert(0, 10);
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(5, 15);
        assert_eq!((r.spans.len(), r.total), (2, 30));
        r.insert(20, 30);
        assert_eq!((r.spans.clone(), r.total), (vec![(0, 40)], 40));
        r.insert(50, 60);
        r.insert(45, 50);
        r.insert(0, 100);
        assert_eq!((r.spans.clone(), r.total), (vec![(0, 100)], 100));
    }

    #[test]
    fn size_refusal_names_the_flag_and_value() {
        const GIB: u64 = 1 << 30;
        const TIB: u64 = 1 << 40;
        assert!(check_upload_size(0, 8 * MIB).is_ok());
        assert!(check_upload_size(1_000_000_000_000, 256 * MIB).is_ok());
        // 10,000 x 256 MiB = 2.44 TiB fits; 3 TiB does not.
        let err = check_upload_size(3 * TIB, 256 * MIB)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-file-cache-upload-size"), "{err}");
        assert!(err.contains("at least 315MiB"), "{err}");
        assert!(check_upload_size(3 * TIB, 315 * MIB).is_ok());
        assert!(check_upload_size(5 * TIB, GIB).is_ok());
        let err = check_upload_size(5 * TIB + 1, 5 * GIB)
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 TiB"), "{err}");
        // A share smaller than the smallest part refuses everything.
        assert!(check_upload_size(1, 4 * MIB).is_err());
    }

    #[test]
    fn hashes_round_trip_as_hex() {
        let h = chunk_hash(b"abc");
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex("zz"), None);
    }
}
