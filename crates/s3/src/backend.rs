//! [`S3Backend`]: a sandbox that is a bucket + key prefix, presented as a folder tree.
//!
//! Folders are key prefixes: they come from CommonPrefixes and from zero-byte `dir/` marker
//! objects; `mkdir` writes markers. Listings are ListObjectsV2 with delimiter `/`, one page per
//! call; recursive walks (du, mv and rm of folders) go page by page and never hold a whole
//! prefix in memory. Keys that no sandbox path can name (`.`, `..`, empty segments) are not
//! shown and are never reached.

use crate::client::{
    build, Target, CONNECT_TIMEOUT, METADATA_ATTEMPT_TIMEOUT, METADATA_OPERATION_TIMEOUT,
};
use crate::errors::{backend_error, service_status};
use crate::keys::{
    copy_part_size, copy_source, normalize_prefix, part_ranges, visible_name, visible_path, KeyMap,
    COPY_OBJECT_MAX,
};
use async_trait::async_trait;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use slipstream_storage::cache::FileCache;
use slipstream_storage::config::S3Config;
use slipstream_storage::data::{FileSink, ObjectReader, SinkOptions};
use slipstream_storage::{
    Backend, Entry, EntryKind, Page, RelPath, StorageError, StorageResult, Usage,
};
use std::cmp::Ordering;
use std::sync::Arc;

/// The cache of backends made without [`S3Backend::with_file_cache`].
fn default_cache() -> FileCache {
    static DEFAULT: std::sync::OnceLock<FileCache> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(FileCache::default).clone()
}

/// S3's largest page (ListObjectsV2 max-keys, DeleteObjects batch).
const PAGE: i32 = 1000;
/// Cursor format version, so the cursor can change shape later.
const CURSOR_TAG: &str = "s3v1:";

/// An S3 sandbox. Cheap to clone (clients are shared handles).
#[derive(Clone)]
pub struct S3Backend {
    /// Bounded per-operation timeouts: listings, heads, markers, deletes.
    meta: Client,
    /// No attempt timeout: server-side copies of large objects.
    bulk: Client,
    target: Arc<Target>,
    keys: KeyMap,
    /// Memory for upload parts and read-ahead (the server's; a default one otherwise).
    cache: FileCache,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the config: it holds secrets.
        f.debug_struct("S3Backend")
            .field("bucket", &self.target.bucket)
            .field("endpoint", &self.target.endpoint_label)
            .field("keys", &self.keys)
            .finish()
    }
}

/// What HEAD says about an object.
struct Head {
    size: u64,
    modified: Option<i64>,
    content_type: Option<String>,
}

/// One listed object.
struct Listed {
    key: String,
    size: u64,
}

impl S3Backend {
    /// Builds the backend from a mapping (synchronous: nothing is sent; use [`crate::probe`]
    /// to check the mapping against the endpoint).
    pub fn new(config: &S3Config) -> StorageResult<S3Backend> {
        let target = Target::from_config(config)?;
        let prefix = normalize_prefix(&config.path)?;
        let meta = build(
            config,
            &target,
            Some((METADATA_ATTEMPT_TIMEOUT, METADATA_OPERATION_TIMEOUT)),
        )?;
        // Same HTTP client (one connection pool), without the per-attempt bounds.
        let bulk = Client::from_conf(
            meta.config()
                .to_builder()
                .timeout_config(
                    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                        .connect_timeout(CONNECT_TIMEOUT)
                        .disable_operation_attempt_timeout()
                        .disable_operation_timeout()
                        .build(),
                )
                .build(),
        );
        Ok(S3Backend {
            meta,
            bulk,
            target: Arc::new(target),
            keys: KeyMap::new(prefix),
            cache: default_cache(),
        })
    }

    /// The same backend drawing its transfer memory from `cache` (the server's file cache).
    /// Without it, a process-wide cache with the default limits is used.
    pub fn with_file_cache(mut self, cache: FileCache) -> S3Backend {
        self.cache = cache;
        self
    }

