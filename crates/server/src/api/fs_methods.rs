//! Browsing a user's sandboxes: `lsRoots`, `ls`, `du`, `mkdir`, `mkFile`, `mv`, `rm`, their
//! `...Async` variants, and `getRequestStatus` / `getRequestResult`.

use super::{Call, Context};
use crate::rpc::{Params, RpcError};
use serde_json::{json, Value};
use std::sync::Arc;

/// Default page size of `ls`.
const DEFAULT_LIMIT: u64 = 1000;

pub(super) async fn handle(
    name: &str,
    call: Call<'_>,
    shared: Arc<Context>,
) -> Result<Value, RpcError> {
    let user = call.session()?.user.clone();
    if let Some(operation) = name.strip_suffix("Async") {
        let operation = operation.to_string();
        let params = call.params.clone();
        let context = shared.clone();
        let owner = user.clone();
        let id = shared.requests.spawn(&user, async move {
            run(&operation, &context, &owner, &params).await
        });
        return Ok(json!({"requestId": id}));
    }
    match name {
        "getRequestStatus" => shared.requests.status(call.params.u64("requestId")?, &user),
        "getRequestResult" => {
            shared
                .requests
                .result(call.params.u64("requestId")?, &user)
                .await
        }
        _ => run(name, &shared, &user, call.params).await,
    }
}

async fn run(
    name: &str,
    context: &Context,
    user: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    let view = context.sandboxes.view(user)?;
    match name {
        "lsRoots" => Ok(serde_json::to_value(view.roots()).map_err(RpcError::internal)?),
        "ls" => {
            let path = params.string("path")?;
            let limit = params.opt_u64("limit")?.unwrap_or(DEFAULT_LIMIT);
            if limit == 0 {
                return Err(RpcError::invalid_param(
                    "limit",
                    "param 'limit' must be at least 1",
                ));
            }
            let cursor = params.opt_string("cursor")?;
            let listing = view
                .ls(
                    &path,
                    limit.min(usize::MAX as u64) as usize,
                    cursor.as_deref(),
                )
                .await?;
            Ok(serde_json::to_value(listing).map_err(RpcError::internal)?)
        }
        "du" => {
            let path = params.string("path")?;
            let usage = view.du(&path).await?;
            let mut value = serde_json::to_value(usage).map_err(RpcError::internal)?;
            value["path"] = Value::String(path);
            Ok(value)
        }
        "mkdir" => {
            view.mkdir(&params.string("path")?).await?;
            Ok(Value::Null)
        }
        "mkFile" => {
            view.mk_file(&params.string("path")?).await?;
            Ok(Value::Null)
        }
        "mv" => {
            view.mv(&params.string("src")?, &params.string("dst")?)
                .await?;
            Ok(Value::Null)
        }
        "rm" => {
            let recursive = params.opt_bool("recursive")?.unwrap_or(false);
            view.rm(&params.string("path")?, recursive).await?;
            Ok(Value::Null)
        }
        other => Err(RpcError::method_not_found(other)),
    }
}
