//! `server.setSandboxMapping`, `getSandboxMappings`, `deleteSandboxMapping`: superuser-only
//! management of sandbox mappings, validated (and S3 ones probed) before they are stored.

use super::Call;
use crate::rpc::RpcError;
use serde_json::{json, Map, Value};
use slipstream_storage::config::{Mapping, SandboxConfig};

pub(super) async fn handle(name: &str, call: Call<'_>) -> Result<Value, RpcError> {
    call.require_superuser()?;
    match name {
        "setSandboxMapping" => set_mapping(&call).await,
        "getSandboxMappings" => get_mappings(&call),
        "deleteSandboxMapping" => delete_mapping(&call),
        other => Err(RpcError::method_not_found(other)),
    }
}

fn stored_mapping(call: &Call<'_>, user: &str) -> Result<Option<Mapping>, RpcError> {
    let Some(text) = call
        .context
        .store
        .mapping(user)
        .map_err(RpcError::internal)?
    else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(&text).map_err(RpcError::internal)?;
    Ok(Some(Mapping::parse_stored(&value)?))
}

/// `{"": "/data"}`, `{"": {...}}`, or a bare string meaning `{"": that}`.
fn mapping_value(call: &Call<'_>) -> Result<Value, RpcError> {
    match call.params.value("mapping")? {
        Value::String(path) => Ok(json!({"": path})),
        object @ Value::Object(_) => Ok(object),
        other => Err(RpcError::invalid_param(
            "mapping",
            format!(
                "param 'mapping' must be an object {{virtualName: sandbox}} or a folder path, not {}",
                crate::rpc::type_name(&other)
            ),
        )),
    }
}

async fn set_mapping(call: &Call<'_>) -> Result<Value, RpcError> {
    let user = call.params.string("user")?;
    let skip_validation = call.params.opt_bool("skipValidation")?.unwrap_or(false);
    let mut mapping = Mapping::parse(&mapping_value(call)?)?;
    let previous = stored_mapping(call, &user)?;
    mapping.restore_secrets(previous.as_ref())?;
    if !skip_validation {
        for (name, config) in &mapping.roots {
            validate_sandbox(name, config).await?;
        }
    }
    let stored = mapping.to_stored_json().to_string();
    call.context
        .store
        .set_mapping(&user, &stored)
        .map_err(RpcError::internal)?;
    let who = if user.is_empty() {
        "all users"
    } else {
        user.as_str()
    };
    tracing::info!(user = %who, sandboxes = mapping.roots.len(), "sandbox mapping set");
    Ok(Value::Null)
}

/// Checks that a sandbox can be used: a File folder exists (unless named through a
/// placeholder, created on first use), an S3 bucket answers with these settings.
async fn validate_sandbox(name: &str, config: &SandboxConfig) -> Result<(), RpcError> {
    let label = if name.is_empty() {
        "sandbox".to_string()
    } else {
        format!("sandbox '{name}'")
    };
    match config {
        SandboxConfig::File(file) => {
            if config.uses_placeholders() {
                return Ok(());
            }
            match tokio::fs::metadata(&file.path).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(RpcError::storage(format!(
                    "{label} (File): {} is not a folder",
                    file.path
                ))),
                Err(error) => Err(RpcError::storage(format!(
                    "{label} (File): folder {}: {error}; create it first or pass skipValidation",
                    file.path
                ))),
            }
        }
        SandboxConfig::S3(s3) => slipstream_s3::probe(s3).await.map_err(|error| {
            let error = RpcError::from(error);
            RpcError {
                message: format!("{label} (S3): {}", error.message),
                ..error
            }
        }),
    }
}

fn get_mappings(call: &Call<'_>) -> Result<Value, RpcError> {
    let mut result = Map::new();
    for (user, text) in call.context.store.mappings().map_err(RpcError::internal)? {
        let value: Value = serde_json::from_str(&text).map_err(RpcError::internal)?;
        let mapping = Mapping::parse_stored(&value)?;
        result.insert(user, mapping.to_redacted_json());
    }
    Ok(Value::Object(result))
}

fn delete_mapping(call: &Call<'_>) -> Result<Value, RpcError> {
    let user = call.params.string("user")?;
    if call
        .context
        .store
        .delete_mapping(&user)
        .map_err(RpcError::internal)?
    {
        Ok(Value::Null)
    } else {
        Err(RpcError::not_found(format!(
            "no sandbox mapping for user '{user}'; getSandboxMappings lists them"
        )))
    }
}