    /// The file cache transfers of this sandbox use.
    pub fn file_cache(&self) -> &FileCache {
        &self.cache
    }

    /// The settled connection facts (for error messages).
    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The client with bounded timeouts (metadata calls).
    pub(crate) fn meta_client(&self) -> &Client {
        &self.meta
    }

    /// The key prefix of the sandbox root (`""` for a whole bucket, else ending in `/`).
    pub fn root_prefix(&self) -> String {
        self.keys.dir_prefix(&RelPath::root())
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.target.bucket
    }

    /// The key of the file at `path` (for the multipart writer and reader).
    pub fn key_for(&self, path: &RelPath) -> String {
        self.keys.key(path)
    }

    /// The client without per-attempt timeouts (for uploads and ranged reads).
    pub fn client(&self) -> &Client {
        &self.bulk
    }

    fn err<E>(
        &self,
        what: &str,
        e: &aws_sdk_s3::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    ) -> StorageError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        backend_error(what, e, &self.target)
    }

    async fn head(&self, key: &str) -> StorageResult<Option<Head>> {
        match self
            .meta
            .head_object()
            .bucket(&self.target.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Head {
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                modified: out.last_modified().map(micros),
                content_type: out.content_type().map(str::to_string),
            })),
            Err(e) if service_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err(&format!("reading key '{key}'"), &e)),
        }
    }

    /// One ListObjectsV2 page under `prefix`.
    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        max_keys: i32,
        token: Option<String>,
    ) -> StorageResult<ListObjectsV2Output> {
        let mut request = self
            .meta
            .list_objects_v2()
            .bucket(&self.target.bucket)
            .max_keys(max_keys)
            .set_continuation_token(token);
        if !prefix.is_empty() {
            request = request.prefix(prefix);
        }
        if delimited {
            request = request.delimiter("/");
        }
        request.send().await.map_err(|e| {
            self.err(
                &format!(
                    "listing prefix '{prefix}' of bucket '{}'",
                    self.target.bucket
                ),
                &e,
            )
        })
    }

    /// True if any key starts with `prefix` (the folder's marker included).
    async fn any_under(&self, prefix: &str) -> StorageResult<bool> {
        let page = self.list_page(prefix, false, 1, None).await?;
        Ok(!page.contents().is_empty() || !page.common_prefixes().is_empty())
    }

    /// Calls `visit` with every object under `prefix`, page by page, in key order.
    async fn walk<F>(&self, prefix: &str, mut visit: F) -> StorageResult<()>
    where
        F: FnMut(Vec<Listed>) -> StorageResult<()>,
    {
        let mut token = None;
        loop {
            let page = self.list_page(prefix, false, PAGE, token).await?;
            visit(listed(&page))?;
            token = next_token(&page);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// One page (up to 1,000) of the keys under `prefix`, no delimiter, and the next token.
    async fn keys_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> StorageResult<(Vec<Listed>, Option<String>)> {
        let page = self.list_page(prefix, false, PAGE, token).await?;
        Ok((listed(&page), next_token(&page)))
    }

    async fn put_empty(&self, key: &str) -> StorageResult<()> {
        self.meta
            .put_object()
            .bucket(&self.target.bucket)
            .key(key)
            .body(ByteStream::from_static(b""))
            .content_length(0)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("writing key '{key}'"), &e))
    }

    async fn delete_key(&self, key: &str) -> StorageResult<()> {
        self.meta
            .delete_object()
            .bucket(&self.target.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("deleting key '{key}'"), &e))
    }

    /// Deletes up to 1,000 keys in one DeleteObjects call; any per-key failure is an error.
    async fn delete_batch(&self, keys: Vec<String>) -> StorageResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut objects = Vec::with_capacity(keys.len());
        for key in keys {
            objects.push(
                ObjectIdentifier::builder()
                    .key(key)
                    .build()
                    .map_err(|e| StorageError::Backend(format!("delete request: {e}")))?,
            );
        }
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| StorageError::Backend(format!("delete request: {e}")))?;
        let out = self
            .meta
            .delete_objects()
            .bucket(&self.target.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| self.err("deleting keys", &e))?;
        if let Some(failed) = out.errors().first() {
            return Err(StorageError::Backend(format!(
                "deleting key '{}' failed: S3 {}: {} ({} keys could not be deleted)",
                failed.key().unwrap_or(""),
                failed.code().unwrap_or("error"),
                failed.message().unwrap_or(""),
                out.errors().len()
            )));
        }
        Ok(())
    }

    /// Server-side copy of one object of `size` bytes; multipart above 5 GiB.
    async fn copy_object(&self, from: &str, to: &str, size: u64) -> StorageResult<()> {
        let source = copy_source(&self.target.bucket, from);
        if size <= COPY_OBJECT_MAX {
            return self
                .bulk
                .copy_object()
                .bucket(&self.target.bucket)
                .key(to)
                .copy_source(source)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err(&format!("copying key '{from}' to '{to}'"), &e));
        }
        self.copy_multipart(from, to, size, copy_part_size(size))
            .await
    }

    /// Multipart server-side copy (UploadPartCopy) in parts of `part` bytes. Any failure
    /// aborts the upload.
    async fn copy_multipart(
        &self,
        from: &str,
        to: &str,
        size: u64,
        part: u64,
    ) -> StorageResult<()> {
        let source = copy_source(&self.target.bucket, from);
        let content_type = self.head(from).await?.and_then(|h| h.content_type);
        let created = self
            .bulk
            .create_multipart_upload()
            .bucket(&self.target.bucket)
            .key(to)
            .set_content_type(content_type)
            .send()
            .await
            .map_err(|e| self.err(&format!("starting the copy of '{from}' to '{to}'"), &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StorageError::Backend(format!(
                "starting the copy of '{from}' to '{to}': the store returned no upload id"
            )));
        };
        match self
            .copy_parts(&source, from, to, &upload_id, size, part)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                // Leave nothing behind: the partial upload would cost storage forever.
                let aborted = self
                    .bulk
                    .abort_multipart_upload()
                    .bucket(&self.target.bucket)
                    .key(to)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(abort) = aborted {
                    tracing::warn!(key = to, upload_id, error = %crate::errors::chain_text(&abort), "could not abort a failed multipart copy");
                }
                Err(e)
            }
        }
    }

    /// Copies the file `from` to `to` (no existence checks on `to`) with UploadPartCopy in
    /// parts of `part_size` bytes, as `rename` does for objects over 5 GiB. Public so that
    /// tests and tools can run the multipart path on small objects (parts must be at least
    /// 5 MiB, except the last).
    pub async fn copy_in_parts(
        &self,
        from: &RelPath,
        to: &RelPath,
        part_size: u64,
    ) -> StorageResult<()> {
        let entry = self
            .stat(from)
            .await?
            .filter(|e| e.kind == EntryKind::File)
            .ok_or_else(|| StorageError::NotFound(format!("file '{from}' does not exist")))?;
        self.copy_multipart(
            &self.keys.key(from),
            &self.keys.key(to),
            entry.size,
            part_size,
        )
        .await
    }

    async fn copy_parts(
        &self,
        source: &str,
        from: &str,
        to: &str,
        upload_id: &str,
        size: u64,
        part: u64,
    ) -> StorageResult<()> {
        let mut parts = Vec::new();
        for (number, first, last) in part_ranges(size, part) {
            let out = self
                .bulk
                .upload_part_copy()
                .bucket(&self.target.bucket)
                .key(to)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(source)
                .copy_source_range(format!("bytes={first}-{last}"))
                .send()
                .await
                .map_err(|e| {
                    self.err(&format!("copying part {number} of '{from}' to '{to}'"), &e)
                })?;
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .map(str::to_string);
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(etag)
                    .build(),
            );
        }
        self.bulk
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(to)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("finishing the copy of '{from}' to '{to}'"), &e))
    }

    /// Writes a marker for `dir` when nothing else keeps it in existence (after its last
    /// entry was moved or removed), so that folders do not vanish as a side effect.
    async fn keep_folder(&self, dir: &RelPath) -> StorageResult<()> {
        if dir.is_root() {
            return Ok(());
        }
        let prefix = self.keys.dir_prefix(dir);
        if !self.any_under(&prefix).await? {
            self.put_empty(&prefix).await?;
        }
        Ok(())
    }

    /// Deletes the folder entries still listed under `prefix` after its keys were deleted,
    /// deepest first, then `prefix` itself. Some stores (SeaweedFS) keep a directory after its
    /// last key is gone and list it as a CommonPrefix; on AWS this finds nothing.
    async fn sweep(&self, prefix: &str) -> StorageResult<()> {
        let mut stack = vec![(prefix.to_string(), false)];
        while let Some((dir, expanded)) = stack.pop() {
            if expanded {
                self.delete_key(&dir).await?;
                continue;
            }
            stack.push((dir.clone(), true));
            let mut token = None;
            loop {
                let page = self.list_page(&dir, true, PAGE, token).await?;
                for common in page.common_prefixes() {
                    if let Some(sub) = common.prefix() {
                        if sub.len() > dir.len() && sub.starts_with(dir.as_str()) {
                            stack.push((sub.to_string(), false));
                        }
                    }
                }
                token = next_token(&page);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// `NotFound` unless `dir` is an existing folder (`Conflict` if it is a file).
    async fn require_folder(&self, dir: &RelPath) -> StorageResult<()> {
        match self.stat(dir).await? {
            Some(e) if e.kind == EntryKind::Directory => Ok(()),
            Some(_) => Err(StorageError::Conflict(format!(
                "'{dir}' is a file, not a folder"
            ))),
            None => Err(StorageError::NotFound(format!(
                "folder '{dir}' does not exist"
            ))),
        }
    }
}

/// Microseconds since the epoch.
fn micros(t: &aws_sdk_s3::primitives::DateTime) -> i64 {
    t.secs()
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.subsec_nanos() / 1000))
}

