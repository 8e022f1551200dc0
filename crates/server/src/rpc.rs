//! JSON-RPC 2.0 framing: requests, responses, the error codes of api.md, and params given by
//! name or by position.

use serde_json::{json, Map, Value};
use slipstream_storage::StorageError;

/// Error codes (api.md §2).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const AUTH_FAILED: i64 = -32001;
    pub const PERMISSION_DENIED: i64 = -32003;
    pub const NOT_FOUND: i64 = -32004;
    pub const STORAGE: i64 = -32010;
    pub const CONFLICT: i64 = -32011;
}

/// An error answer: code, message for the user, optional data, and the HTTP status to use.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub http_status: u16,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
            http_status: 200,
        }
    }

    /// With `data` attached.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn parse_error(message: impl Into<String>) -> Self {
        Self::new(code::PARSE_ERROR, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(code::METHOD_NOT_FOUND, format!("unknown method '{method}'"))
            .with_data(json!({"method": method}))
    }

    /// Invalid params; the message names `param`, and `data.field` carries it.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message).with_data(json!({"field": param}))
    }

    /// Authentication failed: HTTP 401.
    pub fn auth_failed(message: impl Into<String>) -> Self {
        RpcError {
            http_status: 401,
            ..Self::new(
                code::AUTH_FAILED,
                format!("authentication failed: {}", message.into()),
            )
        }
    }

    /// Too many failed logins: HTTP 429.
    pub fn throttled(retry_seconds: u64) -> Self {
        RpcError {
            http_status: 429,
            ..Self::new(
                code::AUTH_FAILED,
                format!("too many failed logins, retry in {retry_seconds} s"),
            )
            .with_data(json!({"retryAfterSeconds": retry_seconds}))
        }
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(code::PERMISSION_DENIED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, message)
    }

    pub fn storage(message: impl Into<String>) -> Self {
        Self::new(code::STORAGE, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(code::CONFLICT, message)
    }

    /// An unexpected server-side failure (database and the like). The detail goes to the log,
    /// not to the caller.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error while handling an API call");
        Self::new(
            code::INTERNAL_ERROR,
            "internal server error; see the server log",
        )
    }

    /// The `error` object of a response.
    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }
}

impl From<slipstream_engine::EngineError> for RpcError {
    fn from(error: slipstream_engine::EngineError) -> Self {
        RpcError {
            code: error.code,
            http_status: if error.code == code::AUTH_FAILED {
                401
            } else {
                200
            },
            message: error.message,
            data: error.data,
        }
    }
}

impl From<StorageError> for RpcError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidConfig { field, message } => {
                RpcError::invalid_param(&field, message)
            }
            StorageError::PermissionDenied(m) => RpcError::permission_denied(m),
            StorageError::NotFound(m) => RpcError::not_found(m),
            StorageError::Conflict(m) => RpcError::conflict(m),
            StorageError::Backend(m) => RpcError::storage(m),
        }
    }
}

/// A method's params as named values. Positional params are named by the method's parameter
/// list; unknown names and too many positions are errors that name the problem.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: Map<String, Value>,
}

impl Params {
    /// The params by name.
    pub fn into_map(self) -> Map<String, Value> {
        self.values
    }

