//! Storage backends (File, S3), sandbox configuration and the VirtualFs that confines a user.
//!
//! The layers, bottom up:
//! - [`backend`]: the [`Backend`] trait every storage type implements, over paths relative to
//!   the sandbox root ([`RelPath`]), plus the shared entry and error types.
//! - [`file`](mod@file): the File sandbox type (the S3 type lives in the `slipstream-s3` crate, so that
//!   this crate builds without the AWS SDK).
//! - [`file_data`]: the File sandbox's data path (positional reader, sinks with partfiles).
//! - [`memory`]: an in-memory backend with the File semantics, for tests.
//! - [`config`]: sandbox mappings as users write them (JSON), validation with errors that name
//!   the key, placeholder expansion, secret redaction.
//! - [`cache`]: the file cache S3 transfers buffer data in (bounded, per-transfer shares).
//! - [`data`]: the data path of transfers: readers, sinks (partfiles, overwrite modes), the
//!   file digest both ends compute.
//! - [`vfs`]: a user's view: virtual roots → backends, safe resolution of user paths. Backends
//!   are made by a [`vfs::BackendOpener`] that the server supplies, which is how S3 plugs in.

pub mod backend;
pub mod cache;
pub mod config;
pub mod data;
pub mod error;
pub mod file;
pub mod file_data;
pub mod memory;
pub mod path;
pub mod vfs;

pub use backend::{Backend, Entry, EntryKind, NodeId, Page, Usage};
pub use config::{Mapping, SandboxConfig, UserIdentity};
pub use error::{StorageError, StorageResult};
pub use file::FileBackend;
pub use memory::MemoryBackend;
pub use path::RelPath;
pub use vfs::{BackendOpener, FileOnlyOpener, Listing, RootInfo, VirtualFs};