fn listed(page: &ListObjectsV2Output) -> Vec<Listed> {
    page.contents()
        .iter()
        .filter_map(|o| {
            Some(Listed {
                key: o.key()?.to_string(),
                size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            })
        })
        .collect()
}

fn next_token(page: &ListObjectsV2Output) -> Option<String> {
    if page.is_truncated() == Some(true) {
        page.next_continuation_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    } else {
        None
    }
}

/// Orders entries as S3 orders keys: a folder sorts as its name followed by `/`. This keeps
/// the order the same within and across pages.
fn key_order(a: &Entry, b: &Entry) -> Ordering {
    fn sort_key(e: &Entry) -> (&[u8], &[u8]) {
        let suffix: &[u8] = if e.kind == EntryKind::Directory {
            b"/"
        } else {
            b""
        };
        (e.name.as_bytes(), suffix)
    }
    let (an, asuf) = sort_key(a);
    let (bn, bsuf) = sort_key(b);
    an.iter().chain(asuf).cmp(bn.iter().chain(bsuf))
}

/// Counts folders in a key-ordered stream without remembering them: all keys below one
/// folder are contiguous in key order, so a folder is new exactly when it is not a prefix of
/// the previous key's folder path.
#[derive(Default)]
struct FolderCounter {
    previous: Vec<String>,
    count: u64,
}

