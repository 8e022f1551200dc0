//! Stale multipart uploads: listing the uploads under a sandbox's prefix and aborting those
//! older than an age that no live sink of this process owns.
//!
//! Uploads are left behind when a process dies mid-transfer, or deliberately when a sink was
//! dropped after a checkpoint (kept for a resume). They are invisible to users but take space.
//! The server runs [`S3Backend::reap_stale_uploads`] at start and every hour over every S3
//! sandbox (`--stale-upload-age`, default 24 h); `slipstream s3 uploads|cleanup` do the same by
//! hand. A process-wide registry of the UploadIds of live sinks keeps the reaper away from
//! uploads in progress, whatever their age.

use crate::backend::S3Backend;
use crate::errors::backend_error;
use serde::Serialize;
use slipstream_storage::StorageResult;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

/// The default age after which an upload counts as stale (24 h).
pub const DEFAULT_STALE_AGE: Duration = Duration::from_secs(24 * 3600);

fn live() -> MutexGuard<'static, HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    // A set of strings: a panic elsewhere cannot leave it half-written.
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Marks an upload as owned by a live sink of this process.
pub(crate) fn register(upload_id: &str) {
    live().insert(upload_id.to_string());
}

/// The upload is no longer owned by a live sink (completed, aborted or left for a resume).
pub(crate) fn unregister(upload_id: &str) {
    live().remove(upload_id);
}

/// True while a live sink of this process owns the upload.
pub fn is_live(upload_id: &str) -> bool {
    live().contains(upload_id)
}

/// One multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingUpload {
    /// The object key.
    pub key: String,
    pub upload_id: String,
    /// Seconds since the upload was started (0 when S3 does not say).
    pub age_seconds: u64,
    /// Owned by a live sink of this process.
    pub live: bool,
}

impl S3Backend {
    /// Every multipart upload under the sandbox's prefix (ListMultipartUploads, all pages).
    pub async fn multipart_uploads(&self) -> StorageResult<Vec<PendingUpload>> {
        let prefix = self.root_prefix();
        let now = SystemTime::now();
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let mut request = self
                .meta_client()
                .list_multipart_uploads()
                .bucket(self.bucket())
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone());
            if !prefix.is_empty() {
                request = request.prefix(&prefix);
            }
            let page = request.send().await.map_err(|e| {
                backend_error(
                    &format!(
                        "listing the multipart uploads under '{prefix}' of bucket '{}'",
                        self.bucket()
                    ),
                    &e,
                    self.target(),
                )
            })?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let age = upload
                    .initiated()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                found.push(PendingUpload {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    age_seconds: age.as_secs(),
                    live: is_live(id),
                });
            }
            let next_key = page.next_key_marker().map(str::to_string);
            let next_id = page.next_upload_id_marker().map(str::to_string);
            let more = page.is_truncated().unwrap_or(false) && next_key.is_some();
            if !more || (next_key == key_marker && next_id == id_marker) {
                break;
            }
            key_marker = next_key;
            id_marker = next_id;
        }
        Ok(found)
    }

    /// Aborts the uploads under the prefix that are at least `older_than` old and not owned
    /// by a live sink of this process (with `dry_run`, only lists them). Returns them.
    pub async fn reap_stale_uploads(
        &self,
        older_than: Duration,
        dry_run: bool,
    ) -> StorageResult<Vec<PendingUpload>> {
        let stale: Vec<PendingUpload> = self
            .multipart_uploads()
            .await?
            .into_iter()
            .filter(|u| !u.live && u.age_seconds >= older_than.as_secs())
            .collect();
        if dry_run {
            return Ok(stale);
        }
        for upload in &stale {
            let result = self
                .meta_client()
                .abort_multipart_upload()
                .bucket(self.bucket())
                .key(&upload.key)
                .upload_id(&upload.upload_id)
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e) if crate::errors::service_status(&e) == Some(404) => {}
                Err(e) => {
                    return Err(backend_error(
                        &format!(
                            "aborting the stale upload {} of '{}'",
                            upload.upload_id, upload.key
                        ),
                        &e,
                        self.target(),
                    ))
                }
            }
        }
        Ok(stale)
    }
}
