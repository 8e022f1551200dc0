//! The engine's API error: one of api.md's codes, a message that names the thing and the fix,
//! and optional data.

use serde_json::Value;
use slipstream_storage::StorageError;

/// JSON-RPC error codes (api.md §2).
pub mod code {
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    pub const AUTH_FAILED: i64 = -32001;
    pub const PERMISSION_DENIED: i64 = -32003;
    pub const NOT_FOUND: i64 = -32004;
    pub const STORAGE: i64 = -32010;
    pub const CONFLICT: i64 = -32011;
}

/// An API error with one of api.md's codes (-32602 invalid params, -32003 permission denied,
/// -32004 not found, -32010 storage, -32011 conflict, -32001 authentication).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub code: i64,
    pub message: String,
    /// `{"field": name}` for invalid params.
    pub data: Option<Value>,
}

impl EngineError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        EngineError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Invalid params; `data.field` names the param.
    pub fn invalid_param(field: &str, message: impl Into<String>) -> Self {
        EngineError {
            code: code::INVALID_PARAMS,
            message: message.into(),
            data: Some(serde_json::json!({ "field": field })),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(code::PERMISSION_DENIED, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(code::CONFLICT, message)
    }

    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(code::STORAGE, message)
    }

    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(code::AUTH_FAILED, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, message)
    }

    /// Marks the error as temporary: the sending server retries the call later.
    pub fn retryable(mut self) -> Self {
        self.data = Some(serde_json::json!({ "retryable": true }));
        self
    }
}

impl From<StorageError> for EngineError {
    fn from(error: StorageError) -> Self {
        let (code, data) = match &error {
            StorageError::InvalidConfig { field, .. } => (
                code::INVALID_PARAMS,
                Some(serde_json::json!({"field": field})),
            ),
            StorageError::PermissionDenied(_) => (code::PERMISSION_DENIED, None),
            StorageError::NotFound(_) => (code::NOT_FOUND, None),
            StorageError::Conflict(_) => (code::CONFLICT, None),
            StorageError::Backend(_) => (code::STORAGE, None),
        };
        EngineError {
            code,
            message: error.to_string(),
            data,
        }
    }
}
