//! The [`Backend`] trait: what every sandbox type (File, S3, Memory in tests) offers, over paths
//! relative to its own root. Backends never see user paths: [`crate::vfs`] resolves those.

use crate::data::{FileSink, ObjectReader, SinkOptions};
use crate::error::{StorageError, StorageResult};
use crate::path::RelPath;
use async_trait::async_trait;
use serde::Serialize;

/// File or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
}

/// One listing entry, shaped like the API's `ls` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The last path segment.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Bytes for files; 0 for folders.
    pub size: u64,
    /// Microseconds since the Unix epoch, when the backend knows it.
    pub modification_time: Option<i64>,
    /// The executable bit (File sandboxes; always false on S3).
    pub executable: bool,
    /// The name is a symbolic link (File sandboxes only; never on S3). The other fields
    /// describe its target, which lies inside the sandbox (links that leave it, dangle or loop
    /// are never entries). Not part of the API's `ls` entries.
    #[serde(skip)]
    pub symlink: bool,
    /// What the entry names on its store, when the store can tell (File sandboxes: the
    /// target's device and inode). Two entries with the same node are the same file or folder,
    /// whatever their paths; a scan uses it to notice a folder reached again through a link.
    /// Not part of the API's `ls` entries.
    #[serde(skip)]
    pub node: Option<NodeId>,
}

/// The identity of a file or folder on a File sandbox's disk: device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub device: u64,
    pub inode: u64,
}

/// One page of a folder listing. `next_cursor` is opaque; pass it back to get the next page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next_cursor: Option<String>,
}

/// What `du` reports. `total_directories` does not count the folder itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub total_size: u64,
    pub total_files: u64,
    pub total_directories: u64,
}

impl Usage {
    /// Adds another subtree's totals.
    pub fn add(&mut self, other: Usage) {
        self.total_size += other.total_size;
        self.total_files += other.total_files;
        self.total_directories += other.total_directories;
    }
}

/// A storage backend rooted at a sandbox root. All paths are relative to that root.
///
/// Error conventions: a missing path is `NotFound`; an existing target, or a non-empty folder
/// removed without `recursive`, is `Conflict`; anything the store itself reports is `Backend`
/// with the store's own code and text.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// `"File"` or `"S3"` (or `"Memory"` in tests), as in the mapping's `type`.
    fn type_name(&self) -> &'static str;

    /// The entry at `path`, or `None` if nothing is there. The root always exists.
    async fn stat(&self, path: &RelPath) -> StorageResult<Option<Entry>>;

    /// One page of the folder `dir`, sorted by name, at most `limit` entries.
    async fn list(&self, dir: &RelPath, limit: usize, cursor: Option<&str>) -> StorageResult<Page>;

    /// Totals for everything below `path` (a file gives its own size and one file).
    async fn usage(&self, path: &RelPath) -> StorageResult<Usage>;

    /// Creates the folder and any missing parents. An existing folder is fine; an existing file
    /// on the way is a `Conflict`.
    async fn mkdir(&self, path: &RelPath) -> StorageResult<()>;

    /// Creates an empty file. The parent must exist (`NotFound`); an existing entry is a `Conflict`.
    async fn create_file(&self, path: &RelPath) -> StorageResult<()>;

    /// Moves a file or folder (folders with everything below them). `to` must not exist
    /// (`Conflict`) and its parent must (`NotFound`).
    async fn rename(&self, from: &RelPath, to: &RelPath) -> StorageResult<()>;

    /// Removes a file, or a folder (only when empty unless `recursive`). The root cannot be removed.
    async fn remove(&self, path: &RelPath, recursive: bool) -> StorageResult<()>;

    /// Opens a file for reading at any offset (the sending side of a transfer).
    async fn open_reader(&self, path: &RelPath) -> StorageResult<Box<dyn ObjectReader>> {
        Err(StorageError::Backend(format!(
            "{}: {} sandboxes cannot be read by transfers",
            path,
            self.type_name()
        )))
    }

    /// Opens a sink that receives the file at `path` (the receiving side of a transfer). The
    /// parent folder must exist. Conflicts with an existing file under `options.overwrite` are
    /// reported here (`Conflict`), before any byte is written.
    async fn create_sink(
        &self,
        path: &RelPath,
        options: SinkOptions,
    ) -> StorageResult<Box<dyn FileSink>> {
        let _ = options;
        Err(StorageError::Backend(format!(
            "{}: {} sandboxes cannot receive transfers",
            path,
            self.type_name()
        )))
    }
}
