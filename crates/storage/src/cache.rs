//! The file cache: the memory S3 transfers buffer data in (parts of uploads, read-ahead of
//! downloads), bounded as a whole and per transfer.
//!
//! - The whole cache holds at most `--max-file-cache-size` bytes (default 1 GiB).
//! - Each upload into S3 takes a [`CacheShare`] of `--max-file-cache-upload-size` (default
//!   256 MiB), each download from S3 one of `--max-file-cache-download-size` (default 64 MiB).
//!   The upload share also bounds the part size: 10,000 parts of at most the share.
//!
//! Memory is reserved when it is needed ([`CacheShare::acquire`]) and given back when the
//! returned [`CacheGrant`] is dropped (RAII). Nothing is pre-allocated. A full cache or share
//! makes the caller wait (asynchronously) until grants are dropped; it never fails for lack of
//! room and never lets `used()` go above the bound. `used()` and `peak()` are exact: they count
//! the bytes of the live grants.

use crate::error::{StorageError, StorageResult};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Default bound of the whole cache (`--max-file-cache-size`): 1 GiB.
pub const DEFAULT_FILE_CACHE_SIZE: u64 = 1 << 30;
/// Default share of one upload into S3 (`--max-file-cache-upload-size`): 256 MiB.
pub const DEFAULT_UPLOAD_SHARE: u64 = 256 << 20;
/// Default share of one download from S3 (`--max-file-cache-download-size`): 64 MiB.
pub const DEFAULT_DOWNLOAD_SHARE: u64 = 64 << 20;

#[derive(Debug, Default)]
struct Counts {
    used: u64,
    peak: u64,
}

/// A pool of bytes with a bound and waiters.
#[derive(Debug)]
struct Pool {
    limit: u64,
    counts: Mutex<Counts>,
    freed: Notify,
}

impl Pool {
    fn new(limit: u64) -> Pool {
        Pool {
            limit,
            counts: Mutex::new(Counts::default()),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts are two integers updated together under the lock; a panic elsewhere
        // cannot leave them half-written, so a poisoned lock is still consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        let mut counts = self.lock();
        counts.used = counts.used.saturating_sub(n);
        drop(counts);
        self.freed.notify_waiters();
    }
}

/// The process-wide (per server) file cache. Cheap to clone: clones share one pool.
#[derive(Debug, Clone)]
pub struct FileCache {
    global: Arc<Pool>,
    upload_share: u64,
    download_share: u64,
}

impl Default for FileCache {
    /// A cache with the server's default limits (1 GiB, 256 MiB per upload, 64 MiB per download).
    fn default() -> Self {
        FileCache::new(
            DEFAULT_FILE_CACHE_SIZE,
            DEFAULT_UPLOAD_SHARE,
            DEFAULT_DOWNLOAD_SHARE,
        )
    }
}

impl FileCache {
    /// A cache of `total` bytes; each upload may use `upload_share` of it and each download
    /// `download_share`. Shares larger than the whole are cut down to it.
    pub fn new(total: u64, upload_share: u64, download_share: u64) -> FileCache {
        FileCache {
            global: Arc::new(Pool::new(total)),
            upload_share: upload_share.min(total),
            download_share: download_share.min(total),
        }
    }

    /// The bound of the whole cache.
    pub fn limit(&self) -> u64 {
        self.global.limit
    }

    /// The share of one upload.
    pub fn upload_share(&self) -> u64 {
        self.upload_share
    }

    /// The share of one download.
    pub fn download_share(&self) -> u64 {
        self.download_share
    }

    /// Bytes held by live grants right now.
    pub fn used(&self) -> u64 {
        self.global.lock().used
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> u64 {
        self.global.lock().peak
    }

    /// Bytes that can be granted right now without waiting.
    pub fn available(&self) -> u64 {
        self.global.limit.saturating_sub(self.used())
    }

    /// A share for one upload.
    pub fn upload(&self) -> CacheShare {
        self.share(self.upload_share)
    }

    /// A share for one download.
    pub fn download(&self) -> CacheShare {
        self.share(self.download_share)
    }

    /// A share of `limit` bytes (at most the whole cache).
    pub fn share(&self, limit: u64) -> CacheShare {
        CacheShare {
            global: self.global.clone(),
            local: Arc::new(Pool::new(limit.min(self.global.limit))),
        }
    }
}

/// One transfer's part of the cache: its grants count against both its own limit and the
/// whole cache.
#[derive(Debug)]
pub struct CacheShare {
    global: Arc<Pool>,
    local: Arc<Pool>,
}

impl CacheShare {
    /// The share's bound.
    pub fn limit(&self) -> u64 {
        self.local.limit
    }

