//! `server.*` methods that need no storage: server info, login, superuser check, echo.

use super::Call;
use crate::rpc::RpcError;
use serde_json::{json, Value};

/// The API version this server speaks (bumped when methods are added).
pub const API_VERSION: u32 = 1;

pub(super) async fn handle(name: &str, call: Call<'_>) -> Result<Value, RpcError> {
    match name {
        "getServerInfo" => Ok(server_info(&call)),
        "auth" => auth(&call).await,
        "superuser" => Ok(json!({"superuser": call.session()?.superuser})),
        "echo" => Ok(Value::String(call.params.string("text")?)),
        other => Err(RpcError::method_not_found(other)),
    }
}

fn server_info(call: &Call<'_>) -> Value {
    let context = call.context;
    let facts = &context.facts;
    let sandboxed = facts.sandbox_dir.is_some()
        || context
            .store
            .mappings()
            .map(|m| !m.is_empty())
            .unwrap_or(false);
    json!({
        "apiVersion": API_VERSION,
        "version": facts.version,
        "serverName": facts.server_name,
        "hostName": facts.host_name,
        "serverId": facts.server_id,
        "apiControlPort": facts.api_port,
        "recvPort": facts.recv_port,
        "authRequired": true,
        "encryptionAvailable": true,
        "minCipher": facts.min_cipher,
        "certificateFingerprint": facts.certificate_fingerprint,
        "sandboxed": sandboxed,
        "fileCache": {
            "maxSize": facts.file_cache_max,
            "maxUploadSize": facts.file_cache_max_upload,
            "maxDownloadSize": facts.file_cache_max_download,
            "used": context.file_cache.used(),
        },
    })
}

async fn auth(call: &Call<'_>) -> Result<Value, RpcError> {
    let user = call.params.string("user")?;
    let password = call.params.string("password")?;
    let session = call
        .context
        .auth
        .login(&user, &password, call.caller.address)
        .await?;
    let (token, expiry) = call.context.auth.issue_token(&session)?;
    Ok(json!({"token": token, "expiryTime": expiry}))
}