    /// Reads `params` (absent, an object or an array) for a method whose params are `names`.
    pub fn new(params: Option<Value>, names: &[&str]) -> Result<Params, RpcError> {
        let values = match params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => {
                if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
                    let valid = if names.is_empty() {
                        "this method takes no params".to_string()
                    } else {
                        format!("valid params: {}", names.join(", "))
                    };
                    return Err(RpcError::invalid_param(
                        unknown,
                        format!("unknown param '{unknown}'; {valid}"),
                    ));
                }
                map
            }
            Some(Value::Array(items)) => {
                if items.len() > names.len() {
                    return Err(RpcError::invalid_param(
                        "params",
                        format!(
                            "{} positional params given, at most {} taken ({})",
                            items.len(),
                            names.len(),
                            names.join(", ")
                        ),
                    ));
                }
                names
                    .iter()
                    .zip(items)
                    .map(|(name, value)| (name.to_string(), value))
                    .collect()
            }
            Some(_) => {
                return Err(RpcError::invalid_param(
                    "params",
                    "params must be an object (by name) or an array (by position)",
                ))
            }
        };
        Ok(Params { values })
    }

    /// The raw value of `name`, treating `null` as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }

    fn missing(name: &str, kind: &str) -> RpcError {
        RpcError::invalid_param(name, format!("missing param '{name}' ({kind})"))
    }

    fn wrong_type(name: &str, kind: &str, value: &Value) -> RpcError {
        RpcError::invalid_param(
            name,
            format!("param '{name}' must be {kind}, not {}", type_name(value)),
        )
    }

    /// A required string.
    pub fn string(&self, name: &str) -> Result<String, RpcError> {
        self.opt_string(name)?
            .ok_or_else(|| Self::missing(name, "a string"))
    }

    /// An optional string.
    pub fn opt_string(&self, name: &str) -> Result<Option<String>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Self::wrong_type(name, "a string", other)),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Self::wrong_type(name, "true or false", other)),
        }
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                Self::wrong_type(name, "a non-negative integer", &Value::Number(n.clone()))
            }),
            Some(other) => Err(Self::wrong_type(name, "a non-negative integer", other)),
        }
    }

    /// A required non-negative integer.
    pub fn u64(&self, name: &str) -> Result<u64, RpcError> {
        self.opt_u64(name)?
            .ok_or_else(|| Self::missing(name, "a non-negative integer"))
    }

    /// A required value of any JSON type.
    pub fn value(&self, name: &str) -> Result<Value, RpcError> {
        self.get(name)
            .cloned()
            .ok_or_else(|| Self::missing(name, "a value"))
    }
}

/// A JSON type's name for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `None` for a notification (no answer is sent).
    pub id: Option<Value>,
    pub method: String,
    pub params: Option<Value>,
}

impl Request {
    /// Reads one request object; on failure returns the id (if any) and the error.
    pub fn from_value(value: Value) -> Result<Request, (Value, RpcError)> {
        let Value::Object(mut object) = value else {
            return Err((
                Value::Null,
                RpcError::invalid_request("a request must be a JSON object"),
            ));
        };
        let id = object.remove("id");
        let id_for_error = id.clone().unwrap_or(Value::Null);
        if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
            return Err((
                id_for_error,
                RpcError::invalid_request("\"jsonrpc\" must be \"2.0\""),
            ));
        }
        let method = match object.remove("method") {
            Some(Value::String(m)) => m,
            _ => {
                return Err((
                    id_for_error,
                    RpcError::invalid_request("\"method\" must be a string"),
                ))
            }
        };
        Ok(Request {
            id,
            method,
            params: object.remove("params"),
        })
    }
}

/// A success response.
pub fn success(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn failure(id: Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_by_name_and_position() {
        let names = ["user", "password"];
        let by_name = Params::new(Some(json!({"user": "a", "password": "b"})), &names).unwrap();
        let by_position = Params::new(Some(json!(["a", "b"])), &names).unwrap();
        assert_eq!(by_name.string("user").unwrap(), "a");
        assert_eq!(by_position.string("password").unwrap(), "b");
    }

    #[test]
    fn params_errors_name_the_param() {
        let names = ["text"];
        let err = Params::new(Some(json!({"txt": 1})), &names).unwrap_err();
        assert_eq!(err.code, code::INVALID_PARAMS);
        assert!(err.message.contains("'txt'") && err.message.contains("text"));
        let err = Params::new(Some(json!({})), &names)
            .unwrap()
            .string("text")
            .unwrap_err();
        assert!(err.message.contains("'text'"));
        let err = Params::new(Some(json!({"text": 5})), &names)
            .unwrap()
            .string("text")
            .unwrap_err();
        assert!(err.message.contains("must be a string"));
        assert!(Params::new(Some(json!([1, 2])), &names).is_err());
    }
}