impl FolderCounter {
    /// `folders`: the folder path of one key (its segments without the file name; for a
    /// marker `a/b/`, `[a, b]`).
    fn see(&mut self, folders: Vec<String>) {
        let common = self
            .previous
            .iter()
            .zip(&folders)
            .take_while(|(a, b)| a == b)
            .count();
        self.count += (folders.len() - common) as u64;
        self.previous = folders;
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn type_name(&self) -> &'static str {
        "S3"
    }

    async fn open_reader(&self, path: &RelPath) -> StorageResult<Box<dyn ObjectReader>> {
        Ok(Box::new(self.open_s3_reader(path).await?))
    }

    async fn create_sink(
        &self,
        path: &RelPath,
        options: SinkOptions,
    ) -> StorageResult<Box<dyn FileSink>> {
        Ok(Box::new(self.create_s3_sink(path, options).await?))
    }

    async fn stat(&self, path: &RelPath) -> StorageResult<Option<Entry>> {
        if path.is_root() {
            return Ok(Some(Entry {
                name: String::new(),
                kind: EntryKind::Directory,
                size: 0,
                modification_time: None,
                executable: false,
                symlink: false,
                node: None,
            }));
        }
        if let Some(head) = self.head(&self.keys.key(path)).await? {
            return Ok(Some(Entry {
                name: path.name().to_string(),
                kind: EntryKind::File,
                size: head.size,
                modification_time: head.modified,
                executable: false,
                symlink: false,
                node: None,
            }));
        }
        let folder = |modified| {
            Some(Entry {
                name: path.name().to_string(),
                kind: EntryKind::Directory,
                size: 0,
                modification_time: modified,
                executable: false,
                symlink: false,
                node: None,
            })
        };
        let prefix = self.keys.dir_prefix(path);
        // A marker (or, on SeaweedFS, any directory the store still lists)...
        if let Some(marker) = self.head(&prefix).await? {
            return Ok(folder(marker.modified));
        }
        // ...or any key below: an implicit folder.
        if self.any_under(&prefix).await? {
            return Ok(folder(None));
        }
        Ok(None)
    }

