//! The one error type of the storage layer; the API maps each variant to a JSON-RPC code.

use thiserror::Error;

/// Result alias used across the storage crate.
pub type StorageResult<T> = Result<T, StorageError>;

/// What can go wrong in storage. Each variant carries a message written for the user: it names
/// the thing (path, key, bucket) and, where there is one, the fix.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// A mapping or option is invalid (API code -32602). `field` is the offending key.
    #[error("{message}")]
    InvalidConfig { field: String, message: String },
    /// A user path is malformed or tries to leave the sandbox (API code -32003).
    #[error("{0}")]
    PermissionDenied(String),
    /// The path does not exist (API code -32004).
    #[error("{0}")]
    NotFound(String),
    /// The target exists, a folder is not empty, and the like (API code -32011).
    #[error("{0}")]
    Conflict(String),
    /// The backend failed: the S3 error code and text, or the OS error (API code -32010).
    #[error("{0}")]
    Backend(String),
}

impl StorageError {
    /// An [`StorageError::InvalidConfig`] for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        StorageError::InvalidConfig {
            field: field.into(),
            message: message.into(),
        }
    }
}