    /// Bytes this share holds.
    pub fn used(&self) -> u64 {
        self.local.lock().used
    }

    /// Bytes this share could be granted right now without waiting (limited by its own
    /// bound and by what the whole cache has left).
    pub fn available(&self) -> u64 {
        let local = self.local.limit.saturating_sub(self.local.lock().used);
        let global = self.global.limit.saturating_sub(self.global.lock().used);
        local.min(global)
    }

    /// Reserves `n` bytes, waiting until both the share and the whole cache have room.
    /// Fails only when `n` is larger than the share's bound (it could never be granted).
    pub async fn acquire(&self, n: u64) -> StorageResult<CacheGrant> {
        if n > self.local.limit {
            return Err(StorageError::Backend(format!(
                "file cache: {n} bytes were asked of a share of {} bytes: raise \
                 --max-file-cache-upload-size / --max-file-cache-download-size \
                 (and --max-file-cache-size)",
                self.local.limit
            )));
        }
        loop {
            // Register for wake-ups before looking, so that a release between the look and
            // the wait is not missed.
            let local_freed = self.local.freed.notified();
            let global_freed = self.global.freed.notified();
            tokio::pin!(local_freed, global_freed);
            local_freed.as_mut().enable();
            global_freed.as_mut().enable();
            if let Some(grant) = self.try_acquire(n) {
                return Ok(grant);
            }
            tokio::select! {
                _ = local_freed => {}
                _ = global_freed => {}
            }
        }
    }

    /// Reserves `n` bytes if both the share and the whole cache have room now.
    pub fn try_acquire(&self, n: u64) -> Option<CacheGrant> {
        // Lock order: share, then the whole cache (everywhere).
        let mut local = self.local.lock();
        if local.used + n > self.local.limit {
            return None;
        }
        let mut global = self.global.lock();
        if global.used + n > self.global.limit {
            return None;
        }
        local.used += n;
        local.peak = local.peak.max(local.used);
        global.used += n;
        global.peak = global.peak.max(global.used);
        Some(CacheGrant {
            global: self.global.clone(),
            local: self.local.clone(),
            bytes: n,
        })
    }
}

/// Bytes reserved in the cache; given back when dropped.
#[derive(Debug)]
pub struct CacheGrant {
    global: Arc<Pool>,
    local: Arc<Pool>,
    bytes: u64,
}

impl CacheGrant {
    /// How many bytes this grant holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for CacheGrant {
    fn drop(&mut self) {
        self.local.release(self.bytes);
        self.global.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn grants_are_counted_and_given_back() {
        let cache = FileCache::new(100, 60, 30);
        let share = cache.upload();
        let a = share.acquire(40).await.unwrap();
        assert_eq!(
            (cache.used(), share.used(), share.available()),
            (40, 40, 20)
        );
        assert!(share.try_acquire(30).is_none(), "share bound");
        let b = share.acquire(20).await.unwrap();
        assert_eq!(cache.used(), 60);
        drop(a);
        assert_eq!((cache.used(), cache.peak()), (20, 60));
        drop(b);
        assert_eq!(cache.used(), 0);
        assert!(share.acquire(61).await.is_err());
    }

    #[tokio::test]
    async fn a_full_cache_makes_writers_wait_never_exceed() {
        let cache = FileCache::new(100, 60, 60);
        let one = cache.upload();
        let two = cache.upload();
        let held = one.acquire(60).await.unwrap();
        let _other = two.acquire(30).await.unwrap();
        // 30 more for `two` would be 120 in all: it waits until `held` is dropped.
        let waiter = tokio::spawn(async move { two.acquire(30).await.map(|g| g.bytes()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        assert_eq!(cache.used(), 90);
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 30);
        assert!(cache.peak() <= 100);
    }

    #[tokio::test]
    async fn many_waiters_stay_within_bound() {
        let cache = FileCache::new(64, 32, 32);
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let share = cache.upload();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    let g = share.acquire(8 + i % 3).await.unwrap();
                    tokio::task::yield_now().await;
                    drop(g);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(cache.used(), 0);
        assert!(cache.peak() <= 64 && cache.peak() > 0);
    }
}