    async fn list(&self, dir: &RelPath, limit: usize, cursor: Option<&str>) -> StorageResult<Page> {
        let prefix = self.keys.dir_prefix(dir);
        let max_keys = i32::try_from(limit.clamp(1, PAGE as usize)).unwrap_or(PAGE);
        let mut token = match cursor {
            None | Some("") => None,
            Some(c) => Some(
                c.strip_prefix(CURSOR_TAG)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        StorageError::config("cursor", "cursor is not one this server returned")
                    })?
                    .to_string(),
            ),
        };
        let first_page = token.is_none();
        let mut seen_any = false;
        loop {
            let page = self
                .list_page(&prefix, true, max_keys, token.take())
                .await?;
            let mut entries = Vec::new();
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                seen_any = true;
                let Some(name) = key.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                if !visible_name(name) {
                    continue; // the folder's own marker, `.`, `..`, ...
                }
                entries.push(Entry {
                    name: name.to_string(),
                    kind: EntryKind::File,
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    modification_time: object.last_modified().map(micros),
                    executable: false,
                    symlink: false,
                    node: None,
                });
            }
            for common in page.common_prefixes() {
                let Some(p) = common.prefix() else { continue };
                seen_any = true;
                let Some(name) = p
                    .strip_prefix(prefix.as_str())
                    .and_then(|n| n.strip_suffix('/'))
                else {
                    continue;
                };
                if !visible_name(name) {
                    continue; // `a//b` gives the prefix `a//`: an empty name
                }
                entries.push(Entry {
                    name: name.to_string(),
                    kind: EntryKind::Directory,
                    size: 0,
                    modification_time: None,
                    executable: false,
                    symlink: false,
                    node: None,
                });
            }
            token = next_token(&page);
            if first_page && !seen_any && !dir.is_root() {
                // Nothing under the prefix: no such folder (or a file).
                return match self.stat(dir).await? {
                    Some(e) if e.kind == EntryKind::File => Err(StorageError::Conflict(format!(
                        "'{dir}' is a file, not a folder"
                    ))),
                    Some(_) => Ok(Page::default()),
                    None => Err(StorageError::NotFound(format!(
                        "folder '{dir}' does not exist"
                    ))),
                };
            }
            // A page of only hidden keys says nothing; go on rather than return an empty page.
            if entries.is_empty() && token.is_some() {
                continue;
            }
            entries.sort_by(key_order);
            return Ok(Page {
                entries,
                next_cursor: token.map(|t| format!("{CURSOR_TAG}{t}")),
            });
        }
    }

    async fn usage(&self, path: &RelPath) -> StorageResult<Usage> {
        let entry = self
            .stat(path)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("'{path}' does not exist")))?;
        if entry.kind == EntryKind::File {
            return Ok(Usage {
                total_size: entry.size,
                total_files: 1,
                total_directories: 0,
            });
        }
        let prefix = self.keys.dir_prefix(path);
        let mut usage = Usage::default();
        let mut folders = FolderCounter::default();
        self.walk(&prefix, |objects| {
            for object in objects {
                let Some(rel) = object.key.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                if rel.is_empty() || !visible_path(rel) {
                    continue; // the folder's own marker, or a key no path can name
                }
                let mut segments: Vec<String> = rel.split('/').map(str::to_string).collect();
                if rel.ends_with('/') {
                    segments.pop(); // the empty segment after a marker's slash
                } else {
                    segments.pop(); // the file name
                    usage.total_files += 1;
                    usage.total_size += object.size;
                }
                folders.see(segments);
            }
            Ok(())
        })
        .await?;
        usage.total_directories = folders.count;
        Ok(usage)
    }

    async fn mkdir(&self, path: &RelPath) -> StorageResult<()> {
        let mut level = RelPath::root();
        for segment in path.segments() {
            level = level.join(segment)?;
            match self.stat(&level).await? {
                Some(e) if e.kind == EntryKind::Directory => {}
                Some(_) => {
                    return Err(StorageError::Conflict(format!(
                        "'{level}' is a file, so the folder '{path}' cannot be created"
                    )))
                }
                None => self.put_empty(&self.keys.dir_prefix(&level)).await?,
            }
        }
        Ok(())
    }

    async fn create_file(&self, path: &RelPath) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::Conflict(
                "the sandbox root is a folder".into(),
            ));
        }
        self.require_folder(&path.parent()).await?;
        if self.stat(path).await?.is_some() {
            return Err(StorageError::Conflict(format!("'{path}' already exists")));
        }
        self.put_empty(&self.keys.key(path)).await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> StorageResult<()> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::PermissionDenied(
                "the sandbox root cannot be moved or replaced".into(),
            ));
        }
        if to.starts_with(from) {
            return Err(StorageError::Conflict(format!(
                "'{from}' cannot be moved into itself ('{to}')"
            )));
        }
        let entry = self
            .stat(from)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("'{from}' does not exist")))?;
        if self.stat(to).await?.is_some() {
            return Err(StorageError::Conflict(format!("'{to}' already exists")));
        }
        self.require_folder(&to.parent())
            .await
            .map_err(|e| match e {
                StorageError::Conflict(m) | StorageError::NotFound(m) => StorageError::NotFound(m),
                other => other,
            })?;
        if entry.kind == EntryKind::File {
            let (src, dst) = (self.keys.key(from), self.keys.key(to));
            self.copy_object(&src, &dst, entry.size).await?;
            self.delete_key(&src).await?;
        } else {
            let (src, dst) = (self.keys.dir_prefix(from), self.keys.dir_prefix(to));
            // Copy and delete one page at a time; the token stays valid because only keys
            // before it are deleted.
            let mut token = None;
            loop {
                let (objects, next) = self.keys_page(&src, token).await?;
                let mut done = Vec::with_capacity(objects.len());
                for object in objects {
                    let Some(rel) = object.key.strip_prefix(src.as_str()) else {
                        continue;
                    };
                    let target = format!("{dst}{rel}");
                    if object.key.ends_with('/') && object.size == 0 {
                        // A folder marker: write a new one (SeaweedFS cannot copy its
                        // directories, and a marker has no content to keep).
                        self.put_empty(&target).await?;
                    } else {
                        self.copy_object(&object.key, &target, object.size).await?;
                    }
                    done.push(object.key);
                }
                self.delete_batch(done).await?;
                token = next;
                if token.is_none() {
                    break;
                }
            }
            self.sweep(&src).await?;
            // A folder with no keys at all (a store-side empty directory) still arrives.
            if !self.any_under(&dst).await? {
                self.put_empty(&dst).await?;
            }
        }
        self.keep_folder(&from.parent()).await
    }

    async fn remove(&self, path: &RelPath, recursive: bool) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::PermissionDenied(
                "the sandbox root cannot be removed".into(),
            ));
        }
        let entry = self
            .stat(path)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("'{path}' does not exist")))?;
        if entry.kind == EntryKind::File {
            self.delete_key(&self.keys.key(path)).await?;
            return self.keep_folder(&path.parent()).await;
        }
        let prefix = self.keys.dir_prefix(path);
        if !recursive {
            let page = self.list_page(&prefix, false, 2, None).await?;
            let non_empty = page
                .contents()
                .iter()
                .any(|o| o.key() != Some(prefix.as_str()))
                || !page.common_prefixes().is_empty();
            if non_empty {
                return Err(StorageError::Conflict(format!(
                    "folder '{path}' is not empty: remove its contents first, or remove recursively"
                )));
            }
            self.delete_key(&prefix).await?;
            return self.keep_folder(&path.parent()).await;
        }
        let mut token = None;
        loop {
            let (objects, next) = self.keys_page(&prefix, token).await?;
            self.delete_batch(objects.into_iter().map(|o| o.key).collect())
                .await?;
            token = next;
            if token.is_none() {
                break;
            }
        }
        self.sweep(&prefix).await?;
        self.keep_folder(&path.parent()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: EntryKind) -> Entry {
        Entry {
            name: name.into(),
            kind,
            size: 0,
            modification_time: None,
            executable: false,
            symlink: false,
            node: None,
        }
    }

    #[test]
    fn folders_sort_as_their_key_prefix() {
        let mut v = [
            entry("a", EntryKind::Directory),
            entry("a-b", EntryKind::File),
            entry("a0", EntryKind::File),
            entry("B", EntryKind::File),
        ];
        v.sort_by(key_order);
        let names: Vec<_> = v.iter().map(|e| e.name.as_str()).collect();
        // "a/" sorts after "a-b" ('-' < '/') and before "a0" ('/' < '0').
        assert_eq!(names, ["B", "a-b", "a", "a0"]);
    }

    #[test]
    fn only_the_metadata_client_bounds_attempts() {
        let mut c = slipstream_storage::config::S3Config {
            path: String::new(),
            bucket_name: "b".into(),
            region: String::new(),
            access_key_id: Some("AK".into()),
            secret_key: Some(slipstream_storage::config::Secret("SK".into())),
            session_token: None,
            scheme: slipstream_storage::config::Scheme::Http,
            endpoint_override: Some("127.0.0.1:9".into()),
            proxy_scheme: slipstream_storage::config::Scheme::Http,
            proxy_host: None,
            proxy_port: None,
            proxy_user_name: None,
            proxy_password: None,
            verify_ssl: true,
            ca_path: None,
            ca_file: None,
            force_path_style: None,
        };
        c.path = "/x/".into();
        let b = S3Backend::new(&c).unwrap();
        let meta = b.meta.config().timeout_config().unwrap();
        assert_eq!(
            meta.operation_attempt_timeout(),
            Some(METADATA_ATTEMPT_TIMEOUT)
        );
        assert_eq!(meta.connect_timeout(), Some(CONNECT_TIMEOUT));
        let bulk = b.bulk.config().timeout_config().unwrap();
        assert_eq!(bulk.operation_attempt_timeout(), None);
        assert_eq!(bulk.operation_timeout(), None);
        assert_eq!(bulk.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(b.key_for(&RelPath::parse("a/b").unwrap()), "x/a/b");
    }

    #[test]
    fn folder_counter_counts_each_folder_once() {
        let mut c = FolderCounter::default();
        for key in [
            "a/", "a/b/", "a/b/f", "a/b/g", "a/c/d/x", "a/f", "e/x", "top",
        ] {
            let mut segs: Vec<String> = key.split('/').map(str::to_string).collect();
            segs.pop();
            c.see(segs);
        }
        // a, a/b, a/c, a/c/d, e
        assert_eq!(c.count, 5);
    }
}
